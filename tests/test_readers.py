"""Dataset readers on files written here in each real format, good and malformed."""
from __future__ import annotations

import os

import cv2
import h5py
import numpy as np
import pytest
import scipy.io

from insightface_align.datasets import (Aflw2000Reader, CofwReader, ListReader, MenpoReader,
                                        W300LPReader, W300Reader, load_image)
from insightface_align.datasets.layout import detect_sets, find_folder
from insightface_align.datasets.matfile import load_mat
from insightface_align.datasets.pts import parse_pts
from insightface_align.errors import DataError

N = 68


def pts_text(points, n_points=None, newline="\n") -> str:
    """A .pts file body for the given (already 1-based) values."""
    n_points = len(points) if n_points is None else n_points
    body = [f"version: 1", f"n_points: {n_points}", "{"]
    body += [f"{x:.3f} {y:.3f}" for x, y in points]
    body.append("}")
    return newline.join(body) + newline


def ramp_points(offset=0.0) -> np.ndarray:
    """68 distinct points inside a 100x80 image."""
    k = np.arange(N, dtype=np.float64)
    return np.stack([10 + k + offset, 5 + (k % 17) * 3 + offset], axis=1)


def write_image(path, h=80, w=100, value=None) -> np.ndarray:
    rng = np.random.default_rng(len(str(path)))
    img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8) if value is None else np.full((h, w, 3), value, np.uint8)
    assert cv2.imwrite(str(path), img)
    return img


def write_pts_sample(folder, stem, points_1based, ext=".jpg") -> str:
    os.makedirs(folder, exist_ok=True)
    write_image(os.path.join(folder, stem + ext))
    path = os.path.join(folder, stem + ".pts")
    with open(path, "w", newline="") as handle:
        handle.write(pts_text(points_1based))
    return path


# ---------------------------------------------------------------- .pts / 300W / Menpo

def test_pts_reader_converts_one_based_to_zero_based(tmp_path):
    raw = ramp_points()
    write_pts_sample(tmp_path, "a", raw)
    samples = list(W300Reader(str(tmp_path)))
    assert len(samples) == 1
    s = samples[0]
    assert s.points.dtype == np.float32 and s.points.shape == (N, 2)
    np.testing.assert_allclose(s.points, raw - 1.0, atol=1e-4)
    assert s.image_path.endswith("a.jpg") and s.box is None and s.occluded is None


def test_pts_crlf_comments_blank_lines_bom_parse_like_plain():
    raw = ramp_points()
    plain = parse_pts(pts_text(raw))
    messy = pts_text(raw, newline="  \r\n").replace("{", "# a comment line\r\n\r\n{  ")
    messy = "\ufeff" + messy.replace("n_points", "\r\n  n_points") + "\r\n# trailing comment\r\n"
    np.testing.assert_array_equal(parse_pts(messy), plain)
    np.testing.assert_allclose(plain, raw, atol=1e-3)


@pytest.mark.parametrize("text, line, words", [
    ("version: 1\nn_points: 2\n{\n1 2\n3 4\n5 6\n}\n", 6, "more than n_points"),
    ("version: 1\nn_points: 3\n{\n1 2\n3 4\n}\n", 6, "n_points=3 but 2"),
    ("version: 1\nn_points: 2\n1 2\n3 4\n}\n", 3, "key: value"),
    ("version: 1\nn_points: 2\n{\n1 2\n3 4\n", None, "missing closing"),
    ("version: 1\nn_points: 2\n", None, "missing '{'"),
    ("version: 1\n{\n1 2\n}\n", None, "missing 'n_points"),
    ("version: 1\nn_points: 2\n{\n1 2\n3 abc\n}\n", 5, "expected a number"),
    ("version: 1\nn_points: 2\n{\n1 2\n3 4 5\n}\n", 5, "2 numbers"),
    ("version: 1\nn_points: 2\n{\n1 2\nnan 4\n}\n", 5, "finite"),
    ("version: 2\nn_points: 2\n{\n1 2\n3 4\n}\n", 1, "version"),
    ("version: 1\nn_points: two\n{\n}\n", 2, "integer"),
    ("version: 1\nn_points: 2\n{\n1 2\n3 4\n}\nextra\n", 7, "after the closing"),
])
def test_malformed_pts_names_file_line_and_expectation(text, line, words):
    with pytest.raises(DataError) as info:
        parse_pts(text, "bad.pts")
    assert info.value.path == "bad.pts" and info.value.line == line
    assert words in str(info.value)
    assert str(info.value).startswith("bad.pts" + (f":{line}" if line else ""))


