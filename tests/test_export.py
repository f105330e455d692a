"""Deploy exports: plain-MXNet loading, BN folding, native/fast DCN, INT8, ONNX."""
import json
import re
import subprocess
import sys

import numpy as np
import pytest

from conftest import ROOT
from insightface_align import export as ex
from insightface_align.checkpoint import load_params
from insightface_align.data.testing import random_face, write_release_rec
from insightface_align.int8_cab import find_cabs
from insightface_align.model import HeatmapModel, inference_graph
from insightface_align.recipe import load_recipe
from insightface_align.symbols.backend import RELEASE
from insightface_align.symbols.deform import OFFSET_COLUMNS, TAPS
from insightface_align.train import RunSpec, TrainConfig, Trainer


def _train(root, recipe_name, steps=2):
    rng = np.random.default_rng(7)
    if not (root / "train.rec").exists():
        write_release_rec(str(root / "train"), [random_face(rng) for _ in range(8)])
    recipe = load_recipe(recipe_name, multiplier=0.125)
    Trainer(recipe, TrainConfig(max_steps=steps, batch_per_device=4, lr=0.01, lr_steps=(100,), num_workers=0),
            RunSpec(str(root / "train.rec"), str(root / recipe_name), progress=False)).run()
    return str(root / recipe_name / "model"), steps


@pytest.fixture(scope="module")
def dcn_ckpt(tmp_path_factory):
    return _train(tmp_path_factory.mktemp("dcn"), "sdu-inside")


@pytest.fixture(scope="module")
def plain_ckpt(tmp_path_factory):
    return _train(tmp_path_factory.mktemp("plain"), "sdu-nodcn")


def _images(n=2):
    return np.random.RandomState(0).uniform(0, 255, (n, 3, 128, 128)).astype(np.float32)


def test_deploy_loads_with_plain_mxnet_without_project(dcn_ckpt, tmp_path):
    prefix, epoch = dcn_ckpt
    sym, arg, aux = ex.deploy_graph(prefix, epoch)
    ex.save_deploy(str(tmp_path / "deploy"), sym, arg, aux)
    expected = HeatmapModel(sym, arg, aux, batch_size=1)(_images(1))
    np.save(tmp_path / "x.npy", _images(1))
    script = f"""
import sys, numpy as np, mxnet as mx
assert 'insightface_align' not in sys.modules
sym, arg, aux = mx.model.load_checkpoint({str(tmp_path / 'deploy')!r}, 0)
out = sym.get_internals()['heatmap_output']
mod = mx.mod.Module(out, data_names=['data'], label_names=None)
mod.bind(data_shapes=[('data', (1, 3, 128, 128))], for_training=False)
mod.set_params(arg, aux)
mod.forward(mx.io.DataBatch([mx.nd.array(np.load({str(tmp_path / 'x.npy')!r}))]), is_train=False)
np.save({str(tmp_path / 'y.npy')!r}, mod.get_outputs()[0].asnumpy())
"""
    subprocess.run([sys.executable, "-I", "-c", script], check=True, cwd=str(tmp_path))
    got = np.load(tmp_path / "y.npy")
    assert got.shape == (1, 68, 64, 64)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
    graph = json.loads(sym.tojson())
    assert not any(n["op"] == "MakeLoss" for n in graph["nodes"]), "no loss heads in a deploy graph"
    assert set(arg) == set(sym.list_arguments()) - {"data"}


def test_native_portable_and_fast_exports_agree(dcn_ckpt):
    prefix, epoch = dcn_ckpt
    outs = {}
    for impl in ("native", "portable", "fast"):
        sym, arg, aux = ex.deploy_graph(prefix, epoch, impl)
        ops = {n["op"] for n in json.loads(sym.tojson())["nodes"]}
        assert ("_contrib_DeformableConvolution" in ops) == (impl == "native")
        assert ("sdu_deform_unit" in ops) == (impl == "fast")
        assert "sdu_mean" not in ops                     # standard means unless cpu_ops
        outs[impl] = HeatmapModel(sym, arg, aux, batch_size=2)(_images())
    # Same parameters, same function: differences only where a float32 sample coordinate lands
    # within rounding of a pixel boundary (a handful of the 557k outputs).
    for impl in ("portable", "fast"):
        diff = np.abs(outs[impl] - outs["native"])
        assert np.linalg.norm(diff) / np.linalg.norm(outs["native"]) < 1e-3, impl
        assert np.mean(diff > 1e-4 * np.abs(outs["native"]).max()) < 1e-4, impl


