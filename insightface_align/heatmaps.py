"""The heatmap codec: where a point sits on a heatmap, and how heatmaps become points.

One convention everywhere (targets, losses, decoders, the aligner): coordinates are
(x, y) in pixel-centre units, 0-based. Pixel (i, j) is the square [j - 0.5, j + 0.5) x
[i - 0.5, i + 0.5) with its centre at x = j, y = i; its nearest-pixel rounding is
floor(p + 0.5). A heatmap covers the same window as the network input, `stride` input
pixels per heatmap pixel (input_size / heatmap_size, 2 or 4), so

    x_hm = (x_in + 0.5) / stride - 0.5        x_in = (x_hm + 0.5) * stride - 0.5

The data pipeline renders targets with it (data/targets.py, data/augment.py), the
losses' symbolic renderer takes its bounds from it, and the decoders and the test-time
flip below invert it. Inference only needs numpy and OpenCV here.

That is the `centred` convention (geometry.py). Under the `release` convention a
target sits where the original release put it, on pixel int(x_in / stride) (truncated),
a mirrored sample's target is the mirror of its unmirrored one (the release flipped its
target maps), and decoding compensates the truncation by returning the middle of the
input span that truncates onto the decoded position:

    x_in = (x_hm + 0.5) * stride

so a model trained on release targets is decoded without the half-pixel bias.
"""
from __future__ import annotations

import cv2
import numpy as np

from .data.flip import FLIP_PERMUTATION
from .geometry import DEFAULT_CONVENTION, check_convention

HALF_PIXEL = 0.5


def stride(input_size: int, heatmap_size: int) -> float:
    """Input pixels per heatmap pixel."""
    return input_size / heatmap_size


def input_to_heatmap_matrix(input_size: int, heatmap_size: int, convention: str = DEFAULT_CONVENTION) -> np.ndarray:
    """The 2x3 affine map input coordinates -> heatmap ones (a pure scaling under `release`)."""
    r = heatmap_size / float(input_size)
    off = 0.0 if check_convention(convention) == "release" else HALF_PIXEL * r - HALF_PIXEL
    return np.array([[r, 0.0, off], [0.0, r, off]])


def heatmap_to_input(points: np.ndarray, ratio: float, convention: str = DEFAULT_CONVENTION) -> np.ndarray:
    """Heatmap-pixel points -> input-pixel points; ratio is the stride (input / heatmap)."""
    shift = 0.0 if check_convention(convention) == "release" else HALF_PIXEL
    return (np.asarray(points, dtype=np.float64) + HALF_PIXEL) * ratio - shift


def target_points(points: np.ndarray, input_size: int, heatmap_size: int, convention: str = DEFAULT_CONVENTION,
                  flipped: np.ndarray | None = None) -> np.ndarray:
    """(N, K, 2) input-frame points -> the heatmap points their targets are rendered at.

    centred: each point's exact image. release: int(x * heatmap / input) as the release
    truncated (floor, so points left of the crop stay outside); for rows marked in
    `flipped` (already mirrored and relabelled) the mirror of the unmirrored row's target.
    """
    p = np.asarray(points, dtype=np.float64)
    m = input_to_heatmap_matrix(input_size, heatmap_size, convention)
    if convention != "release":
        return p @ m[:, :2].T + m[:, 2]
    out = np.floor(p * m[0, 0])
    rows = np.zeros(len(p), bool) if flipped is None else np.asarray(flipped, bool)
    if rows.any():
        unmirrored = p[rows][:, FLIP_PERMUTATION]
        unmirrored[..., 0] = input_size - 1.0 - unmirrored[..., 0]
        t = np.floor(unmirrored * m[0, 0])
        t[..., 0] = heatmap_size - 1.0 - t[..., 0]
        out[rows] = t[:, FLIP_PERMUTATION]
    return out


def inside_crop(points: np.ndarray, size: int, convention: str = DEFAULT_CONVENTION) -> np.ndarray:
    """(..., K) bool: the point lies on a size x size crop (its nearest pixel does, under
    `centred`; 0 <= x, y < size, the release's test, under `release`)."""
    if check_convention(convention) == "release":
        p = np.asarray(points)
        return np.all((p >= 0) & (p < size), axis=-1)
    return inside(points, size)


def nearest_pixel(points: np.ndarray) -> np.ndarray:
    """The centre of the pixel each point falls in (same dtype, still float)."""
    return np.floor(points + HALF_PIXEL)


def pixel_bounds(size: int) -> tuple:
    """[low, high): the points whose nearest pixel lies in a size-pixel row."""
    return -HALF_PIXEL, size - HALF_PIXEL


def inside(points: np.ndarray, size: int) -> np.ndarray:
    """(..., K) bool: the point's (..., K, 2) nearest pixel lies in a size x size map."""
    p = np.asarray(points)
    low, high = pixel_bounds(size)
    return np.all((p >= low) & (p < high), axis=-1)


# -- decoding ------------------------------------------------------------------------------

