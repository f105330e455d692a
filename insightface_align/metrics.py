"""The paper's error metrics (NME, failure rate, AUC, CED) and the mean-shape baseline.

Points are (x, y) pixel-centre coordinates (heatmaps.py has the convention and the
decoders, re-exported here).
"""
from __future__ import annotations

import numpy as np

from .heatmaps import DECODERS, DEFAULT_DECODER, decode, decode_heatmaps, decode_release, heatmap_to_input

__all__ = ["DECODERS", "DEFAULT_DECODER", "NORMALISERS", "RELEASE_NORMALISERS", "auc", "ced", "decode", "decode_heatmaps", "decode_release",
           "default_normaliser", "failure_rate", "heatmap_to_input", "mean_shape", "mean_shape_in_box", "normaliser",
           "per_image_nme", "release_nme", "summarise"]

NORMALISERS = ("eye_centre", "outer_corners", "pupils", "box_diagonal", "box_sqrt")
# Default normaliser by test-set name (docs/evaluation.md), matched case-insensitively by prefix.
DEFAULT_NORMALISER = {"ibug": "eye_centre", "cofw": "eye_centre", "300w": "outer_corners",
                      "menpo": "box_diagonal", "aflw2000": "box_sqrt"}


def default_normaliser(test_set: str) -> str:
    key = test_set.lower().replace("-", "").replace("_", "")
    for prefix, norm in DEFAULT_NORMALISER.items():
        if key.startswith(prefix.replace("-", "")):
            return norm
    return "outer_corners"


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


# The release's test_rec_nme.py: its normaliser per landmark type (NMEMetric.cal_nme).
RELEASE_NORMALISERS = {"2d": "eye_centre", "3d": "box_diagonal"}


def release_nme(pred: np.ndarray, gt_pixels: np.ndarray, landmark_type: str = "2d") -> np.ndarray:
    """The release's per-image NME: `pred` (the release decoder's integer input pixels)
    against `gt_pixels` (the ground truth truncated to input pixels), over the normaliser
    of `gt_pixels` for the landmark type."""
    return per_image_nme(pred, gt_pixels, RELEASE_NORMALISERS[landmark_type])


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
    # Lazy: importing the synthetic package loads the whole face renderer (scipy, OpenCV).
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
