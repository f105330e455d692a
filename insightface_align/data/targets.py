"""Heatmap and coordinate targets, vectorised over samples and landmarks.

Points are (x, y) in heatmap pixel-centre coordinates (heatmaps.py: pixel (i, j) has
its centre at x=j, y=i). A point whose nearest pixel lies outside the heatmap gets an
all-zero map.
"""
from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import as_strided

from ..heatmaps import inside, nearest_pixel

__all__ = ["TAIL", "inside", "render_heatmaps"]

# Gaussian values below this (beyond ~4.3 sigma) are left at 0 so only a patch is written.
TAIL = 1e-4


def render_heatmaps(points: np.ndarray, size: int, sigma: float, round_centre: bool = False,
                    out: np.ndarray | None = None) -> np.ndarray:
    """Gaussian targets (N, K, size, size) float32 for points (N, K, 2).

    sigma > 0: exp(-d^2 / (2 sigma^2)) around the point (its nearest pixel when
    round_centre), the outer product of two 1-D profiles, values below TAIL left 0;
    sigma == 0: a single 1.0 at the nearest pixel. The release's targets are these maps
    for points already truncated by heatmaps.target_points (the `release` convention).
    """
    pts = np.asarray(points, dtype=np.float32)
    n, k = pts.shape[:2]
    if out is None:
        out = np.empty((n, k, size, size), dtype=np.float32)
    ok = inside(pts, size)
    if sigma == 0:
        out.fill(0.0)
        nn, kk = np.nonzero(ok)
        r = nearest_pixel(pts[nn, kk]).astype(np.int64)
        out[nn, kk, r[:, 1], r[:, 0]] = 1.0
        return out
    centre = nearest_pixel(pts) if round_centre else pts
    radius = int(np.ceil(sigma * np.sqrt(-2.0 * np.log(TAIL))))
    if 2 * radius + 1 <= size and out.flags.c_contiguous:
        return _render_patches(centre, ok, size, sigma, radius, out)
    grid = np.arange(size, dtype=np.float32)
    d = grid[None, None, None, :] - centre[..., None]          # (N, K, 2, size)
    prof = np.exp(d * d * np.float32(-0.5 / (sigma * sigma)))
    prof[..., 0, :] *= ok[..., None]                            # zero map when outside
    np.multiply(prof[:, :, 1, :, None], prof[:, :, 0, None, :], out=out)
    return out


def _render_patches(centre, ok, size, sigma, radius, out):
    """Zero the maps, then write a (2r+1)^2 Gaussian patch per visible point.

    The patch is shifted inwards at the borders (never clipped), so every pixel within
    `radius` of the point gets its exact value. The patches are written through one
    strided view (map, top, left) -> (2r+1, 2r+1) window of `out`, one indexed
    assignment for the batch (several times faster than a flat per-pixel scatter).
    """
    n, k = centre.shape[:2]
    w = 2 * radius + 1
    out.fill(0.0)
    nn, kk = np.nonzero(ok)
    c = centre[nn, kk]                                                   # (M, 2)
    start = np.clip(nearest_pixel(c).astype(np.int64) - radius, 0, size - w)
    d = (start[:, :, None] + np.arange(w) - c[:, :, None]).astype(np.float32)   # (M, 2, w)
    prof = np.exp(d * d * np.float32(-0.5 / (sigma * sigma)))
    vals = prof[:, 1, :, None] * prof[:, 0, None, :]                     # (M, w, w)
    maps = out.reshape(n * k, size, size)
    s_map, s_row, s_col = maps.strides
    windows = as_strided(maps, (n * k, size - w + 1, size - w + 1, w, w),
                         (s_map, s_row, s_col, s_row, s_col), writeable=True)
    windows[nn * k + kk, start[:, 1], start[:, 0]] = vals
    return out
