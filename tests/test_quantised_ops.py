"""The INT8 compiled operators of INT8 exports: sdu_deform_unit_q and sdu_deconv2x2_q.

Each is checked against its fp32 operator run on the operands it quantises, quantised
here independently (MXNet's conventions: uint8 over [0, max] for a non-negative input
range, else int8 over +-max|.|; weights per output column over max |w|; round to
nearest, saturate). That pins the arithmetic to 1e-5, where a comparison with the
unquantised fp32 result could only bound the quantisation error. Tests taking `kernels`
run with the CPU's best kernels (AVX-512 here) and with the baseline (plain x86-64) ones.
"""
from __future__ import annotations

import mxnet as mx
import numpy as np
import pytest

from insightface_align.symbols import ext


def _input_steps(x: np.ndarray, lo: float, hi: float) -> tuple:
    """(integer steps, real value per step) of x as the operators quantise it (float32 maths)."""
    m = np.float32(max(abs(lo), abs(hi)))
    top, floor = (255, 0) if lo >= 0 else (127, -127)
    unit = m / np.float32(top)
    return np.clip(np.round(x * (np.float32(1) / unit)), floor, top), unit


def _column_steps(w: np.ndarray) -> tuple:
    """(integer steps, real value per step per column) of w (K, N) quantised per column."""
    unit = np.abs(w).max(axis=0) / np.float32(127)
    unit[unit == 0] = 1
    return np.round(w / unit), unit.astype(np.float32)


def _unit_inputs(rng, b=2, c=12, h=6, w=7, f=5, signed=False, exponent=0):
    x = rng.uniform(-1.0 if signed else 0.0, 2.0, (b, c, h, w)).astype(np.float32)
    weight = (rng.randn(162 + 9 * f, c) * 0.3).astype(np.float32)
    weight[:162] *= 0.05 * 2.0 ** exponent  # offsets of under a pixel, scaled as an export does
    return x, weight, rng.uniform(-1, 1, 18).astype(np.float32), rng.randn(f).astype(np.float32)


def _unit_q(x, weight, obias, bias, table_range, offset_range, **attrs):
    args = [mx.nd.array(x), mx.nd.array(weight), mx.nd.array(obias)] + ([] if bias is None else [mx.nd.array(bias)])
    return mx.nd.sdu_deform_unit_q(*args, num_filter=(weight.shape[0] - 162) // 9, data_min=float(x.min()),
                                   data_max=float(x.max()), table_range=table_range, offset_range=offset_range,
                                   no_bias=bias is None, **attrs).asnumpy()


@pytest.mark.parametrize("signed", [False, True], ids=["uint8-input", "int8-input"])
@pytest.mark.parametrize("exponent", [0, 3])
@pytest.mark.parametrize("w,f", [(7, 5), (16, 16)], ids=["scalar-rows", "16x16-blocks"])
def test_quantised_unit_equals_the_fp32_unit_on_its_quantised_operands(signed, exponent, w, f, kernels):
    ext.load()
    rng = np.random.RandomState(11)
    x, weight, obias, bias = _unit_inputs(rng, w=w, f=f, signed=signed, exponent=exponent)
    table = np.einsum("bchw,nc->bhwn", x.astype(np.float64), weight.astype(np.float64))
    taps, offsets = float(np.abs(table[..., 162:]).max()), float(np.abs(table[..., :162]).max())
    # The int8 table: integer products of the quantised input and weights, scaled onto
    # each column group's range in float32 as the operator does.
    xs, x_unit = _input_steps(x, x.min(), x.max())
    ws, w_unit = _column_steps(weight.T)
    products = np.einsum("bchw,kc->bhwk", xs.astype(np.float64), ws.T.astype(np.float64)).astype(np.float32)
    unit = np.where(np.arange(weight.shape[0]) < 162, np.float32(offsets), np.float32(taps)) / np.float32(127)
    table_q = np.clip(np.round(products * (x_unit * w_unit / unit)), -127, 127) * unit
    want = mx.nd.sdu_deform_unit(mx.nd.array(table_q), mx.nd.array(obias), mx.nd.array(bias),
                                 offset_exponent=exponent).asnumpy()
    got = _unit_q(x, weight, obias, bias, taps, offsets, offset_exponent=exponent)
    assert got.shape == want.shape == (2, f, 6, w) and got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * np.abs(want).max())
    no_bias = _unit_q(x, weight, obias, None, taps, offsets, offset_exponent=exponent)
    np.testing.assert_allclose(no_bias + bias[None, :, None, None], got, rtol=1e-5, atol=1e-5)
    relu = _unit_q(x, weight, obias, bias, taps, offsets, offset_exponent=exponent, act_type="relu")
    np.testing.assert_array_equal(relu, np.maximum(got, 0))
    # And close to the unquantised unit on average (on random data, a sample whose offset
    # rounds across a pixel moves its value a lot).
    fp32 = mx.nd.sdu_deform_unit(mx.nd.array(table), mx.nd.array(obias), mx.nd.array(bias),
                                 offset_exponent=exponent).asnumpy()
    assert np.abs(got - fp32).mean() < 0.05 * np.abs(fp32).mean()


