"""Topologies (paper Fig. 2): hourglass, U-Net, DLA and the three Scale Aggregation variants.

Every function maps an n-channel feature map at heatmap resolution to one of the same
shape. `ctx` is a TopologyContext carrying the block kind and width, so no global
state is read.

Grid notation (shared by DLA and SAT, as the release's STA code): nodes (w, h) with
w, h in 1..G where G = depth + 1; (G, G) is the input; the bottom row (w, G) is the
encoder, each node half the resolution of its right neighbour; an inner node (w, h),
w <= h < G, sits at resolution level h - w and aggregates x = (w+1, h+1) (same
resolution), y = (w, h+1) (half resolution, up-sampled) and, in SAT(I)/(II),
z = (w+1, h) (double resolution, down-sampled). The output is node (1, 1).
"""
from __future__ import annotations

from dataclasses import dataclass

import mxnet as mx

from .blocks import build_block
from .layers import bilinear_deconv_x2, bn, conv_bn_relu, fused_mean, maxpool2, relu, upsample_nearest2


@dataclass(frozen=True)
class TopologyContext:
    block: str
    channels: int
    depth: int
    fused_mean: bool = False  # node means as one `sdu_mean` (CPU) instead of standard operators

    def unit(self, data, name):
        """The topology's "conv": one building block at full width."""
        return build_block(self.block, data, self.channels, self.channels, name, self.fused_mean)


def hourglass(data, ctx: TopologyContext, name: str, depth: int | None = None, lateral: bool = True):
    """Hourglass (Fig. 2b): up = block(x); low = block(pool(x)) -> recurse -> block; up + upsample(low).

    lateral=False drops the lateral block, which gives the U-Net of Fig. 2a (skip
    connections carry the encoder feature itself).
    """
    n = ctx.depth if depth is None else depth
    up = ctx.unit(data, "%s_up1_0" % name) if lateral else data
    low = ctx.unit(maxpool2(data), "%s_low1_0" % name)
    if n > 1:
        low = hourglass(low, ctx, "%s_%d" % (name, n - 1), n - 1, lateral)
    else:
        low = ctx.unit(low, "%s_low2_0" % name)
    low = ctx.unit(low, "%s_low3_0" % name)
    return mx.sym.add_n(up, upsample_nearest2(low, "%s_upsampling_%d" % (name, n)))


def unet(data, ctx: TopologyContext, name: str):
    """U-Net (Fig. 2a): the hourglass without blocks in the lateral connections."""
    return hourglass(data, ctx, name, lateral=False)


class _ScaleAggregationGrid:
    """The grid of DLA / SAT(I) / SAT(II) / SAT(III); `variant` selects the node rule.

    sat3 (the release's simplified dense U-Net, net_sta=1): x is passed through (a
      depthwise 3x3 unit on odd rows off the diagonal); y is up-sampled by a bilinear-
      initialised deconvolution + BN + ReLU (w > 1) or nearest up-sampling + block
      (w == 1); node = (x + y) / 2.
    dla: x -> block; y -> deconvolution + BN + ReLU + block; node = mean.
    sat1 / sat2: as dla, plus z -> 2x2 max-pool + block where z exists; node = mean.
    """

    def __init__(self, data, ctx: TopologyContext, name: str, variant: str):
        self.ctx, self.name, self.variant = ctx, name, variant
        self.size = ctx.depth + 1
        self.nodes = {(self.size, self.size): data}

    def node(self, w, h):
        if (w, h) not in self.nodes:
            self.nodes[(w, h)] = self._encoder(w, h) if h == self.size else self._aggregate(w, h)
        return self.nodes[(w, h)]

    def _encoder(self, w, h):
        tag = "%s_w%d_h%d" % (self.name, w, h)
        body = self.ctx.unit(self.node(w + 1, h), tag + "_1")
        return self.ctx.unit(maxpool2(body), tag + "_2")

    def _up_deconv(self, y, tag, w, h):
        y = bilinear_deconv_x2(y, self.ctx.channels, "%s_upsampling_w%d_h%d" % (self.name, w, h))
        return relu(bn(y, tag + "_y_bn"), tag + "_y_act")

    def _aggregate(self, w, h):
        tag = "%s_w%d_h%d" % (self.name, w, h)
        x, y = self.node(w + 1, h + 1), self.node(w, h + 1)
        if self.variant == "sat3":
            if h % 2 == 1 and h != w:
                x = conv_bn_relu(x, self.ctx.channels, tag + "_x", groups=self.ctx.channels)
            if w > 1:
                y = self._up_deconv(y, tag, w, h)
            else:
                y = self.ctx.unit(upsample_nearest2(y, "%s_upsampling_w%d_h%d" % (self.name, w, h)), tag + "_4")
            return fused_mean([x, y], tag + "_mean") if self.ctx.fused_mean else (x + y) / 2
        inputs = [self.ctx.unit(x, tag + "_x"), self.ctx.unit(self._up_deconv(y, tag, w, h), tag + "_y")]
        if self.variant in ("sat1", "sat2") and w + 1 <= h:
            inputs.append(self.ctx.unit(maxpool2(self.node(w + 1, h)), tag + "_z"))
        if self.ctx.fused_mean:
            return fused_mean(inputs, tag + "_mean")
        return mx.sym.add_n(*inputs, name=tag + "_add") / len(inputs)


def grid_topology(variant):
    def build(data, ctx: TopologyContext, name: str):
        return _ScaleAggregationGrid(data, ctx, name, variant).node(1, 1)

    build.__name__ = variant
    return build


TOPOLOGIES = {
    "hourglass": hourglass,
    "unet": unet,
    "dla": grid_topology("dla"),
    "sat1": grid_topology("sat1"),
    "sat2": grid_topology("sat2"),
    "sat3": grid_topology("sat3"),
}

# Stack prefixes of the release: hourglass stacks are "stack%d_hg", SAT stacks "sta%d".
PREFIX = {"hourglass": "stack%d_hg", "unet": "stack%d_unet", "dla": "dla%d", "sat1": "sat1_%d", "sat2": "sat2_%d",
          "sat3": "sta%d"}
