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

from dataclasses import asdict, dataclass, fields

import cv2
import numpy as np

from ..errors import ConfigError
from ..fields import typed_fields


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


def _colour(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    f = img.astype(np.float32)
    f = f * rng.uniform(0.6, 1.4) + rng.uniform(-30, 30)  # brightness
    mean = f.mean()
    f = (f - mean) * rng.uniform(0.6, 1.4) + mean  # contrast
    grey = f.mean(axis=2, keepdims=True)
    f = grey + (f - grey) * rng.uniform(0.5, 1.5)  # saturation
    f *= rng.uniform(0.9, 1.1, 3).astype(np.float32)  # white balance
    out = np.clip(f, 0, 255).astype(np.uint8)
    shift = int(rng.integers(-8, 9))
    if shift:
        hsv = cv2.cvtColor(out, cv2.COLOR_BGR2HSV)
        hsv[..., 0] = ((hsv[..., 0].astype(np.int16) + shift) % 180).astype(np.uint8)
        out = cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)
    return out


def _noise(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    f = img.astype(np.float32)
    sigma = rng.uniform(2, 12)
    lum = rng.standard_normal(img.shape[:2], dtype=np.float32)[..., None] * sigma
    chroma = rng.standard_normal(img.shape, dtype=np.float32) * (sigma * rng.uniform(0.2, 0.8))
    shot = np.sqrt(f / 255.0 + 0.05)
    return np.clip(f + (lum + chroma) * shot, 0, 255).astype(np.uint8)


def _blur(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    kind = rng.integers(3)
    if kind == 0:
        return cv2.medianBlur(img, 3)
    if kind == 1:
        return cv2.GaussianBlur(img, (0, 0), rng.uniform(0.4, 1.5))
    k = int(rng.integers(3, 8))
    kernel = np.zeros((k, k), np.float32)
    kernel[k // 2] = 1.0
    rot = cv2.getRotationMatrix2D(((k - 1) / 2, (k - 1) / 2), float(rng.uniform(0, 180)), 1.0)
    kernel = cv2.warpAffine(kernel, rot, (k, k))
    return cv2.filter2D(img, -1, kernel / max(float(kernel.sum()), 1e-6))


def _jpeg(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    ok, enc = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(50, 91))])
    return cv2.imdecode(enc, cv2.IMREAD_COLOR) if ok else img


def _border(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    out = img.copy()
    n = max(1, int(rng.uniform(0.03, 0.2) * img.shape[0]))
    side = rng.integers(4)
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
    """The crop (uint8 BGR) after the operations `rng` draws; the draws happen in a fixed
    order whatever is enabled, so turning one operation off leaves the others' draws as
    they were."""
    draws = rng.random(6)
    seeds = rng.integers(2**31, size=6)
    steps = ((ops.colour, _colour), (ops.grey, None), (ops.blur, _blur), (ops.noise, _noise),
             (ops.jpeg, _jpeg), (ops.border, _border))
    for (p, fn), d, s in zip(steps, draws, seeds):
        if d >= p:
            continue
        if fn is None:
            img = cv2.cvtColor(cv2.cvtColor(img, cv2.COLOR_BGR2GRAY), cv2.COLOR_GRAY2BGR)
        else:
            img = fn(img, np.random.default_rng(int(s)))
    return img
