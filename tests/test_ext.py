"""The compiled operator library: build, load and error paths, and the operator's own checks.

(Its numerics against MXNet's native deformable convolution are in test_deform.py.)
"""
from __future__ import annotations

import json
import os

import mxnet as mx
import numpy as np
import pytest

from insightface_align.symbols import ext
from insightface_align.symbols.deform import deformable_unit


def test_library_is_built_and_registers_its_operators():
    assert not ext.is_stale(), "make install builds symbols/ext/libsdu_ops.so"
    ext.load()
    for op in ext.OPS:
        assert hasattr(mx.sym, op) and hasattr(mx.nd, op), op


def test_missing_library_is_a_clear_error(tmp_path):
    path = str(tmp_path / "libnothing.so")
    with pytest.raises(ext.ExtensionError, match="libnothing.so is missing"):
        ext.load(path)


def test_stale_library_is_refused(tmp_path):
    stale = tmp_path / "libold.so"
    stale.write_bytes(b"\x7fELF")
    old = min(os.path.getmtime(s) for s in ext._sources()) - 100
    os.utime(stale, (old, old))
    assert ext.is_stale(str(stale))
    with pytest.raises(ext.ExtensionError, match="older than its sources"):
        ext.load(str(stale))


def test_failed_build_names_the_library_and_leaves_nothing_behind(tmp_path, monkeypatch):
    monkeypatch.setenv("CXX", "false")   # a "compiler" that always fails
    target = tmp_path / "libsdu_ops.so"
    with pytest.raises(ext.ExtensionError, match="building .*libsdu_ops.so failed"):
        ext.build(str(target), force=True)
    assert os.listdir(tmp_path) == []


def test_missing_compiler_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("CXX", "no-such-compiler-xyz")
    with pytest.raises(ext.ExtensionError, match="no C\\+\\+ compiler 'no-such-compiler-xyz'"):
        ext.build(str(tmp_path / "lib.so"), force=True)


def test_blend_rejects_inconsistent_shapes_with_its_own_message():
    ext.load()
    offset = mx.nd.zeros((1, 18, 4, 4))
    with pytest.raises(mx.base.MXNetError, match="sdu_dcn_blend: expected offset"):
        mx.nd.sdu_dcn_blend(offset, mx.nd.zeros((1, 4, 5, 9 * 2)), no_bias=True).wait_to_read()
    with pytest.raises(mx.base.MXNetError, match="sdu_dcn_blend: expected table"):
        mx.nd.sdu_dcn_blend(offset, mx.nd.zeros((1, 4, 4, 10)), no_bias=True).wait_to_read()
    with pytest.raises(mx.base.MXNetError, match="sdu_dcn_blend: bias must have shape"):
        mx.nd.sdu_dcn_blend(offset, mx.nd.zeros((1, 4, 4, 18)), mx.nd.zeros(3)).wait_to_read()
    with pytest.raises(mx.base.MXNetError, match="sdu_deform_unit: expected table"):
        mx.nd.sdu_deform_unit(mx.nd.zeros((1, 4, 4, 162)), mx.nd.zeros(18), no_bias=True).wait_to_read()


