"""Identity and expression: smooth displacement fields over the template head.

Identity is ten PCA-like modes (coefficients ~ N(0, 1), clipped to +/-2.5): head width,
lower-face length, jaw width, nose size, eye spacing, mouth width, chin protrusion, face
flatness, brow height, overall scale. Expression is five coefficients in [0, 1]: mouth
open (jaw rotation), smile, brows raised, right eye closing, left eye closing. Every field
is a function of the rest position, so landmarks (mesh vertices) move with the surface.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .template import TemplateHead, front_weight

N_IDENTITY = 10
EXPRESSIONS = ("mouth_open", "smile", "brows_up", "close_right", "close_left")


@dataclass(frozen=True)
class Morph:
    """Shape coefficients of one synthetic face."""

    identity: np.ndarray  # (N_IDENTITY,)
    expression: np.ndarray  # (len(EXPRESSIONS),), each in [0, 1]


def sample_morph(rng: np.random.Generator) -> Morph:
    """Random identity and expression (many faces neutral, some strongly expressive)."""
    identity = np.clip(rng.normal(size=N_IDENTITY), -2.5, 2.5)
    expr = np.zeros(len(EXPRESSIONS))
    if rng.random() < 0.45:
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
    return Morph(identity=identity, expression=expr)


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
    v *= 1 + 0.05 * a[9]  # overall scale
    return v