def test_wrong_point_count_and_missing_image_are_data_errors(tmp_path):
    with open(tmp_path / "short.pts", "w") as handle:
        handle.write(pts_text(ramp_points()[:60]))
    write_image(tmp_path / "short.jpg")
    with open(tmp_path / "noimage.pts", "w") as handle:
        handle.write(pts_text(ramp_points()))
    reader = W300Reader(str(tmp_path))
    items = reader.items()
    assert [os.path.basename(i[0]) for i in items] == ["noimage.pts", "short.pts"]
    with pytest.raises(DataError, match="image .* not found") as info:
        reader.load(items[0])
    assert "noimage.pts" in str(info.value)
    with pytest.raises(DataError, match="n_points is 60, expected 68"):
        reader.load(items[1])


@pytest.mark.parametrize("ext", [".png", ".JPG", ".jpeg", ".bmp"])
def test_image_found_with_any_extension(tmp_path, ext):
    write_pts_sample(tmp_path, "x", ramp_points(), ext=ext)
    (s,) = list(W300Reader(str(tmp_path)))
    assert s.image_path == os.path.join(str(tmp_path), "x" + ext)


def test_items_sorted_by_relative_path_across_subfolders(tmp_path):
    for rel in ["b/2", "a/9", "a/10", "c"]:
        folder, stem = os.path.split(rel)
        write_pts_sample(tmp_path / folder, stem, ramp_points())
    names = [os.path.relpath(p, tmp_path) for p, _ in W300Reader(str(tmp_path)).items()]
    assert names == sorted(names) and len(names) == 4


def test_menpo_skips_and_counts_profile_files(tmp_path):
    write_pts_sample(tmp_path, "frontal", ramp_points())
    write_pts_sample(tmp_path, "profile", ramp_points()[:39])
    reader = MenpoReader(str(tmp_path))
    samples = list(reader)
    assert [os.path.basename(s.image_path) for s in samples] == ["frontal.jpg"]
    assert len(reader.skipped) == 1 and "profile.pts" in reader.skipped[0][0]
    assert "39 points" in reader.skipped[0][1]
    with pytest.raises(DataError):  # the 300W reader does not accept 39-point files
        list(W300Reader(str(tmp_path)))


# ---------------------------------------------------------------- image loader

def test_grey_png_16bit_and_4channel_load_as_bgr_uint8(tmp_path):
    grey = np.arange(60 * 40, dtype=np.uint8).reshape(60, 40)
    cv2.imwrite(str(tmp_path / "g.png"), grey)
    img = load_image(tmp_path / "g.png")
    assert img.shape == (60, 40, 3) and img.dtype == np.uint8
    np.testing.assert_array_equal(img[:, :, 1], grey)

    deep = np.zeros((8, 9, 3), np.uint16)
    deep[0, 0] = 65535
    deep[1, 1] = 32896  # 128 * 257
    cv2.imwrite(str(tmp_path / "d.png"), deep)
    img = load_image(tmp_path / "d.png")
    assert img.dtype == np.uint8 and img.shape == (8, 9, 3)
    assert tuple(img[0, 0]) == (255, 255, 255) and tuple(img[1, 1]) == (128, 128, 128) and img[2, 2, 0] == 0

    rgba = np.zeros((5, 6, 4), np.uint8)
    rgba[..., 0], rgba[..., 3] = 200, 10
    cv2.imwrite(str(tmp_path / "a.png"), rgba)
    img = load_image(tmp_path / "a.png")
    assert img.shape == (5, 6, 3) and img[0, 0, 0] == 200


def test_cmyk_jpeg_loads_as_three_channels(tmp_path):
    from PIL import Image

    Image.new("CMYK", (30, 20), (0, 0, 0, 0)).save(tmp_path / "c.jpg", "JPEG", quality=95)
    with Image.open(tmp_path / "c.jpg") as check:
        assert check.mode == "CMYK"
    img = load_image(tmp_path / "c.jpg")
    assert img.shape == (20, 30, 3) and img.dtype == np.uint8