def test_blend_with_zero_offsets_sums_the_nine_shifted_taps():
    """The operator alone, against a direct loop: out[b, f, y, x] = bias + sum_k T[(y+i-1, x+j-1), k, f]."""
    ext.load()
    rng = np.random.RandomState(0)
    b, h, w, f = 2, 4, 5, 3
    table = rng.randn(b, h, w, 9 * f).astype(np.float32)
    bias = rng.randn(f).astype(np.float32)
    out = mx.nd.sdu_dcn_blend(mx.nd.zeros((b, 18, h, w)), mx.nd.array(table), mx.nd.array(bias)).asnumpy()
    taps = table.reshape(b, h, w, 9, f)
    # The fused unit with an all-zero offset-tap block and offset bias is the same blend.
    unit_table = np.concatenate([np.zeros((b, h, w, 162), np.float32), table], axis=3)
    unit = mx.nd.sdu_deform_unit(mx.nd.array(unit_table), mx.nd.zeros(18), mx.nd.array(bias)).asnumpy()
    np.testing.assert_allclose(unit, out, rtol=1e-6, atol=1e-6)
    expected = np.broadcast_to(bias[None, :, None, None], (b, f, h, w)).copy()
    for k in range(9):
        i, j = divmod(k, 3)
        for y in range(h):
            for x in range(w):
                if 0 <= y + i - 1 < h and 0 <= x + j - 1 < w:
                    expected[:, :, y, x] += taps[:, y + i - 1, x + j - 1, k, :]
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("exponent", [7, -5])
def test_unit_offset_exponent_undoes_scaled_offset_columns_exactly(exponent):
    """Offset columns holding 2^e x the taps, with offset_exponent=e: the same output and
    table gradient (scaled likewise) to the bit, what an INT8 export relies on."""
    ext.load()
    rng = np.random.RandomState(3)
    b, h, w, f = 2, 5, 6, 4
    table = rng.randn(b, h, w, 162 + 9 * f).astype(np.float32)
    table[..., :162] *= 0.05
    scaled = table.copy()
    scaled[..., :162] *= 2.0 ** exponent
    obias, bias = mx.nd.array(rng.uniform(-1, 1, 18)), mx.nd.array(rng.randn(f))
    gout = mx.nd.array(rng.randn(b, f, h, w))
    results = []
    for tab, attrs in ((table, {}), (scaled, {"offset_exponent": exponent})):
        t = mx.nd.array(tab)
        t.attach_grad()
        with mx.autograd.record():
            out = mx.nd.sdu_deform_unit(t, obias, bias, **attrs)
        out.backward(gout)
        results.append((out.asnumpy(), t.grad.asnumpy()))
    (out0, grad0), (out1, grad1) = results
    np.testing.assert_array_equal(out1, out0)
    np.testing.assert_array_equal(grad1[..., 162:], grad0[..., 162:])
    np.testing.assert_array_equal(grad1[..., :162], grad0[..., :162] * np.float32(2.0 ** -exponent))
    with pytest.raises(mx.base.MXNetError, match="offset_exponent must be an integer"):
        mx.nd.sdu_deform_unit(mx.nd.array(table), obias, bias, offset_exponent="1.5").wait_to_read()


def test_fast_unit_trains_identically_on_two_cpu_contexts():
    """The GPU data-parallel path, exercised on mx.cpu(0) + mx.cpu(1): same gradients as one device."""
    rng = np.random.RandomState(1)
    sym = deformable_unit(mx.sym.Variable("data"), 4, "dc", "dc_offset", impl="fast")
    loss = mx.sym.MakeLoss(mx.sym.mean(mx.sym.square(sym)))
    data = mx.nd.array(rng.randn(4, 3, 6, 6))
    arg_shapes, _, _ = sym.infer_shape(data=data.shape)
    params = {name: mx.nd.array(rng.randn(*shape) * (0.1 if "offset" in name else 0.5))
              for name, shape in zip(sym.list_arguments(), arg_shapes) if name != "data"}
    grads = []
    for contexts in ([mx.cpu(0)], [mx.cpu(0), mx.cpu(1)]):
        mod = mx.mod.Module(loss, data_names=["data"], label_names=None, context=contexts)
        mod.bind(data_shapes=[("data", data.shape)])
        mod.init_params(arg_params=params, aux_params={})
        mod.forward_backward(mx.io.DataBatch([data]))
        group = mod._exec_group
        grads.append({name: sum(g.asnumpy() for g in per_device)
                      for name, per_device in zip(group.param_names, group.grad_arrays)})
    one, two = grads
    assert np.abs(one["dc_offset_weight"]).max() > 0
    for name in one:
        # Each device's loss is a mean over its half: two devices sum to twice the one-device gradient.
        np.testing.assert_allclose(two[name], 2 * one[name], rtol=1e-4, atol=1e-6, err_msg=name)


def test_mean_repeats_narrow_inputs_and_matches_standard_operators_bit_for_bit():
    ext.load()
    rng = np.random.RandomState(2)
    x = rng.randn(2, 8, 3, 5).astype(np.float32)
    y = rng.randn(2, 4, 3, 5).astype(np.float32)
    z = rng.randn(2, 8, 3, 5).astype(np.float32)
    fused = mx.nd.sdu_mean(mx.nd.array(x), mx.nd.array(y), num_args=2).asnumpy()
    standard = (mx.nd.add_n(mx.nd.array(x), mx.nd.concat(mx.nd.array(y), mx.nd.array(y), dim=1)) / 2).asnumpy()
    assert np.array_equal(fused, standard)
    three = mx.nd.sdu_mean(mx.nd.array(x), mx.nd.array(z), mx.nd.array(x), num_args=3).asnumpy()
    assert np.array_equal(three, (mx.nd.add_n(*[mx.nd.array(a) for a in (x, z, x)]) / 3).asnumpy())


