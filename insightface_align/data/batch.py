"""Fill one batch's arrays from records: decode, warp, targets. Pure function of its inputs.

The same code runs in-process and in workers, and a batch depends only on (config,
epoch, record positions), so batches are identical whatever the worker count/timing.
"""
from __future__ import annotations

import cv2
import numpy as np

from ..errors import DataError
from ..heatmaps import inside_crop, target_points
from .augment import (compose, crop_matrix, decode_matrix, input_to_heatmap, linear_scale,
                      random_crop, random_pair_transform, sample_rng)
from .config import DataConfig
from .flip import FLIP_PERMUTATION
from .jpeg import decode_bgr
from .occlusion import occlusion_flags
from .photometric import augment
from .recfile import RecordFile
from .targets import render_heatmaps

NUM_POINTS = 68


NO_OCCLUSION = np.zeros(NUM_POINTS, bool)
NO_OCCLUSION.setflags(write=False)

# record_id of a row whose record could not be read (exclude_bad_records).
EXCLUDED = -1


def batch_shapes(cfg: DataConfig) -> dict:
    """name -> (shape, dtype) of every array a batch carries."""
    b, k = cfg.batch_size, NUM_POINTS
    shapes = {"data": ((b, 3, cfg.input_size, cfg.input_size), np.float32)}
    if cfg.label_mode == "heatmap":
        shapes["softmax_label"] = ((b, k, cfg.heatmap_size, cfg.heatmap_size), np.float32)
    else:
        shapes["coord_label"] = ((b, k, 2), np.float32)
    if cfg.pairs is not None:
        shapes["pair_affine"] = ((b, 6), np.float32)
        shapes["pair_flip"] = ((b,), np.float32)
    # Evaluation helpers (not network inputs): points in input pixels, record -> input map, ids.
    shapes["points"] = ((b, k, 2), np.float32)
    shapes["crop_matrix"] = ((b, 6), np.float32)
    shapes["record_id"] = ((b,), np.int64)
    shapes["flags"] = ((b,), np.int8)       # bit 1: window widened, bit 2: still outside after widening
    shapes["bad_records"] = ((1,), np.int64)  # unreadable records (substituted, or excluded: EXCLUDED ids)
    return shapes


