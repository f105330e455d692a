"""The template head: 68 iBUG landmarks in 3D plus a closed triangulated head surface.

Model frame, millimetres: x to the image right (the subject's left), y up, z toward the
camera in the frontal pose; the origin is the head centre at eye height (the pivot the
pose rotates about). The head is a loft of horizontal cross-sections (half-width W(y),
front depth F(y), back depth B(y), superellipse profiles) with face relief (nose, brow
ridge, eye sockets, lips, chin) added to the front as a height field. Each surface point
has parameter coordinates (t, y): t is the angle around the vertical axis (0 = the face).

Landmarks are vertices of the mesh (the first 68), so a rendered landmark sits exactly on
the surface it labels. The 68 points follow the iBUG 300-W semantics and order: 0-16 jaw
(from the image left), 17-21 right brow (image left), 22-26 left brow, 27-30 nose bridge,
31-35 nostrils, 36-41 right eye, 42-47 left eye, 48-59 outer lip, 60-67 inner lip.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
from scipy.spatial import Delaunay

# Frontal (x, y) of the landmarks on the image-left half (x <= 0); the rest mirror them.
_JAW_LEFT = [(-71, -2), (-70, -18), (-68, -35), (-64, -51), (-57, -66), (-48, -79),
             (-37, -90), (-21, -99), (0, -103)]
_BROW_RIGHT = [(-57, 13), (-47, 19), (-35, 21), (-23, 20), (-11, 16)]
_NOSE = [(0, 2), (0, -11), (0, -23), (0, -35), (-14, -43), (-7, -45), (0, -46), (7, -45),
         (14, -43)]
_EYE_RIGHT = [(-45, 0), (-37, 4.5), (-23, 4.5), (-15, 0), (-23, -4), (-37, -4)]
_MOUTH_OUTER = [(-25, -64), (-15, -58), (-6, -55.5), (0, -56.5), (6, -55.5), (15, -58),
                (25, -64), (15, -71), (7, -74), (0, -75), (-7, -74), (-15, -71)]
_MOUTH_INNER = [(-21, -64), (-8, -62.5), (0, -62.8), (8, -62.5), (21, -64), (8, -65),
                (0, -65.3), (-8, -65)]


def landmark_xy() -> np.ndarray:
    """(68, 2) frontal x, y (mm) of the template landmarks, iBUG order."""
    jaw = _JAW_LEFT + [(-x, y) for x, y in reversed(_JAW_LEFT[:-1])]
    brows = _BROW_RIGHT + [(-x, y) for x, y in reversed(_BROW_RIGHT)]
    eye_left = [(-x, y) for x, y in _EYE_RIGHT]
    # Left eye order: inner corner, upper (inner->outer), outer corner, lower (outer->inner).
    eye_left = [eye_left[3], eye_left[2], eye_left[1], eye_left[0], eye_left[5], eye_left[4]]
    pts = jaw + brows + _NOSE + _EYE_RIGHT + eye_left + _MOUTH_OUTER + _MOUTH_INNER
    return np.array(pts, dtype=np.float64)


# Region labels of triangles.
SKIN, EYE, LIP, MOUTH, BROW, NOSTRIL, CAP = range(7)

Y_TOP, Y_BOT = 128.0, -106.0
U_SCALE = 75.0  # parameter metric: u = t * U_SCALE is roughly millimetres on the face


def _interp(y, knots):
    k = np.array(knots, dtype=np.float64)
    return np.interp(y, k[:, 0], k[:, 1])


def _dome(y, value_at_20, top=Y_TOP):
    """Rounded crown above y = 20: value * sqrt(1 - ((y - 20) / (top - 20))^2)."""
    r = np.clip((y - 20.0) / (top - 20.0), 0.0, 1.0)
    return value_at_20 * np.sqrt(np.maximum(1.0 - r * r, 0.0))


def half_width(y):
    low = _interp(y, [(-106, 4), (-104, 8), (-99, 24), (-90, 40), (-79, 52), (-66, 61),
                      (-51, 68), (-35, 72), (-20, 74), (0, 75), (20, 76)])
    return np.where(y > 20, _dome(y, 76.0), low)


def front_depth(y):
    low = _interp(y, [(-106, 50), (-103, 66), (-95, 74), (-80, 80), (-60, 84), (-30, 86),
                      (0, 84), (20, 88)])
    return np.where(y > 20, _dome(y, 88.0), low)


def back_depth(y):
    low = _interp(y, [(-106, 8), (-90, 14), (-70, 28), (-50, 58), (-30, 85), (0, 100),
                      (20, 105)])
    return np.where(y > 20, _dome(y, 105.0), low)


P_FRONT, P_BACK = 2.6, 2.2


def _gauss(x, y, cx, cy, sx, sy):
    return np.exp(-0.5 * (((x - cx) / sx) ** 2 + ((y - cy) / sy) ** 2))


def nose_relief(x, y):
    """Height (mm, toward the camera) of the nose over the face."""
    h = _interp(y, [(-53, 0), (-49, 3), (-46, 10), (-44, 13), (-40, 20), (-35, 24),
                    (-23, 17), (-11, 11), (2, 6), (8, 3), (20, 0)])
    sx = _interp(y, [(-53, 12), (-46, 13), (-35, 10), (-23, 8), (2, 7), (20, 12)])
    alae = 7.0 * (_gauss(x, y, -14, -41, 5, 4) + _gauss(x, y, 14, -41, 5, 4))
    return h * np.exp(-0.5 * (x / sx) ** 2) + alae


def face_relief(x, y):
    """Face height field (mm) except the nose: brows, sockets, cheeks, lips, chin."""
    r = np.zeros_like(x, dtype=np.float64)
    r += 4.0 * np.exp(-0.5 * ((y - 14) / 6) ** 2) * np.clip((62 - np.abs(x)) / 15, 0, 1)
    r -= 7.0 * (_gauss(x, y, -30, 0, 14, 9) + _gauss(x, y, 30, 0, 14, 9))
    r += 4.0 * (_gauss(x, y, -42, -22, 12, 12) + _gauss(x, y, 42, -22, 12, 12))
    r += 3.0 * _gauss(x, y, 0, -51, 8, 4)
    r += 5.0 * _gauss(x, y, 0, -58, 16, 4.5) + 4.5 * _gauss(x, y, 0, -71, 14, 4.5)
    r -= 1.0 * _gauss(x, y, 0, -64, 18, 1.5)
    r -= 3.0 * (_gauss(x, y, -26, -64, 4, 4) + _gauss(x, y, 26, -64, 4, 4))
    r += 6.0 * _gauss(x, y, 0, -93, 16, 9)
    return r


def front_weight(t):
    """How much of the face relief applies at angle t (1 on the face, 0 at the sides)."""
    c = np.cos(t)
    return np.clip((c - 0.15) / 0.35, 0.0, 1.0) ** 2 * (3 - 2 * np.clip((c - 0.15) / 0.35, 0, 1))


def surface_point(t, y):
    """3D points (N, 3) of the head surface at parameters (t, y), plus nose relief (N,)."""
    t = np.asarray(t, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    s, c = np.sin(t), np.cos(t)
    front = c >= 0
    p = np.where(front, P_FRONT, P_BACK)
    w = half_width(y)
    d = np.where(front, front_depth(y), back_depth(y))
    x = w * np.sign(s) * np.abs(s) ** (2.0 / p)
    z = d * np.sign(c) * np.abs(c) ** (2.0 / p)
    wf = front_weight(t)
    nose = nose_relief(x, y) * wf
    z = z + (face_relief(x, y) * wf) + nose
    return np.stack([x, y, z], axis=-1), nose


def landmark_t(xy):
    """Angle t of the front surface point whose frontal x is xy[:, 0] at height xy[:, 1]."""
    w = half_width(xy[:, 1])
    r = np.clip(np.abs(xy[:, 0]) / w, 0.0, 1.0) ** (P_FRONT / 2.0)
    return np.sign(xy[:, 0]) * np.arcsin(r)


@dataclass(frozen=True)
class TemplateHead:
    """The rest head. vertices[:68] are the landmarks.

    triangles (M, 3) are oriented so the right-hand normal points out of the head;
    region (M,) labels each triangle (SKIN, EYE, LIP, MOUTH, BROW, NOSTRIL, CAP);
    param (N, 2) holds each vertex's (t, y); nose (N,) the nose relief at each vertex
    (identity modes scale it); tri_param (M, 2) the triangle centroids in (t, y).
    """

    vertices: np.ndarray
    triangles: np.ndarray
    region: np.ndarray
    param: np.ndarray
    nose: np.ndarray
    tri_param: np.ndarray


def _polygon_contains(poly, pts):
    """Even-odd point-in-polygon test for (K, 2) pts against an (n, 2) polygon."""
    x, y = pts[:, 0][:, None], pts[:, 1][:, None]
    x0, y0 = poly[:, 0][None], poly[:, 1][None]
    x1, y1 = np.roll(poly[:, 0], -1)[None], np.roll(poly[:, 1], -1)[None]
    cond = (y0 > y) != (y1 > y)
    with np.errstate(divide="ignore", invalid="ignore"):
        xint = x0 + (y - y0) * (x1 - x0) / (y1 - y0)
    return (np.sum(cond & (x < xint), axis=1) % 2) == 1


def _segment_distance(poly, pts):
    """Distance from each of (K, 2) pts to the closed polygon outline (n, 2)."""
    a, b = poly, np.roll(poly, -1, axis=0)
    ab = b - a
    w = pts[:, None, :] - a[None]
    t = np.clip(np.sum(w * ab[None], axis=2) / np.maximum(np.sum(ab * ab, axis=1), 1e-12), 0, 1)
    d = w - t[..., None] * ab[None]
    return np.min(np.linalg.norm(d, axis=2), axis=1)


def _feature_polygons(lm_uv):
    """Feature outlines in the (u, y) parameter plane, keyed by region label."""
    brow_polys = []
    extra = []
    for idx in (range(17, 22), range(22, 27)):
        line = lm_uv[list(idx)]
        # Brow band: points 2.5 mm above and below the landmark line, tapering at the tail.
        half = np.array([1.8, 2.6, 2.8, 2.8, 2.4])
        if idx.start == 22:
            half = half[::-1]
        upper = line + np.stack([np.zeros(5), half], axis=1)
        lower = line - np.stack([np.zeros(5), half], axis=1)
        brow_polys.append(np.vstack([upper, lower[::-1]]))
        extra += [upper, lower]
    nostrils = []
    for cx in (-8.0, 8.0):
        a = np.linspace(0, 2 * np.pi, 8, endpoint=False)
        ring = np.stack([cx + 3.2 * np.cos(a), -43.6 + 1.4 * np.sin(a)], axis=1)
        ring[:, 0] = landmark_t(ring) * U_SCALE
        nostrils.append(ring)
        extra.append(ring)
    polys = {
        EYE: [lm_uv[36:42], lm_uv[42:48]],
        MOUTH: [lm_uv[60:68]],
        LIP: [lm_uv[48:60]],
        BROW: brow_polys,
        NOSTRIL: nostrils,
    }
    return polys, np.vstack(extra)


def _grid_uv():
    """Parameter grid: 2.5 degrees x 2.5 mm on the face, coarser at the back and on the crown."""
    t_front = np.deg2rad(np.arange(-84, 85, 2.5))
    t_back = np.deg2rad(np.concatenate([np.arange(-180, -84, 6.0), np.arange(90.0, 180.1, 6.0)]))
    ts = np.sort(np.concatenate([t_front, t_back]))
    ys = np.concatenate([np.arange(Y_BOT, 40, 2.5), np.arange(40, Y_TOP - 12, 5.0),
                         [Y_TOP - 5, Y_TOP]])
    tt, yy = np.meshgrid(ts, ys)
    return np.stack([tt.ravel() * U_SCALE, yy.ravel()], axis=1)


@functools.lru_cache(maxsize=1)
def template_head() -> TemplateHead:
    """Build (once per process) the rest head mesh with the 68 landmarks as its first vertices."""
    lm_xy = landmark_xy()
    lm_uv = np.stack([landmark_t(lm_xy) * U_SCALE, lm_xy[:, 1]], axis=1)
    polys, extra_uv = _feature_polygons(lm_uv)
    grid = _grid_uv()
    features = np.vstack([lm_uv, extra_uv])
    # Drop grid points near feature vertices or inside feature outlines.
    dist = np.min(np.linalg.norm(grid[:, None, :] - features[None, :, :], axis=2), axis=1)
    keep = dist > 1.8
    for plist in polys.values():
        for poly in plist:
            keep &= ~_polygon_contains(poly, grid) & (_segment_distance(poly, grid) > 1.5)
    uv = np.vstack([features, grid[keep]])
    tri = Delaunay(uv).simplices.astype(np.int64)
    a, b, c = uv[tri[:, 0]], uv[tri[:, 1]], uv[tri[:, 2]]
    cross = (b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (b[:, 1] - a[:, 1]) * (c[:, 0] - a[:, 0])
    tri = tri[np.abs(cross) > 1e-9]
    cross = cross[np.abs(cross) > 1e-9]
    flip = cross < 0
    tri[flip] = tri[flip][:, [0, 2, 1]]
    centroid = uv[tri].mean(axis=1)
    region = np.full(len(tri), SKIN, dtype=np.int64)
    for label in (LIP, MOUTH, EYE, BROW, NOSTRIL):
        for poly in polys[label]:
            region[_polygon_contains(poly, centroid)] = label

    t, y = uv[:, 0] / U_SCALE, uv[:, 1]
    verts, nose = surface_point(t, y)
    # Close the bottom under the chin with a fan to one vertex.
    bottom = np.flatnonzero(np.isclose(y, Y_BOT))
    bottom = bottom[np.argsort(t[bottom])]
    cap_index = len(verts)
    cap_vertex = np.array([[0.0, Y_BOT + 4.0, 15.0]])
    verts = np.vstack([verts, cap_vertex])
    nose = np.append(nose, 0.0)
    param = np.vstack([np.stack([t, y], axis=1), [[0.0, Y_BOT]]])
    fan = np.stack([bottom[1:], bottom[:-1], np.full(len(bottom) - 1, cap_index)], axis=1)
    # Orient the fan outward (downward).
    p0, p1, p2 = verts[fan[:, 0]], verts[fan[:, 1]], verts[fan[:, 2]]
    n = np.cross(p1 - p0, p2 - p0)
    wrong = n[:, 1] > 0
    fan[wrong] = fan[wrong][:, [0, 2, 1]]
    tri = np.vstack([tri, fan])
    region = np.concatenate([region, np.full(len(fan), CAP)])
    tri_param = param[tri].mean(axis=1)
    return TemplateHead(vertices=verts, triangles=tri, region=region, param=param,
                        nose=nose, tri_param=tri_param)
