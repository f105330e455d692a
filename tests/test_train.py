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

TINY = dict(multiplier=0.125, input_size=64, heatmap_size=32, dcn_impl="native")


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