def test_mean_gradients_sum_over_the_repeated_channels():
    ext.load()
    rng = np.random.RandomState(3)
    x, y = mx.nd.array(rng.randn(1, 6, 2, 2)), mx.nd.array(rng.randn(1, 2, 2, 2))
    g = rng.randn(1, 6, 2, 2)
    x.attach_grad()
    y.attach_grad()
    with mx.autograd.record():
        out = mx.nd.sdu_mean(x, y, num_args=2)
    out.backward(mx.nd.array(g))
    np.testing.assert_allclose(x.grad.asnumpy(), g / 2, rtol=1e-6)
    np.testing.assert_allclose(y.grad.asnumpy(), (g[:, 0:2] + g[:, 2:4] + g[:, 4:6]) / 2, rtol=1e-6)


def test_mean_rejects_channel_counts_that_do_not_divide():
    ext.load()
    with pytest.raises(mx.base.MXNetError, match="sdu_mean: inputs need equal B, H, W"):
        mx.nd.sdu_mean(mx.nd.zeros((1, 6, 2, 2)), mx.nd.zeros((1, 4, 2, 2)), num_args=2).wait_to_read()
    with pytest.raises(mx.base.MXNetError, match="sdu_mean: inputs need equal B, H, W"):
        mx.nd.sdu_mean(mx.nd.zeros((1, 4, 2, 2)), mx.nd.zeros((1, 4, 3, 2)), num_args=2).wait_to_read()


@pytest.mark.parametrize("block,topology", [("cab", "sat3"), ("cab", "hourglass"), ("resnet", "sat1"),
                                            ("hpm", "dla")])
def test_fused_means_compute_the_standard_network_exactly(block, topology):
    """Same parameters, fused vs standard means: the same heatmaps and gradients (float64,
    so training-mode BatchNorm cannot amplify summation-order rounding)."""
    from insightface_align.symbols.config import NetConfig
    from insightface_align.symbols.network import build_heatmaps

    base = NetConfig(block=block, topology=topology, depth=2, stacks=1, multiplier=0.5, input_size=64,
                     heatmap_size=16, dcn_impl="native")
    results = {}
    for mean in ("standard", "fused"):
        heat = build_heatmaps(base.replace(mean_impl=mean))[-1]
        ops = {n["op"] for n in json.loads(heat.tojson())["nodes"]}
        assert ("sdu_mean" in ops) == (mean == "fused" and (block == "cab" or topology != "hourglass")), ops
        ex = heat.simple_bind(mx.cpu(), data=(2, 3, 64, 64), type_dict={n: "float64" for n in heat.list_arguments()})
        rng = np.random.RandomState(4)
        for name, arr in sorted(ex.arg_dict.items()):
            arr[:] = rng.uniform(0, 255, arr.shape) if name == "data" else rng.randn(*arr.shape) * 0.1
        for name, arr in sorted(ex.aux_dict.items()):
            arr[:] = 1.0 if name.endswith("var") else 0.0
        out = ex.forward(is_train=True)[0].asnumpy()
        ex.backward(mx.nd.array(np.random.RandomState(5).randn(*out.shape), dtype="float64"))
        results[mean] = (out, {k: v.asnumpy() for k, v in ex.grad_dict.items()})
    np.testing.assert_allclose(results["fused"][0], results["standard"][0], rtol=1e-12, atol=1e-12)
    for name, grad in results["standard"][1].items():
        assert np.abs(grad).max() > 0, name
        np.testing.assert_allclose(results["fused"][1][name], grad, rtol=1e-9, atol=1e-9 * np.abs(grad).max(),
                                   err_msg=name)


def test_cpu_only_operators_are_refused_on_gpu_and_swapped_by_for_context():
    from insightface_align.errors import ConfigError
    from insightface_align.symbols.config import NetConfig
    from insightface_align.symbols.network import for_context, resolve_mean_impl

    with pytest.raises(ConfigError, match="mean_impl.*CPU-only"):
        resolve_mean_impl("fused", mx.gpu(0))
    assert resolve_mean_impl("auto", mx.gpu(0)) == "standard"
    assert resolve_mean_impl("auto", mx.cpu()) == "fused"
    cpu = NetConfig(block="cab", topology="sat3", depth=3, dcn=3, dcn_impl="fast", mean_impl="fused")
    assert for_context(cpu, mx.cpu()) == cpu
    gpu = for_context(cpu, [mx.gpu(0), mx.gpu(1)])
    assert (gpu.dcn_impl, gpu.mean_impl) == ("native", "standard")
    assert for_context(cpu.replace(dcn_impl="portable"), mx.gpu(0)).dcn_impl == "portable"


