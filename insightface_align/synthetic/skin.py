"""The head's texture, painted in the template's parameter plane (u = t * U_SCALE, y).

One RGBA image covers the whole head at TEXEL_MM millimetres per texel: skin with tone
variation, pores, freckles, flush and wrinkles; eyes (sclera, iris, pupil, lid lines and
lashes); brows drawn hair by hair; lips, teeth and the mouth cavity; nostrils; stubble and
beards; make-up; scalp hair with strands. Alpha is the specular mask. Features are placed
from the template's landmark coordinates in the same plane, so they stay on the landmarks
whatever the identity, expression or pose.

Colour is painted in planar float32 (3, rows, cols): a per-texel mask then broadcasts over
the channel axis with long contiguous inner loops, which numpy runs an order of magnitude
faster than the interleaved (rows, cols, 3) layout's three-element ones.
"""
from __future__ import annotations

import functools

import cv2
import numpy as np

from .look import Look
from .template import U_SCALE, Y_BOT, Y_TOP, landmark_t, landmark_xy

TEXEL_MM = 0.5
U_MAX = np.pi * U_SCALE
WIDTH = int(np.ceil(2 * U_MAX / TEXEL_MM))
HEIGHT = int(np.ceil((Y_TOP - Y_BOT) / TEXEL_MM))


# The face window (texels): everything but skin tone and scalp hair is painted inside it.
FACE_U, FACE_Y = (-105.0, 105.0), (-106.0, 75.0)


def _window():
    c0, r0 = tex_coords(FACE_U[0], FACE_Y[1]).astype(int)
    c1, r1 = np.ceil(tex_coords(FACE_U[1], FACE_Y[0])).astype(int) + 1
    return (slice(max(r0, 0), min(r1, HEIGHT)), slice(max(c0, 0), min(c1, WIDTH))), np.array([c0, r0])


def tex_coords(u, y) -> np.ndarray:
    """Texel (column, row) coordinates (float) of parameter points (u mm, y mm)."""
    u, y = np.asarray(u, float), np.asarray(y, float)
    return np.stack([(u + U_MAX) / TEXEL_MM - 0.5, (Y_TOP - y) / TEXEL_MM - 0.5], axis=-1)


def uv_of_param(param: np.ndarray) -> np.ndarray:
    """Texture coordinates in [0, 1] (row 0 = top) of mesh vertices' (t, y) parameters."""
    col_row = tex_coords(param[:, 0] * U_SCALE, param[:, 1])
    return np.stack([(col_row[:, 0] + 0.5) / WIDTH, (col_row[:, 1] + 0.5) / HEIGHT], axis=1)


@functools.lru_cache(maxsize=1)
def landmark_texels() -> np.ndarray:
    """(68, 2) texel coordinates of the template landmarks."""
    xy = landmark_xy()
    return tex_coords(landmark_t(xy) * U_SCALE, xy[:, 1])


@functools.lru_cache(maxsize=1)
def _grids():
    cols = (np.arange(WIDTH) + 0.5) * TEXEL_MM - U_MAX
    rows = Y_TOP - (np.arange(HEIGHT) + 0.5) * TEXEL_MM
    u, y = np.meshgrid(cols.astype(np.float32), rows.astype(np.float32))
    return u, y


@functools.lru_cache(maxsize=1)
def _noise_bank():
    """Fixed noise fields (one per process, same for every process): fine, mid, strands."""
    rng = np.random.default_rng(12345)
    fine = rng.standard_normal((HEIGHT, WIDTH)).astype(np.float32)
    mid = cv2.GaussianBlur(rng.standard_normal((HEIGHT, WIDTH)).astype(np.float32), (0, 0), 3)
    mid /= mid.std()
    k = np.zeros((21, 21), np.float32)
    k[:, 10] = 1.0 / 21
    strands = cv2.filter2D(rng.standard_normal((HEIGHT, WIDTH)).astype(np.float32), -1, k)
    strands /= strands.std()
    return fine, mid, strands


