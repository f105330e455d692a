"""The RecordIO packer: round trip, determinism, atomicity, skip-and-count, CLI."""
from __future__ import annotations

import os

import cv2
import mxnet as mx
import numpy as np
import pytest

from insightface_align import pack as packmod
from insightface_align.data.record import crop_to_record, pack_record, unpack_record
from insightface_align.datasets import FaceSample, MenpoReader, W300Reader
from insightface_align.datasets.base import Reader
from insightface_align.errors import DataError
from insightface_align.geometry import landmark_box
from insightface_align.pack import pack_dataset
from insightface_align.cli import pack as pack_rec

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

N = 68


def face_points(seed, w=120, h=100) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centre = np.array([w / 2, h / 2]) + rng.uniform(-10, 10, 2)
    return centre + rng.uniform(-25, 25, (N, 2))


def write_face(folder, stem, seed, n_points=N, image=True):
    """A smooth random image (JPEG-friendly) plus a 1-based .pts file."""
    os.makedirs(folder, exist_ok=True)
    if image:
        rng = np.random.default_rng(seed)
        small = rng.integers(0, 256, (10, 12, 3), dtype=np.uint8)
        cv2.imwrite(os.path.join(folder, stem + ".png"), cv2.resize(small, (120, 100), interpolation=cv2.INTER_CUBIC))
    pts = face_points(seed)[:n_points] + 1.0
    lines = ["version: 1", f"n_points: {n_points}", "{"] + [f"{x:.4f} {y:.4f}" for x, y in pts] + ["}"]
    with open(os.path.join(folder, stem + ".pts"), "w") as handle:
        handle.write("\n".join(lines) + "\n")


def read_all(folder, name):
    rec = mx.recordio.MXIndexedRecordIO(os.path.join(folder, name + ".idx"), os.path.join(folder, name + ".rec"), "r")
    out = [unpack_record(rec.read_idx(k)) for k in rec.keys]
    rec.close()
    return out


def files_in(folder):
    """The folder's files, without the set's lock file (.NAME.lock stays, as lock files do)."""
    names = sorted(os.listdir(folder)) if os.path.isdir(folder) else []
    return [n for n in names if not (n.startswith(".") and n.endswith(".lock"))]


@pytest.fixture
def faces(tmp_path):
    data = tmp_path / "data"
    for i in range(5):
        write_face(data, f"f{i}", seed=i)
    return data


def test_round_trip_points_match_crop_transform(faces, tmp_path):
    out = tmp_path / "out"
    summary = pack_dataset(W300Reader(str(faces)), out, "ibug", workers=1, progress=False)
    assert summary.written == 5 and not summary.skipped
    assert files_in(out) == ["ibug.idx", "ibug.lst", "ibug.rec"]
    records = read_all(out, "ibug")
    samples = list(W300Reader(str(faces)))
    lst = (out / "ibug.lst").read_text().splitlines()
    for k, ((img, pts, rid), sample) in enumerate(zip(records, samples)):
        full = cv2.imread(sample.image_path)
        want_img, want_pts = crop_to_record(full, sample.points, landmark_box(sample.points))
        assert rid == k and img.shape == (384, 384, 3)
        assert np.abs(pts - want_pts).max() <= 0.5
        np.testing.assert_allclose(pts, want_pts, atol=1e-4)
        assert np.abs(img.astype(int) - want_img.astype(int)).mean() < 3.0  # JPEG only touches pixels
        fields = lst[k].split("\t")
        assert fields[0] == str(k) and fields[-1] == f"f{k}.png" and len(fields) == 2 + 2 * N
        np.testing.assert_allclose(np.array(fields[1:-1], float).reshape(N, 2)[:, ::-1], pts, atol=1e-5)


def test_face_box_is_used_when_given(tmp_path):
    write_face(tmp_path / "d", "a", seed=1)
    sample = list(W300Reader(str(tmp_path / "d")))[0]

    class BoxReader(Reader):
        def items(self):
            return [0]

        def load(self, item):
            return FaceSample(sample.image_path, sample.points, box=(30.0, 20.0, 70.0, 60.0))

        def image_root(self):
            return str(tmp_path)

    pack_dataset(BoxReader(), tmp_path / "o", "b", workers=1, progress=False)
    (_, pts, _), = read_all(tmp_path / "o", "b")
    _, want = crop_to_record(cv2.imread(sample.image_path), sample.points, (30.0, 20.0, 70.0, 60.0))
    np.testing.assert_allclose(pts, want, atol=1e-4)
    _, other = crop_to_record(cv2.imread(sample.image_path), sample.points, landmark_box(sample.points))
    assert np.abs(pts - other).max() > 1.0


def test_renumber_equals_packing_with_that_index():
    img = np.random.default_rng(0).integers(0, 256, (384, 384, 3), dtype=np.uint8)
    pts = face_points(0).astype(np.float32)
    renumbered, label = packmod.renumber(pack_record(0, img, pts), 7)
    assert renumbered == pack_record(7, img, pts)
    np.testing.assert_array_equal(label.reshape(N, 2)[:, ::-1], pts)