def test_cpu_ops_export_loads_with_the_library_and_matches(dcn_ckpt, tmp_path):
    """--cpu-ops: fast DCN + fused means; a loader registers libsdu_ops.so, then plain MXNet."""
    from insightface_align.symbols import ext

    prefix, epoch = dcn_ckpt
    plain = ex.deploy_graph(prefix, epoch)
    sym, arg, aux = ex.deploy_graph(prefix, epoch, cpu_ops=True)
    ops = {n["op"] for n in json.loads(sym.tojson())["nodes"]}
    assert {"sdu_deform_unit", "sdu_mean"} <= ops and "_div_scalar" not in ops
    ex.save_deploy(str(tmp_path / "cpu"), sym, arg, aux)
    expected = HeatmapModel(*plain, batch_size=1)(_images(1))
    np.testing.assert_allclose(HeatmapModel.load(str(tmp_path / "cpu"), 0, batch_size=1)(_images(1)), expected,
                               rtol=1e-3, atol=1e-4 * np.abs(expected).max())
    np.save(tmp_path / "x.npy", _images(1))
    script = f"""
import numpy as np, mxnet as mx
mx.library.load({ext.LIBRARY!r}, False)
sym, arg, aux = mx.model.load_checkpoint({str(tmp_path / 'cpu')!r}, 0)
mod = mx.mod.Module(sym.get_internals()['heatmap_output'], data_names=['data'], label_names=None)
mod.bind(data_shapes=[('data', (1, 3, 128, 128))], for_training=False)
mod.set_params(arg, aux)
mod.forward(mx.io.DataBatch([mx.nd.array(np.load({str(tmp_path / 'x.npy')!r}))]), is_train=False)
np.save({str(tmp_path / 'y.npy')!r}, mod.get_outputs()[0].asnumpy())
"""
    subprocess.run([sys.executable, "-I", "-c", script], check=True, cwd=str(tmp_path))
    np.testing.assert_allclose(np.load(tmp_path / "y.npy"), expected, rtol=1e-3, atol=1e-4 * np.abs(expected).max())


@pytest.mark.parametrize("cpu_ops", [False, True], ids=["stock", "cpu-ops"])
def test_batchnorm_folding_is_exact(dcn_ckpt, cpu_ops):
    prefix, epoch = dcn_ckpt
    sym, arg, aux = ex.deploy_graph(prefix, epoch, cpu_ops=cpu_ops)
    fsym, farg, faux, n = ex.fold_batchnorm(sym, dict(arg), dict(aux))
    assert n > 0 and len(faux) < len(aux)
    nodes = json.loads(fsym.tojson())["nodes"]
    after_units = [n for n in nodes if n["op"] == "BatchNorm" and nodes[n["inputs"][0][0]]["op"] == "sdu_deform_unit"]
    assert not after_units  # the ll units' BNs folded into their tap rows
    if cpu_ops:
        assert sum(n["op"] == "sdu_deform_unit" for n in nodes) == 5
    before = HeatmapModel(sym, arg, aux, batch_size=2)(_images())
    after = HeatmapModel(fsym, farg, faux, batch_size=2)(_images())
    np.testing.assert_allclose(after, before, rtol=1e-4, atol=1e-4 * np.abs(before).max())


def test_int8_export_close_to_fp32(plain_ckpt):
    prefix, epoch = plain_ckpt
    sym, arg, aux = ex.deploy_graph(prefix, epoch)
    fsym, farg, faux, _ = ex.fold_batchnorm(sym, dict(arg), dict(aux))
    images = _images(16)
    qsym, qarg, qaux = ex.quantize_int8(fsym, farg, faux, images, batch_size=8)
    assert any("quantize" in n["op"] for n in json.loads(qsym.tojson())["nodes"])
    assert '"op": "sdu_' not in qsym.tojson()  # a stock graph stays loadable without libsdu_ops.so
    fp32 = HeatmapModel(fsym, farg, faux, batch_size=2)(images[:2])
    int8 = HeatmapModel(qsym, qarg, qaux, batch_size=2)(images[:2])
    assert np.linalg.norm(int8 - fp32) / np.linalg.norm(fp32) < 0.1


