"""Trainer: resume after a signal, NaN stop, multi-device equivalence, dist_sync, learning."""
import json
import os
import signal
import subprocess
import sys

import mxnet as mx
import numpy as np
import pytest

from conftest import ROOT
from insightface_align import checkpoint as ckpt
from insightface_align.data.testing import random_face, write_release_rec
from insightface_align.recipe import load_recipe
from insightface_align.train import RunSpec, TrainConfig, Trainer, TrainingDiverged

TINY = dict(multiplier=0.125, input_size=64, heatmap_size=32)


@pytest.fixture(scope="module")
def recs(tmp_path_factory):
    root = tmp_path_factory.mktemp("recs")
    rng = np.random.default_rng(0)
    write_release_rec(str(root / "train"), [random_face(rng) for _ in range(32)])
    write_release_rec(str(root / "test"), [random_face(rng) for _ in range(8)])
    return root


def _cfg(**kw):
    base = dict(max_steps=4, batch_per_device=4, lr=1e-3, lr_steps=(1000,), val_every=1000, checkpoint_every=2,
                log_every=1, num_workers=0, seed=3)
    base.update(kw)
    return TrainConfig(**base)


def _params(out_dir, step):
    arg, aux = ckpt.load_params(str(out_dir / "model"), step)
    return {k: v.asnumpy() for k, v in {**arg, **aux}.items()}


def test_keep_checkpoints_keeps_the_newest_and_resumes_from_them(recs, tmp_path):
    recipe = load_recipe("sdu-2d", **TINY)
    cfg = _cfg(max_steps=5, checkpoint_every=1, keep_checkpoints=2)
    Trainer(recipe, cfg, RunSpec(str(recs / "train.rec"), str(tmp_path), progress=False)).run()
    prefix = str(tmp_path / "model")
    assert ckpt.saved_steps(prefix) == [5, 4]
    left = sorted(n for n in os.listdir(tmp_path) if n.startswith("model-"))
    assert left == ["model-0004.json", "model-0004.params", "model-0004.states", "model-0005.json",
                    "model-0005.params", "model-0005.states", "model-latest.json", "model-symbol.json"]
    more = Trainer(recipe, _cfg(max_steps=6, checkpoint_every=1, keep_checkpoints=2),
                   RunSpec(str(recs / "train.rec"), str(tmp_path), resume=True, progress=False)).run()
    assert more["step"] == 6 and ckpt.saved_steps(prefix) == [6, 5]


@pytest.mark.parametrize("keep", [-1, 1])
def test_keep_checkpoints_must_leave_one_to_fall_back_to(keep):
    from insightface_align.errors import ConfigError

    with pytest.raises(ConfigError, match="keep_checkpoints"):
        _cfg(keep_checkpoints=keep)


def test_resume_after_sigterm_matches_uninterrupted_run(recs, tmp_path):
    recipe = load_recipe("sdu-outside", **TINY)  # coherent pairs on: the data order matters too
    cfg = _cfg(checkpoint_every=3)  # step 2's checkpoint can only come from the signal
    Trainer(recipe, cfg, RunSpec(str(recs / "train.rec"), str(tmp_path / "a"), progress=False)).run()

    def kill_at_two(trainer, step, _mod):
        if step == 2:
            os.kill(os.getpid(), signal.SIGTERM)

    stopped = Trainer(recipe, cfg, RunSpec(str(recs / "train.rec"), str(tmp_path / "b"), progress=False),
                      step_callback=kill_at_two).run()
    assert stopped["stopped"] and stopped["step"] == 2
    assert ckpt.latest_step(str(tmp_path / "b" / "model")) == 2
    resumed = Trainer(recipe, cfg, RunSpec(str(recs / "train.rec"), str(tmp_path / "b"), resume=True,
                                              progress=False)).run()
    assert resumed["step"] == 4 and not resumed["stopped"]
    a, b = _params(tmp_path / "a", 4), _params(tmp_path / "b", 4)
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_allclose(a[k], b[k], rtol=1e-5, atol=1e-6, err_msg=k)
    # And the resumed run really trained: parameters moved from step 2.
    moved = _params(tmp_path / "b", 2)
    assert any(not np.allclose(moved[k], b[k]) for k in b)
    assert os.path.exists(tmp_path / "b" / "model-0004.states")
    assert os.path.exists(tmp_path / "b" / "curves.png")


