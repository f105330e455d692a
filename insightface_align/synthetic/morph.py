"""Identity and expression: smooth displacement fields over the template head.

Identity is twenty PCA-like modes (coefficients ~ N(0, 1), clipped to +/-2.5): head width,
lower-face length, jaw width, nose size, eye spacing, mouth width, chin protrusion, face
flatness, brow height, overall scale, nose length, nose width, nose bridge, lip fullness,
eye opening, eye tilt, cheekbones, cheek fullness (age), forehead slope, asymmetry; plus
a few random smooth bumps (free-form detail no named mode covers). Expression is nine
coefficients in [0, 1]: mouth open (jaw rotation), smile, brows raised, right eye
closing, left eye closing, frown, pucker, mouth stretch, and jaw sideways (in [-1, 1],
its sign the direction). Every field is a function of the rest
position, so landmarks (mesh vertices) move with the surface.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .template import TemplateHead, front_weight

N_IDENTITY = 20
EXPRESSIONS = ("mouth_open", "smile", "brows_up", "close_right", "close_left", "frown",
               "pucker", "stretch", "jaw_side")
N_BUMPS = 6


@dataclass(frozen=True)
class Morph:
    """Shape coefficients of one synthetic face."""

    identity: np.ndarray  # (N_IDENTITY,)
    expression: np.ndarray  # (len(EXPRESSIONS),), each in [0, 1]; jaw_side in [-1, 1]
    # (K, 7) free-form bumps: centre (x, y) mm, widths (sx, sy) mm, displacement (dx, dy, dz) mm
    bumps: np.ndarray = field(default_factory=lambda: np.zeros((0, 7)))


def sample_morph(rng: np.random.Generator) -> Morph:
    """Random identity and expression (many faces neutral, some strongly expressive)."""
    identity = np.clip(rng.normal(size=N_IDENTITY), -2.5, 2.5)
    expr = np.zeros(len(EXPRESSIONS))
    if rng.random() < 0.3:
        expr[0] = rng.uniform(0.1, 1.0) ** 1.5
    if rng.random() < 0.4:
        expr[1] = rng.uniform(0.2, 1.0)
    if rng.random() < 0.3:
        expr[2] = rng.uniform(0.2, 1.0)
    r = rng.random()
    if r < 0.12:
        expr[3] = expr[4] = rng.uniform(0.3, 1.0)
    elif r < 0.18:
        expr[3 + int(rng.integers(2))] = rng.uniform(0.5, 1.0)
    if rng.random() < 0.15:
        expr[5] = rng.uniform(0.2, 1.0)
    if expr[1] == 0 and rng.random() < 0.12:
        expr[6] = rng.uniform(0.2, 1.0)
    if expr[6] == 0 and rng.random() < 0.15:
        expr[7] = rng.uniform(0.2, 1.0)
    if rng.random() < 0.12:
        expr[8] = rng.uniform(-1.0, 1.0)
    k = int(rng.integers(0, N_BUMPS + 1))
    bumps = np.stack([rng.uniform(-60, 60, k), rng.uniform(-100, 40, k), rng.uniform(8, 30, k),
                      rng.uniform(8, 30, k), rng.normal(0, 1.5, k), rng.normal(0, 1.5, k),
                      rng.normal(0, 2.5, k)], axis=1)
    return Morph(identity=identity, expression=expr, bumps=bumps)


def _smoothstep(e0, e1, x):
    u = np.clip((x - e0) / (e1 - e0), 0.0, 1.0)
    return u * u * (3 - 2 * u)


def _g(x, y, cx, cy, sx, sy):
    return np.exp(-0.5 * (((x - cx) / sx) ** 2 + ((y - cy) / sy) ** 2))


def apply_morph(head: TemplateHead, morph: Morph) -> np.ndarray:
    """Deformed copy (N, 3) of the template vertices for identity + expression."""
    v = head.vertices.copy()
    x0, y0 = v[:, 0].copy(), v[:, 1].copy()
    wf = front_weight(head.param[:, 0])
    a = morph.identity
    e = morph.expression

    # --- expression (applied in the rest frame so its anchors stay put) ---
    # Eyes closing: upper lid skin moves down toward the lower lid.
    for k, ex in ((3, -30.0), (4, 30.0)):
        if e[k] > 0:
            wx = np.clip(1 - ((x0 - ex) / 16.0) ** 2, 0, 1)
            wy = np.where(y0 > 1.0, np.exp(-0.5 * (np.maximum(y0 - 4.5, 0) / 5.0) ** 2), 0.0)
            v[:, 1] -= 8.3 * e[k] * wx * wy * wf
    # Brows raised.
    if e[2] > 0:
        w = np.exp(-0.5 * ((y0 - 18) / 8.0) ** 2) * np.clip((66 - np.abs(x0)) / 12, 0, 1)
        v[:, 1] += 6.0 * e[2] * w * wf
    # Smile: mouth corners up and out, cheeks up.
    if e[1] > 0:
        for sgn in (-1.0, 1.0):
            wc = _g(x0, y0, 24 * sgn, -64, 9, 8) * wf
            v[:, 0] += 3.5 * sgn * e[1] * wc
            v[:, 1] += 4.5 * e[1] * wc
            v[:, 2] -= 2.0 * e[1] * wc
            v[:, 1] += 2.0 * e[1] * _g(x0, y0, 40 * sgn, -42, 14, 12) * wf
    # Mouth open: the lower face rotates about a hinge near the ears.
    if e[0] > 0:
        spread = 1.5 + 0.35 * np.maximum(np.abs(x0) - 18.0, 0.0)
        w = _smoothstep(-64.0 + spread, -64.0 - spread, y0)
        ang = np.deg2rad(22.0 * e[0]) * w
        hy, hz = -5.0, -15.0
        dy, dz = v[:, 1] - hy, v[:, 2] - hz
        v[:, 1] = hy + dy * np.cos(ang) - dz * np.sin(ang)
        v[:, 2] = hz + dy * np.sin(ang) + dz * np.cos(ang)

    # Frown: brows down and together.
    if e[5] > 0:
        w = np.exp(-0.5 * ((y0 - 15) / 9.0) ** 2) * np.clip((60 - np.abs(x0)) / 20, 0, 1) * wf
        v[:, 1] -= 3.5 * e[5] * w
        v[:, 0] -= 2.5 * e[5] * np.sign(x0) * w * np.exp(-0.5 * (np.abs(x0) / 25.0) ** 2)
    # Pucker: lips forward and narrower.
    if e[6] > 0:
        w = _g(x0, y0, 0, -65, 20, 10) * wf
        v[:, 0] *= 1 - 0.25 * e[6] * w
        v[:, 2] += 6.0 * e[6] * w
    # Stretch: mouth corners pulled out and down (grimace).
    if e[7] > 0:
        for sgn in (-1.0, 1.0):
            wc = _g(x0, y0, 24 * sgn, -64, 10, 9) * wf
            v[:, 0] += 6.0 * sgn * e[7] * wc
            v[:, 1] -= 3.0 * e[7] * wc
    # Jaw sideways: the chin and lower lip shift left or right.
    if e[8] != 0:
        w = _smoothstep(-60.0, -80.0, y0) * wf
        v[:, 0] += 6.0 * e[8] * w

    # --- identity ---
    v[:, 2] += 0.25 * a[3] * head.nose  # nose size
    wx_eye = _g(np.abs(x0), y0, 30, 2, 18, 12) * wf
    v[:, 0] += 2.5 * a[4] * np.sign(x0) * wx_eye  # eye spacing
    wm = _g(x0, y0, 0, -65, 22, 10) * wf
    v[:, 0] *= 1 + 0.09 * a[5] * wm  # mouth width
    wc = _g(x0, y0, 0, -95, 22, 12) * wf
    v[:, 2] += 4.0 * a[6] * wc  # chin protrusion
    v[:, 1] -= 2.5 * a[6] * wc
    v[:, 2] += 5.0 * a[7] * wf * np.clip(1 - (x0 / 75.0) ** 2, 0, 1)  # face flatness
    v[:, 1] += 2.5 * a[8] * np.exp(-0.5 * ((y0 - 17) / 7.0) ** 2) * wf  # brow height
    v[:, 0] *= 1 + 0.06 * a[2] * _smoothstep(-30, -90, y0)  # jaw width
    v[:, 1] = np.where(v[:, 1] < 0, v[:, 1] * (1 + 0.05 * a[1]), v[:, 1])  # face length
    v[:, 0] *= 1 + 0.045 * a[0]  # head width
    v[:, 1] -= 2.5 * a[10] * _g(x0, y0, 0, -44, 16, 6) * wf  # nose length (tip and wings)
    v[:, 0] *= 1 + 0.12 * a[11] * _g(x0, y0, 0, -42, 16, 6) * wf  # nose width
    v[:, 2] += 2.0 * a[12] * _g(x0, y0, 0, -10, 6, 12) * wf  # nose bridge height
    for cy_lip in (-59.0, -70.0):  # lip fullness: both lips thicker, the mouth line fixed
        w = _g(x0, y0, 0, cy_lip, 20, 4) * wf
        v[:, 1] += 1.2 * a[13] * np.sign(cy_lip + 64) * w
        v[:, 2] += 1.5 * a[13] * w
    for sgn in (-1.0, 1.0):  # eye opening and canthal tilt
        w_up = _g(x0, y0, 30 * sgn, 4.5, 9, 2.5) * wf
        w_lo = _g(x0, y0, 30 * sgn, -4.0, 9, 2.5) * wf
        v[:, 1] += 1.0 * a[14] * (w_up - w_lo)
        v[:, 1] += 1.5 * a[15] * np.clip((np.abs(x0) - 30) / 15, -1, 1) * _g(x0, y0, 30 * sgn, 0, 14, 6) * wf
    v[:, 0] += 4.0 * a[16] * np.sign(x0) * _g(np.abs(x0), y0, 50, -18, 14, 12) * wf  # cheekbones
    cheek = _g(np.abs(x0), y0, 45, -50, 18, 16) * wf  # cheek fullness / sagging with age
    v[:, 0] += 3.0 * a[17] * np.sign(x0) * cheek
    v[:, 1] -= 1.5 * max(a[17], 0) * cheek
    v[:, 2] -= 0.06 * a[18] * np.maximum(y0 - 20, 0) * wf  # forehead slope
    v[:, 1] += 2.0 * a[19] * np.sign(x0) * np.clip(np.abs(x0) / 60, 0, 1) * wf  # asymmetry
    for bx, by, sx, sy, dx, dy, dz in morph.bumps:
        w = _g(x0, y0, bx, by, sx, sy) * wf
        v[:, 0] += dx * w
        v[:, 1] += dy * w
        v[:, 2] += dz * w
    v *= 1 + 0.05 * a[9]  # overall scale
    return v