@pytest.mark.parametrize("cpu_ops", [False, True], ids=["portable", "cpu-ops"])
def test_freezing_tap_weights_is_exact(dcn_ckpt, cpu_ops):
    sym, arg, aux = ex.deploy_graph(*dcn_ckpt, cpu_ops=cpu_ops, freeze_taps=False)
    zsym, zarg, zaux, n = ex.freeze_tap_weights(sym, arg, aux)
    nodes = json.loads(zsym.tojson())["nodes"]
    gemms = [node for node in nodes if node["op"] == "FullyConnected"]
    assert n == len(gemms) == 5  # net_dcn=3: ll conv + head of each stack, out3 of the first
    for node in gemms:  # the weight is now a stored parameter, not a computation
        weight = nodes[node["inputs"][1][0]]
        assert weight["op"] == "null" and weight["name"] == node["name"] + "_weight"
        assert zarg[weight["name"]].shape[0] == int(node["attrs"]["num_hidden"])
    assert not any(node["op"] in ("transpose", "Concat") and "weight" in node["name"] for node in nodes)
    units = [node for node in nodes if node["op"] == "sdu_deform_unit"]
    assert len(units) == (5 if cpu_ops else 0)
    # 2 steps from zero-initialised offset convs: their rows are scaled up for INT8.
    assert all(int(node["attrs"]["offset_exponent"]) > 0 for node in units)
    before = HeatmapModel(sym, arg, aux, batch_size=2)(_images())
    after = HeatmapModel(zsym, zarg, zaux, batch_size=2)(_images())
    np.testing.assert_allclose(after, before, rtol=1e-5, atol=1e-6 * np.abs(before).max())
    assert ex.freeze_tap_weights(zsym, zarg, zaux)[3] == 0  # idempotent
    default = ex.deploy_graph(*dcn_ckpt, cpu_ops=cpu_ops)[0]  # freezing is the default
    assert default.list_arguments() == zsym.list_arguments()


def test_int8_quantises_the_deformable_gemms(dcn_ckpt):
    sym, arg, aux = ex.deploy_graph(*dcn_ckpt, cpu_ops=True)
    fsym, farg, faux, _ = ex.fold_batchnorm(sym, dict(arg), dict(aux))
    images = _images(16)
    deconvs = len([n for n in json.loads(fsym.tojson())["nodes"] if n["op"] == "Deconvolution"])
    qsym, qarg, qaux = ex.quantize_int8(fsym, farg, faux, images, batch_size=8)
    nodes = json.loads(qsym.tojson())["nodes"]
    # Each fast unit is one INT8 operator: MXNet's transpose, quantize and GEMM are gone.
    units = [n for n in nodes if n["op"] == "sdu_deform_unit_q"]
    assert len(units) == 5 and not any(n["op"] in ("sdu_deform_unit", "transpose") or "fully_connected" in n["op"]
                                       for n in nodes)
    for unit in units:
        a = {k: float(v) for k, v in unit["attrs"].items() if k in ("data_min", "data_max", "table_range",
                                                                    "offset_range", "num_filter")}
        assert a["data_min"] < a["data_max"] and a["table_range"] > 0 and a["offset_range"] > 0
        weight = qarg[nodes[unit["inputs"][1][0]]["name"]]
        assert weight.dtype == np.float32 and weight.shape[0] == OFFSET_COLUMNS + TAPS * int(a["num_filter"])
    assert not any(k.endswith("_quantize") for k in qarg)  # MXNet's int8 copies of the tap weights went
    # The up-sampling deconvolutions (BN folded) run as INT8 GEMMs with a calibrated input range.
    ups = [n for n in nodes if n["op"] == "sdu_deconv2x2_q"]
    assert len(ups) == deconvs > 0 and not any(n["op"] in ("Deconvolution", "sdu_deconv2x2") for n in nodes)
    assert all(float(n["attrs"]["data_min"]) < float(n["attrs"]["data_max"]) for n in ups)
    # Every CAB (named by its output node (1, 1), *_w1_h1_mean, unlike the grid's own node
    # (1, 1), staN_w1_h1_mean) is one sdu_cab_q; only the grid's 6 means per stack are left.
    fp32_nodes = json.loads(fsym.tojson())["nodes"]
    blocks = sum(n["op"] == "sdu_mean" and re.fullmatch(r".+_w1_h1_mean", n["name"]) is not None
                 and re.fullmatch(r"sta\d+_w1_h1_mean", n["name"]) is None for n in fp32_nodes)
    assert blocks >= 21 and len(find_cabs(json.loads(fsym.tojson()))) == blocks
    assert sum(n["op"] == "sdu_cab_q" for n in nodes) == blocks and sum(n["op"] == "sdu_mean" for n in nodes) == 12
    floats = ex.quantize_int8(fsym, farg, faux, images, batch_size=8, int8_compiled=False)
    nodes = json.loads(floats[0].tojson())["nodes"]
    assert not any(n["op"] == "sdu_cab_q" for n in nodes)
    gemms = [n for n in nodes if "fully_connected" in n["op"]]
    assert len(gemms) == 5 and all(n.get("attrs", {}).get("quantized") == "True" for n in gemms)
    assert sum(n["op"] == "sdu_deform_unit" for n in nodes) == 5
    assert sum(n["op"] == "sdu_deconv2x2" for n in nodes) == deconvs
    kept = ex.quantize_int8(fsym, farg, faux, images, batch_size=8, quantize_taps=False)
    nodes = json.loads(kept[0].tojson())["nodes"]
    gemms = [n for n in nodes if "fully_connected" in n["op"]]
    assert len(gemms) == 5 and not any(n.get("attrs", {}).get("quantized") == "True" for n in gemms)
    assert sum(n["op"] == "sdu_deform_unit" for n in nodes) == 5  # fp32 GEMMs keep fp32 units
    # A 2-step model on random images has a large INT8 error either way (0.3-0.5 measured);
    # broken scales would give ~1 or more. Accuracy on a trained model: docs/export.md.
    fp32 = HeatmapModel(fsym, farg, faux, batch_size=2)(images[:2])
    errors = [np.linalg.norm(HeatmapModel(*q, batch_size=2)(images[:2]) - fp32) / np.linalg.norm(fp32)
              for q in ((qsym, qarg, qaux), floats, kept)]
    assert max(errors) < 0.75
    assert errors[0] < errors[1] * 1.5 + 0.02  # the INT8 operators add little to MXNet's own INT8 error


