"""Predict landmarks on a packed test set and score them (shared by training and test_nme)."""
from __future__ import annotations

import numpy as np

from .data.config import DataConfig
from .data.flip import FLIP_PERMUTATION
from .data.iterator import AlignIter
from .metrics import DEFAULT_DECODER, decode, per_image_nme


def flip_average(model, images: np.ndarray, heat: np.ndarray) -> np.ndarray:
    """Test-time flip: mean of H(I) and the un-mirrored, channel-permuted H(mirror(I))."""
    mirrored = model(images[..., ::-1].copy())
    return (heat + mirrored[:, FLIP_PERMUTATION, :, ::-1]) / 2


def heatmap_batches(model, rec_path: str, data_cfg: DataConfig, flip_tta: bool = False, progress=None):
    """Yield (heatmaps, gt points in the input frame, record ids) per batch of a packed test set;
    the iterator's widen-and-retry count is returned when the generator finishes."""
    with AlignIter(rec_path, data_cfg) as it:
        for batch in it:
            real = data_cfg.batch_size - batch.pad
            images = batch.data[0].asnumpy()[:real]
            heat = model(images)
            if flip_tta:
                heat = flip_average(model, images, heat)
            if progress is not None:
                progress.update(real)
            yield heat, batch.points[:real, :, :2], batch.record_id[:real]
        return it.widened


def predict_rec(model, rec_path: str, data_cfg: DataConfig, decoder: str = DEFAULT_DECODER, flip_tta: bool = False,
                progress=None) -> dict:
    """Points in the input frame for every record of a packed test set.

    model: callable (N, 3, in, in) RGB 0..255 -> heatmaps (e.g. model.HeatmapModel).
    Returns pred, gt (N, 68, 2), confidence (N, 68) heatmap peaks, record_id (N,), and
    `widened`, how many crops needed the release's widen-and-retry.
    """
    out = predict_rec_decoders(model, rec_path, data_cfg, (decoder,), flip_tta, progress)
    out["pred"], out["confidence"] = out.pop("preds")[decoder], out.pop("confidences")[decoder]
    return out


def predict_rec_decoders(model, rec_path: str, data_cfg: DataConfig, decoders, flip_tta: bool = False,
                         progress=None) -> dict:
    """As predict_rec, running the network once and decoding with each of `decoders`."""
    preds = {d: [] for d in decoders}
    peaks = {d: [] for d in decoders}
    gts, ids = [], []
    batches = heatmap_batches(model, rec_path, data_cfg, flip_tta, progress)
    widened = 0
    while True:
        try:
            heat, gt, rid = next(batches)
        except StopIteration as stop:
            widened = stop.value or 0
            break
        for d in decoders:
            pts, peak = decode(heat, d, data_cfg.input_size)
            preds[d].append(pts)
            peaks[d].append(peak)
        gts.append(gt)
        ids.append(rid)
    cat = (lambda xs, shape: np.concatenate(xs) if xs else np.zeros(shape))
    return {"preds": {d: cat(preds[d], (0, 68, 2)) for d in decoders},
            "confidences": {d: cat(peaks[d], (0, 68)) for d in decoders},
            "gt": cat(gts, (0, 68, 2)), "record_id": cat(ids, (0,)).astype(np.int64), "widened": widened}


def nme_of_rec(model, rec_path: str, data_cfg: DataConfig, normaliser: str, decoder: str = DEFAULT_DECODER) -> tuple:
    """(mean NME, per-image NME) of a packed test set."""
    out = predict_rec(model, rec_path, data_cfg, decoder)
    errors = per_image_nme(out["pred"], out["gt"], normaliser)
    return float(errors.mean()) if len(errors) else float("nan"), errors