def test_quantised_unit_sees_new_weights_and_batch_sizes(kernels):
    """The node keeps its quantised weights between calls; set_params and a rebound batch
    size must still give the result of a fresh operator."""
    ext.load()
    rng = np.random.RandomState(12)
    x, weight, obias, bias = _unit_inputs(rng)
    attrs = dict(num_filter=5, data_min=0.0, data_max=2.0, table_range=8.0, offset_range=1.0)
    sym = mx.sym.sdu_deform_unit_q(mx.sym.var("data"), mx.sym.var("w"), mx.sym.var("ob"), mx.sym.var("b"), **attrs)
    for batch in (1, 3):
        mod = mx.mod.Module(sym, data_names=["data"], label_names=None)
        mod.bind(data_shapes=[("data", (batch,) + x.shape[1:])], for_training=False)
        for trial in range(2):
            w = weight * (1 + trial)
            mod.set_params({"w": mx.nd.array(w), "ob": mx.nd.array(obias), "b": mx.nd.array(bias)}, {})
            xb = np.repeat(x[:1], batch, axis=0)
            mod.forward(mx.io.DataBatch([mx.nd.array(xb)]), is_train=False)
            fresh = mx.nd.sdu_deform_unit_q(mx.nd.array(xb), mx.nd.array(w), mx.nd.array(obias), mx.nd.array(bias),
                                            **attrs).asnumpy()
            np.testing.assert_array_equal(mod.get_outputs()[0].asnumpy(), fresh)


def test_quantised_unit_rejects_bad_attributes_and_shapes():
    ext.load()
    x, w, ob, b = mx.nd.ones((1, 4, 3, 3)), mx.nd.ones((162 + 18, 4)), mx.nd.zeros(18), mx.nd.zeros(2)
    ok = dict(num_filter=2, data_min=0.0, data_max=1.0, table_range=1.0, offset_range=1.0)
    for change, message in [({"data_max": "x"}, "data_min and data_max must be numbers"),
                            ({"data_min": 0.0, "data_max": 0.0}, "not both zero"),
                            ({"table_range": 0.0}, "table_range and offset_range must be positive"),
                            ({"offset_range": "nan"}, "table_range and offset_range must be positive"),
                            ({"num_filter": 0}, "num_filter"),
                            ({"act_type": "tanh"}, "act_type must be 'relu' or 'none'")]:
        with pytest.raises(mx.base.MXNetError, match=message):
            mx.nd.sdu_deform_unit_q(x, w, ob, b, **dict(ok, **change)).wait_to_read()
    with pytest.raises(mx.base.MXNetError, match=r"weight must be \(162 \+ 9 num_filter, C\) = \(180, 4\)"):
        mx.nd.sdu_deform_unit_q(x, mx.nd.ones((180, 5)), ob, b, **ok).wait_to_read()
    with pytest.raises(mx.base.MXNetError, match="supports float32 only"):
        mx.nd.sdu_deform_unit_q(x.astype("float64"), w, ob, b, **ok).wait_to_read()