def test_deconvolutions_keep_their_batchnorm(dcn_ckpt):
    sym, arg, aux = ex.deploy_graph(*dcn_ckpt, cpu_ops=True)
    fsym, _, _, _ = ex.fold_batchnorm(sym, dict(arg), dict(aux))
    nodes = json.loads(fsym.tojson())["nodes"]
    deconvs = [n for n in nodes if n["op"] == "Deconvolution"]
    assert deconvs and all(n["attrs"].get("no_bias") == "True" for n in deconvs)
    assert any(n["op"] == "BatchNorm" and nodes[n["inputs"][0][0]]["op"] == "Deconvolution" for n in nodes)


def test_fast_cpu_convolutions_replace_eligible_3x3_convs_and_match(dcn_ckpt):
    sym, arg, aux = ex.deploy_graph(*dcn_ckpt, cpu_ops=True)
    fsym, farg, faux, _ = ex.fold_batchnorm(sym, dict(arg), dict(aux))
    nodes = json.loads(fsym.tojson())["nodes"]
    convs = [n for n in nodes if n["op"] in ("Convolution", "Deconvolution")]

    def kind(n):
        a, w = n["attrs"], farg[nodes[n["inputs"][1][0]]["name"]]
        if n["op"] == "Deconvolution":
            return "sdu_deconv2x2" if a["kernel"] == "(2, 2)" and a["stride"] == "(2, 2)" else None
        if a["kernel"] != "(3, 3)" or a.get("pad") != "(1, 1)" or a.get("stride", "(1, 1)") != "(1, 1)":
            return None
        groups = int(a.get("num_group", "1"))
        if groups == 1 and w.shape[0] % 16 == 0 and w.shape[1] % 16 == 0:
            return "sdu_wino_conv"
        return "sdu_dw_conv" if groups == w.shape[0] and w.shape[1] == 1 else None

    expected = {op: sum(kind(n) == op for n in convs) for op in ("sdu_wino_conv", "sdu_dw_conv", "sdu_deconv2x2")}
    assert all(expected.values()) and sum(expected.values()) < len(convs)  # 1x1s and 8-channel convs stay
    wsym, warg, waux, counts = ex.fast_cpu_convolutions(fsym, farg, faux)
    wnodes = json.loads(wsym.tojson())["nodes"]
    assert counts == expected == {op: sum(x["op"] == op for x in wnodes) for op in expected}
    assert sum(x["op"] in ("Convolution", "Deconvolution") for x in wnodes) == len(convs) - sum(expected.values())
    fused = sum(x["attrs"]["act_type"] == "relu" for x in wnodes if x["op"] in expected)
    relus = lambda ns: sum(x["op"] == "Activation" and x["attrs"].get("act_type") == "relu" for x in ns)
    assert fused > 0 and relus(wnodes) == relus(nodes) - fused
    bns = lambda ns: sum(x["op"] == "BatchNorm" for x in ns)  # each deconvolution's BN is folded into it
    assert bns(wnodes) == bns(nodes) - expected["sdu_deconv2x2"]
    assert len(waux) == len(faux) - 2 * expected["sdu_deconv2x2"]
    assert set(wsym.list_arguments()) - {"data"} == set(warg)
    want = HeatmapModel(fsym, farg, faux, batch_size=2)(_images(2))
    got = HeatmapModel(wsym, warg, waux, batch_size=2)(_images(2))
    np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-4 * np.abs(want).max())
    assert sum(ex.fast_cpu_convolutions(wsym, warg, waux)[3].values()) == 0  # nothing left to replace


