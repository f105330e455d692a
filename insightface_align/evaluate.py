"""Predict landmarks on a packed test set and score them (shared by training and test_nme)."""
from __future__ import annotations

import numpy as np

from .data.config import DataConfig
from .data.flip import FLIP_PERMUTATION
from .data.iterator import AlignIter
from .metrics import decode, per_image_nme


def flip_average(model, images: np.ndarray, heat: np.ndarray) -> np.ndarray:
    """Test-time flip: mean of H(I) and the un-mirrored, channel-permuted H(mirror(I))."""
    mirrored = model(images[..., ::-1].copy())
    return (heat + mirrored[:, FLIP_PERMUTATION, :, ::-1]) / 2


def predict_rec(model, rec_path: str, data_cfg: DataConfig, decoder: str = "subpixel", flip_tta: bool = False,
                progress=None) -> dict:
    """Points in the input frame for every record of a packed test set.

    model: callable (N, 3, in, in) RGB 0..255 -> heatmaps (e.g. model.HeatmapModel).
    Returns pred, gt (N, 68, 2), confidence (N, 68) heatmap peaks, record_id (N,), and
    `widened`, how many crops needed the release's widen-and-retry.
    """
    preds, gts, peaks, ids = [], [], [], []
    with AlignIter(rec_path, data_cfg) as it:
        for batch in it:
            real = data_cfg.batch_size - batch.pad
            images = batch.data[0].asnumpy()[:real]
            heat = model(images)
            if flip_tta:
                heat = flip_average(model, images, heat)
            pts, peak = decode(heat, decoder, data_cfg.input_size)
            preds.append(pts)
            peaks.append(peak)
            gts.append(batch.points[:real, :, :2])
            ids.append(batch.record_id[:real])
            if progress is not None:
                progress.update(real)
        widened = it.widened
    if not preds:
        empty = np.zeros((0, 68, 2))
        return {"pred": empty, "gt": empty, "confidence": np.zeros((0, 68)), "record_id": np.zeros(0, int),
                "widened": 0}
    return {"pred": np.concatenate(preds), "gt": np.concatenate(gts), "confidence": np.concatenate(peaks),
            "record_id": np.concatenate(ids), "widened": widened}


def nme_of_rec(model, rec_path: str, data_cfg: DataConfig, normaliser: str, decoder: str = "subpixel") -> tuple:
    """(mean NME, per-image NME) of a packed test set."""
    out = predict_rec(model, rec_path, data_cfg, decoder)
    errors = per_image_nme(out["pred"], out["gt"], normaliser)
    return float(errors.mean()) if len(errors) else float("nan"), errors
