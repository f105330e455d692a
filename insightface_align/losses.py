"""The paper's loss (Eq. 1) as MXNet symbols: L_p-g per stack plus the outside transformer.

Batch layout (the iterator's contract): with coherent pairs, rows are interleaved
[I0, T0(I0), I1, T1(I1), ...], `pair_affine` (B, 6) holds the 2x3 matrix A mapping
heatmap pixel-centre coordinates of the even row to the odd row (repeated on the odd
row) and `pair_flip` (B,) is 1 when T mirrors (A then includes the mirror and channels
follow the flip permutation). Both rows carry their own targets, so L_p-g over all
rows is L_p-g + L_p-g2 of the paper.
"""
from __future__ import annotations

from dataclasses import dataclass

import mxnet as mx
import numpy as np

from .data.flip import FLIP_PERMUTATION
from .errors import ConfigError
from .fields import typed_fields
from .heatmaps import HALF_PIXEL, pixel_bounds

HEATMAP_LOSSES = ("sigmoid_ce", "softmax_ce", "mse")
COHERENT = ("none", "affine", "flip", "both")
COHERENT_VARIANTS = ("paper", "release")


@dataclass(frozen=True)
class LossConfig:
    """heatmap: L_p-g form (sigmoid_ce = paper, softmax_ce = release, mse = Eq. 1 literally).
    coherent: which T the outside transformer uses (none disables L_p-p).
    coherent_weight: lambda (paper 0.001; the release's flip-only variant used 1e-4).
    coherent_variant: paper = MSE between H(T(I)) and T(H(I)) for affine and flips;
      release = flips only, smooth-L1, the release's formulation.
    label_mode: heatmap = targets come as `softmax_label`; coords = `coord_label` points
      rendered into Gaussians of `sigma` inside the graph.
    """

    heatmap: str = "sigmoid_ce"
    coherent: str = "none"
    coherent_weight: float = 0.001
    coherent_variant: str = "paper"
    label_mode: str = "heatmap"
    sigma: float = 1.0

    def __post_init__(self):
        if self.heatmap not in HEATMAP_LOSSES:
            raise ConfigError("loss.heatmap", f"unknown loss {self.heatmap!r}; choose {', '.join(HEATMAP_LOSSES)}")
        if self.coherent not in COHERENT:
            raise ConfigError("loss.coherent", f"unknown value {self.coherent!r}; choose {', '.join(COHERENT)}")
        if self.coherent_variant not in COHERENT_VARIANTS:
            raise ConfigError("loss.coherent_variant", f"choose {', '.join(COHERENT_VARIANTS)}")
        if self.coherent_variant == "release" and self.coherent not in ("flip", "none"):
            raise ConfigError("loss.coherent", "the release variant covers flips only: use coherent: flip")
        if self.label_mode not in ("heatmap", "coords"):
            raise ConfigError("loss.label_mode", "choose heatmap or coords")
        if not self.coherent_weight >= 0:
            raise ConfigError("loss.coherent_weight", "must be >= 0")

    @property
    def uses_pairs(self) -> bool:
        return self.coherent != "none"

    @classmethod
    def from_dict(cls, values: dict) -> "LossConfig":
        return cls(**typed_fields(cls, values, "loss"))


def sigmoid_ce(pred, label):
    """Pixel-wise sigmoid cross-entropy, stable form max(x,0) - x*y + log(1 + exp(-|x|)); mean."""
    loss = mx.sym.relu(pred) - pred * label + mx.sym.Activation(-mx.sym.abs(pred), act_type="softrelu")
    return mx.sym.mean(loss)


def softmax_ce(pred, label):
    """The release's loss: per-channel spatial softmax, cross-entropy against the target map; mean."""
    logp = mx.sym.log_softmax(mx.sym.reshape(pred, shape=(0, 0, -1)), axis=2)
    return -mx.sym.mean(logp * mx.sym.reshape(label, shape=(0, 0, -1)))


def mse(pred, label):
    return mx.sym.mean(mx.sym.square(pred - label))


HEATMAP_LOSS_FNS = {"sigmoid_ce": sigmoid_ce, "softmax_ce": softmax_ce, "mse": mse}


def render_heatmaps(coords, size: int, sigma: float):
    """(B, K, 2) heatmap-pixel (x, y) -> (B, K, size, size) Gaussians (peak 1); sigma 0 = one pixel.

    Points outside the map give an all-zero channel, as the iterator's heatmap targets
    (the pixel-centre convention of heatmaps.py).
    """
    grid = mx.sym.arange(0, size).reshape((1, 1, size))
    x = mx.sym.slice_axis(coords, axis=2, begin=0, end=1)  # (B, K, 1)
    y = mx.sym.slice_axis(coords, axis=2, begin=1, end=2)
    if sigma > 0:
        gx = mx.sym.exp(-mx.sym.square(mx.sym.broadcast_sub(grid, x)) / (2.0 * sigma * sigma))
        gy = mx.sym.exp(-mx.sym.square(mx.sym.broadcast_sub(grid, y)) / (2.0 * sigma * sigma))
    else:
        gx = mx.sym.broadcast_equal(grid, mx.sym.floor(x + HALF_PIXEL))
        gy = mx.sym.broadcast_equal(grid, mx.sym.floor(y + HALF_PIXEL))
    low, high = pixel_bounds(size)
    inside = (x >= low) * (x < high) * (y >= low) * (y < high)  # (B, K, 1)
    gx = mx.sym.broadcast_mul(gx, inside)
    return mx.sym.BlockGrad(mx.sym.broadcast_mul(mx.sym.expand_dims(gy, axis=3), mx.sym.expand_dims(gx, axis=2)))


