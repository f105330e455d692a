"""Predict landmarks on a packed test set and score them (shared by training and test_nme)."""
from __future__ import annotations

import mxnet as mx
import numpy as np

from .data.config import DataConfig
from .data.iterator import AlignIter
from .metrics import decode_heatmaps, heatmap_to_input, per_image_nme


def predict_rec(module: mx.mod.Module, rec_path: str, data_cfg: DataConfig, decoder: str = "subpixel",
                flip_tta: bool = False) -> tuple:
    """(pred (N, 68, 2), gt (N, 68, 2), record ids (N,)) in the 128-px input frame.

    `module` is a bound inference module whose first output is the heatmap.
    """
    ratio = data_cfg.input_size / data_cfg.heatmap_size
    preds, gts, ids = [], [], []
    with AlignIter(rec_path, data_cfg) as it:
        for batch in it:
            module.forward(mx.io.DataBatch(batch.data), is_train=False)
            heat = module.get_outputs()[0].asnumpy()
            if flip_tta:
                from .data.flip import FLIP_PERMUTATION

                flipped = mx.nd.flip(batch.data[0], axis=3)
                module.forward(mx.io.DataBatch([flipped]), is_train=False)
                heat = (heat + module.get_outputs()[0].asnumpy()[:, FLIP_PERMUTATION, :, ::-1]) / 2
            real = len(heat) - batch.pad
            pts, _ = decode_heatmaps(heat[:real], decoder)
            preds.append(heatmap_to_input(pts, ratio))
            gts.append(batch.points[:real, :, :2])
            ids.append(batch.record_id[:real])
    if not preds:
        return np.zeros((0, 68, 2)), np.zeros((0, 68, 2)), np.zeros((0,), dtype=np.int64)
    return np.concatenate(preds), np.concatenate(gts), np.concatenate(ids)


def nme_of_rec(module, rec_path: str, data_cfg: DataConfig, normaliser: str, decoder: str = "subpixel") -> tuple:
    """(mean NME, per-image NME) of a packed test set."""
    pred, gt, _ = predict_rec(module, rec_path, data_cfg, decoder)
    errors = per_image_nme(pred, gt, normaliser)
    return float(errors.mean()) if len(errors) else float("nan"), errors
