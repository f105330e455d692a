"""Checkpoint weight averaging and the bundled model's snapshot with --average."""
from __future__ import annotations

import importlib.util
import json

import mxnet as mx
import numpy as np
import pytest

from conftest import ROOT
from insightface_align.checkpoint import average_params, load_params, save_params
from insightface_align.errors import DataError

NETWORK = {"num_classes": 68, "stacks": 2, "depth": 3, "block": "cab", "topology": "sat3", "dcn": 3, "stn": False,
           "input_size": 128, "heatmap_size": 64, "multiplier": 0.25}


def _snapshot_tool():
    spec = importlib.util.spec_from_file_location("snapshot_bundled", ROOT / "tools" / "snapshot_bundled.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _checkpoint(prefix, step, scale, network=NETWORK, extra=None):
    args = {"conv_weight": mx.nd.full((2, 3), scale), "fc_bias": mx.nd.arange(4) * scale}
    aux = {"bn_moving_var": mx.nd.full((3,), 2 * scale)}
    args.update(extra or {})
    save_params("%s-%04d.params" % (prefix, step), args, aux)
    meta = {"step": step, "recipe": "bundled-2d", "network": network, "heatmap_loss": "softmax_ce",
            "convention": "centred"}
    with open("%s-%04d.json" % (prefix, step), "w") as f:
        json.dump(meta, f)
    with open("%s-%04d.states" % (prefix, step), "wb") as f:
        f.write(b"states")
    with open("%s-latest.json" % prefix, "w") as f:
        json.dump({"step": step}, f)
    with open("%s-symbol.json" % prefix, "w") as f:
        f.write("{}")


def test_average_is_the_elementwise_mean_of_args_and_aux(tmp_path):
    prefix = str(tmp_path / "model")
    for step, scale in ((100, 1.0), (200, 2.0), (300, 6.0)):
        _checkpoint(prefix, step, scale)
    args, aux = average_params(prefix, [100, 200, 300])
    np.testing.assert_allclose(args["conv_weight"].asnumpy(), np.full((2, 3), 3.0))
    np.testing.assert_allclose(args["fc_bias"].asnumpy(), np.arange(4) * 3.0)
    np.testing.assert_allclose(aux["bn_moving_var"].asnumpy(), np.full(3, 6.0))
    assert args["conv_weight"].dtype == np.float32
    one, _ = average_params(prefix, [200])
    np.testing.assert_array_equal(one["conv_weight"].asnumpy(), np.full((2, 3), 2.0))


@pytest.mark.parametrize("problem, message", [
    ("extra tensor", "is not in every checkpoint"),
    ("shape", "has shape"),
    ("network", "describes another model"),
])
def test_checkpoints_that_do_not_match_are_refused_by_name(tmp_path, problem, message):
    prefix = str(tmp_path / "model")
    _checkpoint(prefix, 100, 1.0)
    if problem == "extra tensor":
        _checkpoint(prefix, 200, 1.0, extra={"new_weight": mx.nd.ones(2)})
    elif problem == "shape":
        _checkpoint(prefix, 200, 1.0, extra={"conv_weight": mx.nd.ones((3, 3))})
    else:
        _checkpoint(prefix, 200, 1.0, network=dict(NETWORK, multiplier=0.5))
    with pytest.raises(DataError) as exc:
        average_params(prefix, [100, 200])
    assert message in str(exc.value) and "model-0200" in str(exc.value)


def test_snapshot_packages_the_mean_of_the_newest_checkpoints(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    prefix = str(run / "model")
    for step, scale in ((100, 10.0), (200, 1.0), (300, 3.0)):
        _checkpoint(prefix, step, scale)
    training, package = tmp_path / "training", tmp_path / "package"
    tool = _snapshot_tool()
    assert tool.main(["--run", str(run), "--training", str(training), "--package", str(package),
                      "--average", "2"]) == 0
    args, aux = load_params(str(package / "model"), 0)
    np.testing.assert_allclose(args["conv_weight"].asnumpy(), np.full((2, 3), 2.0))   # steps 200 and 300
    np.testing.assert_allclose(aux["bn_moving_var"].asnumpy(), np.full(3, 4.0))
    meta = json.loads((package / "model-0000.json").read_text())
    assert meta["trained_steps"] == 300 and meta["averaged_steps"] == [200, 300]
    # The resumable snapshot is the newest checkpoint itself, untouched by the averaging.
    resumable, _ = load_params(str(training / "model"), 300)
    np.testing.assert_array_equal(resumable["conv_weight"].asnumpy(), np.full((2, 3), 3.0))
    assert "the mean of steps 200, 300" in capsys.readouterr().out
    assert tool.main(["--run", str(run), "--training", str(training), "--package", str(package),
                      "--average", "5"]) == 2
    assert "has 3 checkpoints up to step 300" in capsys.readouterr().err