def test_exif_rotation_is_ignored(tmp_path):
    from PIL import Image

    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW" for viewers
    Image.new("RGB", (40, 10), (10, 20, 30)).save(tmp_path / "r.jpg", "JPEG", exif=exif.tobytes())
    assert load_image(tmp_path / "r.jpg").shape == (10, 40, 3)
    assert cv2.imread(str(tmp_path / "r.jpg")).shape == (40, 10, 3)  # what plain imread would give


def test_bad_images_raise_data_error(tmp_path):
    (tmp_path / "t.jpg").write_bytes(b"not an image at all")
    (tmp_path / "e.png").write_bytes(b"")
    for name in ["t.jpg", "e.png", "missing.png"]:
        with pytest.raises(DataError) as info:
            load_image(tmp_path / name)
        assert name in str(info.value)


# ---------------------------------------------------------------- COFW-68

def cofw_images():
    rng = np.random.default_rng(3)
    return [rng.integers(0, 256, (50, 60, 3), dtype=np.uint8),
            rng.integers(0, 256, (40, 30), dtype=np.uint8),  # a grey one, as in COFW
            rng.integers(0, 256, (45, 55, 3), dtype=np.uint8)]


BOXES = np.array([[11, 6, 30, 20], [2, 3, 20, 25], [5, 5, 40, 30]], dtype=np.float64)


def write_cofw_v5(path, images):
    cells = np.empty((len(images), 1), dtype=object)
    for i, img in enumerate(images):
        cells[i, 0] = img
    scipy.io.savemat(str(path), {"IsT": cells, "bboxesT": BOXES[: len(images)]})


def write_cofw_v73(path, images):
    """What MATLAB's save -v7.3 writes: HDF5 after a 512-byte header, axes reversed."""
    with h5py.File(path, "w", userblock_size=512) as h5:
        refs = h5.create_dataset("IsT", (1, len(images)), dtype=h5py.ref_dtype)
        for i, img in enumerate(images):
            refs[0, i] = h5.create_dataset(f"#refs#/{i}", data=np.asarray(img).T).ref
        h5["bboxesT"] = BOXES[: len(images)].T
    with open(path, "r+b") as handle:
        handle.write(b"MATLAB 7.3 MAT-file".ljust(128))


def write_cofw_points(folder, index, points_1based, occ=None, **override):
    os.makedirs(folder, exist_ok=True)
    data = {"Points": points_1based, "Occ": (np.arange(N) % 5 == 0).astype(np.float64).reshape(N, 1)
            if occ is None else occ}
    data.update(override)
    scipy.io.savemat(os.path.join(folder, f"{index}_points.mat"), data)


@pytest.mark.parametrize("writer", [write_cofw_v5, write_cofw_v73])
def test_cofw_reader_v5_and_v73(tmp_path, writer):
    images = cofw_images()
    writer(tmp_path / "COFW_test_color.mat", images)
    ann = tmp_path / "test_annotations"
    for i in (1, 2):
        write_cofw_points(ann, i, ramp_points() * 0.3 + i)
    reader = CofwReader.from_folder(tmp_path, tmp_path / "cache")
    samples = list(reader)
    assert len(samples) == 2
    first, second = samples
    np.testing.assert_allclose(first.points, ramp_points() * 0.3 + 1 - 1, atol=1e-4)
    np.testing.assert_allclose(second.points, ramp_points() * 0.3 + 2 - 1, atol=1e-4)
    assert first.occluded.dtype == bool and first.occluded.sum() == 14 and first.occluded[0]
    assert first.box == (10.0, 5.0, 40.0, 25.0)  # [x y w h] 1-based -> x0 y0 x1 y1 0-based
    np.testing.assert_array_equal(cv2.imread(first.image_path), images[0][:, :, ::-1])
    grey = cv2.imread(second.image_path)
    assert grey.shape == (40, 30, 3)
    np.testing.assert_array_equal(grey[:, :, 2], images[1])
    assert os.path.basename(second.image_path) == "cofw_test_0002.png"


