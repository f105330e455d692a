"""Hostile input to the readers and the packer: truncated images, every OpenCV format,
absurd landmarks and symlink loops give a counted, named skip or a correct result."""
from __future__ import annotations

import os

import cv2
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from insightface_align.datasets import W300Reader
from insightface_align.datasets.base import landmark_problem, sorted_files
from insightface_align.datasets.images import load_image, truncation
from insightface_align.errors import DataError
from insightface_align.pack import pack_dataset
from test_pack import face_points, read_all, write_face


def _smooth(seed=0, size=(100, 120)):
    rng = np.random.default_rng(seed)
    return cv2.resize(rng.integers(0, 256, (10, 12, 3), dtype=np.uint8), size[::-1], interpolation=cv2.INTER_CUBIC)


def _pts(path, points):
    lines = ["version: 1", f"n_points: {len(points)}", "{"] + [f"{x:.4f} {y:.4f}" for x, y in points + 1] + ["}"]
    path.write_text("\n".join(lines) + "\n")


JPEG = cv2.imencode(".jpg", _smooth())[1].tobytes()
PNG = cv2.imencode(".png", _smooth())[1].tobytes()


@pytest.mark.parametrize("data, fraction", [(JPEG, 0.3), (JPEG, 0.9), (PNG, 0.5), (PNG, 0.99)])
def test_truncated_images_are_refused_with_the_file_named(tmp_path, data, fraction):
    path = tmp_path / ("cut.jpg" if data is JPEG else "cut.png")
    path.write_bytes(data[:int(len(data) * fraction)])
    with pytest.raises(DataError) as exc:
        load_image(path)
    assert str(exc.value).startswith(str(path)) and "truncated" in str(exc.value) or "decodable" in str(exc.value)


@given(st.integers(min_value=4, max_value=len(JPEG) - 3))
@settings(max_examples=60)
def test_every_cut_jpeg_is_detected(cut):
    assert truncation(JPEG[:cut]) is not None


def test_whole_files_and_trailing_bytes_pass():
    assert truncation(JPEG) is None and truncation(PNG) is None
    assert truncation(JPEG + b"\x00" * 100) is None  # padding after the end marker
    thumb = JPEG[:2] + b"\xff\xe1\x00\x10" + b"Exif\x00\x00" + JPEG[2:8] + JPEG[2:]  # an FFD9-free APP1 block
    assert truncation(thumb) is None


@pytest.mark.parametrize("ext", [".ppm", ".pgm", ".tif", ".webp", ".bmp", ".jp2"])
def test_every_format_opencv_reads_is_found_beside_the_pts(tmp_path, ext):
    folder = tmp_path / "d"
    folder.mkdir()
    image = _smooth(3)
    if ext == ".pgm":
        image = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    assert cv2.imwrite(str(folder / ("face" + ext)), image)
    _pts(folder / "face.pts", face_points(3))
    summary = pack_dataset(W300Reader(str(folder)), tmp_path / "out", "t", workers=1, progress=False)
    assert summary.written == 1 and not summary.skipped


@pytest.mark.parametrize("points, reason", [
    (np.full((68, 2), 50000.0), "landmarks far outside the 120x100 image"),
    (np.full((68, 2), 40.0), "degenerate landmarks"),
    (np.tile([[-500.0, 10.0]], (68, 1)) + np.arange(68)[:, None], "landmarks far outside"),
])
def test_absurd_landmarks_are_skipped_and_counted(tmp_path, points, reason):
    folder = tmp_path / "d"
    write_face(folder, "good", seed=1)
    cv2.imwrite(str(folder / "bad.png"), _smooth(2))
    _pts(folder / "bad.pts", points)
    summary = pack_dataset(W300Reader(str(folder)), tmp_path / "out", "t", workers=1, progress=False)
    assert summary.written == 1
    (item, kind, message), = summary.skipped
    assert kind in ("landmarks far outside the image", "degenerate landmarks")
    assert "bad.pts" in message and reason in message
    assert len(read_all(tmp_path / "out", "t")) == 1


def test_faces_cut_by_the_border_are_kept():
    pts = face_points(0) + [70.0, 0.0]  # the face half outside the right edge
    assert landmark_problem(pts, 120, 100) is None


def test_symlink_loops_neither_hang_nor_duplicate(tmp_path):
    folder = tmp_path / "d"
    write_face(folder / "sub", "a", seed=1)
    write_face(folder, "b", seed=2)
    os.symlink(folder, folder / "sub" / "loop")         # a loop back to the root
    os.symlink(folder / "sub", folder / "again")        # the same data twice
    os.symlink(folder / "again", folder / "sub" / "x")  # and a chain of links
    found = sorted_files(str(folder), ".pts")
    assert [os.path.relpath(p, folder) for p in found] == ["b.pts", "sub/a.pts"]
    summary = pack_dataset(W300Reader(str(folder)), tmp_path / "out", "t", workers=1, progress=False)
    assert summary.written == 2


def test_a_second_packer_on_the_same_set_fails_clearly(tmp_path):
    from insightface_align.pack import _lock

    folder = tmp_path / "d"
    write_face(folder, "a", seed=1)
    out = tmp_path / "out"
    out.mkdir()
    held = _lock(str(out), "t")  # another packer is writing the set
    try:
        with pytest.raises(DataError) as exc:
            pack_dataset(W300Reader(str(folder)), out, "t", workers=1, progress=False)
        assert str(exc.value).startswith(str(out / "t.rec")) and "another pack is writing" in str(exc.value)
        pack_dataset(W300Reader(str(folder)), out, "other", workers=1, progress=False)  # other sets are free
    finally:
        held.close()
    assert pack_dataset(W300Reader(str(folder)), out, "t", workers=1, progress=False).written == 1