def test_mean_rejects_a_malformed_num_args():
    ext.load()
    with pytest.raises(mx.base.MXNetError, match="num_args must be an integer in 1..16"):
        mx.nd.sdu_mean(mx.nd.zeros((1, 4, 2, 2)), num_args="x2").wait_to_read()


def _conv_reference(x, w, b, relu):
    out = mx.nd.Convolution(x, w, b, kernel=(3, 3), pad=(1, 1), num_filter=w.shape[0])
    return mx.nd.relu(out) if relu else out


@pytest.mark.parametrize("channels, algorithm", [((32, 16), "winograd"), ((48, 32), "winograd"),
                                                 ((5, 7), "winograd"), ((32, 16), "direct")],
                         ids=["wino-4x3", "wino-48", "fallback-direct", "direct"])
@pytest.mark.parametrize("relu", [False, True], ids=["linear", "relu"])
def test_wino_conv_matches_convolution(channels, algorithm, relu):
    """Winograd (or oneDNN direct: channels not in 16-blocks, or asked for) equals MXNet's conv."""
    ext.load()
    rng = np.random.RandomState(1)
    cin, cout = channels
    x = mx.nd.array(rng.randn(2, cin, 13, 11))
    w = mx.nd.array(rng.randn(cout, cin, 3, 3) * 0.1)
    b = mx.nd.array(rng.randn(cout))
    got = mx.nd.sdu_wino_conv(x, w, b, num_filter=cout, act_type="relu" if relu else "none", algorithm=algorithm)
    want = _conv_reference(x, w, b, relu).asnumpy()
    assert got.shape == want.shape
    np.testing.assert_allclose(got.asnumpy(), want, rtol=1e-4, atol=1e-4 * np.abs(want).max())
    if relu:
        assert (got.asnumpy() >= 0).all() and (want == 0).any()


def test_wino_conv_sees_new_weights_and_new_batch_sizes():
    """The node keeps weights in Winograd layout between calls: changed weights (set_params)
    and a rebound batch size must still give the right answer."""
    ext.load()
    rng = np.random.RandomState(2)
    sym = mx.sym.sdu_wino_conv(mx.sym.var("data"), mx.sym.var("w"), mx.sym.var("b"), num_filter=16)
    x = rng.randn(1, 16, 8, 8).astype(np.float32)
    for batch in (1, 3):
        mod = mx.mod.Module(sym, data_names=["data"], label_names=None)
        mod.bind(data_shapes=[("data", (batch, 16, 8, 8))], for_training=False)
        for trial in range(2):
            w, b = rng.randn(16, 16, 3, 3).astype(np.float32), rng.randn(16).astype(np.float32)
            mod.set_params({"w": mx.nd.array(w), "b": mx.nd.array(b)}, {})
            xb = np.repeat(x, batch, axis=0) + trial
            mod.forward(mx.io.DataBatch([mx.nd.array(xb)]), is_train=False)
            want = _conv_reference(mx.nd.array(xb), mx.nd.array(w), mx.nd.array(b), False).asnumpy()
            np.testing.assert_allclose(mod.get_outputs()[0].asnumpy(), want, rtol=1e-4, atol=1e-4)


def test_wino_conv_rejects_bad_attributes_and_shapes():
    ext.load()
    x, w, b = mx.nd.zeros((1, 16, 4, 4)), mx.nd.zeros((16, 16, 3, 3)), mx.nd.zeros(16)
    with pytest.raises(mx.base.MXNetError, match="act_type must be 'relu' or 'none'"):
        mx.nd.sdu_wino_conv(x, w, b, num_filter=16, act_type="tanh").wait_to_read()
    with pytest.raises(mx.base.MXNetError, match="num_filter must be a positive integer"):
        mx.nd.sdu_wino_conv(x, w, b, num_filter=0).wait_to_read()
    with pytest.raises(mx.base.MXNetError, match="algorithm must be 'winograd' or 'direct'"):
        mx.nd.sdu_wino_conv(x, w, b, num_filter=16, algorithm="fft").wait_to_read()
    with pytest.raises(mx.base.MXNetError, match=r"weight must be \(num_filter, C, 3, 3\)"):
        mx.nd.sdu_wino_conv(x, mx.nd.zeros((16, 16, 5, 5)), b, num_filter=16).wait_to_read()
    with pytest.raises(mx.base.MXNetError, match="supports float32 only"):
        mx.nd.sdu_wino_conv(x.astype("float64"), w.astype("float64"), b.astype("float64"),
                            num_filter=16).wait_to_read()