def test_matfile_v73_matches_v5_shapes(tmp_path):
    images = cofw_images()
    write_cofw_v5(tmp_path / "a.mat", images)
    write_cofw_v73(tmp_path / "b.mat", images)
    a, b = load_mat(tmp_path / "a.mat"), load_mat(tmp_path / "b.mat")
    assert a["IsT"].shape == b["IsT"].shape == (3, 1)
    np.testing.assert_array_equal(a["bboxesT"], b["bboxesT"])
    for x, y in zip(a["IsT"].ravel(), b["IsT"].ravel()):
        np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize("override, words", [
    ({"Points": np.zeros((2, N))}, "shape (2, 68), expected (68, 2)"),
    ({"Points": np.zeros((N, 3))}, "expected (68, 2)"),
    ({"Occ": np.zeros((60, 1))}, "'Occ' has 60 values"),
    ({"Points": np.array(["x"])}, "is a char array, expected numbers"),
])
def test_cofw_malformed_points_files(tmp_path, override, words):
    write_cofw_v5(tmp_path / "COFW_test_color.mat", cofw_images())
    write_cofw_points(tmp_path / "ann", 1, ramp_points(), **override)
    reader = CofwReader.from_folder(tmp_path, tmp_path / "cache")
    with pytest.raises(DataError, match=words.replace("(", r"\(").replace(")", r"\)")) as info:
        reader.load(reader.items()[0])
    assert "1_points.mat" in str(info.value)


def test_cofw_index_outside_images_and_missing_variable(tmp_path):
    write_cofw_v5(tmp_path / "COFW_test_color.mat", cofw_images())
    write_cofw_points(tmp_path / "ann", 9, ramp_points())
    reader = CofwReader.from_folder(tmp_path, tmp_path / "cache")
    with pytest.raises(DataError, match="index 9 outside IsT"):
        reader.load(reader.items()[0])
    scipy.io.savemat(str(tmp_path / "COFW_test_color.mat"), {"images": np.zeros((2, 2))})
    with pytest.raises(DataError, match="'IsT'"):
        CofwReader.from_folder(tmp_path, tmp_path / "cache2").items()


# ---------------------------------------------------------------- AFLW2000-3D and 300W-LP

def test_aflw2000_reader(tmp_path):
    pts = np.vstack([ramp_points().T, np.linspace(-20, 20, N)[None]])
    pose = np.arange(7, dtype=np.float64).reshape(1, 7) / 10
    scipy.io.savemat(str(tmp_path / "image00002.mat"), {"pt3d_68": pts, "Pose_Para": pose})
    write_image(tmp_path / "image00002.jpg")
    scipy.io.savemat(str(tmp_path / "image00004.mat"), {"pt3d_68": pts[:2], "Pose_Para": pose})
    write_image(tmp_path / "image00004.jpg")
    scipy.io.savemat(str(tmp_path / "image00006.mat"), {"pt3d_68": pts, "Pose_Para": pose})
    reader = Aflw2000Reader(tmp_path)
    items = reader.items()
    s = reader.load(items[0])
    assert s.points.shape == (N, 3)
    np.testing.assert_allclose(s.points[:, :2], ramp_points() - 1, atol=1e-4)
    np.testing.assert_allclose(s.points[:, 2], pts[2], atol=1e-4)  # z unchanged
    np.testing.assert_allclose(s.extra["pose"], pose.ravel(), atol=1e-6)
    with pytest.raises(DataError, match=r"shape \(2, 68\), expected \(3, 68\)"):
        reader.load(items[1])
    with pytest.raises(DataError, match="image with the same name not found"):
        reader.load(items[2])


