"""Atomic writes leave files with the umask's mode (mkstemp alone makes them 0600)."""
import os
import stat

import mxnet as mx
import pytest

from insightface_align import checkpoint as ckpt
from insightface_align.export import save_deploy
from insightface_align.fileio import atomic_path, atomic_write, current_umask


@pytest.fixture(params=[0o022, 0o027, 0o002], ids=["022", "027", "002"])
def umask(request):
    old = os.umask(request.param)
    yield request.param
    os.umask(old)


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_atomic_writes_honour_the_umask(umask, tmp_path):
    assert current_umask() == umask
    expected = 0o666 & ~umask
    atomic_write(tmp_path / "a.json", "{}", "w")
    with atomic_path(tmp_path / "b.png", suffix=".png") as tmp:
        assert tmp.endswith(".png") and os.path.dirname(tmp) == str(tmp_path)
        open(tmp, "wb").write(b"png")
    assert _mode(tmp_path / "a.json") == _mode(tmp_path / "b.png") == expected
    assert sorted(os.listdir(tmp_path)) == ["a.json", "b.png"]  # no temporary file left


def test_checkpoints_and_exports_are_readable_as_the_umask_allows(umask, tmp_path):
    sym = mx.sym.FullyConnected(mx.sym.var("data"), num_hidden=2, name="fc")
    arg = {"fc_weight": mx.nd.ones((2, 3)), "fc_bias": mx.nd.zeros(2)}
    updater = mx.optimizer.get_updater(mx.optimizer.create("sgd", learning_rate=0.1, momentum=0.9))
    updater(0, mx.nd.ones((2, 3)), arg["fc_weight"])
    ckpt.save_checkpoint(str(tmp_path / "run" / "model"), 5, sym, arg, {}, updater, {"epoch": 0})
    save_deploy(str(tmp_path / "deploy"), sym, arg, {}, config={"heatmap_loss": "mse"})
    files = sorted(p for p in tmp_path.rglob("*") if p.is_file())
    assert [p.name for p in files] == ["deploy-0000.json", "deploy-0000.params", "deploy-symbol.json",
                                       "model-0005.json", "model-0005.params", "model-0005.states",
                                       "model-latest.json", "model-symbol.json"]
    assert {_mode(p) for p in files} == {0o666 & ~umask}


def test_failed_write_leaves_nothing(tmp_path):
    with pytest.raises(RuntimeError):
        with atomic_path(tmp_path / "x.params") as tmp:
            open(tmp, "wb").write(b"half")
            raise RuntimeError("writer failed")
    atomic_write(tmp_path / "y.txt", b"old")
    with pytest.raises(TypeError):
        atomic_write(tmp_path / "y.txt", "text in binary mode")
    assert os.listdir(tmp_path) == ["y.txt"] and (tmp_path / "y.txt").read_bytes() == b"old"
