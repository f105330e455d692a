"""Predict landmarks on a packed test set and score them (shared by training and test_nme)."""
from __future__ import annotations

import numpy as np

from dataclasses import replace

from .data.batch import EXCLUDED
from .data.config import DataConfig
from .data.iterator import AlignIter
from .heatmaps import DEFAULT_DECODER, decode, flip_average
from .metrics import per_image_nme


def heatmap_batches(model, rec_path: str, data_cfg: DataConfig, flip_tta: bool = False, progress=None,
                    excluded: list | None = None):
    """Yield (heatmaps, gt points in the input frame, record ids) per batch of a packed test set;
    the iterator's widen-and-retry count is returned when the generator finishes.

    Unreadable records are never replaced by others here: they are left out of the batches
    and, when `excluded` is a list, appended to it as (record index, reason)."""
    data_cfg = replace(data_cfg, exclude_bad_records=True, skip_bad_records=False)
    with AlignIter(rec_path, data_cfg) as it:
        done = 0
        for batch in it:
            real = data_cfg.batch_size - batch.pad
            ids = batch.record_id[:real]
            keep = ids != EXCLUDED
            if excluded is not None:
                excluded += [(done + int(k), it.builder.explain(done + int(k))) for k in np.flatnonzero(~keep)]
            done += real
            if progress is not None:
                progress.update(real)
            if not keep.any():
                continue
            images = batch.data[0].asnumpy()[:real][keep]
            heat = model(images)
            if flip_tta:
                heat = flip_average(model, images, heat)
            yield heat, batch.points[:real][keep][:, :, :2], ids[keep]
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
    """As predict_rec, running the network once and decoding with each of `decoders`.
    `excluded` lists the (record index, reason) of records that could not be read."""
    preds = {d: [] for d in decoders}
    peaks = {d: [] for d in decoders}
    gts, ids, excluded = [], [], []
    batches = heatmap_batches(model, rec_path, data_cfg, flip_tta, progress, excluded)
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
            "gt": cat(gts, (0, 68, 2)), "record_id": cat(ids, (0,)).astype(np.int64), "widened": widened,
            "excluded": excluded}


def nme_of_rec(model, rec_path: str, data_cfg: DataConfig, normaliser: str, decoder: str = DEFAULT_DECODER) -> tuple:
    """(mean NME, per-image NME) of a packed test set."""
    out = predict_rec(model, rec_path, data_cfg, decoder)
    errors = per_image_nme(out["pred"], out["gt"], normaliser)
    return float(errors.mean()) if len(errors) else float("nan"), errors