def test_nan_loss_stops_and_keeps_last_good_checkpoint(recs, tmp_path):
    recipe = load_recipe("sdu-nodcn", **TINY)

    def poison(trainer, step, mod):
        if step == 2:
            arg, aux = mod.get_params()
            arg["heatmap_bias"][:] = np.nan
            mod.set_params(arg, aux)

    with pytest.raises(TrainingDiverged, match="step 3"):
        Trainer(recipe, _cfg(), RunSpec(str(recs / "train.rec"), str(tmp_path / "n"), progress=False),
                step_callback=poison).run()
    assert ckpt.latest_step(str(tmp_path / "n" / "model")) == 2
    assert all(np.isfinite(v).all() for v in _params(tmp_path / "n", 2).values())


def test_two_cpu_contexts_equal_one_context(recs, tmp_path):
    """Same batch split over mx.cpu(0) and mx.cpu(1) gives the single-context update (BN frozen)."""
    recipe = load_recipe("sdu-nodcn", **TINY)
    cfg1 = _cfg(max_steps=1, batch_per_device=8, checkpoint_every=1)
    cfg2 = _cfg(max_steps=1, batch_per_device=4, checkpoint_every=1)
    Trainer(recipe, cfg1, RunSpec(str(recs / "train.rec"), str(tmp_path / "one"), contexts=[mx.cpu(0)],
                                  freeze_bn=True, progress=False)).run()
    Trainer(recipe, cfg2, RunSpec(str(recs / "train.rec"), str(tmp_path / "two"), contexts=[mx.cpu(0), mx.cpu(1)],
                                  freeze_bn=True, progress=False)).run()
    one, two = _params(tmp_path / "one", 1), _params(tmp_path / "two", 1)
    for k in one:
        np.testing.assert_allclose(one[k], two[k], rtol=1e-4, atol=1e-6, err_msg=k)


