"""sdu_cab_q, a whole CAB of an INT8 export, and the export pass that finds CABs.

The operator is checked against the block computed here in float64 from operands
quantised independently (MXNet's conventions: uint8 over [0, max] for a non-negative
range, else int8 over +-max|.|; weights per output channel over max |w|; round to
nearest, saturate) and against the fp32 block it replaces. Shapes cover both the
AVX-512 block paths (C/8 and the output's pixels multiples of 16) and the scalar ones.
"""
from __future__ import annotations

import json

import mxnet as mx
import numpy as np
import pytest

from insightface_align.int8_cab import LAYERS, MAPS, find_cabs, int8_cab_blocks
from insightface_align.symbols import ext
from insightface_align.symbols.blocks import cab_block

DIVISOR = {"data": 1, "w3_h4": 2, "w2_h4": 4, "w1_h4": 8, "w2_h3_x": 2, "w1_h3_x": 4}
OUTPUT_WEIGHT = {"data": 1 / 8, "w3_h4": 1 / 8, "w2_h3_x": 1 / 4, "w2_h4": 1 / 4, "w1_h3_x": 1 / 8, "w1_h4": 1 / 8}


def _params(rng, c):
    params = {}
    for out, src, depthwise in LAYERS:
        o, i = c // DIVISOR[out], 1 if depthwise else c // DIVISOR[src]
        params[out + "_weight"] = (rng.randn(o, i, 3, 3) * np.sqrt(2.0 / (i * 9))).astype(np.float32)
        params[out + "_bias"] = (rng.randn(o) * 0.1).astype(np.float32)
    return params


def _inputs(params):
    return [p for out, _, _ in LAYERS for p in (params[out + "_weight"], params[out + "_bias"])]


def _fp32_block(x, params):
    """The CAB as the fp32 export runs it (BN folded: conv + bias + ReLU, sdu_mean nodes)."""
    data = mx.sym.var("data")
    maps = {"data": data}
    for out, src, depthwise in LAYERS:
        maps[out] = mx.sym.relu(mx.sym.Convolution(maps[src], mx.sym.var(out + "_weight"), mx.sym.var(out + "_bias"),
                                                   kernel=(3, 3), pad=(1, 1), num_filter=params[out + "_bias"].size,
                                                   num_group=params[out + "_bias"].size if depthwise else 1))
    for out, a, b in (("w3_h3", "data", "w3_h4"), ("w2_h3", "w2_h3_x", "w2_h4"), ("w1_h3", "w1_h3_x", "w1_h4"),
                      ("w2_h2", "w3_h3", "w2_h3"), ("w1_h2", "w2_h3", "w1_h3"), ("w1_h1", "w2_h2", "w1_h2")):
        maps[out] = mx.sym.sdu_mean(maps[a], maps[b], num_args=2)
    names = ["data"] + list(MAPS) + ["w1_h1"]
    feed = {k: mx.nd.array(v) for k, v in dict(params, data=x).items()}
    outs = mx.sym.Group([maps[n] for n in names]).bind(mx.cpu(), feed).forward()
    return {n: o.asnumpy() for n, o in zip(names, outs)}


def _ranges(maps):
    return {f"{n}_{end}": float(getattr(maps[n], end)()) for n in ("data",) + MAPS for end in ("min", "max")}


def _steps(x, lo, hi):
    """(integer steps, real value per step) of x quantised over [lo, hi] (float32 maths)."""
    m = np.float32(max(abs(lo), abs(hi)))
    top, floor = (255, 0) if lo >= 0 else (127, -127)
    unit = m / np.float32(top)
    return np.clip(np.round(x * (np.float32(1) / unit)), floor, top), unit