def test_300wlp_reader_uses_landmark_files_and_skips_flips(tmp_path):
    for sub in ("AFW", "AFW_Flip"):
        os.makedirs(tmp_path / sub)
        write_image(tmp_path / sub / f"{sub}_1_0.jpg")
    os.makedirs(tmp_path / "landmarks" / "AFW")
    p2d, p3d = ramp_points(), ramp_points(0.5)
    scipy.io.savemat(str(tmp_path / "landmarks/AFW/AFW_1_0_pts.mat"), {"pts_2d": p2d, "pts_3d": p3d})
    scipy.io.savemat(str(tmp_path / "landmarks/AFW/AFW_2_0_pts.mat"), {"pts_2d": p2d, "pts_3d": p3d})
    reader = W300LPReader(tmp_path)
    items = reader.items()
    assert len(items) == 2
    s = reader.load(items[0])
    np.testing.assert_allclose(s.points, p3d - 1, atol=1e-4)
    assert s.image_path.endswith(os.path.join("AFW", "AFW_1_0.jpg"))
    np.testing.assert_allclose(W300LPReader(tmp_path, key="pts_2d").load(items[0]).points, p2d - 1, atol=1e-4)
    with pytest.raises(DataError, match="AFW_2_0.jpg"):
        reader.load(items[1])
    with pytest.raises(DataError, match="landmarks"):
        W300LPReader(tmp_path / "AFW")


# ---------------------------------------------------------------- list file

def list_line(rel, pts) -> str:
    return rel + " " + " ".join(f"{v:.4f}" for v in np.asarray(pts).reshape(-1))


def test_list_reader_zero_based_paths_with_spaces_crlf_comments(tmp_path):
    os.makedirs(tmp_path / "imgs")
    write_image(tmp_path / "imgs" / "a b.png")
    text = "# header comment\r\n\r\n" + list_line("imgs/a b.png", ramp_points()) + "   \r\n"
    (tmp_path / "set.txt").write_text(text, newline="")
    (s,) = list(ListReader(tmp_path / "set.txt"))
    np.testing.assert_allclose(s.points, ramp_points(), atol=1e-4)  # already 0-based: unchanged
    assert s.image_path == os.path.join(str(tmp_path), "imgs/a b.png")


@pytest.mark.parametrize("line, words", [
    ("img.png 1 2 3", "136 numbers"),
    (list_line("img.png", ramp_points()).replace("10.0000", "ten", 1), "expected a number"),
    (list_line("img.png", ramp_points()).replace("10.0000", "inf", 1), "finite"),
    (list_line("missing.png", ramp_points()), "image not found"),
])
def test_list_reader_malformed_lines(tmp_path, line, words):
    write_image(tmp_path / "img.png")
    (tmp_path / "set.txt").write_text("# c\n" + list_line("img.png", ramp_points()) + "\n" + line + "\n")
    reader = ListReader(tmp_path / "set.txt")
    items = reader.items()
    assert reader.load(items[0]).points.shape == (N, 2)
    with pytest.raises(DataError, match=words) as info:
        reader.load(items[1])
    assert info.value.line == 3 and "set.txt:3" in str(info.value)


# ---------------------------------------------------------------- --auto layout

def test_detect_2d_sets_case_insensitive(tmp_path):
    for rel in ["LFPW/trainset", "helen/trainset", "afw", "ibug", "300W/01_Indoor"]:
        write_pts_sample(tmp_path / rel, "s", ramp_points())
    sets = dict(detect_sets(str(tmp_path), "2d", str(tmp_path / "cache")))
    assert sorted(sets) == ["300W", "ibug", "train"]
    assert len(sets["train"].items()) == 3 and len(sets["300W"].items()) == 1
    assert find_folder(tmp_path, "lfpw/TRAINSET").endswith(os.path.join("LFPW", "trainset"))


def test_detect_incomplete_or_empty_layout(tmp_path):
    write_pts_sample(tmp_path / "afw", "s", ramp_points())
    with pytest.raises(DataError, match="lfpw/trainset"):
        detect_sets(str(tmp_path), "2d", str(tmp_path / "cache"))
    with pytest.raises(DataError, match="no standard 3d dataset folders"):
        detect_sets(str(tmp_path), "3d", str(tmp_path / "cache"))


# ---------------------------------------------------------------- our MAT v5 reader vs scipy's writer