def test_load_with_winograd_runs_the_fastest_cpu_graph(dcn_ckpt):
    import mxnet as mx

    from insightface_align.errors import DataError

    exact = HeatmapModel.load(*dcn_ckpt, batch_size=2)
    fast = HeatmapModel.load(*dcn_ckpt, batch_size=2, winograd=True)
    ops = {n["op"] for n in json.loads(fast.sym.tojson())["nodes"]}
    # Every BN of this model follows a convolution or a fast unit (the ll units), so all fold.
    assert {"sdu_wino_conv", "sdu_dw_conv", "sdu_deform_unit"} <= ops and "BatchNorm" not in ops
    assert len(fast.sym.list_auxiliary_states()) < len(exact.sym.list_auxiliary_states())  # BNs folded
    want = exact(_images(2))
    np.testing.assert_allclose(fast(_images(2)), want, rtol=1e-3, atol=1e-4 * np.abs(want).max())
    with pytest.raises(DataError, match="run on the CPU only"):
        HeatmapModel.load(*dcn_ckpt, ctx=[mx.gpu(0)], winograd=True)


@pytest.mark.parametrize("dcn_fp32", [False, True], ids=["int8-dcn", "int8-dcn-fp32"])
def test_export_cli_writes_every_form_and_checks_nme(dcn_ckpt, tmp_path, capsys, dcn_fp32):
    from insightface_align.cli.export import main

    prefix, epoch = dcn_ckpt
    rng = np.random.default_rng(3)
    write_release_rec(str(tmp_path / "faces"), [random_face(rng) for _ in range(16)])
    rec = str(tmp_path / "faces.rec")
    out = str(tmp_path / "m")
    args = ["--prefix", prefix, "--epoch", str(epoch), "--out", out, "--cpu-ops", "--fold-bn", "--winograd", "--int8",
            "--calib-rec", rec, "--num-calib", "16", "--check-rec", rec] + (["--int8-dcn-fp32"] if dcn_fp32 else [])
    assert main(args) == 0
    for form in ("", "-folded", "-winograd", "-int8"):
        assert (tmp_path / f"m{form}-symbol.json").exists() and (tmp_path / f"m{form}-0000.params").exists()
        config = json.loads((tmp_path / f"m{form}-0000.json").read_text())
        assert config["graph"] == (form[1:] or "deploy") and config["network"]["dcn"] == 3
        assert config["heatmap_loss"] == json.loads(open(prefix + "-%04d.json" % epoch).read())["heatmap_loss"]
    nodes = json.loads((tmp_path / "m-int8-symbol.json").read_text())["nodes"]
    gemms = [n for n in nodes if "fully_connected" in n["op"]]
    if dcn_fp32:  # the units' GEMMs stay MXNet's, in fp32
        assert len(gemms) == 5 and not any(n.get("attrs", {}).get("quantized") == "True" for n in gemms)
    else:  # each unit, GEMM included, is one INT8 operator
        assert not gemms and sum(n["op"] == "sdu_deform_unit_q" for n in nodes) == 5
    rows = json.loads((tmp_path / "m-check.json").read_text())
    assert [r["export"] for r in rows] == ["deploy", "folded", "winograd", "int8"]
    assert rows[0]["nme"] == pytest.approx(rows[1]["nme"], rel=1e-4)  # folding is exact
    assert rows[0]["nme"] == pytest.approx(rows[2]["nme"], rel=1e-3)  # Winograd rounds differently
    assert "sdu_wino_conv" in (tmp_path / "m-winograd-symbol.json").read_text()
    out = capsys.readouterr().out
    assert "| int8 |" in out
    assert ("CABs, 5 deformable units and 6 deconvolutions as INT8 project operators" in out) != dcn_fp32
    assert main(["--prefix", prefix, "--epoch", str(epoch), "--out", out, "--int8"]) == 2
    assert "--int8 needs --calib-rec" in capsys.readouterr().err


