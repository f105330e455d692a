"""Metrics against hand computation, decoders, and tools/test_nme.py end to end."""
import csv
import json
import subprocess
import sys

import numpy as np
import pytest

from conftest import ROOT
from insightface_align.data.testing import random_face, write_release_rec
from insightface_align.metrics import (auc, ced, decode, default_normaliser, failure_rate, normaliser,
                                       per_image_nme, summarise)


def _shape():
    """A 68-point shape whose eye corners sit at known places."""
    g = np.zeros((68, 2))
    g[:, 0] = np.linspace(0, 100, 68)
    g[:, 1] = np.linspace(0, 50, 68)
    g[36], g[39], g[42], g[45] = (10, 20), (30, 20), (60, 20), (80, 20)
    g[37:39], g[40:42] = (20, 18), (20, 22)
    g[43:45], g[46:48] = (70, 18), (70, 22)
    return g[None]


def test_normalisers_by_hand():
    g = _shape()
    assert normaliser(g, "eye_centre")[0] == pytest.approx(50.0)      # (20,20) to (70,20)
    assert normaliser(g, "outer_corners")[0] == pytest.approx(70.0)   # 36 -> 45
    assert normaliser(g, "pupils")[0] == pytest.approx(50.0)          # mean of six points each
    assert normaliser(g, "box_diagonal")[0] == pytest.approx(np.hypot(100, 50))
    assert normaliser(g, "box_sqrt")[0] == pytest.approx(np.sqrt(100 * 50))


def test_nme_failure_auc_by_hand():
    g = np.repeat(_shape(), 3, axis=0)
    offsets = np.array([1.0, 2.5, 10.0])  # pixels, every point shifted along x
    pred = g + np.stack([offsets[:, None].repeat(68, 1), np.zeros((3, 68))], axis=2)
    errors = per_image_nme(pred, g, "eye_centre")
    np.testing.assert_allclose(errors, offsets / 50.0)  # 0.02, 0.05, 0.2
    s = summarise(errors, 0.1)
    assert s["nme"] == pytest.approx(0.09)
    assert s["failure_rate"] == pytest.approx(1 / 3)
    assert s["auc"] == pytest.approx(((0.1 - 0.02) + (0.1 - 0.05)) / 3 / 0.1)
    xs, frac = ced(errors, 0.1, steps=10)
    assert frac[xs.searchsorted(0.02)] == pytest.approx(1 / 3) and frac[-1] == pytest.approx(2 / 3)
    # AUC from the CED curve by the trapezoid rule agrees with the exact value.
    xs, frac = ced(errors, 0.1, steps=100000)
    assert np.trapz(frac, xs) / 0.1 == pytest.approx(auc(errors, 0.1), abs=1e-4)
    assert failure_rate(np.array([]), 0.1) == 0.0


def test_default_normalisers_by_set_name():
    assert default_normaliser("ibug") == "eye_centre"
    assert default_normaliser("cofw_testset") == "eye_centre"
    assert default_normaliser("300W") == "outer_corners"
    assert default_normaliser("menpo2d_test") == "box_diagonal"
    assert default_normaliser("AFLW2000-3D") == "box_sqrt"


def _gaussian_maps(points, size=64, sigma=1.5):
    ys, xs = np.mgrid[0:size, 0:size]
    maps = [np.exp(-((xs - x) ** 2 + (ys - y) ** 2) / (2 * sigma ** 2)) for x, y in points]
    return np.array(maps, dtype=np.float32)[None]


def test_decoders_recover_peaks_and_subpixel_is_closer():
    rng = np.random.RandomState(0)
    true_hm = rng.uniform(5, 58, size=(68, 2))
    heat = _gaussian_maps(true_hm)
    true_in = (true_hm + 0.5) * 2 - 0.5
    errs = {}
    for method in ("release", "argmax", "subpixel", "centroid"):
        pts, peaks = decode(heat, method, 128)
        errs[method] = np.linalg.norm(pts[0] - true_in, axis=1).mean()
        assert peaks.shape == (1, 68) and np.all(peaks > 0.5)
    assert errs["argmax"] < 1.5 and errs["subpixel"] < errs["argmax"]
    assert errs["centroid"] < 0.2 and errs["centroid"] < errs["subpixel"]
    assert errs["release"] < 1.5


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    from insightface_align.recipe import load_recipe
    from insightface_align.train import RunSpec, TrainConfig, Trainer

    root = tmp_path_factory.mktemp("ckpt")
    rng = np.random.default_rng(5)
    write_release_rec(str(root / "train"), [random_face(rng) for _ in range(8)])
    write_release_rec(str(root / "ibug"), [random_face(rng) for _ in range(7)])
    recipe = load_recipe("sdu-nodcn", multiplier=0.125)
    Trainer(recipe, TrainConfig(max_steps=1, batch_per_device=4, lr_steps=(100,), num_workers=0),
            RunSpec(str(root / "train.rec"), str(root / "run"), progress=False)).run()
    return root


def _run_test_nme(*args):
    return subprocess.run([sys.executable, str(ROOT / "tools" / "test_nme.py"), *args], capture_output=True,
                          text=True, cwd=ROOT)