DECODERS = ("release", "argmax", "subpixel", "centroid")
# The local centroid is the default everywhere; `insightface-align demo` writes every decoder's
# NME side by side in its report.md, so the choice can be checked on any model.
DEFAULT_DECODER = "centroid"


def decode_heatmaps(heatmaps: np.ndarray, method: str = "subpixel") -> tuple:
    """(N, K, H, W) -> (points (N, K, 2) in heatmap pixels, peak values (N, K)).

    argmax: the peak pixel. subpixel: the peak moved a quarter pixel toward the higher
    neighbour on each axis (the classic hourglass refinement). centroid: the centre of
    mass of a window around the peak.
    """
    hm = np.asarray(heatmaps, dtype=np.float32)
    n, k, h, w = hm.shape
    flat = hm.reshape(n, k, -1)
    idx = flat.argmax(axis=2)
    peaks = np.take_along_axis(flat, idx[..., None], axis=2)[..., 0]
    y, x = np.divmod(idx, w)
    pts = np.stack([x, y], axis=-1).astype(np.float32)
    if method == "argmax":
        return pts, peaks
    if method == "centroid":
        return _local_centroid(hm, x, y), peaks
    if method != "subpixel":
        raise ValueError(f"unknown decoder {method!r}; choose argmax, subpixel or centroid")
    nn, kk = np.meshgrid(np.arange(n), np.arange(k), indexing="ij")
    xl, xr = np.clip(x - 1, 0, w - 1), np.clip(x + 1, 0, w - 1)
    yu, yd = np.clip(y - 1, 0, h - 1), np.clip(y + 1, 0, h - 1)
    dx = hm[nn, kk, y, xr] - hm[nn, kk, y, xl]
    dy = hm[nn, kk, yd, x] - hm[nn, kk, yu, x]
    pts[..., 0] += 0.25 * np.sign(dx) * ((x > 0) & (x < w - 1))
    pts[..., 1] += 0.25 * np.sign(dy) * ((y > 0) & (y < h - 1))
    return pts, peaks


def _local_centroid(hm: np.ndarray, x: np.ndarray, y: np.ndarray, radius: int = 2) -> np.ndarray:
    """Centre of mass of (value - window minimum) in a (2r+1)^2 window around each peak."""
    n, k, h, w = hm.shape
    offs = np.arange(-radius, radius + 1)
    xs = np.clip(x[..., None] + offs, 0, w - 1)                      # (N, K, 2r+1)
    ys = np.clip(y[..., None] + offs, 0, h - 1)
    nn = np.arange(n)[:, None, None, None]
    kk = np.arange(k)[None, :, None, None]
    win = hm[nn, kk, ys[..., :, None], xs[..., None, :]]             # (N, K, 2r+1, 2r+1)
    win = win - win.min(axis=(2, 3), keepdims=True)
    total = np.maximum(win.sum(axis=(2, 3)), 1e-12)
    cx = (win.sum(axis=2) * xs).sum(axis=2) / total
    cy = (win.sum(axis=3) * ys).sum(axis=2) / total
    return np.stack([cx, cy], axis=-1).astype(np.float32)


def decode_release(heatmaps: np.ndarray, input_size: int) -> tuple:
    """The release's decoder: each heatmap resized to the input size (bilinear), then argmax."""
    hm = np.asarray(heatmaps, dtype=np.float32)
    n, k = hm.shape[:2]
    pts = np.zeros((n, k, 2), dtype=np.float64)
    peaks = hm.reshape(n, k, -1).max(axis=2)
    for i in range(n):
        # cv2 resizes up to 512 channels at once: (H, W, K) in, (in, in, K) out.
        big = cv2.resize(hm[i].transpose(1, 2, 0), (input_size, input_size), interpolation=cv2.INTER_LINEAR)
        big = big.reshape(input_size * input_size, k)
        y, x = np.divmod(big.argmax(axis=0), input_size)
        pts[i, :, 0], pts[i, :, 1] = x, y
    return pts, peaks


def decode(heatmaps: np.ndarray, method: str, input_size: int, convention: str = DEFAULT_CONVENTION) -> tuple:
    """Heatmaps -> (points in the input frame (N, K, 2), peak values (N, K)) by a named decoder.

    `convention` is the one the model was trained under (heatmap_to_input). The `release`
    decoder is the release's own, integer input pixels, whatever the convention."""
    if method == "release":
        return decode_release(heatmaps, input_size)
    if method not in DECODERS:
        raise ValueError(f"unknown decoder {method!r}; choose one of {', '.join(DECODERS)}")
    pts, peaks = decode_heatmaps(heatmaps, method)
    return heatmap_to_input(pts, stride(input_size, heatmaps.shape[-1]), convention), peaks


def flip_average(model, images: np.ndarray, heat: np.ndarray) -> np.ndarray:
    """Test-time flip: mean of H(I) and the un-mirrored, channel-permuted H(mirror(I))."""
    mirrored = model(images[..., ::-1].copy())
    return (heat + mirrored[:, FLIP_PERMUTATION, :, ::-1]) / 2
