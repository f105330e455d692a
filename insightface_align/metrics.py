"""Heatmap decoding and the paper's error metrics (NME, failure rate, AUC, CED).

Coordinates are (x, y) pixel-centre. `heatmap_to_input` converts heatmap pixels to
input pixels for an input/heatmap ratio r: x_in = (x_hm + 0.5) * r - 0.5.
"""
from __future__ import annotations

import numpy as np

NORMALISERS = ("eye_centre", "outer_corners", "pupils", "box_diagonal", "box_sqrt")
# Default normaliser by test-set name (DESIGN.md "Metrics"), matched case-insensitively by prefix.
DEFAULT_NORMALISER = {"ibug": "eye_centre", "cofw": "eye_centre", "300w": "outer_corners",
                      "menpo": "box_diagonal", "aflw2000": "box_sqrt"}


def default_normaliser(test_set: str) -> str:
    key = test_set.lower().replace("-", "").replace("_", "")
    for prefix, norm in DEFAULT_NORMALISER.items():
        if key.startswith(prefix.replace("-", "")):
            return norm
    return "outer_corners"


def decode_heatmaps(heatmaps: np.ndarray, method: str = "subpixel") -> tuple:
    """(N, K, H, W) -> (points (N, K, 2) in heatmap pixels, peak values (N, K)).

    argmax: the peak pixel. subpixel: the peak moved a quarter pixel toward the higher
    neighbour on each axis (the classic hourglass refinement).
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


def heatmap_to_input(points: np.ndarray, ratio: float) -> np.ndarray:
    return (np.asarray(points, dtype=np.float64) + 0.5) * ratio - 0.5


DECODERS = ("release", "argmax", "subpixel", "centroid")
# Measured on the demo model (synthetic 2D test set, README): centroid 9.97% < release 10.05% <
# subpixel 10.18% < argmax 10.48% NME, so the local centroid is the default everywhere.
DEFAULT_DECODER = "centroid"


def decode_release(heatmaps: np.ndarray, input_size: int) -> tuple:
    """The release's decoder: each heatmap resized to the input size (bilinear), then argmax."""
    import cv2

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


def decode(heatmaps: np.ndarray, method: str, input_size: int) -> tuple:
    """Heatmaps -> (points in the input frame (N, K, 2), peak values (N, K)) by a named decoder."""
    if method == "release":
        return decode_release(heatmaps, input_size)
    if method not in DECODERS:
        raise ValueError(f"unknown decoder {method!r}; choose one of {', '.join(DECODERS)}")
    pts, peaks = decode_heatmaps(heatmaps, method)
    return heatmap_to_input(pts, input_size / heatmaps.shape[-1]), peaks


def normaliser(gt: np.ndarray, kind: str) -> np.ndarray:
    """Per-image normalising distance (N,) for ground truth (N, 68, 2+)."""
    g = np.asarray(gt, dtype=np.float64)[..., :2]
    if kind == "eye_centre":  # the release: each centre is the midpoint of the eye's corners
        left = (g[:, 36] + g[:, 39]) / 2
        right = (g[:, 42] + g[:, 45]) / 2
        return np.linalg.norm(left - right, axis=1)
    if kind == "outer_corners":
        return np.linalg.norm(g[:, 36] - g[:, 45], axis=1)
    if kind == "pupils":
        return np.linalg.norm(g[:, 36:42].mean(axis=1) - g[:, 42:48].mean(axis=1), axis=1)
    lo, hi = g.min(axis=1), g.max(axis=1)
    w, h = (hi - lo)[:, 0], (hi - lo)[:, 1]
    if kind == "box_diagonal":
        return np.sqrt(w * w + h * h)
    if kind == "box_sqrt":
        return np.sqrt(w * h)
    raise ValueError(f"unknown normaliser {kind!r}; choose one of {', '.join(NORMALISERS)}")


def per_image_nme(pred: np.ndarray, gt: np.ndarray, kind: str) -> np.ndarray:
    """Mean point-to-point error divided by the normaliser, one value per image."""
    p = np.asarray(pred, dtype=np.float64)[..., :2]
    g = np.asarray(gt, dtype=np.float64)[..., :2]
    err = np.linalg.norm(p - g, axis=2).mean(axis=1)
    return err / np.maximum(normaliser(g, kind), 1e-12)


def ced(errors: np.ndarray, threshold: float, steps: int = 1000) -> tuple:
    """Cumulative error distribution: (x grid in [0, threshold], fraction of images <= x)."""
    xs = np.linspace(0.0, threshold, steps + 1)
    e = np.sort(np.asarray(errors, dtype=np.float64))
    return xs, np.searchsorted(e, xs, side="right") / max(len(e), 1)


def auc(errors: np.ndarray, threshold: float) -> float:
    """Area under the CED curve up to `threshold`, normalised to [0, 1] (exact, piecewise constant)."""
    e = np.sort(np.asarray(errors, dtype=np.float64))
    n = len(e)
    if n == 0:
        return 0.0
    inside = e[e < threshold]
    # Each image contributes the length of [e_i, threshold] over which it is counted.
    return float(np.sum(threshold - inside) / (n * threshold))


def failure_rate(errors: np.ndarray, threshold: float) -> float:
    e = np.asarray(errors, dtype=np.float64)
    return float(np.mean(e > threshold)) if len(e) else 0.0


def summarise(errors: np.ndarray, threshold: float = 0.10) -> dict:
    e = np.asarray(errors, dtype=np.float64)
    return {"nme": float(e.mean()) if len(e) else float("nan"), "failure_rate": failure_rate(e, threshold),
            "auc": auc(e, threshold), "threshold": threshold, "count": int(len(e))}


def mean_shape() -> np.ndarray:
    """(68, 2) the average frontal face shape, normalised to its tight box [0, 1]^2 (y down).

    It is the template head's frontal landmark layout (synthetic/template.py), which was
    drawn from average human proportions."""
    from .synthetic.template import landmark_xy

    xy = landmark_xy().copy()
    xy[:, 1] = -xy[:, 1]
    lo, hi = xy.min(axis=0), xy.max(axis=0)
    return (xy - lo) / (hi - lo)


def mean_shape_in_box(gt: np.ndarray) -> np.ndarray:
    """The baseline prediction: the mean shape stretched into each face's tight landmark
    box. A model must beat it to have learnt anything beyond the box (N, 68, 2)."""
    gt = np.asarray(gt, dtype=np.float64)[..., :2]
    lo, hi = gt.min(axis=1, keepdims=True), gt.max(axis=1, keepdims=True)
    return lo + mean_shape()[None] * (hi - lo)
