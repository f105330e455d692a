"""Property tests: random, truncated and corrupted input to every parser gives only DataError."""
from __future__ import annotations

import io
import os
import re
import tempfile

import h5py
import numpy as np
import scipy.io
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from insightface_align.datasets import Aflw2000Reader, CofwReader, ListReader, W300LPReader, W300Reader, load_image
from insightface_align.datasets.listfile import parse_list
from insightface_align.datasets.matfile import load_mat
from insightface_align.datasets.pts import parse_pts
from insightface_align.errors import DataError

N = 68
FAST = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def valid_pts() -> str:
    pts = np.stack([np.arange(N) + 1.5, np.arange(N) * 2 + 1.0], axis=1)
    return "version: 1\nn_points: 68\n{\n" + "\n".join(f"{x} {y}" for x, y in pts) + "\n}\n"


def valid_list() -> str:
    return "img.png " + " ".join(str(float(v)) for v in range(2 * N)) + "\n"


@st.composite
def corrupted(draw, base: str):
    """Truncate, overwrite, insert or delete characters of a valid text."""
    text = base
    for _ in range(draw(st.integers(1, 3))):
        op = draw(st.sampled_from(["token", "token", "token", "cut", "replace", "insert", "delete"]))
        pos = draw(st.integers(0, len(text)))
        if op == "token":  # swap one whole field for a tricky value
            parts = re.split(r"(\s+)", text)  # fields at even positions, separators kept
            k = 2 * draw(st.integers(0, (len(parts) - 1) // 2))
            parts[k] = draw(st.sampled_from(["nan", "inf", "-1e999", "1e400", "0x10", "\uff11", "", "1_0"]))
            text = "".join(parts)
        elif op == "cut":
            text = text[:pos]
        elif op == "replace":
            text = text[:pos] + draw(st.text(min_size=1, max_size=3)) + text[pos + 1:]
        elif op == "insert":
            text = text[:pos] + draw(st.sampled_from(["\r\n", "#", "{", "}", " ", "nan", "1e999", "-", ":", "\x00"])) + text[pos:]
        else:
            text = text[:pos] + text[pos + 5:]
    return text


def only_data_error(fn, *args):
    try:
        return fn(*args)
    except DataError:
        return None


@FAST
@given(st.one_of(st.text(max_size=300), corrupted(valid_pts())))
def test_pts_parser_only_raises_data_error(text):
    out = only_data_error(parse_pts, text, "f.pts")
    if out is not None:
        assert out.ndim == 2 and out.shape[1] == 2 and np.all(np.isfinite(out))


@FAST
@given(st.one_of(st.text(max_size=300), corrupted(valid_list())))
def test_list_parser_only_raises_data_error(text):
    out = only_data_error(parse_list, text, "l.txt")
    if out is not None:
        for _, rel, pts in out:
            assert rel and pts.shape == (N, 2) and pts.dtype == np.float32


@FAST
@given(st.binary(max_size=400))
def test_pts_and_list_readers_on_random_bytes(data):
    with tempfile.TemporaryDirectory() as tmp:
        with open(os.path.join(tmp, "a.pts"), "wb") as handle:
            handle.write(data)
        with open(os.path.join(tmp, "a.png"), "wb") as handle:
            handle.write(data)
        with open(os.path.join(tmp, "l.txt"), "wb") as handle:
            handle.write(data)
        reader = W300Reader(tmp)
        for item in reader.items():
            only_data_error(reader.load, item)
        only_data_error(load_image, os.path.join(tmp, "a.png"))
        lst = ListReader(os.path.join(tmp, "l.txt"))
        for item in only_data_error(lst.items) or []:
            only_data_error(lst.load, item)


def mat_bytes(variables) -> bytes:
    buf = io.BytesIO()
    scipy.io.savemat(buf, variables)
    return buf.getvalue()


VALID_MATS = [
    mat_bytes({"pt3d_68": np.ones((3, N)), "Pose_Para": np.zeros((1, 7))}),
    mat_bytes({"Points": np.ones((N, 2)), "Occ": np.zeros((N, 1))}),
]


@st.composite
def corrupted_bytes(draw):
    data = bytearray(draw(st.sampled_from(VALID_MATS)))
    op = draw(st.sampled_from(["cut", "flip", "both"]))
    if op in ("cut", "both"):
        data = data[: draw(st.integers(0, len(data)))]
    if op in ("flip", "both") and data:
        for _ in range(draw(st.integers(1, 8))):
            pos = draw(st.integers(0, len(data) - 1))
            data[pos] = draw(st.integers(0, 255))
    return bytes(data)


arrays = st.one_of(
    st.builds(lambda shape, fill: np.full(shape, fill),
              st.tuples(st.integers(0, 4), st.integers(0, 70)), st.sampled_from([0.0, 1.5, np.nan, np.inf, 1e300])),
    st.just(np.array(["text"])),
    st.just(np.ones((N, 2, 2))),
    st.just(np.ones((2, N))),
    st.just(np.ones((3, N), dtype=np.int8)),
    st.just(np.ones((N, 2), dtype=bool)),
)


def as_cell(values) -> np.ndarray:
    cell = np.empty((len(values), 1), dtype=object)
    for k, value in enumerate(values):
        cell[k, 0] = value
    return cell


images = st.sampled_from([np.zeros((4, 5, 3), np.uint8), np.zeros((4, 5), np.uint8), np.zeros((4, 5, 2), np.uint8),
                          np.zeros((4, 5, 3), np.float64), np.zeros((0, 5), np.uint8), np.ones((2, 2, 2, 2), np.uint8),
                          np.full((3, 3), 65535, np.uint16), np.array(["x"])])
mat_values = st.one_of(arrays, st.lists(st.one_of(images, arrays), max_size=3).map(as_cell))


def check_mat_readers(tmp, data: bytes) -> None:
    """Feed one .mat payload to every .mat-based reader under each of its file names."""
    aflw = os.path.join(tmp, "aflw")
    os.makedirs(aflw, exist_ok=True)
    with open(os.path.join(aflw, "image00001.mat"), "wb") as handle:
        handle.write(data)
    open(os.path.join(aflw, "image00001.jpg"), "wb").close()
    reader = Aflw2000Reader(aflw)
    for item in reader.items():
        only_data_error(reader.load, item)
    lp = os.path.join(tmp, "lp", "landmarks", "AFW")
    os.makedirs(lp, exist_ok=True)
    with open(os.path.join(lp, "AFW_1_pts.mat"), "wb") as handle:
        handle.write(data)
    reader = W300LPReader(os.path.join(tmp, "lp"))
    for item in reader.items():
        only_data_error(reader.load, item)
    cofw = os.path.join(tmp, "cofw")
    os.makedirs(cofw, exist_ok=True)
    with open(os.path.join(cofw, "COFW_test_color.mat"), "wb") as handle:
        handle.write(data)
    with open(os.path.join(cofw, "1_points.mat"), "wb") as handle:
        handle.write(data)
    reader = only_data_error(CofwReader.from_folder, cofw, os.path.join(tmp, "cache"))
    if reader is not None:
        for item in only_data_error(reader.items) or []:
            only_data_error(reader.load, item)


@FAST
@given(st.one_of(st.binary(max_size=300), corrupted_bytes()))
def test_mat_readers_on_random_and_corrupted_bytes(data):
    with tempfile.TemporaryDirectory() as tmp:
        check_mat_readers(tmp, data)


@FAST
@given(st.dictionaries(st.sampled_from(["pt3d_68", "Pose_Para", "Points", "Occ", "pts_3d", "IsT", "bboxesT"]),
                       mat_values, max_size=4))
def test_mat_readers_on_wrong_contents(variables):
    with tempfile.TemporaryDirectory() as tmp:
        check_mat_readers(tmp, mat_bytes(variables))


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 5000), st.integers(0, 255))
def test_truncated_or_damaged_hdf5_mat(cut, value):
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "COFW_test_color.mat")
        with h5py.File(path, "w", userblock_size=512) as h5:
            refs = h5.create_dataset("IsT", (1, 2), dtype=h5py.ref_dtype)
            for i in range(2):
                refs[0, i] = h5.create_dataset(f"#refs#/{i}", data=np.full((3, 8, 6), i, np.uint8)).ref
            h5["bboxesT"] = np.ones((4, 2))
        with open(path, "rb") as handle:
            data = bytearray(handle.read())
        if cut < len(data):
            data[cut] = value
        data = bytes(data[: len(data) - cut % 700])
        with open(path, "wb") as handle:
            handle.write(data)
        loaded = only_data_error(load_mat, path)
        if loaded is not None:
            assert isinstance(loaded, dict)
        check_mat_readers(tmp, data)