def test_onnx_export_matches_mxnet_and_refuses_dcn(plain_ckpt, dcn_ckpt, tmp_path, capfd):
    import onnx
    import onnxruntime as ort

    prefix, epoch = plain_ckpt
    sym, arg, aux = ex.deploy_graph(prefix, epoch)
    path = ex.export_onnx(sym, arg, aux, str(tmp_path / "m.onnx"))
    model = onnx.load(path)
    assert [i.name for i in model.graph.input] == ["data"] and len(model.graph.initializer) > 100
    capfd.readouterr()
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    # mx.onnx lists every parameter as a graph input too; onnxruntime warned once for each.
    assert "appears in graph inputs" not in capfd.readouterr().err
    assert [i.name for i in sess.get_inputs()] == ["data"]
    x = _images(2)
    got = sess.run(None, {"data": x})[0]
    np.testing.assert_allclose(got, HeatmapModel(sym, arg, aux, batch_size=2)(x), rtol=1e-3, atol=1e-4)
    dsym, darg, daux = ex.deploy_graph(*dcn_ckpt)
    with pytest.raises(ValueError, match="ONNX export is not possible"):
        ex.export_onnx(dsym, darg, daux, str(tmp_path / "d.onnx"))
    assert not (tmp_path / "d.onnx").exists()


def test_exports_carry_their_config_and_rebuild_for_the_context(dcn_ckpt, tmp_path):
    """An export's OUT-0000.json holds the source's model description, so HeatmapModel.load
    rebuilds a stock export on the compiled CPU operators (and on stock ones for a GPU),
    from its stored tap weights turned back into the checkpoint's weights exactly."""
    import mxnet as mx

    from insightface_align.symbols import ext

    prefix, epoch = dcn_ckpt
    want = HeatmapModel.load(prefix, epoch, batch_size=2)(_images())
    ck_arg, _ = load_params(prefix, epoch)
    for cpu_ops in (False, True):
        out = str(tmp_path / ("cpu" if cpu_ops else "stock"))
        ex.save_deploy(out, *ex.deploy_graph(prefix, epoch, cpu_ops=cpu_ops), config=ex.source_config(prefix, epoch))
        config = json.loads(open(out + "-0000.json").read())
        source = json.loads(open(prefix + "-%04d.json" % epoch).read())
        assert config == {"recipe": "sdu-inside", "network": source["network"],
                          "heatmap_loss": source["heatmap_loss"], "convention": "centred", "graph": "deploy"}
        assert ext.used_by(open(out + "-symbol.json").read()) == cpu_ops
        sym, arg, _, info = inference_graph(out, 0, backend=RELEASE)
        assert info.rebuildable and set(arg) == set(sym.list_arguments()) - {"data"}
        assert all(np.array_equal(v.asnumpy(), ck_arg[k].asnumpy()) for k, v in arg.items())
        gpu = inference_graph(out, 0, ctx=[mx.gpu(0)])[0]  # built, not bound: no GPU needed
        assert not ext.used_by(gpu.tojson()) and "_contrib_DeformableConvolution" in gpu.tojson()
        model = HeatmapModel.load(out, 0, batch_size=2)
        assert {"sdu_deform_unit", "sdu_mean"} <= {n["op"] for n in json.loads(model.sym.tojson())["nodes"]}
        assert model.heatmap_kind == source["heatmap_loss"]
        np.testing.assert_allclose(model(_images()), want, rtol=1e-6, atol=1e-6 * np.abs(want).max())
    # Configs written while NetConfig still held the operator choice load the same way.
    source["network"].update(dcn_impl="auto", mean_impl="auto")
    (tmp_path / "stock-0000.json").write_text(json.dumps(dict(config, network=source["network"])))
    np.testing.assert_allclose(HeatmapModel.load(str(tmp_path / "stock"), 0, batch_size=2)(_images()), want,
                               rtol=1e-6, atol=1e-6 * np.abs(want).max())
    # A folded export runs as saved: its BatchNorms are gone, it cannot be rebuilt.
    fsym, farg, faux, _ = ex.fold_batchnorm(*ex.deploy_graph(prefix, epoch))
    ex.save_deploy(str(tmp_path / "folded"), fsym, farg, faux, config=ex.source_config(prefix, epoch), graph="folded")
    folded = HeatmapModel.load(str(tmp_path / "folded"), 0, batch_size=2)
    assert not ext.used_by(folded.sym.tojson()) and folded.sym.list_auxiliary_states() == fsym.list_auxiliary_states()
    np.testing.assert_allclose(folded(_images()), want, rtol=1e-3, atol=1e-4 * np.abs(want).max())


