"""Per-sample geometry: crop matrices (record -> input / heatmap) and pair transforms T.

Every map is a 2x3 affine in pixel-centre coordinates, so one matrix moves the image
(one cv2.warpAffine from the record) and its points. A sample's randomness comes from
its own generator (seeded by seed, epoch and record key), never from worker state.
"""
from __future__ import annotations

import numpy as np

from ..geometry import output_centre, window_matrix
from ..heatmaps import input_to_heatmap_matrix
from .config import DataConfig
from .flip import mirror_matrix


def compose(outer: np.ndarray, inner: np.ndarray) -> np.ndarray:
    """The 2x3 map `outer(inner(p))`."""
    out = np.empty((2, 3))
    out[:, :2] = outer[:, :2] @ inner[:, :2]
    out[:, 2] = outer[:, :2] @ inner[:, 2] + outer[:, 2]
    return out


def input_to_heatmap(cfg: DataConfig) -> np.ndarray:
    """Input coordinates -> heatmap ones (both cover the same window)."""
    return input_to_heatmap_matrix(cfg.input_size, cfg.heatmap_size, cfg.convention)


def sample_rng(cfg: DataConfig, epoch: int, key: int) -> np.random.Generator:
    """The generator of one record in one epoch: independent of workers, batches and shards."""
    return np.random.default_rng([int(cfg.seed), int(epoch), int(key)])


def record_centre(cfg: DataConfig) -> float:
    """Pixel-centre coordinate of the record's middle (the face window centre)."""
    return output_centre(cfg.record_size, cfg.convention)


def crop_matrix(cfg: DataConfig, side: float, angle: float = 0.0, scale: float = 1.0,
                flip: bool = False, shift=(0.0, 0.0)) -> np.ndarray:
    """Record -> input map: window of `side` record px, rotated/zoomed about its centre,
    shifted by `shift` input px, then mirrored when `flip`."""
    c = record_centre(cfg)
    m = window_matrix(c, c, side, cfg.input_size, angle_deg=angle, scale=scale, convention=cfg.convention)
    m[:, 2] += shift
    if flip:
        m = compose(mirror_matrix(cfg.input_size), m)
    return m


def random_crop(cfg: DataConfig, rng: np.random.Generator) -> tuple:
    """Training augmentation: (record -> input matrix, flipped?)."""
    angle = rng.uniform(-cfg.rotate, cfg.rotate)
    scale = rng.uniform(cfg.scale[0], cfg.scale[1])
    shift = rng.uniform(-cfg.translate, cfg.translate, size=2) * cfg.input_size
    flip = bool(cfg.flip and rng.random() < 0.5)
    if cfg.convention == "release":  # the release's window side is an integer number of record pixels
        return crop_matrix(cfg, float(int(cfg.base_scale / scale)), angle, 1.0, flip, shift), flip
    return crop_matrix(cfg, cfg.base_scale, angle, scale, flip, shift), flip


def random_pair_transform(cfg: DataConfig, rng: np.random.Generator) -> tuple:
    """T for a coherent pair: (A, flipped?), A a 2x3 map between heatmap coordinates."""
    size = cfg.heatmap_size
    use_flip = cfg.pairs == "flip" or (cfg.pairs == "both" and rng.random() < cfg.pair_flip_prob)
    if use_flip:
        return mirror_matrix(size), True
    angle = np.deg2rad(rng.uniform(-cfg.pair_rotate, cfg.pair_rotate))
    s = rng.uniform(cfg.pair_scale[0], cfg.pair_scale[1])
    t = rng.uniform(-cfg.pair_translate, cfg.pair_translate, size=2) * size
    lin = s * np.array([[np.cos(angle), np.sin(angle)], [-np.sin(angle), np.cos(angle)]])
    c = np.full(2, (size - 1) / 2.0)
    return np.hstack([lin, (c - lin @ c + t)[:, None]]), False


def linear_scale(m: np.ndarray) -> float:
    """Isotropic zoom of a 2x3 map (output px per source px)."""
    return float(np.sqrt(abs(m[0, 0] * m[1, 1] - m[0, 1] * m[1, 0])))


def decode_matrix(factor: int) -> np.ndarray:
    """Pixels of a JPEG decoded at 1/factor -> full-resolution record pixels."""
    return np.array([[factor, 0.0, (factor - 1) / 2.0], [0.0, factor, (factor - 1) / 2.0]])