class BatchBuilder:
    """Turns a list of record positions into a filled batch (see `batch_shapes`)."""

    def __init__(self, cfg: DataConfig, records: RecordFile):
        self.cfg = cfg
        self.records = records
        self.to_heatmap = input_to_heatmap(cfg)
        self.from_heatmap = np.linalg.inv(np.vstack([self.to_heatmap, [0, 0, 1]]))[:2]

    # -- one record -> its crop matrices ------------------------------------------------
    def _plan(self, epoch: int, key: int, pts: np.ndarray) -> tuple:
        """[(record -> input matrix, flipped)] per row, pair (A, flip) or None, widened, outside."""
        cfg = self.cfg
        if not cfg.train:
            side, widened = float(cfg.base_scale), 0
            for attempt in range(cfg.widen_retries + 1):
                m = crop_matrix(cfg, side)
                p = pts @ m[:, :2].T + m[:, 2]
                if np.all(inside_crop(p, cfg.input_size, cfg.convention)):
                    return [(m, False)], None, widened, 0
                if attempt < cfg.widen_retries:
                    side += cfg.widen_step
                    widened = 1
            return [(m, False)], None, widened, 1
        rng = sample_rng(cfg, epoch, key)
        m, flipped = random_crop(cfg, rng)
        if cfg.pairs is None:
            return [(m, flipped)], None, 0, 0
        a, t_flip = random_pair_transform(cfg, rng)
        m2 = compose(self.from_heatmap, compose(a, compose(self.to_heatmap, m)))
        return [(m, flipped), (m2, flipped != t_flip)], (a, t_flip), 0, 0

    def _decode(self, jpeg: bytes, mats: list, where: str) -> tuple:
        cfg = self.cfg
        reduced = cfg.reduced_decode == "always" or (
            cfg.reduced_decode == "auto" and cfg.train and cfg.convention == "centred"
            and max(linear_scale(m) for m, _ in mats) <= 0.5 + 1e-9)
        img = decode_bgr(jpeg, half=reduced)
        if img is None:
            raise DataError(where, "payload is not a decodable JPEG")
        factor = 2 if reduced else 1
        if img.shape[0] * factor < cfg.record_size // 2 or img.shape[1] * factor < cfg.record_size // 2:
            raise DataError(where, f"image is {img.shape[1] * factor}x{img.shape[0] * factor}, "
                                   f"expected {cfg.record_size}x{cfg.record_size}")
        return img, decode_matrix(factor)

    def _load(self, pos: int, epoch: int) -> tuple:
        """Read/decode a record, substituting the next readable one when it is bad (or, with
        exclude_bad_records, returning None for it)."""
        n = len(self.records)
        bad = 0
        if self.cfg.exclude_bad_records:
            try:
                return self._load_one(pos % n, epoch) + (0,)
            except DataError:
                return None
        for step in range(n):
            i = (pos + step) % n
            try:
                return self._load_one(i, epoch) + (bad,)
            except DataError:
                if not self.cfg.skip_bad_records:
                    raise
                bad += 1
        raise DataError(self.records.rec_path, "no readable record")

    def _load_one(self, i: int, epoch: int) -> tuple:
        """(image, decode matrix, points, occlusion flags, record id, plan) of record index i;
        DataError when bad."""
        where = f"{self.records.rec_path} (record key {int(self.records.keys[i])})"
        jpeg, pts, rid = self.records.read_sample(i)
        plan = self._plan(epoch, int(self.records.keys[i]), pts.astype(np.float64))
        img, dec = self._decode(jpeg, plan[0], where)
        # Only a config that treats occluded points differently reads their flags.
        occluded = occlusion_flags(jpeg) if self.cfg.occluded_sigma is not None else None
        return img, dec, pts, NO_OCCLUSION if occluded is None else occluded, rid, plan

    def explain(self, i: int) -> str:
        """Why record index i cannot be used (the DataError message), or '' when it can."""
        try:
            self._load_one(i, 0)
        except DataError as exc:
            return str(exc)
        return ""

    # -- a whole batch -------------------------------------------------------------------
    def fill(self, out: dict, positions, epoch: int) -> None:
        """Fill `out` (arrays shaped as batch_shapes) from record positions (index order)."""
        cfg = self.cfg
        size = cfg.input_size
        bad_total = 0
        in_points = np.empty((cfg.batch_size, NUM_POINTS, 2), dtype=np.float64)
        flipped_rows = np.zeros(cfg.batch_size, bool)
        hidden = np.zeros((cfg.batch_size, NUM_POINTS), bool)  # occlusion flags, relabelled on flips
        row = 0
        photo = cfg.photometric if (cfg.train and cfg.photometric.active) else None
        for pos in positions:
            loaded = self._load(int(pos), epoch)
            if loaded is None:  # excluded: a blank row the evaluation drops
                out["data"][row] = 0
                out["points"][row] = 0
                out["crop_matrix"][row] = 0
                out["record_id"][row] = EXCLUDED
                out["flags"][row] = 0
                in_points[row] = -1e4  # far outside the crop: an empty target
                row += 1
                bad_total += 1
                continue
            img, dec, pts, occluded, rid, (rows, pair, widened, outside), bad = loaded
            bad_total += bad
            # Both rows of a coherent pair get the same photometric draw.
            photo_seed = [int(cfg.seed), int(epoch), int(rid), 7]
            for m, flipped in rows:
                crop = cv2.warpAffine(img, compose(m, dec), (size, size), flags=cv2.INTER_LINEAR,
                                      borderMode=cv2.BORDER_CONSTANT, borderValue=0)
                if photo is not None:
                    crop = augment(crop, photo, np.random.default_rng(photo_seed))
                out["data"][row] = crop.transpose(2, 0, 1)[::-1]          # BGR HWC -> RGB CHW
                p = pts @ m[:, :2].T + m[:, 2]
                if flipped:
                    p = p[FLIP_PERMUTATION]
                out["points"][row] = p
                out["crop_matrix"][row] = m.reshape(-1)
                out["record_id"][row] = rid
                out["flags"][row] = widened | (outside << 1)
                in_points[row] = p
                flipped_rows[row] = flipped
                hidden[row] = occluded[FLIP_PERMUTATION] if flipped else occluded
                row += 1
            if pair is not None:
                out["pair_affine"][row - 2:row] = pair[0].reshape(-1)
                out["pair_flip"][row - 2:row] = float(pair[1])
        if row != cfg.batch_size:
            raise ValueError(f"{row} rows for a batch of {cfg.batch_size}")
        hm_points = target_points(in_points, size, cfg.heatmap_size, cfg.convention, flipped_rows)
        if cfg.label_mode == "heatmap":
            render_heatmaps(hm_points, cfg.heatmap_size, cfg.sigma, cfg.round_centre, out=out["softmax_label"])
            if cfg.occluded_sigma is not None and hidden.any():
                # Occluded points: a wider target, so the model learns to spread its belief there.
                wide = render_heatmaps(hm_points[hidden][None], cfg.heatmap_size, cfg.occluded_sigma,
                                       cfg.round_centre)
                out["softmax_label"][hidden] = wide[0]
        else:
            out["coord_label"][...] = hm_points
        out["bad_records"][0] = bad_total

    def records_per_batch(self) -> int:
        """Records consumed by one batch (half the rows with coherent pairs)."""
        return self.cfg.batch_size // (2 if self.cfg.pairs is not None else 1)
