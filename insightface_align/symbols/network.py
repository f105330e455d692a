"""Stacked network builder: stem, stacks with intermediate supervision, heads, transformers.

Names follow the original release (conv0/bn0, res0..res2, stack%d_*, sta%d_*,
heatmap%d / heatmap, *_offset for deformable convs) so its checkpoints load here.
"""
from __future__ import annotations

import mxnet as mx

from . import stn
from .backend import Backend, choose
from .blocks import build_block
from .config import NetConfig
from .deform import deformable_unit
from .layers import bn, conv, maxpool2, relu
from .topologies import PREFIX, TOPOLOGIES, TopologyContext

INPUT_MEAN = 127.5
INPUT_SCALE = 0.0078125


def _deform(data, in_channels, num_filter, name, offset_name, impl):
    return deformable_unit(data, num_filter, name, offset_name, no_bias=False, impl=impl, in_channels=in_channels)


def _stem(data, cfg: NetConfig, fused_mean: bool):
    """Normalise raw 0..255 RGB, then conv -> block -> pool -> block -> block to n channels."""
    s, mid, n = cfg.widths
    body = (data - INPUT_MEAN) * INPUT_SCALE
    if cfg.input_size // cfg.heatmap_size == 4:
        body = conv(body, s, "conv0", kernel=7, stride=2, pad=3)
    else:
        body = conv(body, s, "conv0", kernel=3, stride=1, pad=1)
    body = relu(bn(body, "bn0"), "relu0")
    body = build_block(cfg.block, body, s, mid, "res0", fused_mean)
    body = maxpool2(body)
    body = build_block(cfg.block, body, mid, mid, "res1", fused_mean)
    return build_block(cfg.block, body, mid, n, "res2", fused_mean)


def build_heatmaps(cfg: NetConfig, data=None, ctx=None, backend: Backend | None = None) -> list:
    """Per-stack heatmap symbols (B, num_classes, H, W), first stack first.

    The last is named "heatmap" (output "heatmap_output"), earlier ones "heatmap%d".
    `backend` says which operators to use; None chooses them for `ctx` (an mx.Context,
    a list of them, or None for the CPU; symbols/backend.py). Every backend gives the
    same parameters.
    """
    cfg.validate()
    if backend is None:
        backend = choose(ctx)
    backend.check(ctx)
    impl, fused = backend.dcn, backend.mean == "fused"
    _, _, n = cfg.widths
    data = mx.sym.Variable("data") if data is None else data
    body = _stem(data, cfg, fused)
    theta_inv = None
    if cfg.stn:
        theta = stn.localisation_theta(body, n, cfg.heatmap_size, cfg.multiplier)
        body = stn.warp(body, theta, cfg.heatmap_size)
        theta_inv = stn.invert_theta(theta)
    topo = TopologyContext(block=cfg.block, channels=n, depth=cfg.depth, fused_mean=fused)
    heatmaps = []
    for i in range(cfg.stacks):
        last = i == cfg.stacks - 1
        shortcut = body
        body = TOPOLOGIES[cfg.topology](body, topo, PREFIX[cfg.topology] % i)
        body = build_block(cfg.block, body, n, n, "stack%d_unit0" % i, fused)
        head_name = "heatmap%d" % i
        if last:  # with an STN the warped-frame head gets its own name; "heatmap" is the unwarped output
            head_name = "heatmap_warped" if cfg.stn else "heatmap"
        if cfg.dcn >= 2:
            ll = _deform(body, n, n, "stack%d_ll_conv" % i, "stack%d_ll_conv_offset" % i, impl)
            ll = relu(bn(ll, "stack%d_ll_bn" % i), "stack%d_ll_relu" % i)
            out = _deform(ll, n, cfg.num_classes, head_name, head_name + "_offset", impl)
        else:
            ll = relu(bn(conv(body, n, "stack%d_ll_conv" % i, kernel=1), "stack%d_ll_bn" % i), "stack%d_ll_relu" % i)
            out = conv(ll, cfg.num_classes, head_name, kernel=1, no_bias=False)
        heatmaps.append(out)
        if not last:
            ll2 = conv(ll, n, "stack%d_ll2" % i, kernel=1, no_bias=False)
            out2 = conv(out, n, "stack%d_out2" % i, kernel=1, no_bias=False)
            body = mx.sym.add_n(shortcut, ll2, out2)
            if cfg.dcn in (1, 3):
                body = _deform(body, n, n, "stack%d_out3" % i, "stack%d_out3_offset" % i, impl)
    if theta_inv is not None:
        heatmaps = [stn.warp(h, theta_inv, cfg.heatmap_size) for h in heatmaps]
        heatmaps[-1] = mx.sym.identity(heatmaps[-1], name="heatmap")
    return heatmaps


def get_symbol(cfg: NetConfig, ctx=None, backend: Backend | None = None) -> mx.sym.Symbol:
    """Inference graph: input `data` (B, 3, in, in) raw RGB 0..255 -> last stack's heatmaps."""
    return build_heatmaps(cfg, ctx=ctx, backend=backend)[-1]