def test_dist_sync_two_workers_loss_falls_disjoint_shards(recs, tmp_path):
    out = tmp_path / "dist"
    cmd = [sys.executable, str(ROOT / "tools" / "launch_dist.py"), "--workers", "2", "--servers", "1", "--",
           str(ROOT / "tools" / "train.py"), "--recipe", "sdu-nodcn", "--width", "0.125", "--data", str(recs),
           "--out", str(out), "--kvstore", "dist_sync", "--max-steps", "8", "--batch-per-device", "4",
           "--lr", "0.002", "--num-workers", "0", "--log-every", "1", "--val", "--no-progress",
           "--lr-steps", "1000"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=400, env=env, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    log = [json.loads(line) for line in open(out / "train_log.jsonl")]
    losses = [e["loss"] for e in log if "loss" in e]
    assert len(losses) == 8 and np.mean(losses[-3:]) < np.mean(losses[:3])
    workers = [json.load(open(out / f"worker-{r}.json")) for r in (0, 1)]
    assert [w["rank"] for w in workers] == [0, 1] and all(w["num_workers"] == 2 for w in workers)
    a, b = (set(w["record_ids"]) for w in workers)
    assert a and b and not (a & b), "workers must read disjoint shards within an epoch"


def test_pretrained_initialises_from_a_checkpoint(recs, tmp_path):
    """--pretrained PREFIX,EPOCH loads matching names (a release checkpoint works the same way)."""
    recipe = load_recipe("sdu-nodcn", **TINY)
    Trainer(recipe, _cfg(max_steps=2, checkpoint_every=2, seed=3),
            RunSpec(str(recs / "train.rec"), str(tmp_path / "src"), progress=False)).run()
    source = _params(tmp_path / "src", 2)
    # A different seed and a vanishing learning rate: after one step the weights are still the source's.
    Trainer(recipe, _cfg(max_steps=1, checkpoint_every=1, seed=99, lr=1e-12),
            RunSpec(str(recs / "train.rec"), str(tmp_path / "dst"), progress=False,
                    pretrained=(str(tmp_path / "src" / "model"), 2))).run()
    loaded = _params(tmp_path / "dst", 1)
    for k in ("conv0_weight", "heatmap_weight", "sta1_w1_h1_4_w3_h4_1_conv_weight"):
        np.testing.assert_allclose(loaded[k], source[k], atol=1e-6, err_msg=k)
    Trainer(recipe, _cfg(max_steps=1, checkpoint_every=1, seed=99, lr=1e-12),
            RunSpec(str(recs / "train.rec"), str(tmp_path / "fresh"), progress=False)).run()
    assert not np.allclose(_params(tmp_path / "fresh", 1)["conv0_weight"], source["conv0_weight"])


def test_checkpoint_symbol_uses_stock_operators_and_loads_in_plain_mxnet(recs, tmp_path):
    """On a CPU the network trains on this project's compiled operators (fast deformable
    units, fused means), but the checkpoint's -symbol.json is the same network on the
    release's stock operators: a bare interpreter loads it with plain MXNet (no
    insightface_align, no libsdu_ops.so) and computes the heatmaps this package does."""
    from insightface_align.model import HeatmapModel
    from insightface_align.symbols.backend import COMPILED

    recipe = load_recipe("sdu-inside", **TINY)
    trainer = Trainer(recipe, _cfg(max_steps=1, checkpoint_every=1),
                      RunSpec(str(recs / "train.rec"), str(tmp_path / "r"), progress=False))
    assert trainer.backend == COMPILED and '"op": "sdu_' in trainer._symbol().tojson()
    trainer.run()
    prefix = str(tmp_path / "r" / "model")
    text = open(prefix + "-symbol.json").read()
    assert '"op": "sdu_' not in text and '"op": "_contrib_DeformableConvolution"' in text
    saved = json.load(open(prefix + "-0001.json"))["network"]
    assert "dcn_impl" not in saved and "mean_impl" not in saved
    x = np.random.RandomState(1).uniform(0, 255, (2, 3, 64, 64)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    script = f"""
import sys, numpy as np, mxnet as mx
sym, arg, aux = mx.model.load_checkpoint({prefix!r}, 1)
mod = mx.mod.Module(sym.get_internals()['heatmap_output'], data_names=['data'], label_names=None)
mod.bind(data_shapes=[('data', (2, 3, 64, 64))], for_training=False)
mod.set_params(arg, aux)
mod.forward(mx.io.DataBatch([mx.nd.array(np.load({str(tmp_path / 'x.npy')!r}))]), is_train=False)
np.save({str(tmp_path / 'y.npy')!r}, mod.get_outputs()[0].asnumpy())
assert not any(m.startswith('insightface_align') for m in sys.modules)
"""
    subprocess.run([sys.executable, "-I", "-c", script], check=True, cwd=str(tmp_path))
    model = HeatmapModel.load(prefix, 1, batch_size=2)
    assert '"op": "sdu_deform_unit"' in model.sym.tojson()  # this package runs it on the compiled operators
    want, got = model(x), np.load(tmp_path / "y.npy")
    assert got.shape == want.shape == (2, 68, 32, 32)
    assert np.linalg.norm(got - want) / np.linalg.norm(want) < 1e-4


def test_resume_refuses_missing_or_pickled_optimizer_states(recs, tmp_path, monkeypatch):
    import pickle

    from insightface_align.errors import DataError

    recipe = load_recipe("sdu-nodcn", **TINY)
    cfg = _cfg(max_steps=2, checkpoint_every=2)
    out = tmp_path / "r"
    Trainer(recipe, cfg, RunSpec(str(recs / "train.rec"), str(out), progress=False)).run()
    states = out / "model-0002.states"
    cfg4 = _cfg(max_steps=4, checkpoint_every=2)

    class Exploit:
        def __reduce__(self):
            return (exec, ("open('PWNED', 'w').write('x')",))

    monkeypatch.chdir(tmp_path)
    good = states.read_bytes()
    states.write_bytes(pickle.dumps(Exploit()))
    with pytest.raises(DataError, match="pickle"):
        Trainer(recipe, cfg4, RunSpec(str(recs / "train.rec"), str(out), resume=True, progress=False)).run()
    assert not (tmp_path / "PWNED").exists()
    states.unlink()
    with pytest.raises(DataError) as exc:
        Trainer(recipe, cfg4, RunSpec(str(recs / "train.rec"), str(out), resume=True, progress=False)).run()
    assert str(states) in str(exc.value) and "--reset-optimizer" in str(exc.value)
    result = Trainer(recipe, cfg4, RunSpec(str(recs / "train.rec"), str(out), resume=True, reset_optimizer=True,
                                           progress=False)).run()
    assert result["step"] == 4 and good  # resumed with a fresh optimizer


def test_non_finite_statistics_are_never_saved(recs, tmp_path):
    """BatchNorm running statistics do not enter the training loss: only the save's check sees them."""
    recipe = load_recipe("sdu-nodcn", **TINY)

    def poison_stats(trainer, step, mod):
        if step == 2:
            arg, aux = mod.get_params()
            name = sorted(k for k in aux if k.endswith("moving_var"))[0]
            aux[name][:] = np.inf
            mod.set_params(arg, aux)

    with pytest.raises(TrainingDiverged, match="not finite at step 4"):
        Trainer(recipe, _cfg(), RunSpec(str(recs / "train.rec"), str(tmp_path / "s"), progress=False),
                step_callback=poison_stats).run()
    assert ckpt.latest_step(str(tmp_path / "s" / "model")) == 2


@pytest.mark.parametrize("damage", ["truncate-params", "missing-states", "garbage-json"])
def test_resume_takes_the_newest_intact_checkpoint_and_says_so(recs, tmp_path, caplog, damage):
    recipe = load_recipe("sdu-nodcn", **TINY)
    out = tmp_path / "r"
    Trainer(recipe, _cfg(max_steps=4, checkpoint_every=2), RunSpec(str(recs / "train.rec"), str(out),
                                                                    progress=False)).run()
    if damage == "truncate-params":
        path = out / "model-0004.params"
        path.write_bytes(path.read_bytes()[:1000])
    elif damage == "missing-states":
        path = out / "model-0004.states"
        path.unlink()
    else:
        path = out / "model-0004.json"
        path.write_text("{not json")
    with caplog.at_level("WARNING"):
        result = Trainer(recipe, _cfg(max_steps=5, checkpoint_every=2),
                         RunSpec(str(recs / "train.rec"), str(out), resume=True, progress=False)).run()
    assert result["step"] == 5
    text = caplog.text
    assert str(path) in text and "resuming from step 2, the newest intact checkpoint" in text


def test_a_loss_over_the_recipe_bound_stops_training(recs, tmp_path):
    from insightface_align.train import TrainingDiverged

    recipe = load_recipe("sdu-nodcn", **TINY)
    out = tmp_path / "r"
    with pytest.raises(TrainingDiverged, match="over train.max_loss"):
        Trainer(recipe, _cfg(max_steps=3, checkpoint_every=1, max_loss=1e-9),
                RunSpec(str(recs / "train.rec"), str(out), progress=False)).run()
    assert not (out / "model-0001.params").exists()
