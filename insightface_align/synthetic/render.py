"""Painter's-algorithm rendering of the posed head (plus ears and neck) into an image.

Triangles are flat-shaded (Lambert with ambient term), sorted far to near and filled with
cv2.fillConvexPoly at 1/16 pixel precision. Overlays (irises, debug dots) join the same
depth-sorted list so whatever is in front of them still hides them.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from .camera import Camera
from .template import BROW, CAP, EYE, LIP, MOUTH, NOSTRIL, TemplateHead

SHIFT = 4
_ONE = 1 << SHIFT
DEBUG_DOT_BGR = (255, 0, 255)


def debug_dot_colour(index: int) -> tuple:
    """Debug dot colour of landmark `index`: magenta with the index in green (3 * index)."""
    return (255, 3 * int(index), 255)

# Depth tolerance (mm): a landmark counts as visible unless a surface is this much nearer
# at its pixel; debug dots are painted this much in front of the landmark for the same reason.
DOT_BIAS_MM = 2.0


@dataclass(frozen=True)
class Look:
    """Colours and lighting of one face (BGR floats in 0..255)."""

    skin: np.ndarray
    lip: np.ndarray
    hair: np.ndarray
    brow: np.ndarray
    iris: np.ndarray
    cloth: np.ndarray
    light: np.ndarray  # unit vector in the view frame (toward the light)
    ambient: float
    diffuse: float
    hairline: float  # y (mm) of the hairline on the forehead; > 128 means bald
    hair_back: float  # y (mm) of the hairline at the back of the head
    long_hair: bool
    gaze: tuple  # (dx, dy) iris offset as fractions of the eye size
    texture_seed: int


SKIN_TONES = np.array([[180, 200, 235], [150, 180, 225], [120, 160, 215], [100, 140, 200],
                       [80, 115, 170], [60, 85, 135], [45, 65, 105], [160, 185, 215]], float)
HAIR_TONES = np.array([[20, 20, 25], [30, 40, 60], [40, 60, 100], [70, 110, 160],
                       [120, 160, 200], [160, 160, 165], [30, 30, 90], [15, 25, 40]], float)


def sample_look(rng: np.random.Generator) -> Look:
    """Random skin/hair/clothes colours, light direction and hairstyle."""
    i = rng.integers(len(SKIN_TONES))
    j = rng.integers(len(SKIN_TONES))
    skin = SKIN_TONES[i] + rng.uniform(0, 1) * (SKIN_TONES[j] - SKIN_TONES[i])
    skin = np.clip(skin * rng.uniform(0.9, 1.1, 3), 20, 250)
    lip = np.clip(skin * np.array([0.75, 0.68, 0.95]) + rng.normal(0, 6, 3), 10, 250)
    hair = np.clip(HAIR_TONES[rng.integers(len(HAIR_TONES))] * rng.uniform(0.8, 1.2), 5, 240)
    brow = np.clip(0.6 * hair + 0.25 * skin * 0.5, 5, 200)
    iris = np.clip(np.array([rng.uniform(20, 90), rng.uniform(30, 90), rng.uniform(30, 80)]),
                   10, 200)
    cloth = rng.uniform(20, 235, 3)
    light = rng.normal(size=3) * np.array([1.0, 0.8, 0.5]) + np.array([0.0, 0.3, 1.3])
    light /= np.linalg.norm(light)
    bald = rng.random() < 0.08
    hairline = 140.0 if bald else rng.uniform(45, 72)
    return Look(skin=skin, lip=lip, hair=hair, brow=brow, iris=iris, cloth=cloth,
                light=light, ambient=rng.uniform(0.3, 0.55), diffuse=rng.uniform(0.5, 0.8),
                hairline=hairline, hair_back=rng.uniform(-50, -10),
                long_hair=(not bald) and rng.random() < 0.35,
                gaze=(rng.uniform(-0.25, 0.25), rng.uniform(-0.1, 0.1)),
                texture_seed=int(rng.integers(2**31)))


class DrawList:
    """Polygons with depth and colour, painted far to near."""

    def __init__(self):
        self.polys, self.depths, self.colours = [], [], []

    def add(self, uv: np.ndarray, depth: float, colour) -> None:
        self.polys.append(np.round(np.asarray(uv) * _ONE).astype(np.int32))
        self.depths.append(float(depth))
        self.colours.append(tuple(float(c) for c in colour))

    def add_many(self, uv: np.ndarray, depths: np.ndarray, colours: np.ndarray) -> None:
        pts = np.round(np.asarray(uv) * _ONE).astype(np.int32)
        self.polys.extend(list(pts))
        self.depths.extend(np.asarray(depths, dtype=np.float64).tolist())
        self.colours.extend([tuple(c) for c in np.asarray(colours, dtype=np.float64).tolist()])

    def paint(self, image: np.ndarray) -> None:
        order = np.argsort(-np.asarray(self.depths), kind="stable")
        fill = cv2.fillConvexPoly
        polys, colours = self.polys, self.colours
        for k in order.tolist():
            fill(image, polys[k], colours[k], cv2.LINE_8, SHIFT)


def _hairline_y(t: np.ndarray, look: Look) -> np.ndarray:
    deg = np.abs(np.rad2deg(t))
    front = look.hairline
    knots_x = [0, 35, 60, 80, 100, 135, 180]
    knots_y = [front, front - 6, front - 18, front - 28, 8, look.hair_back + 20, look.hair_back]
    y = np.interp(deg, knots_x, knots_y)
    return np.where(front > 128, 1e9, y)


def triangle_albedo(head: TemplateHead, look: Look) -> np.ndarray:
    """(M, 3) base colour per head triangle, with per-triangle texture noise."""
    rng = np.random.default_rng(look.texture_seed)
    m = len(head.triangles)
    alb = np.tile(look.skin, (m, 1)) * rng.normal(1.0, 0.025, (m, 1))
    hair = head.tri_param[:, 1] > _hairline_y(head.tri_param[:, 0], look)
    alb[hair] = look.hair * rng.normal(1.0, 0.12, (int(hair.sum()), 1))
    alb[head.region == LIP] = look.lip
    alb[head.region == MOUTH] = (30, 25, 55)
    alb[head.region == EYE] = (175, 180, 190)
    alb[head.region == BROW] = look.skin * 0.92  # the brow itself is an overlay (_add_brows)
    alb[head.region == NOSTRIL] = look.skin * 0.3
    alb[head.region == CAP] = look.skin * 0.9
    return alb


def _shade(normals: np.ndarray, albedo: np.ndarray, look: Look) -> np.ndarray:
    lam = np.clip(normals @ look.light, 0.0, 1.0)
    shade = look.ambient + look.diffuse * lam
    return np.clip(albedo * shade[:, None], 0, 255)


def _normals(p: np.ndarray, tri: np.ndarray) -> np.ndarray:
    n = np.cross(p[tri[:, 1]] - p[tri[:, 0]], p[tri[:, 2]] - p[tri[:, 0]])
    return n / np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-12)


@dataclass
class Surface:
    """Posed, projected triangles of everything that can hide a landmark."""

    uv: np.ndarray  # (M, 3, 2) pixel corners
    depth: np.ndarray  # (M, 3) mm from the camera
    owner: np.ndarray  # (M, 3) vertex index of the head mesh, -1 for other geometry


def ear_mesh(vertices: np.ndarray, side: float) -> tuple:
    """A flat ear (fan of triangles) on one side of the head; returns (points, triangles)."""
    n = 14
    a = np.linspace(0, 2 * np.pi, n, endpoint=False)
    base_x = side * (np.max(np.abs(vertices[:, 0])) - 4.0)
    cy, cz = -14.0, -8.0
    ring = np.stack([base_x + side * (6.0 + 4.0 * np.cos(a)), cy + 27.0 * np.sin(a),
                     cz + 14.0 * np.cos(a)], axis=1)
    pts = np.vstack([[base_x + side * 2.0, cy, cz], ring])
    tri = np.array([[0, 1 + k, 1 + (k + 1) % n] for k in range(n)])
    return pts, tri


def neck_mesh() -> tuple:
    """An elliptic cylinder below the head (model frame), returns (points, triangles)."""
    n = 18
    a = np.linspace(0, 2 * np.pi, n, endpoint=False)
    rings = []
    for y, rx, rz in ((-40.0, 44, 40), (-135.0, 45, 41), (-160.0, 60, 48), (-185.0, 150, 70),
                      (-420.0, 190, 85)):
        rings.append(np.stack([rx * np.sin(a), np.full(n, y), -25 + rz * np.cos(a)], axis=1))
    pts = np.vstack(rings)
    tri = []
    for r in range(len(rings) - 1):
        for k in range(n):
            i0, i1 = r * n + k, r * n + (k + 1) % n
            j0, j1 = i0 + n, i1 + n
            tri += [[i0, j0, i1], [i1, j0, j1]]
    return pts, np.array(tri)


def render_head(image: np.ndarray, head: TemplateHead, verts: np.ndarray, cam: Camera,
                look: Look, debug_dots: bool = False) -> Surface:
    """Paint neck, ears, head and eye overlays into `image`; returns the visible surface."""
    draw = DrawList()
    cam_pos = np.array([0.0, 0.0, cam.dist])
    surf_uv, surf_depth, surf_owner = [], [], []

    def add_mesh(points_model, tri, albedo, two_sided=False, body_frame=False, is_head=False,
                 smooth=False):
        if body_frame:
            body = Camera(0.0, 0.0, cam.roll * 0.3, cam.dist, cam.focal, cam.cx, cam.cy)
            q, (uv, depth) = body.to_view(points_model), body.project(points_model)
        else:
            q, (uv, depth) = cam.to_view(points_model), cam.project(points_model)
        n = _normals(q, tri)
        centre = q[tri].mean(axis=1)
        facing = np.einsum("ij,ij->i", n, cam_pos - centre) > 0
        if two_sided:
            n = np.where(facing[:, None], n, -n)
            facing = np.ones_like(facing)
        if smooth:
            # Lambert at the three (area-weighted) vertex normals, averaged: softer facets.
            raw = np.cross(q[tri[:, 1]] - q[tri[:, 0]], q[tri[:, 2]] - q[tri[:, 0]])
            flat = tri.ravel()
            vn = np.stack([np.bincount(flat, np.repeat(raw[:, c], 3), len(q)) for c in range(3)], 1)
            vn /= np.maximum(np.linalg.norm(vn, axis=1, keepdims=True), 1e-12)
            lam = np.clip(vn @ look.light, 0.0, 1.0)[tri].mean(axis=1)
            cols = np.clip(albedo * (look.ambient + look.diffuse * lam)[:, None], 0, 255)
        else:
            cols = _shade(n, albedo, look)
        keep = np.flatnonzero(facing)
        tri_depth = depth[tri].mean(axis=1)
        draw.add_many(uv[tri[keep]], tri_depth[keep], cols[keep])
        surf_uv.append(uv[tri[keep]])
        surf_depth.append(depth[tri[keep]])
        surf_owner.append(tri[keep] if is_head else np.full((len(keep), 3), -1))
        return uv, depth, keep, tri_depth

    npts, ntri = neck_mesh()
    neck_alb = np.tile(look.skin * 0.88, (len(ntri), 1))
    neck_alb[len(ntri) // 2:] = look.cloth  # the lower rings are shoulders in clothes
    add_mesh(npts, ntri, neck_alb, body_frame=True)
    if look.long_hair:
        _add_long_hair(draw, cam, look)
    for side in (-1.0, 1.0):
        epts, etri = ear_mesh(verts, side)
        add_mesh(epts, etri, np.tile(look.skin * 0.95, (len(etri), 1)), two_sided=True)
    albedo = triangle_albedo(head, look)
    uv, depth, keep, tri_depth = add_mesh(verts, head.triangles, albedo, is_head=True, smooth=True)

    kept = np.zeros(len(head.triangles), bool)
    kept[keep] = True
    if not debug_dots:
        _add_brows(draw, cam.to_view(verts[:88]), uv[:88], depth[:88], cam, look)
    for eye in (slice(36, 42), slice(42, 48)):
        if debug_dots:
            break  # irises and brows are decoration; the debug image shows geometry only
        _add_iris(draw, verts[eye], cam, look, head, kept, tri_depth, eye)
    if debug_dots:
        for i in range(68):
            inc = np.flatnonzero(np.any(head.triangles == i, axis=1))
            d = min(depth[i], float(np.min(tri_depth[inc]))) - DOT_BIAS_MM
            a = np.linspace(0, 2 * np.pi, 10, endpoint=False)
            ring = uv[i] + 1.3 * np.stack([np.cos(a), np.sin(a)], axis=1)
            draw.add(ring, d, debug_dot_colour(i))
    draw.paint(image)
    return Surface(uv=np.vstack(surf_uv), depth=np.vstack(surf_depth),
                   owner=np.vstack(surf_owner))


# Mesh vertices of the brow band edges (template._feature_polygons adds them right after
# the 68 landmarks): upper and lower edge for the right brow, then for the left brow.
_BROW_BANDS = ((range(17, 22), range(68, 73), range(73, 78)),
               (range(22, 27), range(78, 83), range(83, 88)))


def _add_brows(draw, q, uv, depth, cam, look):
    """Eyebrows as quads along the brow band (view-frame points q), just above the skin."""
    cam_pos = np.array([0.0, 0.0, cam.dist])
    for line, upper, lower in _BROW_BANDS:
        for k in range(4):
            for quad in ((upper[k], upper[k + 1], line[k + 1], line[k]),
                         (line[k], line[k + 1], lower[k + 1], lower[k])):
                quad = list(quad)
                n = np.cross(q[quad[1]] - q[quad[0]], q[quad[3]] - q[quad[0]])
                if np.dot(n, cam_pos - q[quad].mean(axis=0)) >= 0:
                    continue  # faces away (the band runs left to right, y up: normal is -z)
                shade = look.ambient + look.diffuse * max(0.0, float(-n @ look.light / np.linalg.norm(n)))
                draw.add(uv[quad], float(depth[quad].min()) - 0.5, np.clip(look.brow * shade, 0, 255))


def _add_iris(draw, eye3d, cam, look, head, kept, tri_depth, eye):
    """Iris and pupil: ellipses inside the eye opening, drawn just above the eyeball."""
    ids = set(range(eye.start, eye.stop))
    eye_tris = np.flatnonzero((head.region == EYE) & np.any(np.isin(head.triangles, list(ids)), axis=1))
    vis = eye_tris[kept[eye_tris]]
    if len(vis) == 0:
        return
    corner_a, corner_b = eye3d[0], eye3d[3]
    upper = (eye3d[1] + eye3d[2]) / 2
    lower = (eye3d[4] + eye3d[5]) / 2
    centre = (corner_a + corner_b) / 2
    half_w = (corner_b - corner_a) / 2
    opening = upper - lower
    centre = centre + 0.5 * (upper + lower - 2 * centre) * 0.5
    centre = centre + look.gaze[0] * half_w + look.gaze[1] * opening
    gap = np.linalg.norm(opening)
    rw = 0.42
    rh = min(0.42 * np.linalg.norm(half_w), 0.48 * gap) / max(gap, 1e-6)
    a = np.linspace(0, 2 * np.pi, 16, endpoint=False)
    base = float(np.min(tri_depth[vis])) - 0.1
    for scale, colour, bias in ((1.0, look.iris, 0.0), (0.45, (12, 12, 14), 0.05)):
        ring = (centre[None] + scale * (rw * np.cos(a)[:, None] * half_w[None]
                                        + rh * np.sin(a)[:, None] * opening[None]))
        ring[:, 2] += 0.3
        uv, _ = cam.project(ring)
        # Keep the iris inside the (slightly shrunk) eye outline on screen.
        outline, _ = cam.project(eye3d)
        mid = outline.mean(axis=0)
        outline = np.float32(mid + 0.85 * (outline - mid))
        hull = cv2.convexHull(outline)[:, 0]
        area, clipped = cv2.intersectConvexConvex(np.float32(uv), hull)
        if area > 0 and clipped is not None:
            draw.add(clipped[:, 0], base - bias, colour)


def _add_long_hair(draw, cam, look):
    """Long hair: a dark shell behind the head reaching the shoulders (body frame)."""
    a = np.linspace(0, np.pi, 14)
    back = np.stack([-88 * np.cos(a), 40 + 95 * np.sin(a), np.full_like(a, -70.0)], axis=1)
    low = np.array([[88.0, -150.0, -70.0], [-88.0, -150.0, -70.0]])
    shell = np.vstack([back, low])
    body = Camera(cam.pitch * 0.5, cam.yaw * 0.5, cam.roll, cam.dist, cam.focal, cam.cx, cam.cy)
    uv, depth = body.project(shell)
    hull = cv2.convexHull(np.float32(uv))[:, 0]
    draw.add(hull, float(depth.max()) + 30.0, look.hair * 0.8)


def landmark_visibility(uv68: np.ndarray, depth68: np.ndarray, head: TemplateHead,
                        verts: np.ndarray, cam: Camera, surface: Surface) -> np.ndarray:
    """(68,) bool: the surface point is front-facing and no other surface lies in front of it."""
    q = cam.to_view(verts)
    n = _normals(q, head.triangles)
    vn = np.zeros((68, 3))
    for k in range(3):
        idx = head.triangles[:, k]
        sel = idx < 68
        np.add.at(vn, idx[sel], n[sel])
    to_cam = np.array([0.0, 0.0, cam.dist]) - q[:68]
    facing = np.einsum("ij,ij->i", vn, to_cam) > 0

    # Candidate (landmark, triangle) pairs from bounding boxes, then exact barycentrics.
    lo, hi = surface.uv.min(axis=1), surface.uv.max(axis=1)
    cand = ((uv68[:, None, 0] >= lo[None, :, 0]) & (uv68[:, None, 0] <= hi[None, :, 0])
            & (uv68[:, None, 1] >= lo[None, :, 1]) & (uv68[:, None, 1] <= hi[None, :, 1]))
    pi, ti = np.nonzero(cand)
    own = np.any(surface.owner[ti] == pi[:, None], axis=1)
    pi, ti = pi[~own], ti[~own]
    a, b, c = surface.uv[ti, 0], surface.uv[ti, 1], surface.uv[ti, 2]
    v0, v1, w = b - a, c - a, uv68[pi] - a
    den = v0[:, 0] * v1[:, 1] - v1[:, 0] * v0[:, 1]
    ok = np.abs(den) > 1e-9
    den = np.where(ok, den, 1.0)
    l1 = (w[:, 0] * v1[:, 1] - v1[:, 0] * w[:, 1]) / den
    l2 = (v0[:, 0] * w[:, 1] - w[:, 0] * v0[:, 1]) / den
    l0 = 1 - l1 - l2
    inside = (l0 >= -1e-6) & (l1 >= -1e-6) & (l2 >= -1e-6) & ok
    d = surface.depth[ti]
    zd = l0 * d[:, 0] + l1 * d[:, 1] + l2 * d[:, 2]
    blocked = np.zeros(68, bool)
    blocked[pi[inside & (zd < depth68[pi] - DOT_BIAS_MM)]] = True
    return facing & ~blocked
