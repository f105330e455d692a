"""Network configs of release checkpoints inferred from their parameters, for all 11 reference graphs."""
from __future__ import annotations

import json

import pytest

from conftest import REFERENCE_GRAPHS
from insightface_align.errors import DataError
from insightface_align.release_config import infer_release_config

GRAPHS = sorted(REFERENCE_GRAPHS.glob("*.json"))
KEYS = ("net_stacks", "net_n", "net_block", "net_sta", "net_dcn", "num_classes", "multiplier")


def test_all_eleven_reference_graphs_are_present():
    assert len(GRAPHS) == 11


@pytest.mark.parametrize("graph", GRAPHS, ids=lambda p: p.stem)
def test_config_is_recovered_from_names_and_shapes(graph):
    ref = json.loads(graph.read_text())
    shapes = {name: shape for name, shape in ref["arguments"]}
    got = infer_release_config(shapes, str(graph))
    assert {k: got[k] for k in KEYS} == {k: ref["config"][k] for k in KEYS}


def test_a_narrower_model_and_other_class_count_are_recovered():
    from insightface_align.release_config import _release_cfg, _shapes

    cfg = _release_cfg(2, 3, "cab", 1, 3, 39, 0.25)
    got = infer_release_config(_shapes(cfg))
    assert got["multiplier"] == 0.25 and got["num_classes"] == 39 and got["net_dcn"] == 3


def test_foreign_parameters_are_a_clear_error():
    with pytest.raises(DataError, match="not a checkpoint of the release"):
        infer_release_config({"fc1_weight": (10, 4)}, "x.params")
    ref = json.loads((REFERENCE_GRAPHS / "sdu.json").read_text())
    shapes = {name: shape for name, shape in ref["arguments"]}
    shapes["conv0_weight"] = (64, 3, 5, 5)
    with pytest.raises(DataError, match="no release configuration match"):
        infer_release_config(shapes, "x.params")


@pytest.fixture(scope="module")
def release_checkpoint(tmp_path_factory):
    """A checkpoint saved the release's way: symbol + params only, no config json."""
    import mxnet as mx
    import numpy as np

    from insightface_align.release_config import _release_cfg
    from insightface_align.symbols.backend import RELEASE
    from insightface_align.symbols.config import NetConfig
    from insightface_align.symbols.network import get_symbol

    cfg = _release_cfg(2, 3, "cab", 1, 3, 68, 0.125)
    sym = get_symbol(NetConfig.from_release(cfg), backend=RELEASE)
    mod = mx.mod.Module(sym, data_names=["data"], label_names=None)
    mod.bind(data_shapes=[("data", (1, 3, 128, 128))], for_training=False)
    mx.random.seed(1)
    mod.init_params(mx.init.Xavier(magnitude=2))
    arg, aux = mod.get_params()
    rng = np.random.RandomState(0)
    for name in arg:
        if "offset" in name:  # fractional offsets, as a trained model has
            arg[name][:] = rng.uniform(-0.05, 0.05, arg[name].shape)
    prefix = str(tmp_path_factory.mktemp("release") / "model")
    mx.model.save_checkpoint(prefix, 1, sym, arg, aux)
    return prefix, cfg, sym, arg, aux


def test_release_checkpoint_loads_rebuilt_and_matches_its_saved_graph(release_checkpoint):
    import mxnet as mx
    import numpy as np

    from insightface_align.model import HeatmapModel, model_info
    from insightface_align.symbols.config import NetConfig

    prefix, cfg, sym, arg, aux = release_checkpoint
    assert model_info(prefix, 1).network == NetConfig.from_release(cfg)
    image = np.random.RandomState(2).uniform(0, 255, (1, 3, 128, 128)).astype(np.float32)
    saved = mx.mod.Module(sym, data_names=["data"], label_names=None)
    saved.bind(data_shapes=[("data", (1, 3, 128, 128))], for_training=False)
    saved.set_params(arg, aux)
    saved.forward(mx.io.DataBatch([mx.nd.array(image)]), is_train=False)
    expected = saved.get_outputs()[0].asnumpy()
    model = HeatmapModel.load(prefix, 1)
    assert '"op": "sdu_' in model.sym.tojson()  # rebuilt on the compiled CPU operators (make install builds them)
    np.testing.assert_allclose(model(image), expected, rtol=1e-3, atol=1e-4)


def test_release_checkpoint_exports_with_cpu_ops_and_keeps_its_network(release_checkpoint, tmp_path):
    from insightface_align.export import deploy_graph, save_deploy, source_config
    from insightface_align.model import model_info

    prefix, cfg, *_ = release_checkpoint
    sym, arg, aux = deploy_graph(prefix, 1, cpu_ops=True)
    assert '"op": "sdu_' in sym.tojson()  # the compiled operators, not the saved graph's
    config = source_config(prefix, 1)
    assert config["network"]["dcn"] == 3 and config["network"]["multiplier"] == 0.125
    save_deploy(str(tmp_path / "deploy"), *deploy_graph(prefix, 1), config=config)
    assert model_info(str(tmp_path / "deploy"), 0).network is not None


def test_release_checkpoint_exports_winograd_and_int8_and_keeps_the_release_convention(release_checkpoint, tmp_path):
    """The export command on a checkpoint without any config: every form is written, records
    the `release` convention, and loads with it; the fp32 forms agree with the saved graph."""
    import json

    import numpy as np

    from insightface_align.cli.export import main as export_main
    from insightface_align.data.testing import random_face, write_release_rec
    from insightface_align.model import HeatmapModel

    prefix, *_ = release_checkpoint
    rng = np.random.default_rng(4)
    calib = write_release_rec(str(tmp_path / "calib"), [random_face(rng) for _ in range(16)])[0]
    out = str(tmp_path / "deploy")
    assert export_main(["--prefix", prefix, "--epoch", "1", "--out", out, "--cpu-ops", "--winograd", "--int8",
                        "--calib-rec", calib, "--num-calib", "16"]) == 0
    image = np.random.RandomState(2).uniform(0, 255, (1, 3, 128, 128)).astype(np.float32)
    want = HeatmapModel.load(prefix, 1)
    assert want.convention == "release"
    expected = want(image)
    for form in ("", "-winograd", "-int8"):
        assert json.load(open(f"{out}{form}-0000.json"))["convention"] == "release", form
        model = HeatmapModel.load(out + form, 0)
        assert model.convention == "release", form
        got = model(image)
        if form == "-int8":
            assert np.corrcoef(got.ravel(), expected.ravel())[0, 1] > 0.9
        else:
            np.testing.assert_allclose(got, expected, rtol=1e-3, atol=1e-4)