@pytest.mark.parametrize("compress", [False, True])
def test_mat_v5_reader_matches_scipy_for_all_numeric_classes(tmp_path, compress):
    rng = np.random.default_rng(5)
    variables = {f"v_{np.dtype(t).name}": (rng.normal(size=(3, 4, 2)) * 50).astype(t)
                 for t in (np.float64, np.float32, np.int8, np.uint8, np.int16, np.uint16,
                           np.int32, np.uint32, np.int64, np.uint64)}
    variables["flag"] = np.array([[True, False, True]])
    variables["row"] = np.arange(7.0).reshape(1, 7)
    cells = np.empty((2, 2), dtype=object)
    cells[0, 0], cells[1, 0] = np.ones((2, 3), np.uint8), np.zeros((4, 5, 3), np.uint8) + 9
    cells[0, 1], cells[1, 1] = np.arange(3.0), np.zeros((0, 0))
    variables["cellvar"] = cells
    variables["text"] = "skipped unless asked for"
    scipy.io.savemat(str(tmp_path / "m.mat"), variables, do_compression=compress)
    ours = load_mat(tmp_path / "m.mat")
    ref = scipy.io.loadmat(str(tmp_path / "m.mat"))
    assert "text" not in ours
    for name, value in ref.items():
        if name.startswith("__") or name == "text":
            continue
        if name == "flag":  # MATLAB logical: scipy gives uint8, we give bool
            assert ours[name].dtype == bool and ours[name].tolist() == [[True, False, True]]
        elif name == "cellvar":
            assert ours[name].shape == value.shape == (2, 2)
            for a, b in zip(ours[name].ravel(), value.ravel()):
                assert a.shape == b.shape and a.dtype == b.dtype
                np.testing.assert_array_equal(a, b)
        else:
            assert ours[name].dtype == value.dtype and ours[name].shape == value.shape, name
            np.testing.assert_array_equal(ours[name], value)
    assert load_mat(tmp_path / "m.mat", ["row"]).keys() == {"row"}
    with pytest.raises(DataError, match="'text' is a char array"):
        load_mat(tmp_path / "m.mat", ["text"])


def _element(mtype, payload: bytes) -> bytes:
    pad = (-len(payload)) % 8
    return np.array([mtype, len(payload)], "<u4").tobytes() + payload + b"\0" * pad


def test_mat_v5_double_class_stored_as_uint8_like_matlab(tmp_path):
    """MATLAB writes small integer-valued doubles as miUINT8 data; they must come back as doubles."""
    flags = _element(6, np.array([6, 0], "<u4").tobytes())  # mxDOUBLE_CLASS
    dims = _element(5, np.array([2, 3], "<i4").tobytes())
    name = np.array([(1 << 16) | 1], "<u4").tobytes() + b"P\0\0\0"  # small element: 1-byte name
    data = _element(2, bytes([1, 2, 3, 4, 5, 6]))  # miUINT8
    body = flags + dims + name + data
    header = b"MATLAB 5.0 MAT-file".ljust(116) + b"\0" * 8 + b"\x00\x01" + b"IM"
    (tmp_path / "m.mat").write_bytes(header + _element(14, body))
    value = load_mat(tmp_path / "m.mat")["P"]
    assert value.dtype == np.float64
    np.testing.assert_array_equal(value, [[1, 3, 5], [2, 4, 6]])  # column-major


def test_mat_v5_complex_flag_is_an_error_not_a_crash(tmp_path):
    """This exact file (a cell's flags byte set to 0xFF: 'complex uint8') segfaults scipy 1.15's loadmat."""
    cells = np.empty((2, 1), dtype=object)
    cells[0, 0], cells[1, 0] = np.full((8, 6, 3), 7, np.uint8), np.ones((5, 4), np.uint8)
    scipy.io.savemat(str(tmp_path / "m.mat"), {"IsT": cells, "bboxesT": np.ones((2, 4))}, do_compression=False)
    data = bytearray((tmp_path / "m.mat").read_bytes())
    assert data[192:194] == bytes([9, 0])  # first cell's array flags: mxUINT8_CLASS, no flag bits
    data[193] = 0xFF
    (tmp_path / "m.mat").write_bytes(bytes(data))
    with pytest.raises(DataError, match="m.mat: corrupt MAT v5 data .* complex"):
        load_mat(tmp_path / "m.mat")


def test_symlinked_dataset_folders_are_followed(tmp_path):
    write_pts_sample(tmp_path / "elsewhere" / "helen", "s", ramp_points())
    os.makedirs(tmp_path / "root")
    os.symlink(tmp_path / "elsewhere" / "helen", tmp_path / "root" / "helen")
    assert len(W300Reader(str(tmp_path / "root")).items()) == 1