def _shifted(field: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return np.roll(field, (int(rng.integers(HEIGHT)), int(rng.integers(WIDTH))), axis=(0, 1))


def _low_noise(rng: np.random.Generator, cell_mm: float) -> np.ndarray:
    h = max(2, int(HEIGHT * TEXEL_MM / cell_mm))
    w = max(2, int(WIDTH * TEXEL_MM / cell_mm))
    n = rng.standard_normal((h, w)).astype(np.float32)
    return cv2.resize(n, (WIDTH, HEIGHT), interpolation=cv2.INTER_CUBIC)


def _gauss(u, y, cu, cy, su, sy):
    return np.exp(-0.5 * (((u - cu) / su) ** 2 + ((y - cy) / sy) ** 2))


def _poly_mask(polys, blur_mm: float = 0.0, shape=(HEIGHT, WIDTH)) -> np.ndarray:
    """float32 mask of filled polygons given in texel coordinates, optionally softened."""
    m = np.zeros(shape, np.uint8)
    cv2.fillPoly(m, [np.round(np.asarray(p) * 16).astype(np.int32) for p in polys], 255,
                 cv2.LINE_AA, 4)
    if not m.any():
        return np.zeros(shape, np.float32)
    m = m.astype(np.float32) / 255.0
    if blur_mm > 0:
        m = cv2.GaussianBlur(m, (0, 0), blur_mm / TEXEL_MM)
    return m


def _lines_mask(lines, width_mm: float, shape=(HEIGHT, WIDTH)) -> np.ndarray:
    m = np.zeros(shape, np.uint8)
    thick = max(1, int(round(width_mm / TEXEL_MM)))
    for line in lines:
        cv2.polylines(m, [np.round(np.asarray(line) * 16).astype(np.int32)], False, 255, thick,
                      cv2.LINE_AA, 4)
    return m.astype(np.float32) / 255.0


def _planes(colour) -> np.ndarray:
    """A colour (3,) as (3, 1, 1) float32 planes; a (3, h, w) colour image as it is."""
    c = np.asarray(colour, np.float32)
    return c.reshape(3, 1, 1) if c.ndim == 1 else c


def _sub(img: np.ndarray, box: tuple) -> np.ndarray:
    """The (3, h, w) view of planar `img` inside `box` (row slice, column slice)."""
    return img[:, box[0], box[1]]


def _blend(img: np.ndarray, colour, alpha) -> None:
    """img (3, h, w) <- img + alpha * (colour - img), in place; alpha (h, w) or scalar."""
    d = _planes(colour) - img
    d *= np.asarray(alpha, np.float32)
    img += d


def hairline_y(u: np.ndarray, look: Look) -> np.ndarray:
    """Hairline height (mm) at u: the forehead line, temples, above the ears, nape."""
    deg = np.abs(u) / U_SCALE * 180 / np.pi
    front = look.hairline
    if look.hairstyle == "bangs":
        front = min(front, 22.0)
    knots_x = [0, 30, 55, 75, 95, 130, 180]
    knots_y = [front, front - 4, front - 14, front - 30, 5, -40, -60]
    return np.interp(deg, knots_x, knots_y).astype(np.float32)


class _Face:
    """Views of the texture, grids and noise restricted to the face window."""

    def __init__(self, img, spec, rng):
        self.win, self.origin = _window()
        self.img, self.spec = _sub(img, self.win), spec[self.win]
        u, y = _grids()
        self.u, self.y = u[self.win], y[self.win]
        self.shape = self.img.shape[1:]
        self.rng = rng

    def xy(self, u, y) -> np.ndarray:
        """Window texel coordinates of parameter points."""
        return tex_coords(u, y) - self.origin

    def lm(self) -> np.ndarray:
        return landmark_texels() - self.origin

    def noise(self, field) -> np.ndarray:
        return _shifted(field, self.rng)[self.win]


def bake_head_texture(look: Look, rng: np.random.Generator) -> np.ndarray:
    """(HEIGHT, WIDTH, 4) uint8 RGBA head texture for `look` (alpha = specular mask)."""
    fine, mid, strands = _noise_bank()
    # Skin tone everywhere: low-frequency blotches and pores in one multiplier.
    tone = 1.0 + look.blotch * _low_noise(rng, 25.0)
    tone += look.pores * (0.6 * _shifted(fine, rng) + 0.4 * _shifted(mid, rng))
    img = tone[None] * _planes(look.skin)
    spec = np.full((HEIGHT, WIDTH), 0.5, np.float32)
    f = _Face(img, spec, rng)
    u, y = f.u, f.y

    flush = (_gauss(u, y, -42, -30, 18, 14) + _gauss(u, y, 42, -30, 18, 14)
             + 0.8 * _gauss(u, y, 0, -38, 8, 10) + 0.3 * _gauss(u, y, 0, 40, 40, 15))
    flush *= look.redness * (0.5 + 0.5 * np.clip(_low_noise(rng, 8.0)[f.win], -1, 1))
    f.img += flush[None] * _planes([0.10, -0.04, -0.04])
    shade = 1.0 - 0.10 * (_gauss(u, y, -30, -9, 13, 5) + _gauss(u, y, 30, -9, 13, 5))
    folds = [[f.xy(14 * s, -40), f.xy(22 * s, -52), f.xy(29 * s, -66)] for s in (-1, 1)]
    fold = cv2.GaussianBlur(_lines_mask(folds, 1.5, f.shape), (0, 0), 2.0)
    shade -= (0.10 + 0.2 * look.age) * fold
    if look.age > 0.35:
        k = (look.age - 0.35) / 0.65
        lines = []
        for j in range(int(2 + 3 * k)):
            yy = 30 + 6 * j + rng.normal(0, 1)
            xs = np.linspace(-45, 45, 12)
            lines.append(f.xy(xs, yy + 1.5 * np.sin(xs / 15 + j) + rng.normal(0, 0.4, 12)))
        for s in (-1, 1):  # crow's feet
            for a in (-0.5, 0.0, 0.5):
                lines.append(f.xy([48 * s, 48 * s + 9 * s * np.cos(a)], [0.0, 9 * np.sin(a)]))
        shade -= 0.25 * k * cv2.GaussianBlur(_lines_mask(lines, 0.6, f.shape), (0, 0), 0.7)
    f.img *= shade
    f.spec += 0.4 * (_gauss(u, y, 0, 35, 35, 14) + _gauss(u, y, 0, -25, 7, 25))  # T-zone
    f.spec *= 1.0 + 0.3 * f.noise(mid)
    if look.freckles > 0:
        n = int(400 * look.freckles)
        fm = np.zeros(f.shape, np.uint8)
        for p, r in zip(f.xy(rng.normal(0, 28, n), rng.normal(-22, 12, n)),
                        rng.uniform(0.3, 1.0, n) / TEXEL_MM):
            cv2.circle(fm, (int(p[0] * 4), int(p[1] * 4)), int(r * 4), 255, -1, cv2.LINE_AA, 2)
        _blend(f.img, look.skin * np.array([0.75, 0.58, 0.45]), fm.astype(np.float32) / 255 * 0.6)
    if look.blush > 0:
        b = look.blush * (_gauss(u, y, -45, -28, 14, 10) + _gauss(u, y, 45, -28, 14, 10))
        _blend(f.img, np.array([0.85, 0.35, 0.40]), 0.5 * b)

    _paint_beard(f, look)
    _paint_eyes(f, look)
    _paint_brows(f, look)
    _paint_mouth(f, look)
    for cx in (-8.0, 8.0):  # nostrils, painted in a small box around each
        a = np.linspace(0, 2 * np.pi, 12, endpoint=False)
        ring = np.stack([cx + 3.0 * np.cos(a), -43.6 + 1.3 * np.sin(a)], axis=1)
        ring_xy = f.xy(landmark_t(ring) * U_SCALE, ring[:, 1])
        box, origin = _box(ring_xy, 8, f.shape)
        sub = _sub(f.img, box)
        _blend(sub, look.skin * 0.18, _poly_mask([ring_xy - origin], 0.6, sub.shape[1:]))
    _paint_scalp(img, spec, look, rng, strands)

    rgba = cv2.merge([img[0], img[1], img[2], spec])
    cv2.threshold(rgba, 0.0, 0.0, cv2.THRESH_TOZERO, dst=rgba)  # negatives -> 0
    return cv2.convertScaleAbs(rgba, alpha=255.0)  # rounds and saturates at 255


def _box(pts: np.ndarray, margin: int, shape) -> tuple:
    r0, c0 = max(int(pts[:, 1].min()) - margin, 0), max(int(pts[:, 0].min()) - margin, 0)
    r1 = min(int(pts[:, 1].max()) + margin, shape[0])
    c1 = min(int(pts[:, 0].max()) + margin, shape[1])
    return (slice(r0, r1), slice(c0, c1)), np.array([c0, r0])


def _paint_eyes(f: _Face, look: Look):
    rng = f.rng
    for eye in (slice(36, 42), slice(42, 48)):
        pts_all = f.lm()[eye]
        box, origin = _box(pts_all, 28, f.shape)
        pts = pts_all - origin
        sub, spec = _sub(f.img, box), f.spec[box]
        shape = sub.shape[1:]
        mask = _poly_mask([pts], 0.25, shape)
        rr, cc = np.mgrid[0:shape[0], 0:shape[1]].astype(np.float32)
        corner_a, corner_b = pts[0], pts[3]
        centre = (corner_a + corner_b) / 2
        half_w = np.linalg.norm(corner_b - corner_a) / 2
        sclera = np.array([0.93, 0.88, 0.84]) * rng.uniform(0.8, 1.0)
        dist_c = np.abs(cc - centre[0]) / half_w
        eye_img = _planes(sclera) * (1.0 - 0.25 * dist_c ** 2)
        eye_img = eye_img + dist_c ** 3 * _planes([0.05, -0.04, -0.04])
        # Iris and pupil (radii in mm); the lids cover whatever falls outside the opening.
        ic = centre + np.array([look.gaze[0] * half_w * 0.6, -look.gaze[1] * 6.0])
        r = np.hypot(cc - ic[0], rr - ic[1]) * TEXEL_MM
        ri = rng.uniform(5.2, 6.2)
        ang = np.arctan2(rr - ic[1], cc - ic[0])
        streak = 1.0 + 0.25 * np.sin(ang * rng.integers(9, 19) + rng.uniform(0, 6)) * (r / ri)
        limbus = 1.0 - 0.5 * np.clip((r - 0.8 * ri) / (0.2 * ri), 0, 1)
        iris = _planes(look.iris) * (streak * limbus)
        a_iris = np.clip((ri - r) / 0.4, 0, 1)
        a_pupil = np.clip((look.pupil - r) / 0.3, 0, 1)
        eye_img = eye_img * (1 - a_iris) + iris * a_iris
        eye_img = eye_img * (1 - a_pupil) + 0.02 * a_pupil
        upper = pts[[0, 1, 2, 3]]
        order = np.argsort(upper[:, 0])
        top = np.interp(cc, upper[order, 0], upper[order, 1])
        lid_shadow = np.clip(1.0 - (rr - top) * TEXEL_MM / 2.5, 0, 1)
        eye_img *= 1.0 - 0.45 * lid_shadow
        _blend(sub, eye_img, mask)
        spec[:] = spec * (1 - mask) + mask
        # Lid margins: a dark lash line above, a thin one below; the crease above the lid.
        lash = _lines_mask([upper], 0.9 + 0.8 * look.eyeliner, shape)
        _blend(sub, np.array([0.05, 0.04, 0.04]), lash * (0.75 + 0.25 * look.eyeliner))
        _blend(sub, look.skin * 0.45, 0.5 * _lines_mask([pts[[3, 4, 5, 0]]], 0.5, shape))
        crease = upper + np.array([0.0, -rng.uniform(5, 10) / TEXEL_MM])
        crease[:, 0] = centre[0] + (crease[:, 0] - centre[0]) * 0.9
        cm = cv2.GaussianBlur(_lines_mask([crease], 0.6, shape), (0, 0), 1.5)
        sub *= 1.0 - 0.25 * cm
        if look.eyeshadow > 0:
            lid = np.clip(1.0 - np.abs(rr - (top - 4 / TEXEL_MM)) * TEXEL_MM / 5.0, 0, 1)
            lid *= np.clip(1.0 - dist_c, 0, 1) ** 0.5 * (1 - mask)
            _blend(sub, look.eyeshadow_colour, look.eyeshadow * 0.6 * lid)


def _paint_brows(f: _Face, look: Look):
    rng = f.rng
    lm = f.lm()
    box, origin = _box(lm[17:27], 24, f.shape)
    sub = _sub(f.img, box)
    fine = np.zeros(sub.shape[1:], np.uint8)
    for idx in (range(17, 22), range(22, 27)):
        line = lm[list(idx)] - origin
        inner_first = idx.start == 22
        n = int(60 + 160 * look.brow_density)
        s = rng.uniform(0, 1, n) ** (0.8 if not inner_first else 1.25)
        s = s if not inner_first else 1 - s
        seg = np.linspace(0, 1, len(line))
        px = np.interp(s, seg, line[:, 0])
        py = np.interp(s, seg, line[:, 1])
        taper = np.interp(s, seg, [0.6, 0.9, 1.0, 1.0, 0.8] if not inner_first else [0.8, 1.0, 1.0, 0.9, 0.6])
        py = py + rng.uniform(-1, 1, n) * 2.6 * look.brow_width * taper / TEXEL_MM
        direction = np.sign(line[-1, 0] - line[0, 0])
        # Hairs point outward along the brow and rise at its inner end.
        ang = np.where((s < 0.25) if not inner_first else (s > 0.75), -1.2, -0.2) + rng.normal(0, 0.2, n)
        length = rng.uniform(2.5, 5.0, n) / TEXEL_MM
        x1, y1 = px + np.cos(ang) * length * direction, py + np.sin(ang) * length
        for a, b, c, d in zip((px * 16).astype(int), (py * 16).astype(int), (x1 * 16).astype(int),
                              (y1 * 16).astype(int)):
            cv2.line(fine, (a, b), (c, d), 255, 1, cv2.LINE_AA, 4)
    m = cv2.GaussianBlur(fine.astype(np.float32) / 255.0, (0, 0), 0.5)
    _blend(sub, look.brow, np.clip(m * 1.3, 0, 0.95))


def _paint_mouth(f: _Face, look: Look):
    lm = f.lm()
    box, origin = _box(lm[48:60], 6, f.shape)
    sub, spec = _sub(f.img, box), f.spec[box]
    u, y = f.u[box], f.y[box]
    shape = sub.shape[1:]
    lips = _poly_mask([lm[48:60] - origin], 0.5, shape)
    cavity = _poly_mask([lm[60:68] - origin], 0.0, shape)
    lip_colour = look.lip
    if look.lipstick > 0:
        lip_colour = lip_colour + look.lipstick * (look.lipstick_colour - lip_colour)
    lines = 1.0 + 0.03 * np.sin(u * 3.1)  # vertical lip lines
    upper = (y > -62.8).astype(np.float32)
    a = np.clip(lips - cavity, 0, 1)
    _blend(sub, _planes(lip_colour) * (lines * (1.0 - 0.12 * upper)), a)
    spec += a * (0.3 + 0.5 * look.lipstick)
    spec *= 1 - cavity  # the opening itself is not drawn (scene.mouth_meshes)


def _paint_beard(f: _Face, look: Look):
    if look.beard == "none":
        return
    u, y = f.u, f.y
    au = np.abs(u)
    if look.beard in ("stubble", "full"):
        top = np.interp(au, [0, 30, 55, 75], [-48, -42, -20, 5] if look.beard == "stubble" else [-47, -40, -15, 8])
        region = (au < 75) & (y < top)
    elif look.beard == "moustache":
        region = (au < 24) & (y > -58) & (y < -47)
    else:  # goatee
        region = ((au < 24) & (y > -58) & (y < -47)) | ((au < 20) & (y < -70))
    region = region.astype(np.float32)
    region *= 1.0 - ((y < -56) & (y > -74) & (au < 22)).astype(np.float32) * 0.9  # not on the lips
    region = cv2.GaussianBlur(region, (0, 0), 3.0 / TEXEL_MM)
    fine, mid, strands = _noise_bank()
    if look.beard == "stubble":
        dots = np.clip(f.noise(fine) - 0.3, 0, 1)
        _blend(f.img, look.hair * 0.6, region * look.beard_density * (0.2 + 0.35 * dots))
    else:
        tex = np.clip(0.75 + 0.35 * f.noise(strands), 0.3, 1.6)
        alpha = np.clip(region * look.beard_density * (0.55 + 0.3 * f.noise(fine).clip(-1, 1)), 0, 0.9)
        _blend(f.img, _planes(look.hair) * tex, alpha)
        f.spec *= 1 - 0.6 * alpha


def _paint_scalp(img, spec, look, rng, strands):
    if look.hairstyle == "bald":
        return
    u, y = _grids()
    line = hairline_y(u[0], look)  # u is constant down each column
    jag = 1.5 * _low_noise(rng, 4.0)
    edge = np.clip((y - line - jag) / 3.0, 0, 1)
    rows = np.flatnonzero(edge.any(axis=1))
    if len(rows) == 0:
        return
    band = slice(0, rows.max() + 1)
    e = edge[band]
    tex = np.clip(0.8 + 0.3 * _shifted(strands, rng)[band], 0.3, 1.6)
    _blend(img[:, band], _planes(look.hair) * tex, e)
    spec[band] = spec[band] * (1 - e) + 0.7 * e