@pytest.mark.parametrize("signed", [False, True], ids=["uint8-input", "int8-input"])
@pytest.mark.parametrize("relu", [False, True], ids=["linear", "relu"])
@pytest.mark.parametrize("h,w,o", [(5, 7, 10), (3, 16, 8)], ids=["scalar-copy", "8x8-blocks"])
def test_quantised_deconvolution_equals_the_fp32_one_on_its_quantised_operands(signed, relu, h, w, o, kernels):
    ext.load()
    rng = np.random.RandomState(13)
    x = rng.uniform(-1.0 if signed else 0.0, 2.0, (2, 24, h, w)).astype(np.float32)
    weight = rng.randn(24, o, 2, 2).astype(np.float32)
    b = rng.randn(o).astype(np.float32)
    act = "relu" if relu else "none"
    xs, x_unit = _input_steps(x, x.min(), x.max())
    ws, w_unit = _column_steps(weight.reshape(24, 4 * o))
    want = mx.nd.sdu_deconv2x2(mx.nd.array(xs * x_unit), mx.nd.array((ws * w_unit).reshape(24, o, 2, 2)),
                               mx.nd.array(b), num_filter=o, act_type=act).asnumpy()
    got = mx.nd.sdu_deconv2x2_q(mx.nd.array(x), mx.nd.array(weight), mx.nd.array(b), num_filter=o, act_type=act,
                                data_min=float(x.min()), data_max=float(x.max())).asnumpy()
    assert got.shape == (2, o, 2 * h, 2 * w)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * np.abs(want).max())
    fp32 = mx.nd.sdu_deconv2x2(mx.nd.array(x), mx.nd.array(weight), mx.nd.array(b), num_filter=o, act_type=act)
    assert np.abs(got - fp32.asnumpy()).max() < 0.02 * np.abs(fp32.asnumpy()).max()


def test_quantised_deconvolution_sees_new_weights_and_rejects_bad_attributes(kernels):
    ext.load()
    rng = np.random.RandomState(14)
    x = rng.uniform(0, 1, (1, 4, 3, 3)).astype(np.float32)
    attrs = dict(num_filter=6, data_min=0.0, data_max=1.0)
    sym = mx.sym.sdu_deconv2x2_q(mx.sym.var("data"), mx.sym.var("w"), mx.sym.var("b"), **attrs)
    mod = mx.mod.Module(sym, data_names=["data"], label_names=None)
    mod.bind(data_shapes=[("data", x.shape)], for_training=False)
    for trial in range(2):
        w, b = rng.randn(4, 6, 2, 2).astype(np.float32), rng.randn(6).astype(np.float32)
        mod.set_params({"w": mx.nd.array(w), "b": mx.nd.array(b)}, {})
        mod.forward(mx.io.DataBatch([mx.nd.array(x)]), is_train=False)
        fresh = mx.nd.sdu_deconv2x2_q(mx.nd.array(x), mx.nd.array(w), mx.nd.array(b), **attrs).asnumpy()
        np.testing.assert_array_equal(mod.get_outputs()[0].asnumpy(), fresh)
    xs, w, b = mx.nd.array(x), mx.nd.zeros((4, 6, 2, 2)), mx.nd.zeros(6)
    with pytest.raises(mx.base.MXNetError, match="sdu_deconv2x2_q: data_min and data_max must be numbers"):
        mx.nd.sdu_deconv2x2_q(xs, w, b, num_filter=6).wait_to_read()
    with pytest.raises(mx.base.MXNetError, match=r"weight must be \(C, num_filter, 2, 2\)"):
        mx.nd.sdu_deconv2x2_q(xs, mx.nd.zeros((6, 4, 2, 2)), b, **attrs).wait_to_read()
