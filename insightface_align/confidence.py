"""Per-point confidence in [0, 1]: how much of a heatmap's probability sits at its peak.

A heatmap is read as a distribution over the map in the way its loss trained it: spatial
softmax for `softmax_ce` (the release's loss); for `sigmoid_ce` (the paper's) the
per-pixel sigmoids and for `mse` the raw values, each above the map's median (its
background level), renormalised. Confidence is
the mass inside a (2 r + 1)^2 window around the peak. A sharp single peak gives values
near 1; a flat, smeared or multi-modal map (an occluded or ambiguous point) gives values
near 0, whatever the raw peak height.
"""
from __future__ import annotations

import numpy as np

HEATMAP_KINDS = ("softmax_ce", "sigmoid_ce", "mse")


def heatmap_distribution(heatmaps: np.ndarray, kind: str) -> np.ndarray:
    """(N, K, H, W) heatmaps -> probabilities summing to 1 over each map."""
    if kind not in HEATMAP_KINDS:
        raise ValueError(f"unknown heatmap kind {kind!r}; choose one of {', '.join(HEATMAP_KINDS)}")
    hm = np.asarray(heatmaps, dtype=np.float64)
    n, k = hm.shape[:2]
    flat = hm.reshape(n, k, -1)
    if kind == "softmax_ce":
        e = np.exp(flat - flat.max(axis=2, keepdims=True))
    else:
        v = 1.0 / (1.0 + np.exp(-np.clip(flat, -60, 60))) if kind == "sigmoid_ce" else flat
        e = np.clip(v - np.median(v, axis=2, keepdims=True), 0.0, None)  # above the background
    total = e.sum(axis=2, keepdims=True)
    uniform = np.full_like(e, 1.0 / e.shape[2])
    p = np.where(total > 0, e / np.where(total > 0, total, 1.0), uniform)
    return p.reshape(hm.shape)


def point_confidence(heatmaps: np.ndarray, kind: str = "softmax_ce", radius: int = 2) -> np.ndarray:
    """(N, K) probability mass within `radius` heatmap pixels (a square) of each peak."""
    p = heatmap_distribution(heatmaps, kind)
    n, k, h, w = p.shape
    idx = p.reshape(n, k, -1).argmax(axis=2)
    y, x = np.divmod(idx, w)
    # Window sums from a 2D cumulative sum (inclusive bounds clipped to the map).
    c = np.zeros((n, k, h + 1, w + 1))
    c[:, :, 1:, 1:] = p.cumsum(axis=2).cumsum(axis=3)
    y0, y1 = np.clip(y - radius, 0, h), np.clip(y + radius + 1, 0, h)
    x0, x1 = np.clip(x - radius, 0, w), np.clip(x + radius + 1, 0, w)
    nn, kk = np.meshgrid(np.arange(n), np.arange(k), indexing="ij")
    mass = c[nn, kk, y1, x1] - c[nn, kk, y0, x1] - c[nn, kk, y1, x0] + c[nn, kk, y0, x0]
    return np.clip(mass, 0.0, 1.0)