def _pair_halves(x):
    """Interleaved rows (B, ...) -> (even rows, odd rows), each (B/2, ...)."""
    pairs = mx.sym.reshape(x, shape=(-4, -1, 2, -2))
    return (mx.sym.reshape(mx.sym.slice_axis(pairs, axis=1, begin=0, end=1), shape=(-3, -2)),
            mx.sym.reshape(mx.sym.slice_axis(pairs, axis=1, begin=1, end=2), shape=(-3, -2)))


def affine_to_theta(affine, size: int):
    """Heatmap-pixel map A (B, 6) -> the GridGenerator theta that samples H(I) at A^-1 p.

    GridGenerator's theta maps output normalised coordinates u = 2x/(size-1) - 1 to
    input ones, i.e. it is A^-1 conjugated by that normalisation.
    """
    a, b, c, d, e, f = (mx.sym.slice_axis(affine, axis=1, begin=i, end=i + 1) for i in range(6))
    det = a * e - b * d
    ia, ib, ic = e / det, -b / det, (b * f - c * e) / det
    id_, ie, if_ = -d / det, a / det, (c * d - a * f) / det
    s = 2.0 / (size - 1)
    return mx.sym.concat(ia, ib, ia + ib + s * ic - 1, id_, ie, id_ + ie + s * if_ - 1, dim=1)


def transform_heatmaps(heatmaps, affine, flip, size: int):
    """T(H): permute channels where flip is 1, then warp by A (zeros where A maps outside).

    Returns (warped (B, K, size, size), valid mask (B, 1, size, size)).
    """
    permuted = permute_channels(heatmaps, FLIP_PERMUTATION)
    f = mx.sym.reshape(flip, shape=(-1, 1, 1, 1))
    chosen = mx.sym.broadcast_mul(permuted, f) + mx.sym.broadcast_mul(heatmaps, 1 - f)
    grid = mx.sym.GridGenerator(data=mx.sym.BlockGrad(affine_to_theta(affine, size)), transform_type="affine",
                                target_shape=(size, size))
    warped = mx.sym.BilinearSampler(data=chosen, grid=grid)
    ones = mx.sym.ones_like(mx.sym.slice_axis(heatmaps, axis=1, begin=0, end=1))
    valid = mx.sym.BlockGrad(mx.sym.BilinearSampler(data=ones, grid=grid) > 0.999)
    return warped, valid


def _runs(perm):
    """Split a permutation into maximal runs of consecutive ascending or descending indices."""
    runs, start = [], 0
    for i in range(1, len(perm) + 1):
        if i < len(perm):
            step = perm[i] - perm[i - 1]
            first_step = perm[start + 1] - perm[start] if i - 1 > start else step
            if abs(step) == 1 and step == first_step:
                continue
        runs.append([int(v) for v in perm[start:i]])
        start = i
    return runs


def permute_channels(x, perm):
    """out[:, j] = x[:, perm[j]] with slices and reversals (no index tensor, no extra parameters)."""
    parts = []
    for run in _runs(np.asarray(perm)):
        lo, hi = min(run), max(run)
        part = mx.sym.slice_axis(x, axis=1, begin=lo, end=hi + 1)
        parts.append(mx.sym.reverse(part, axis=1) if len(run) > 1 and run[0] > run[-1] else part)
    return mx.sym.concat(*parts, dim=1)


def coherent_loss(heatmap, pair_affine, pair_flip, size: int, variant: str = "paper"):
    """L_p-p for one stack: || H(T(I)) - T(H(I)) ||^2 averaged over valid pixels."""
    h_i, h_t = _pair_halves(heatmap)
    affine, _ = _pair_halves(pair_affine)
    flip, _ = _pair_halves(pair_flip)
    warped, valid = transform_heatmaps(h_i, affine, flip, size)
    diff = mx.sym.broadcast_mul(h_t - warped, valid)
    if variant == "release":
        per_pixel = mx.sym.smooth_l1(diff, scalar=1.0)
    else:
        per_pixel = mx.sym.square(diff)
    channels = len(FLIP_PERMUTATION)
    return mx.sym.sum(per_pixel) / (mx.sym.sum(valid) * channels + 1e-6)


def training_symbol(heatmaps, cfg: LossConfig, heatmap_size: int):
    """Group of MakeLoss heads (one per stack, then the coherent term) and the last heatmap.

    Outputs: stack losses, [coherent loss], BlockGrad(last heatmap) for metrics.
    """
    if cfg.label_mode == "coords":
        label = render_heatmaps(mx.sym.Variable("coord_label"), heatmap_size, cfg.sigma)
    else:
        label = mx.sym.Variable("softmax_label")
    loss_fn = HEATMAP_LOSS_FNS[cfg.heatmap]
    outputs = [mx.sym.MakeLoss(loss_fn(h, label), name="stack%d_loss" % i) for i, h in enumerate(heatmaps)]
    if cfg.uses_pairs and cfg.coherent_weight > 0:
        affine, flip = mx.sym.Variable("pair_affine"), mx.sym.Variable("pair_flip")
        terms = [coherent_loss(h, affine, flip, heatmap_size, cfg.coherent_variant) for h in heatmaps]
        total = mx.sym.add_n(*terms) / len(terms) if len(terms) > 1 else terms[0]
        outputs.append(mx.sym.MakeLoss(total, grad_scale=cfg.coherent_weight, name="coherent_loss"))
    outputs.append(mx.sym.BlockGrad(heatmaps[-1], name="heatmap_pred"))
    return mx.sym.Group(outputs)


def label_names(cfg: LossConfig) -> list:
    names = ["coord_label" if cfg.label_mode == "coords" else "softmax_label"]
    if cfg.uses_pairs and cfg.coherent_weight > 0:
        names += ["pair_affine", "pair_flip"]
    return names