def _conv3x3(x, w, depthwise):
    """Exact 3x3 pad-1 correlation in float64: x (B, I, H, W), w (O, I or 1, 3, 3)."""
    b, i, h, wd = x.shape
    pad = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (1, 1), (1, 1)))
    cols = np.stack([pad[:, :, r:r + h, s:s + wd] for r in range(3) for s in range(3)], axis=2)  # B, I, 9, H, W
    w9 = w.reshape(w.shape[0], -1, 9).astype(np.float64)
    if depthwise:
        return np.einsum("bokhw,ok->bohw", cols, w9[:, 0])
    return np.einsum("bikhw,oik->bohw", cols, w9)


def _reference(x, params, ranges):
    """Node (1, 1) from the quantised maps: each convolution on integer steps, rescaled per
    output channel and saturated to uint8; then the means' linear map of the six maps."""
    steps = {"data": _steps(x, ranges["data_min"], ranges["data_max"])}
    for out, src, depthwise in LAYERS:
        w = params[out + "_weight"]
        w_unit = np.abs(w.reshape(w.shape[0], -1)).max(axis=1) / np.float32(127)
        ws = np.round(w / w_unit[:, None, None, None])
        src_steps, src_unit = steps[src]
        dst_unit = np.float32(ranges[out + "_max"]) / np.float32(255)
        acc_unit = (src_unit * w_unit).astype(np.float32)
        acc = _conv3x3(src_steps, ws, depthwise) + (params[out + "_bias"] / acc_unit)[None, :, None, None]
        steps[out] = (np.clip(np.round(acc * (acc_unit / dst_unit)[None, :, None, None]), 0, 255), dst_unit)
    c = x.shape[1]
    total = 0.0
    for name, weight in OUTPUT_WEIGHT.items():
        s, unit = steps[name]
        total = total + weight * float(unit) * np.tile(s, (1, c // s.shape[1], 1, 1))
    return total


@pytest.mark.parametrize("c,size,signed", [(16, 6, False), (16, 8, True), (128, 8, False), (128, 4, True)],
                         ids=["scalar-uint8", "scalar-int8", "blocks-uint8", "blocks-int8"])
def test_cab_operator_equals_the_block_on_its_quantised_maps(c, size, signed):
    ext.load()
    rng = np.random.RandomState(21)
    params = _params(rng, c)
    x = rng.uniform(-1.0 if signed else 0.0, 2.0, (2, c, size, size)).astype(np.float32)
    maps = _fp32_block(x, params)
    ranges = _ranges(maps)
    got = mx.nd.sdu_cab_q(mx.nd.array(x), *map(mx.nd.array, _inputs(params)), **ranges).asnumpy()
    want = _reference(x, params, ranges)
    assert got.shape == x.shape and got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * np.abs(want).max())
    # And within INT8 error of the fp32 block it replaces (a wrong scale or map is ~10x off).
    fp32 = maps["w1_h1"]
    assert np.abs(got - fp32).mean() < 0.03 * np.abs(fp32).mean()


@pytest.mark.parametrize("c,size", [(16, 8), (128, 8)], ids=["scalar", "blocks"])
def test_cab_operator_fuses_its_pooling_and_up_sampling_neighbours_exactly(c, size):
    ext.load()
    rng = np.random.RandomState(22)
    params = _params(rng, c)
    x = rng.uniform(0.0, 2.0, (1, c, size, size)).astype(np.float32)
    ranges = _ranges(_fp32_block(x, params))
    weights = list(map(mx.nd.array, _inputs(params)))

    def cab(data, **flags):
        return mx.nd.sdu_cab_q(mx.nd.array(data), *weights, **ranges, **flags).asnumpy()

    def pool(a):
        return mx.nd.Pooling(mx.nd.array(a), kernel=(2, 2), stride=(2, 2), pool_type="max").asnumpy()

    plain = cab(x)
    np.testing.assert_array_equal(cab(x, pool_output=1), pool(plain))
    small = x[:, :, ::2, ::2]
    up = mx.nd.UpSampling(mx.nd.array(small), scale=2, sample_type="nearest", num_args=1).asnumpy()
    np.testing.assert_array_equal(cab(small, upsample_input=1), cab(up))
    big = np.repeat(np.repeat(x, 2, axis=2), 2, axis=3) + rng.uniform(-0.1, 0, (1, c, 2 * size, 2 * size))
    big = np.pad(big, ((0, 0), (0, 0), (0, 1), (0, 1))).astype(np.float32)  # odd sides floor, as MXNet's pooling
    np.testing.assert_array_equal(cab(big, pool_input=1), cab(pool(big)))
    np.testing.assert_array_equal(cab(big, pool_input=1, pool_output=1), pool(cab(pool(big))))


def test_cab_operator_sees_new_weights_and_batch_sizes():
    ext.load()
    rng = np.random.RandomState(23)
    c = 16
    params = _params(rng, c)
    x = rng.uniform(0.0, 2.0, (1, c, 6, 6)).astype(np.float32)
    ranges = _ranges(_fp32_block(x, params))
    names = [p for out, _, _ in LAYERS for p in (out + "_weight", out + "_bias")]
    # Declared shapes, as the export writes them (MXNet 1.9 cannot infer ten unknown ones).
    sym = mx.sym.sdu_cab_q(mx.sym.var("data"), *[mx.sym.var(n, shape=params[n].shape) for n in names], **ranges)
    for batch in (1, 3):
        mod = mx.mod.Module(sym, data_names=["data"], label_names=None)
        mod.bind(data_shapes=[("data", (batch,) + x.shape[1:])], for_training=False)
        for trial in range(2):
            scaled = {n: v * (1 + trial) for n, v in params.items()}
            mod.set_params({n: mx.nd.array(v) for n, v in scaled.items()}, {})
            xb = np.repeat(x, batch, axis=0)
            mod.forward(mx.io.DataBatch([mx.nd.array(xb)]), is_train=False)
            fresh = mx.nd.sdu_cab_q(mx.nd.array(xb), *[mx.nd.array(scaled[n]) for n in names], **ranges)
            np.testing.assert_array_equal(mod.get_outputs()[0].asnumpy(), fresh.asnumpy())


def test_cab_operator_rejects_bad_attributes_and_shapes():
    ext.load()
    rng = np.random.RandomState(24)
    params = _params(rng, 16)
    weights = list(map(mx.nd.array, _inputs(params)))
    x = mx.nd.ones((1, 16, 4, 4))
    ok = {f"{n}_{end}": v for n in ("data",) + MAPS for end, v in (("min", 0.0), ("max", 1.0))}
    for change, message in [({"w2_h4_max": "x"}, "w2_h4_min and w2_h4_max must be numbers"),
                            ({"data_min": 0.0, "data_max": 0.0}, "data_min and data_max must be numbers, not both zero"),
                            ({"w1_h3_x_min": -1.0}, "w1_h3_x_min must be >= 0"),
                            ({"pool_output": 2}, "pool_output must be 0 or 1"),
                            ({"pool_input": 1, "upsample_input": 1}, "exclude each other")]:
        with pytest.raises(mx.base.MXNetError, match=message):
            mx.nd.sdu_cab_q(x, *weights, **dict(ok, **change)).wait_to_read()
    with pytest.raises(mx.base.MXNetError, match="C a positive multiple of 8"):
        mx.nd.sdu_cab_q(mx.nd.ones((1, 12, 4, 4)), *weights, **ok).wait_to_read()
    with pytest.raises(mx.base.MXNetError, match=r"w2_h4 must have weight \(4, 8, 3, 3\)"):
        mx.nd.sdu_cab_q(x, weights[0], weights[1], mx.nd.ones((4, 4, 3, 3)), *weights[3:], **ok).wait_to_read()
    with pytest.raises(mx.base.MXNetError, match="pool_output needs at least 2x2"):
        mx.nd.sdu_cab_q(mx.nd.ones((1, 16, 1, 1)), *weights, pool_output=1, **ok).wait_to_read()
    with pytest.raises(mx.base.MXNetError, match="supports float32 only"):
        mx.nd.sdu_cab_q(x.astype("float64"), *weights, **ok).wait_to_read()


def _net(c=16, tail=None):
    """Two CABs, the first pooled into the second, the second's output up-sampled into a
    third, as the dense U-Net chains them; the graph a BN-folded fp32 export holds."""
    ext.load()
    data = mx.sym.var("data")
    a = cab_block(data, c, c, "a", fused_mean=True)
    b = cab_block(mx.sym.Pooling(a, kernel=(2, 2), stride=(2, 2), pool_type="max"), c, c, "b", fused_mean=True)
    up = mx.sym.UpSampling(b, scale=2, sample_type="nearest", num_args=1)
    out = cab_block(up, c, c, "c", fused_mean=True)
    return mx.sym.Group([out, tail(a)]) if tail else out


def _fold(sym, rng):
    """Random parameters for sym, then BN folded as the export does."""
    from insightface_align.export import fold_batchnorm

    arg_shapes, _, aux_shapes = sym.infer_shape(data=(2, 16, 8, 8))
    arg = {n: mx.nd.array(rng.randn(*s) * 0.3) for n, s in zip(sym.list_arguments(), arg_shapes) if n != "data"}
    aux = {n: mx.nd.array(rng.uniform(0.5, 1.5, s)) for n, s in zip(sym.list_auxiliary_states(), aux_shapes)}
    return fold_batchnorm(sym, arg, aux)[:3]


def test_export_pass_swaps_each_cab_with_its_neighbours_and_matches():
    rng = np.random.RandomState(25)
    sym, arg, aux = _fold(_net(), rng)
    images = rng.uniform(-1, 2, (8, 16, 8, 8)).astype(np.float32)
    graph = json.loads(sym.tojson())
    cabs = find_cabs(graph)
    assert len(cabs) == 3
    qsym, count = int8_cab_blocks(sym, arg, aux, images, batch_size=4)
    nodes = json.loads(qsym.tojson())["nodes"]
    ops = [n["op"] for n in nodes if n["op"] != "null"]
    assert count == 3 and ops == ["sdu_cab_q"] * 3  # convolutions, means, pooling, up-sampling: all inside
    first, second, third = [n for n in nodes if n["op"] == "sdu_cab_q"]
    assert first["attrs"].get("pool_output") == "1" and "pool_input" not in second["attrs"]
    assert third["attrs"].get("upsample_input") == "1" and third["name"] == "c_w1_h1_mean"
    assert float(first["attrs"]["data_min"]) < 0 < float(first["attrs"]["w3_h4_max"])
    shapes = {n["name"]: n["attrs"]["__shape__"] for n in nodes if n["op"] == "null" and n["name"] != "data"}
    assert shapes["b_w3_h4_1_conv_weight"] == "(8, 16, 3, 3)" and len(shapes) == 30
    fp32 = sym.bind(mx.cpu(), dict(arg, data=mx.nd.array(images[:2])), aux_states=aux).forward()[0].asnumpy()
    exe = qsym.simple_bind(mx.cpu(), data=(2, 16, 8, 8), grad_req="null")
    exe.copy_params_from(arg, aux, allow_extra_params=True)
    got = exe.forward(data=mx.nd.array(images[:2]))[0].asnumpy()
    assert np.abs(got - fp32).mean() < 0.05 * np.abs(fp32).mean()


def test_export_pass_leaves_blocks_whose_inner_maps_are_read_outside():
    rng = np.random.RandomState(26)
    # An extra output reads the first block's inner map: that block must stay as it is.
    sym, arg, aux = _fold(_net(tail=lambda a: a.get_children()[0]), rng)
    assert len(find_cabs(json.loads(sym.tojson()))) == 2
    # A pooled output that is also a head keeps its pooling outside.
    sym, arg, aux = _fold(_net(tail=lambda a: a), rng)
    cabs = find_cabs(json.loads(sym.tojson()))
    assert len(cabs) == 3 and all(cab.pool is None for cab in cabs)
