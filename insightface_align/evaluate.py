"""Predict landmarks on a packed test set and score them (shared by training and test_nme)."""
from __future__ import annotations

import numpy as np

from dataclasses import replace

from .data.batch import EXCLUDED
from .data.config import DataConfig
from .data.iterator import AlignIter
from .heatmaps import DEFAULT_DECODER, decode, decode_release, flip_average, target_points
from .metrics import RELEASE_NORMALISERS, per_image_nme, release_nme


def _concat(parts: list, empty_shape: tuple) -> np.ndarray:
    """The per-batch arrays joined, or an empty array of `empty_shape` when there are none."""
    return np.concatenate(parts) if parts else np.zeros(empty_shape)


def heatmap_batches(model, rec_path: str, data_cfg: DataConfig, flip_tta: bool = False, progress=None,
                    excluded: list | None = None):
    """Yield (heatmaps, gt points in the input frame, record ids, crop flags) per batch of a
    packed test set (flags: batch.py's, bit 2 = a point outside even the widest crop); the
    iterator's widen-and-retry count is returned when the generator finishes.

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
            yield heat, batch.points[:real][keep][:, :, :2], ids[keep], batch.flags[:real][keep]
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
            heat, gt, rid, _ = next(batches)
        except StopIteration as stop:
            widened = stop.value or 0
            break
        for d in decoders:
            pts, peak = decode(heat, d, data_cfg.input_size, data_cfg.convention)
            preds[d].append(pts)
            peaks[d].append(peak)
        gts.append(gt)
        ids.append(rid)
    return {"preds": {d: _concat(preds[d], (0, 68, 2)) for d in decoders},
            "confidences": {d: _concat(peaks[d], (0, 68)) for d in decoders},
            "gt": _concat(gts, (0, 68, 2)), "record_id": _concat(ids, (0,)).astype(np.int64), "widened": widened,
            "excluded": excluded}


def nme_of_rec(model, rec_path: str, data_cfg: DataConfig, normaliser: str, decoder: str = DEFAULT_DECODER) -> tuple:
    """(mean NME, per-image NME) of a packed test set."""
    out = predict_rec(model, rec_path, data_cfg, decoder)
    errors = per_image_nme(out["pred"], out["gt"], normaliser)
    return float(errors.mean()) if len(errors) else float("nan"), errors


OUTSIDE_CROP = 2  # batch.py's flag: a point lies outside even the widest validation crop


def release_protocol(model, rec_path: str, data_cfg: DataConfig, landmark_type: str = "2d", progress=None) -> dict:
    """The original release's test_rec_nme.py, reproduced: its validation crops (the
    `release` convention, full-resolution decoding, faces with a point outside the widest
    crop skipped), its decoder (bilinear upsampling to the input size, argmax: integer
    input pixels) and its scoring against the ground truth's truncated input pixels
    (int(x), the one-pixel validation target it renders at input size) over the
    eye-centre distance (2d) or landmark-box diagonal (3d) of those pixels.

    Returns per-image `nme`, `pred` (input pixels), `record_id`, `skipped` (record ids
    outside the widest crop), `excluded` (unreadable records) and the `normaliser` used.
    """
    if landmark_type not in ("2d", "3d"):
        raise ValueError(f"landmark_type must be 2d or 3d, got {landmark_type!r}")
    cfg = replace(data_cfg, convention="release", reduced_decode="never", train=False)
    errors, preds, ids, skipped, excluded = [], [], [], [], []
    batches = heatmap_batches(model, rec_path, cfg, False, progress, excluded)
    for heat, points, rid, flags in batches:
        outside = (flags & OUTSIDE_CROP) != 0
        skipped += [int(i) for i in rid[outside]]
        if outside.all():
            continue
        heat, points, rid = heat[~outside], points[~outside], rid[~outside]
        pred, _ = decode_release(heat, cfg.input_size)
        gt = target_points(points, cfg.input_size, cfg.input_size, "release")
        errors.append(release_nme(pred, gt, landmark_type))
        preds.append(pred)
        ids.append(rid)
    return {"nme": _concat(errors, (0,)), "pred": _concat(preds, (0, 68, 2)),
            "record_id": _concat(ids, (0,)).astype(np.int64), "skipped": skipped, "excluded": excluded,
            "normaliser": RELEASE_NORMALISERS[landmark_type]}
