"""Photometric augmentation for transfer from rendered faces to photographs.

Applied to the finished input crop (128 px, cheap), after the geometric warp, so the
labels are untouched by construction; random black borders zero pixels only. Each
operation has its own probability in the recipe's `data.photometric` section (0 = off):

  colour:    brightness, contrast, saturation and hue jitter
  grey:      greyscale
  noise:     ISO-like noise (luminance plus chroma, signal-dependent)
  blur:      one of median, Gaussian or motion blur
  jpeg:      re-encode at quality 50..90
  border:    a random black band along one edge (up to 20% of the side)
"""
from __future__ import annotations

import functools
from dataclasses import asdict, dataclass, fields

import cv2
import numpy as np
import simplejpeg

from ..errors import ConfigError
from ..fields import typed_fields
from .jpeg import decode_bgr


@dataclass(frozen=True)
class Photometric:
    """Probabilities of each operation (0 disables it)."""

    colour: float = 0.0
    grey: float = 0.0
    noise: float = 0.0
    blur: float = 0.0
    jpeg: float = 0.0
    border: float = 0.0

    def __post_init__(self):
        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0.0 <= v <= 1.0:
                raise ConfigError(f"data.photometric.{f.name}", f"must be a probability in [0, 1], got {v!r}")

    @classmethod
    def from_dict(cls, values) -> "Photometric":
        if values is None:
            return cls()
        return cls(**typed_fields(cls, values, "data.photometric"))

    @property
    def active(self) -> bool:
        return any(v > 0 for v in asdict(self).values())


# Uniform numbers each operation receives (it uses as many as it needs): every operation gets
# the same count whatever is enabled, so its draws never depend on the others.
_DRAWS = 8


def _between(u: float, lo: float, hi: float) -> float:
    return lo + (hi - lo) * float(u)


def _colour(img: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Brightness, contrast (about the mean), saturation (about the per-pixel grey) and
    white balance: all linear in the pixel, so one 3x4 colour matrix in one pass."""
    gain, offset = _between(u[0], 0.6, 1.4), _between(u[1], -30, 30)
    contrast, saturation = _between(u[2], 0.6, 1.4), _between(u[3], 0.5, 1.5)
    balance = 0.9 + 0.2 * u[4:7]
    mean = float(np.mean(cv2.mean(img)[:3]))
    # f -> gain*f + offset -> contrast about its mean -> saturation about grey -> balance.
    mix = gain * contrast * (saturation * np.eye(3) + (1.0 - saturation) / 3.0)
    const = offset + (1.0 - contrast) * gain * mean
    matrix = np.hstack([balance[:, None] * mix, (balance * const)[:, None]])
    out = cv2.transform(img, matrix)
    shift = int(np.floor(_between(u[7], -8, 9)))
    if shift:
        hsv = cv2.cvtColor(out, cv2.COLOR_BGR2HSV)
        hsv[..., 0] = ((np.arange(256) + shift) % 180).astype(np.uint8)[hsv[..., 0]]
        out = cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)
    return out


@functools.lru_cache(maxsize=1)
def _normal_bank() -> np.ndarray:
    """A fixed table of standard normal numbers; noise fields are random windows of it
    (drawing 65k fresh normals per crop costs more than all other operations together)."""
    bank = np.random.default_rng(20181203).standard_normal(1 << 20, dtype=np.float32)
    bank.setflags(write=False)
    return bank


def _noise(img: np.ndarray, u: np.ndarray) -> np.ndarray:
    """ISO-like noise: luminance plus weaker chroma noise, stronger in bright pixels."""
    h, w = img.shape[:2]
    bank = _normal_bank()
    sigma = _between(u[0], 2, 12)
    chroma_sigma = sigma * _between(u[1], 0.2, 0.8)
    if 4 * h * w <= bank.size:
        start = (u[2:4] * (bank.size - 4 * h * w)).astype(np.int64)
        lum = bank[start[0]:start[0] + h * w].reshape(h, w, 1)
        chroma = bank[start[1]:start[1] + 3 * h * w].reshape(h, w, 3)
    else:  # a crop larger than the table: fresh numbers
        fresh = np.random.default_rng(int(u[2] * 2**53))
        lum = fresh.standard_normal((h, w, 1), dtype=np.float32)
        chroma = fresh.standard_normal((h, w, 3), dtype=np.float32)
    f = img.astype(np.float32)
    shot = np.sqrt(f * np.float32(1 / 255.0) + np.float32(0.05))
    noise = lum * np.float32(sigma) + chroma * np.float32(chroma_sigma)
    f += noise * shot
    return np.clip(f, 0, 255, out=f).astype(np.uint8)


def _blur(img: np.ndarray, u: np.ndarray) -> np.ndarray:
    kind = int(u[0] * 3)
    if kind == 0:
        return cv2.medianBlur(img, 3)
    if kind == 1:
        return cv2.GaussianBlur(img, (0, 0), _between(u[1], 0.4, 1.5))
    k = 3 + int(u[1] * 5)
    kernel = np.zeros((k, k), np.float32)
    kernel[k // 2] = 1.0
    rot = cv2.getRotationMatrix2D(((k - 1) / 2, (k - 1) / 2), _between(u[2], 0, 180), 1.0)
    kernel = cv2.warpAffine(kernel, rot, (k, k))
    return cv2.filter2D(img, -1, kernel / max(float(kernel.sum()), 1e-6))


def _jpeg(img: np.ndarray, u: np.ndarray) -> np.ndarray:
    quality = 50 + int(u[0] * 41)
    enc = simplejpeg.encode_jpeg(np.ascontiguousarray(img), quality=quality, colorspace="BGR")
    return decode_bgr(enc)


def _border(img: np.ndarray, u: np.ndarray) -> np.ndarray:
    out = img.copy()
    n = max(1, int(_between(u[0], 0.03, 0.2) * img.shape[0]))
    side = int(u[1] * 4)
    if side == 0:
        out[:n] = 0
    elif side == 1:
        out[-n:] = 0
    elif side == 2:
        out[:, :n] = 0
    else:
        out[:, -n:] = 0
    return out


def augment(img: np.ndarray, ops: Photometric, rng: np.random.Generator) -> np.ndarray:
    """The crop (uint8 BGR) after the operations `rng` draws. One fixed-size draw covers
    every operation whatever is enabled, so turning one operation off leaves the others'
    draws as they were."""
    draws = rng.random((6, 1 + _DRAWS))
    steps = ((ops.colour, _colour), (ops.grey, None), (ops.blur, _blur), (ops.noise, _noise),
             (ops.jpeg, _jpeg), (ops.border, _border))
    for (p, fn), d in zip(steps, draws):
        if d[0] >= p:
            continue
        if fn is None:
            img = cv2.cvtColor(cv2.cvtColor(img, cv2.COLOR_BGR2GRAY), cv2.COLOR_GRAY2BGR)
        else:
            img = fn(img, d[1:])
    return img