@pytest.mark.parametrize("renamed", [0, 1, 2])
def test_a_swap_killed_between_renames_is_completed_not_mixed(tmp_path, renamed):
    from insightface_align.pack import finish_interrupted

    old, new = tmp_path / "old", tmp_path / "new"
    write_face(old, "a", seed=1)
    for i in range(3):
        write_face(new, f"n{i}", seed=10 + i)
    out = tmp_path / "out"
    pack_dataset(W300Reader(str(old)), out, "t", workers=1, progress=False)
    staged = out / ".t.pack-killed"
    pack_dataset(W300Reader(str(new)), staged, "t", workers=1, progress=False)
    (out / ".t.pack-journal").write_text(staged.name)
    for ext in (".idx", ".lst", ".rec")[:renamed]:  # the packer died after `renamed` renames
        os.replace(staged / ("t" + ext), out / ("t" + ext))
    assert finish_interrupted(str(out), "t")
    assert len(read_all(out, "t")) == 3 and len((out / "t.lst").read_text().splitlines()) == 3
    assert not staged.exists() and not (out / ".t.pack-journal").exists()


def test_staging_folders_of_dead_packers_are_removed(tmp_path):
    folder = tmp_path / "d"
    write_face(folder, "a", seed=1)
    out = tmp_path / "out"
    (out / ".t.pack-dead").mkdir(parents=True)
    (out / ".t.pack-dead" / "t.rec").write_bytes(b"partial")
    pack_dataset(W300Reader(str(folder)), out, "t", workers=1, progress=False)
    assert not (out / ".t.pack-dead").exists()
    assert sorted(p.name for p in out.iterdir()) == [".t.lock", "t.idx", "t.lst", "t.rec"]


# ------------------------------------------------------------------ recipes
@pytest.mark.parametrize("text, field, message", [
    ("train: {lr: fast}", "train.lr", "expected a finite number, got 'fast'"),
    ("train: {lr: '0.01'}", "train.lr", "expected a finite number"),
    ("train: {max_steps: '10'}", "train.max_steps", "expected an integer"),
    ("train: {max_steps: 10.5}", "train.max_steps", "expected an integer, got 10.5"),
    ("train: {lr_steps: 240}", "train.lr_steps", "expected a list"),
    ("train: {lr_steps: [100, 2.5]}", "train.lr_steps[1]", "expected an integer"),
    ("train: {lr: .nan}", "train.lr", "expected a finite number"),
    ("data: {sigma: big}", "data.sigma", "expected a finite number"),
    ("data: {sigmaa: 2}", "data.sigmaa", "unknown field"),
    ("data: {flip: 'yes'}", "data.flip", "expected true or false"),
    ("data: {scale: [0.8]}", "data.scale", "expected 2 values"),
    ("data: {photometric: {colour: lots}}", "data.photometric.colour", "expected a finite number"),
    ("loss: {heatmap: 3}", "loss.heatmap", "expected text"),
    ("loss: {weight: 3}", "loss.weight", "unknown field"),
    ("network: {stacks: 2.0}", "network.stacks", "expected an integer"),
    ("network: {stn: 1}", "network.stn", "expected true or false"),
    ("paper: {size_mb: huge}", "paper.size_mb", "expected a finite number"),
    ("train: 5", "train", "section must be a mapping"),
])
def test_recipe_values_are_type_checked(tmp_path, text, field, message):
    from insightface_align.errors import ConfigError
    from insightface_align.recipe import load_recipe

    path = tmp_path / "r.yaml"
    path.write_text(f"base: demo\n{text}\n")
    with pytest.raises(ConfigError) as exc:
        load_recipe(str(path))
    assert exc.value.field == field and message in str(exc.value), str(exc.value)


@pytest.mark.parametrize("text", ["", "description: nothing else\n"])
def test_a_recipe_without_a_network_is_refused(tmp_path, text):
    from insightface_align.errors import ConfigError
    from insightface_align.recipe import load_recipe

    path = tmp_path / "empty.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as exc:
        load_recipe(str(path))
    assert exc.value.field == "network" and str(path) in str(exc.value)


def test_recipe_numbers_keep_their_meaning(tmp_path):
    from insightface_align.recipe import load_recipe
    from insightface_align.train_config import TrainConfig

    path = tmp_path / "r.yaml"
    path.write_text("base: demo\ntrain: {lr: 1, lr_steps: [10, 20], max_steps: 30}\ndata: {rotate: 10}\n")
    recipe = load_recipe(str(path))
    cfg = TrainConfig.from_dict(recipe.train)
    assert cfg.lr == 1.0 and isinstance(cfg.lr, float) and cfg.lr_steps == (10, 20) and cfg.max_steps == 30
    assert recipe.data["rotate"] == 10.0


def test_train_command_reports_a_bad_recipe_as_one_error_line(tmp_path, capsys):
    from insightface_align.cli.train import main

    path = tmp_path / "r.yaml"
    path.write_text("base: demo\ntrain: {max_steps: 10.5}\n")
    assert main(["--recipe", str(path), "--data", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "train.max_steps" in err[0]