def test_deterministic_across_runs_and_worker_counts(faces, tmp_path):
    pack_dataset(W300Reader(str(faces)), tmp_path / "a", "s", workers=1, progress=False)
    pack_dataset(W300Reader(str(faces)), tmp_path / "b", "s", workers=2, progress=False)
    for ext in (".rec", ".idx", ".lst"):
        assert (tmp_path / "a" / ("s" + ext)).read_bytes() == (tmp_path / "b" / ("s" + ext)).read_bytes()


def test_bad_files_are_skipped_counted_and_listed(faces, tmp_path):
    write_face(faces, "g_profile", seed=9, n_points=39)
    write_face(faces, "h_noimage", seed=10, image=False)
    (faces / "i_broken.pts").write_text("version: 1\nn_points: 68\n{\n1 2\n")
    summary = pack_dataset(MenpoReader(str(faces)), tmp_path / "o", "menpo", workers=2, progress=False)
    assert summary.written == 5 and len(summary.skipped) == 3
    assert summary.reasons() == {"malformed or unreadable": 2, "profile annotation (39 points)": 1}
    report = summary.report()
    for name in ("g_profile.pts", "h_noimage.pts", "i_broken.pts"):
        assert name in report
    assert "5 images written, 3 skipped" in report
    assert [rid for _, _, rid in read_all(tmp_path / "o", "menpo")] == [0, 1, 2, 3, 4]


class ExplodingReader(W300Reader):
    """Raises a non-data error (a bug, not a bad file) on its third item."""

    def load(self, item):
        if item[0].endswith("f2.pts"):
            raise RuntimeError("boom")
        return super().load(item)


@pytest.mark.parametrize("workers", [1, 2])
def test_worker_error_leaves_no_files_and_keeps_old_output(faces, tmp_path, workers):
    out = tmp_path / "o"
    pack_dataset(W300Reader(str(faces)), out, "s", workers=1, progress=False)
    before = {n: (out / n).read_bytes() for n in files_in(out)}
    with pytest.raises(RuntimeError, match="boom"):
        pack_dataset(ExplodingReader(str(faces)), out, "s", workers=workers, progress=False)
    assert {n: (out / n).read_bytes() for n in files_in(out)} == before  # no tmp files, old set intact
    with pytest.raises(RuntimeError):
        pack_dataset(ExplodingReader(str(faces)), tmp_path / "new", "s", workers=workers, progress=False)
    assert files_in(tmp_path / "new") == []


class DyingReader(W300Reader):
    """Kills its worker process outright, as a crashing native decoder would."""

    def load(self, item):
        if item[0].endswith("f3.pts"):
            os._exit(3)
        return super().load(item)


def test_dead_worker_fails_fast_without_files(faces, tmp_path):
    from concurrent.futures.process import BrokenProcessPool

    with pytest.raises(BrokenProcessPool):
        pack_dataset(DyingReader(str(faces)), tmp_path / "o", "s", workers=2, progress=False)
    assert files_in(tmp_path / "o") == []


def test_interrupt_leaves_no_files(faces, tmp_path, monkeypatch):
    calls = []
    real = packmod.renumber

    def interrupted(record, index):
        calls.append(index)
        if index == 2:
            raise KeyboardInterrupt
        return real(record, index)

    monkeypatch.setattr(packmod, "renumber", interrupted)
    with pytest.raises(KeyboardInterrupt):
        pack_dataset(W300Reader(str(faces)), tmp_path / "o", "s", workers=2, progress=False)
    assert calls == [0, 1, 2] and files_in(tmp_path / "o") == []


def test_nothing_usable_is_an_error_without_files(tmp_path):
    write_face(tmp_path / "d", "a", seed=1, image=False)
    with pytest.raises(DataError, match="no usable samples"):
        pack_dataset(W300Reader(str(tmp_path / "d")), tmp_path / "o", "s", workers=1, progress=False)
    assert files_in(tmp_path / "o") == []


def test_cli_format_and_auto(tmp_path, capsys):
    for rel in ("lfpw/trainset", "helen/trainset", "afw", "ibug"):
        write_face(tmp_path / "DATA" / rel, "x", seed=len(rel))
    write_face(tmp_path / "DATA" / "ibug", "y_bad", seed=3, image=False)
    code = pack_rec.main(["--auto", "2d", "--input", str(tmp_path / "DATA"), "--output", str(tmp_path / "o"),
                          "--workers", "1", "--no-progress"])
    assert code == 0
    assert files_in(tmp_path / "o") == ["ibug.idx", "ibug.lst", "ibug.rec", "train.idx", "train.lst", "train.rec"]
    assert len(read_all(tmp_path / "o", "train")) == 3
    out = capsys.readouterr().out
    assert "ibug: 1 images written, 1 skipped" in out and "y_bad.pts" in out
    code = pack_rec.main(["--format", "300w", "--input", str(tmp_path / "DATA/afw"), "--output",
                          str(tmp_path / "p"), "--name", "afw", "--workers", "1", "--no-progress"])
    assert code == 0 and len(read_all(tmp_path / "p", "afw")) == 1
    assert pack_rec.main(["--format", "300w", "--input", str(tmp_path / "nope"), "--output",
                          str(tmp_path / "q"), "--name", "x"]) == 2
    assert "input folder not found" in capsys.readouterr().err
    with pytest.raises(SystemExit) as info:
        pack_rec.main(["--help"])
    assert info.value.code == 0 and "AFLW2000-3D.rec <- AFLW2000" in capsys.readouterr().out
