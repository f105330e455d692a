"""The fast (compiled blend) and portable (standard ops) deformable conv graphs compute
exactly what MXNet's native op computes.

Every comparison binds both graphs to the same arrays, in float64 where the native op
allows it, so any difference is the implementation's, not rounding's.
"""
from __future__ import annotations

import mxnet as mx
import numpy as np
import pytest

from insightface_align.errors import ConfigError
from insightface_align.symbols import backend as backends
from insightface_align.symbols import ext
from insightface_align.symbols.backend import COMPILED, PORTABLE, RELEASE, Backend, choose
from insightface_align.symbols.deform import deformable_conv, deformable_unit


CPU_IMPLS = ("fast", "portable")


def _run(sym, arrays, dtype="float64", out_grad=None):
    """Forward (and backward when out_grad is given) with every argument set from arrays."""
    shapes = {k: v.shape for k, v in arrays.items() if k in ("data", "offset")}
    ex = sym.simple_bind(mx.cpu(), grad_req="write" if out_grad is not None else "null",
                         type_dict={k: dtype for k in sym.list_arguments()}, **shapes)
    for name, value in arrays.items():
        ex.arg_dict[name][:] = value
    out = ex.forward(is_train=out_grad is not None)[0].asnumpy()
    grads = {}
    if out_grad is not None:
        ex.backward(mx.nd.array(out_grad, dtype=dtype))
        grads = {k: v.asnumpy() for k, v in ex.grad_dict.items()}
    return out, grads


def _dcn(impl, num_filter, no_bias=False):
    return deformable_conv(mx.sym.Variable("data"), mx.sym.Variable("offset"), num_filter, "dc",
                           no_bias=no_bias, impl=impl)


def _rel(a, b):
    return np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30)


def _sample_rows(offset, height, width):
    """Absolute (y, x) of every tap sample, following the native layout (2k = dy, 2k+1 = dx)."""
    b, _, h, w = offset.shape
    k = np.arange(9).reshape(1, 9, 1, 1)
    y = np.arange(h).reshape(1, 1, h, 1) + k // 3 - 1 + offset[:, 0::2]
    x = np.arange(w).reshape(1, 1, 1, w) + k % 3 - 1 + offset[:, 1::2]
    return y, x


@pytest.mark.parametrize("impl", CPU_IMPLS)
@pytest.mark.parametrize("batch,channels,filters,height,width,reach", [
    (2, 3, 4, 5, 7, 1.0),      # small offsets, mostly inside
    (3, 5, 2, 6, 4, 1.5),      # offsets up to 1.5x the image: many samples outside
    (2, 4, 6, 7, 7, 0.3),
    (1, 2, 3, 3, 9, 1.5),
])
def test_fast_equals_native_outputs_and_gradients(batch, channels, filters, height, width, reach, impl):
    rng = np.random.RandomState(batch * 100 + channels)
    size = max(height, width)
    arrays = {"data": rng.randn(batch, channels, height, width),
              "offset": rng.uniform(-reach * size, reach * size, (batch, 18, height, width)),
              "dc_weight": rng.randn(filters, channels, 3, 3),
              "dc_bias": rng.randn(filters)}
    y, x = _sample_rows(arrays["offset"], height, width)
    outside = (y < 0) | (y >= height) | (x < 0) | (x >= width)
    assert 0.05 < outside.mean() < 0.99 or reach < 1.5   # the case really exercises the border rule
    out_grad = rng.randn(batch, filters, height, width)

    native, native_grads = _run(_dcn("native", filters), arrays, out_grad=out_grad)
    fast, fast_grads = _run(_dcn(impl, filters), arrays, out_grad=out_grad)
    zero_offsets = _run(_dcn("native", filters), dict(arrays, offset=0 * arrays["offset"]))[0]
    assert _rel(native, zero_offsets) > 0.1          # the offsets matter here
    assert _rel(fast, native) < 1e-9
    for name in ("data", "offset", "dc_weight", "dc_bias"):
        assert np.linalg.norm(native_grads[name]) > 0, name
        assert _rel(fast_grads[name], native_grads[name]) < 1e-9, name


@pytest.mark.parametrize("impl", CPU_IMPLS)
def test_fast_without_bias_has_no_bias_argument_and_matches(impl):
    rng = np.random.RandomState(3)
    arrays = {"data": rng.randn(2, 3, 5, 6), "offset": rng.uniform(-3, 3, (2, 18, 5, 6)),
              "dc_weight": rng.randn(4, 3, 3, 3)}
    fast_sym, native_sym = _dcn(impl, 4, no_bias=True), _dcn("native", 4, no_bias=True)
    assert "dc_bias" not in fast_sym.list_arguments()
    assert _rel(_run(fast_sym, arrays)[0], _run(native_sym, arrays)[0]) < 1e-9


