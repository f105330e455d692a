"""DataConfig: every knob of the training/validation iterator, validated once."""
from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Optional, Tuple

from ..errors import ConfigError
from ..geometry import CONVENTIONS, DEFAULT_CONVENTION
from .photometric import Photometric

PAIR_MODES = (None, "affine", "flip", "both")
LABEL_MODES = ("heatmap", "coords")
REDUCED_DECODE = ("auto", "always", "never")
LAST_BATCH = ("discard", "pad")


@dataclass(frozen=True)
class DataConfig:
    """How records become batches.

    train: True = random augmentation (flip, rotation, scale); False = validation
      crops (the 256-px record window onto the input, widened by `widen_step` record
      pixels up to `widen_retries` times while a landmark falls outside the crop).
    sigma: Gaussian sigma in heatmap pixels (peak 1.0 at the sub-pixel landmark
      location; `round_centre` puts it on the nearest pixel instead); 0 = a single-pixel
      target (the release's own when the convention is `release`). occluded_sigma:
      the sigma of points whose record flags them occluded (data/record.py); None =
      `sigma` for every point.
    pairs: coherent pairs [I, T(I)] interleaved in the batch; T is a random affine
      ('affine'), a mirror ('flip'), or either with probability `pair_flip_prob`
      ('both'). Pair ranges: rotation +/- pair_rotate deg, scale pair_scale,
      translation +/- pair_translate x heatmap size.
    convention: where the crop centre and the targets sit (geometry.py, heatmaps.py):
      'centred' (unbiased) or 'release' (the original release's, bit for bit: record
      pixel 192 -> input pixel 64, integer window sides, truncated one-pixel targets).
    reduced_decode: decode the JPEG at half resolution ('auto': training crops under
      `centred` when every crop cut from it downsamples the record by >= 2x; validation
      and `release` crops always decode at full resolution, as the release did).
    photometric: colour/greyscale/noise/blur/JPEG/black-border probabilities applied to
      training crops (data/photometric.py); all 0 by default.
    num_workers: worker processes (0 = in-process); prefetch: batches in flight per worker.
    shard: (k, n) = read the k-th of n disjoint slices of every epoch's order.
    epoch, skip_batches: where iteration starts (resume at the same data order).
    """

    batch_size: int = 40
    input_size: int = 128
    heatmap_size: int = 64
    sigma: float = 1.0
    round_centre: bool = False
    occluded_sigma: Optional[float] = None
    convention: str = DEFAULT_CONVENTION
    label_mode: str = "heatmap"
    train: bool = True
    rotate: float = 40.0
    scale: Tuple[float, float] = (0.8, 1.2)
    translate: float = 0.0
    flip: bool = True
    pairs: Optional[str] = None
    pair_rotate: float = 30.0
    pair_scale: Tuple[float, float] = (0.9, 1.1)
    pair_translate: float = 0.1
    pair_flip_prob: float = 0.5
    record_size: int = 384
    base_scale: int = 256
    widen_step: float = 20.0
    widen_retries: int = 5
    reduced_decode: str = "auto"
    num_workers: int = 0
    prefetch: int = 2
    seed: int = 0
    shuffle: bool = True
    shard: Tuple[int, int] = (0, 1)
    epoch: int = 0
    skip_batches: int = 0
    last_batch: str = "discard"
    skip_bad_records: bool = True
    # Evaluation: an unreadable record gives a row with record_id -1 (EXCLUDED) instead of
    # the next readable record, so scores never count a face twice (evaluate.py drops it).
    exclude_bad_records: bool = False
    photometric: Photometric = Photometric()

    def __post_init__(self):
        def need(ok, name, msg):
            if not ok:
                raise ConfigError(name, msg)

        need(isinstance(self.batch_size, int) and self.batch_size > 0, "batch_size", "must be a positive int")
        need(self.input_size > 0 and self.heatmap_size > 0, "input_size", "sizes must be positive")
        need(self.sigma >= 0, "sigma", "must be >= 0 (0 = single-pixel target)")
        need(self.occluded_sigma is None or self.occluded_sigma > 0, "occluded_sigma", "must be > 0 when given")
        need(self.convention in CONVENTIONS, "convention", f"must be one of {CONVENTIONS}")
        need(self.label_mode in LABEL_MODES, "label_mode", f"must be one of {LABEL_MODES}")
        need(self.pairs in PAIR_MODES, "pairs", f"must be one of {PAIR_MODES}")
        if self.pairs is not None:
            need(self.batch_size % 2 == 0, "batch_size",
                 f"must be even with coherent pairs (rows are [I, T(I)] pairs), got {self.batch_size}")
            need(self.train, "pairs", "coherent pairs are a training option (train=True)")
        need(len(self.scale) == 2 and 0 < self.scale[0] <= self.scale[1], "scale", "must be (lo, hi), 0 < lo <= hi")
        need(len(self.pair_scale) == 2 and 0 < self.pair_scale[0] <= self.pair_scale[1], "pair_scale",
             "must be (lo, hi), 0 < lo <= hi")
        need(self.rotate >= 0 and self.pair_rotate >= 0, "rotate", "rotation ranges must be >= 0")
        need(self.translate >= 0 and self.pair_translate >= 0, "translate", "translation ranges must be >= 0")
        need(0.0 <= self.pair_flip_prob <= 1.0, "pair_flip_prob", "must be in [0, 1]")
        need(self.reduced_decode in REDUCED_DECODE, "reduced_decode", f"must be one of {REDUCED_DECODE}")
        need(isinstance(self.num_workers, int) and self.num_workers >= 0, "num_workers", "must be an int >= 0")
        need(isinstance(self.prefetch, int) and self.prefetch >= 1, "prefetch", "must be an int >= 1")
        need(len(self.shard) == 2 and 0 <= self.shard[0] < self.shard[1], "shard", "must be (k, n) with 0 <= k < n")
        need(self.epoch >= 0 and self.skip_batches >= 0, "skip_batches", "epoch and skip_batches must be >= 0")
        need(self.last_batch in LAST_BATCH, "last_batch", f"must be one of {LAST_BATCH}")
        need(self.widen_retries >= 0 and self.widen_step >= 0, "widen_step", "widening must be >= 0")
        need(isinstance(self.photometric, Photometric), "photometric", "must be a Photometric")

    @property
    def heatmap_ratio(self) -> float:
        """Heatmap pixels per input pixel."""
        return self.heatmap_size / float(self.input_size)

    def replace(self, **changes) -> "DataConfig":
        """A copy with some fields changed (validated again)."""
        names = {f.name for f in fields(self)}
        for key in changes:
            if key not in names:
                raise ConfigError(key, "unknown DataConfig field")
        return replace(self, **changes)