def test_test_nme_same_numbers_for_any_batch_and_writes_reports(checkpoint, tmp_path):
    prefix = str(checkpoint / "run" / "model")
    outs = {}
    for batch in (1, 4):
        proc = _run_test_nme("--prefix", prefix, "--epoch", "1", "--rec", str(checkpoint / "ibug.rec"),
                             "--batch-size", str(batch), "--out", str(tmp_path / str(batch)))
        assert proc.returncode == 0, proc.stderr[-2000:]
        outs[batch] = json.load(open(tmp_path / str(batch) / "ibug-summary.json"))
    assert outs[1]["count"] == outs[4]["count"] == 7
    assert outs[1]["normaliser"] == "eye_centre"
    assert outs[1]["nme"] == pytest.approx(outs[4]["nme"], rel=1e-5)
    rows = list(csv.reader(open(tmp_path / "4" / "ibug-per_image.csv")))
    assert len(rows) == 1 + 7 and len(rows[0]) == 2 + 136
    assert (tmp_path / "4" / "ibug-ced.png").stat().st_size > 1000
    per_image = np.array([float(r[1]) for r in rows[1:]])
    assert per_image.mean() == pytest.approx(outs[4]["nme"], rel=1e-4)
    assert 0.0 < outs[4]["baseline_mean_shape"]["nme"] < 1.0
    assert "mean-shape baseline" in proc.stdout


def test_test_nme_clear_errors(checkpoint, tmp_path):
    proc = _run_test_nme("--prefix", "p", "--epoch", "0", "--rec", "x.rec", "--batch-size", "0")
    assert proc.returncode == 2 and "--batch-size must be at least 1" in proc.stderr
    proc = _run_test_nme("--prefix", str(checkpoint / "run" / "model"), "--epoch", "99", "--rec", "x.rec")
    assert proc.returncode == 2 and "model-0099.params" in proc.stderr and "not found" in proc.stderr
    (tmp_path / "bad-symbol.json").write_text("{not json")
    proc = _run_test_nme("--prefix", str(tmp_path / "bad"), "--epoch", "0", "--rec", "x.rec")
    assert proc.returncode == 2 and "bad-symbol.json" in proc.stderr


def test_test_nme_winograd_graph_gives_the_same_nme(checkpoint, tmp_path):
    prefix = str(checkpoint / "run" / "model")
    nmes = []
    for extra in ([], ["--winograd"]):
        out = tmp_path / ("w" if extra else "exact")
        proc = _run_test_nme("--prefix", prefix, "--epoch", "1", "--rec", str(checkpoint / "ibug.rec"),
                             "--out", str(out), *extra)
        assert proc.returncode == 0, proc.stderr[-2000:]
        nmes.append(json.load(open(out / "ibug-summary.json"))["nme"])
    assert nmes[1] == pytest.approx(nmes[0], rel=1e-3)


def test_mean_shape_baseline_is_exact_on_the_mean_shape_and_beaten_by_truth():
    from insightface_align.metrics import mean_shape, mean_shape_in_box

    shape = mean_shape()
    assert shape.min() == 0.0 and shape.max() == 1.0
    # Eyes above the mouth, jaw point 0 on the image left (iBUG order, y down).
    assert shape[36:48, 1].mean() < shape[48:68, 1].mean() and shape[0, 0] < shape[16, 0]
    gt = 50.0 + 80.0 * shape[None]
    np.testing.assert_allclose(mean_shape_in_box(gt), gt, atol=1e-9)
    # A face that differs from the mean (an open mouth) costs the baseline, not the truth.
    moved = gt.copy()
    moved[0, 48:68, 1] += np.linspace(0, 8, 20)
    base = per_image_nme(mean_shape_in_box(moved), moved, "outer_corners")
    assert base[0] > 0.01 and per_image_nme(moved, moved, "outer_corners")[0] == 0.0


def test_test_nme_never_scores_a_record_twice(checkpoint, tmp_path):
    """A corrupt record and a mismatched .rec/.idx pair: unreadable records are named, left
    out of the score (never replaced by a readable one), and the exit code says so."""
    import shutil

    from insightface_align.data.testing import random_face, write_release_rec

    prefix = str(checkpoint / "run" / "model")
    shutil.copy(checkpoint / "ibug.rec", tmp_path / "ibug.rec")
    shutil.copy(checkpoint / "ibug.idx", tmp_path / "ibug.idx")
    data = bytearray((tmp_path / "ibug.rec").read_bytes())
    keys = [line.split("\t") for line in (tmp_path / "ibug.idx").read_text().split("\n") if line]
    start = int(keys[3][1])
    data[start + 8 + 24 + 4 * 136 + 200:start + 8 + 24 + 4 * 136 + 400] = b"\x00" * 200  # inside record 3's JPEG
    data[start + 8 + 24 + 4 * 136:start + 8 + 24 + 4 * 136 + 4] = b"junk"  # not a JPEG any more
    (tmp_path / "ibug.rec").write_bytes(bytes(data))
    proc = _run_test_nme("--prefix", prefix, "--epoch", "1", "--rec", str(tmp_path / "ibug.rec"),
                         "--out", str(tmp_path / "out"))
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "1 of 7 records unreadable" in proc.stderr and "record 3:" in proc.stderr
    assert "6 of 7 faces scored" in proc.stdout
    summary = json.load(open(tmp_path / "out" / "ibug-summary.json"))
    assert summary["count"] == 6 and summary["unreadable"][0]["record"] == 3
    allowed = _run_test_nme("--prefix", prefix, "--epoch", "1", "--rec", str(tmp_path / "ibug.rec"),
                            "--allow-bad-records")
    assert allowed.returncode == 0 and "6 of 7 faces scored" in allowed.stdout
    # A .idx from another set: most offsets point into the middle of records.
    rng = np.random.default_rng(11)
    write_release_rec(str(tmp_path / "other"), [random_face(rng) for _ in range(7)])
    shutil.copy(tmp_path / "other.idx", tmp_path / "mixed.idx")
    shutil.copy(checkpoint / "ibug.rec", tmp_path / "mixed.rec")
    mixed = _run_test_nme("--prefix", prefix, "--epoch", "1", "--rec", str(tmp_path / "mixed.rec"))
    assert mixed.returncode in (1, 2), mixed.stdout
    assert "unreadable" in mixed.stderr or "no readable record" in mixed.stderr