def test_offset_layout_channel_2k_is_row_shift_of_tap_k():
    """Only tap (1, 2) weighted; dy=+1, dx=+0.5 must read x(y + 1, x + 1.5)."""
    rng = np.random.RandomState(4)
    h, w = 6, 7
    data = rng.randn(1, 1, h, w)
    weight = np.zeros((1, 1, 3, 3))
    weight[0, 0, 1, 2] = 1.0                       # k = 3*1 + 2 = 5
    offset = np.zeros((1, 18, h, w))
    offset[0, 10] = 1.0                            # channel 2k: rows
    offset[0, 11] = 0.5                            # channel 2k+1: columns
    expected = np.zeros((h, w))
    for yy in range(h):
        for xx in range(w):
            r, c = yy + 1, xx + 1.5
            if r < h and c < w:                    # inside [0, H) x [0, W)
                c0 = int(np.floor(c))
                if c0 + 1 < w:
                    expected[yy, xx] = 0.5 * data[0, 0, r, c0] + 0.5 * data[0, 0, r, c0 + 1]
                else:                              # last fractional column reads column W-1
                    expected[yy, xx] = data[0, 0, r, c0]
    for impl in ("native", "fast", "portable"):
        out = _run(_dcn(impl, 1, no_bias=True), {"data": data, "offset": offset, "dc_weight": weight})[0]
        np.testing.assert_allclose(out[0, 0], expected, atol=1e-12, err_msg=impl)


@pytest.mark.parametrize("impl", CPU_IMPLS)
@pytest.mark.parametrize("row", [-1.5, -1.0, -0.5, -1e-3, 0.0, 0.5, 3.0, 4.0, 4.25, 4.999, 5.0, 5.5])
def test_border_rule_matches_native_value_and_gradients(row, impl):
    """Centre tap of pixel (0, 2) sampled at (row, 2.25) in a 5x6 image; integer rows included."""
    rng = np.random.RandomState(5)
    h, w = 5, 6
    data = rng.randn(1, 2, h, w)
    weight = np.zeros((1, 2, 3, 3))
    weight[0, :, 1, 1] = [1.0, -0.5]
    offset = np.zeros((1, 18, h, w))
    offset[0, 8, 0, 2] = row
    offset[0, 9, 0, 2] = 0.25
    out_grad = np.zeros((1, 1, h, w))
    out_grad[0, 0, 0, 2] = 1.0
    arrays = {"data": data, "offset": offset, "dc_weight": weight, "dc_bias": np.zeros(1)}
    native, native_grads = _run(_dcn("native", 1), arrays, out_grad=out_grad)
    fast, fast_grads = _run(_dcn(impl, 1), arrays, out_grad=out_grad)
    np.testing.assert_allclose(fast, native, atol=1e-12)
    for name in ("data", "offset", "dc_weight"):
        np.testing.assert_allclose(fast_grads[name], native_grads[name], atol=1e-12, err_msg=name)
    # The rule itself, as measured: nothing below row 0 or at/after row H; [H-1, H) reads row H-1.
    if row < 0 or row >= h:
        assert native[0, 0, 0, 2] == 0.0
    elif row >= h - 1:
        expected = (weight[0, :, 1, 1] * (0.75 * data[0, :, h - 1, 2] + 0.25 * data[0, :, h - 1, 3])).sum()
        assert native[0, 0, 0, 2] == pytest.approx(expected)
        assert native_grads["offset"][0, 8, 0, 2] == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("impl", ["native", *CPU_IMPLS])