def test_winograd_on_an_export_in_a_fresh_process(dcn_ckpt, tmp_path):
    """--winograd on a stock export used to fail in a process that had not loaded the
    compiled library yet ("Operator sdu_wino_conv is not registered"), as with the
    README's Aligner("deploy/sdu-2d", 0, winograd=True); with and without its config."""
    prefix, epoch = dcn_ckpt
    sym, arg, aux = ex.deploy_graph(prefix, epoch)
    ex.save_deploy(str(tmp_path / "deploy"), sym, arg, aux, config=ex.source_config(prefix, epoch))
    ex.save_deploy(str(tmp_path / "legacy"), sym, arg, aux)
    (tmp_path / "legacy-0000.json").unlink()  # as exports were written before they carried a config
    np.save(tmp_path / "x.npy", _images())
    script = f"""
import numpy as np
from insightface_align.aligner import Aligner
from insightface_align.model import HeatmapModel
x = np.load({str(tmp_path / 'x.npy')!r})
legacy = Aligner({str(tmp_path / 'legacy')!r}, 0, winograd=True).model
deploy = HeatmapModel.load({str(tmp_path / 'deploy')!r}, 0, batch_size=2, winograd=True)
for model in (legacy, deploy):
    assert '"op": "sdu_wino_conv"' in model.sym.tojson()
np.save({str(tmp_path / 'y.npy')!r}, np.stack([legacy(x), deploy(x)]))
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=str(ROOT))
    assert proc.returncode == 0, proc.stderr[-3000:]
    want = HeatmapModel(sym, arg, aux, batch_size=2)(_images())
    for got in np.load(tmp_path / "y.npy"):
        np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-4 * np.abs(want).max())


def test_export_cli_winograd_and_int8_from_a_checkpoint_and_from_an_export(plain_ckpt, tmp_path):
    """Each in a fresh process (nothing loaded the compiled library before)."""
    from insightface_align.cli.export import load_images

    prefix, epoch = plain_ckpt
    write_release_rec(str(tmp_path / "faces"), [random_face(np.random.default_rng(4)) for _ in range(16)])
    sources = [(prefix, epoch, str(tmp_path / "a")), (str(tmp_path / "a"), 0, str(tmp_path / "b"))]
    for source, step, out in sources:
        proc = subprocess.run([sys.executable, str(ROOT / "tools" / "export.py"), "--prefix", source, "--epoch",
                               str(step), "--out", out, "--winograd", "--int8", "--calib-rec",
                               str(tmp_path / "faces.rec"), "--num-calib", "16"],
                              capture_output=True, text=True, cwd=str(ROOT))
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert "sdu_wino_conv" in open(out + "-winograd-symbol.json").read()
        assert json.loads(open(out + "-int8-0000.json").read())["graph"] == "int8"
    x = load_images(str(tmp_path / "faces.rec"), 2)  # INT8 is calibrated on faces, not on noise
    want = HeatmapModel.load(prefix, epoch, batch_size=2)(x)
    for form in ("b", "b-winograd"):
        np.testing.assert_allclose(HeatmapModel.load(str(tmp_path / form), 0, batch_size=2)(x), want,
                                   rtol=1e-3, atol=1e-4 * np.abs(want).max())
    int8 = HeatmapModel.load(str(tmp_path / "b-int8"), 0, batch_size=2)(x)
    assert np.linalg.norm(int8 - want) / np.linalg.norm(want) < 0.2