def test_build_without_onednn_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setattr(ext.sys, "prefix", str(tmp_path))
    with pytest.raises(ext.ExtensionError, match="no oneapi/dnnl/dnnl.hpp; install the pinned onednn-devel"):
        ext.build(str(tmp_path / "lib.so"), force=True)


@pytest.mark.parametrize("size", [(9, 13), (1, 5), (4, 1)], ids=["9x13", "one-row", "one-column"])
@pytest.mark.parametrize("relu", [False, True], ids=["linear", "relu"])
def test_dw_conv_matches_grouped_convolution(size, relu):
    """The plain-layout depthwise stencil equals MXNet's grouped conv, borders included."""
    ext.load()
    rng = np.random.RandomState(4)
    c = 6
    x = mx.nd.array(rng.randn(2, c, *size))
    w = mx.nd.array(rng.randn(c, 1, 3, 3))
    b = mx.nd.array(rng.randn(c))
    want = mx.nd.Convolution(x, w, b, kernel=(3, 3), pad=(1, 1), num_filter=c, num_group=c)
    want = (mx.nd.relu(want) if relu else want).asnumpy()
    got = mx.nd.sdu_dw_conv(x, w, b, act_type="relu" if relu else "none").asnumpy()
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_dw_conv_rejects_bad_attributes_and_shapes():
    ext.load()
    x, b = mx.nd.zeros((1, 4, 5, 5)), mx.nd.zeros(4)
    with pytest.raises(mx.base.MXNetError, match="sdu_dw_conv: act_type must be 'relu' or 'none'"):
        mx.nd.sdu_dw_conv(x, mx.nd.zeros((4, 1, 3, 3)), b, act_type="sigmoid").wait_to_read()
    with pytest.raises(mx.base.MXNetError, match=r"weight must be \(C, 1, 3, 3\)"):
        mx.nd.sdu_dw_conv(x, mx.nd.zeros((4, 4, 3, 3)), b).wait_to_read()
    with pytest.raises(mx.base.MXNetError, match=r"bias must be \(C,\)"):
        mx.nd.sdu_dw_conv(x, mx.nd.zeros((4, 1, 3, 3)), mx.nd.zeros(3)).wait_to_read()
    with pytest.raises(mx.base.MXNetError, match="supports float32 only"):
        mx.nd.sdu_dw_conv(x.astype("float64"), mx.nd.zeros((4, 1, 3, 3), dtype="float64"),
                          b.astype("float64")).wait_to_read()


@pytest.mark.parametrize("relu", [False, True], ids=["linear", "relu"])
def test_deconv2x2_matches_mxnet_deconvolution(relu):
    """One GEMM per image plus the stride-2 scatter equals MXNet's 2x2 stride-2 deconvolution."""
    ext.load()
    rng = np.random.RandomState(7)
    x = mx.nd.array(rng.randn(2, 24, 5, 7))
    w = mx.nd.array(rng.randn(24, 10, 2, 2))
    b = mx.nd.array(rng.randn(10))
    want = mx.nd.Deconvolution(x, w, kernel=(2, 2), stride=(2, 2), num_filter=10, no_bias=True)
    want = want + b.reshape((1, 10, 1, 1))
    want = (mx.nd.relu(want) if relu else want).asnumpy()
    got = mx.nd.sdu_deconv2x2(x, w, b, num_filter=10, act_type="relu" if relu else "none").asnumpy()
    assert got.shape == (2, 10, 10, 14)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_deconv2x2_rejects_bad_attributes_and_shapes():
    ext.load()
    x, b = mx.nd.zeros((1, 4, 3, 3)), mx.nd.zeros(6)
    with pytest.raises(mx.base.MXNetError, match="sdu_deconv2x2: num_filter must be a positive integer"):
        mx.nd.sdu_deconv2x2(x, mx.nd.zeros((4, 6, 2, 2)), b).wait_to_read()
    with pytest.raises(mx.base.MXNetError, match=r"weight must be \(C, num_filter, 2, 2\) = \(4, 6, 2, 2\)"):
        mx.nd.sdu_deconv2x2(x, mx.nd.zeros((6, 4, 2, 2)), b, num_filter=6).wait_to_read()
    with pytest.raises(mx.base.MXNetError, match="act_type must be 'relu' or 'none'"):
        mx.nd.sdu_deconv2x2(x, mx.nd.zeros((4, 6, 2, 2)), b, num_filter=6, act_type="elu").wait_to_read()