def test_zero_offsets_equal_a_plain_3x3_convolution(impl):
    rng = np.random.RandomState(6)
    arrays = {"data": rng.randn(2, 3, 6, 5), "offset": np.zeros((2, 18, 6, 5)),
              "dc_weight": rng.randn(4, 3, 3, 3), "dc_bias": rng.randn(4)}
    plain = mx.sym.Convolution(mx.sym.Variable("data"), num_filter=4, kernel=(3, 3), pad=(1, 1), name="dc")
    expected = _run(plain, {k: v for k, v in arrays.items() if k != "offset"})[0]
    np.testing.assert_allclose(_run(_dcn(impl, 4), arrays)[0], expected, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("impl", CPU_IMPLS)
def test_float32_zero_offset_gradients_match_native_at_network_size(impl):
    """At zero offsets every sample is on an integer: the offset gradient must be the same
    forward difference as native's (a float round trip could flip it to a backward one)."""
    rng = np.random.RandomState(7)
    h = w = 64
    arrays = {"data": rng.randn(1, 2, h, w), "offset": np.zeros((1, 18, h, w)),
              "dc_weight": rng.randn(2, 2, 3, 3), "dc_bias": rng.randn(2)}
    out_grad = rng.randn(1, 2, h, w)
    native, native_grads = _run(_dcn("native", 2), arrays, "float32", out_grad)
    fast, fast_grads = _run(_dcn(impl, 2), arrays, "float32", out_grad)
    assert _rel(fast, native) < 1e-5
    assert np.abs(fast_grads["offset"] - native_grads["offset"]).max() < 1e-3
    assert _rel(fast_grads["data"], native_grads["data"]) < 1e-5


def test_float32_fast_equals_native_with_16_filter_blocks():
    """16 filters and a width of 32: the blend writes its rows in 16 x 16 register blocks
    (AVX-512 builds; the float64 tests above take the scalar path)."""
    rng = np.random.RandomState(8)
    arrays = {"data": rng.randn(2, 8, 5, 32), "offset": rng.uniform(-2, 2, (2, 18, 5, 32)),
              "dc_weight": rng.randn(16, 8, 3, 3), "dc_bias": rng.randn(16)}
    native = _run(_dcn("native", 16), arrays, "float32")[0]
    fast = _run(_dcn("fast", 16), arrays, "float32")[0]
    assert _rel(fast, native) < 1e-5


def _unit(impl, num_filter=4):
    return deformable_unit(mx.sym.Variable("data"), num_filter, "stack0_ll_conv", "stack0_ll_conv_offset",
                           impl=impl)


def test_unit_arguments_identical_and_offset_conv_starts_at_zero():
    shape = (2, 3, 6, 5)
    syms = {impl: _unit(impl) for impl in ("native", *CPU_IMPLS)}
    signatures = {}
    for impl, sym in syms.items():
        arg_shapes, _, aux_shapes = sym.infer_shape(data=shape)
        signatures[impl] = (list(zip(sym.list_arguments(), arg_shapes)), sym.list_auxiliary_states())
        assert sym.list_outputs() == ["stack0_ll_conv_output"]
    assert signatures["fast"] == signatures["native"] == signatures["portable"]
    assert dict(signatures["fast"][0])["stack0_ll_conv_weight"] == (4, 3, 3, 3)

    for impl, sym in syms.items():
        mod = mx.mod.Module(sym, data_names=["data"], label_names=None, context=mx.cpu())
        mod.bind(data_shapes=[("data", shape)], for_training=False)
        mod.init_params(mx.init.Xavier(rnd_type="gaussian", factor_type="in", magnitude=2))
        args, _ = mod.get_params()
        assert not args["stack0_ll_conv_offset_weight"].asnumpy().any(), impl
        assert not args["stack0_ll_conv_offset_bias"].asnumpy().any(), impl
        assert args["stack0_ll_conv_weight"].asnumpy().std() > 0, impl   # Xavier did run


def test_unit_checkpoint_runs_on_either_graph():
    """Same parameters (with non-zero offset conv) give the same output on both graphs."""
    rng = np.random.RandomState(8)
    shape = (2, 3, 6, 5)
    native = _unit("native")
    arg_shapes, _, _ = native.infer_shape(data=shape)
    arrays = {name: rng.randn(*s) for name, s in zip(native.list_arguments(), arg_shapes)}
    arrays["stack0_ll_conv_offset_weight"] *= 0.5
    out_native = _run(native, arrays)[0]
    for impl in CPU_IMPLS:
        assert _rel(_run(_unit(impl), arrays)[0], out_native) < 1e-9, impl


def test_backend_is_chosen_from_the_context_and_overridable():
    assert choose(mx.gpu(0)) == choose([mx.gpu(0), mx.gpu(1)]) == RELEASE
    assert choose(mx.cpu()) == choose(None) == choose([mx.cpu(0), mx.cpu(1)]) == COMPILED  # the library is built
    assert choose(mx.cpu(), dcn="native") == Backend("native", "fused")
    assert choose(mx.cpu(), "auto", "standard") == Backend("fast", "standard")
    assert choose(mx.gpu(0), dcn="portable") == Backend("portable", "standard")
    assert choose(mx.cpu(), "portable", "standard") == PORTABLE
    with pytest.raises(ConfigError, match="dcn_impl.*CPU-only"):
        choose(mx.gpu(0), dcn="fast")
    with pytest.raises(ConfigError, match="mean_impl.*CPU-only"):
        choose(mx.gpu(0), mean="fused")
    with pytest.raises(ConfigError) as err:
        Backend("cudnn")
    assert err.value.field == "dcn_impl"
    with pytest.raises(ConfigError):
        deformable_conv(mx.sym.Variable("data"), mx.sym.Variable("offset"), 4, "dc", impl="auto")


def test_backend_without_the_library_is_stock_and_logged_once(monkeypatch, caplog):
    def missing(*_args, **_kwargs):
        raise ext.ExtensionError("libsdu_ops.so is missing")

    monkeypatch.setattr(ext, "load", missing)
    monkeypatch.setattr(backends, "_logged", set())
    with caplog.at_level("INFO", logger=backends.LOG.name):
        assert choose(mx.cpu()) == choose(None) == PORTABLE
        assert choose(mx.gpu(0)) == RELEASE
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 2 and "portable" in messages[0] and "libsdu_ops.so is missing" in messages[0]
