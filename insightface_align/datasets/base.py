"""What every reader shares: a list of work items, a per-item loader, and skips.

A reader splits into `items()` (cheap, sorted, picklable: the packer hands them to
worker processes) and `load(item)` (parses one annotation into a FaceSample).
`load` raises DataError for a malformed file and SkipSample for a file that is fine
but not wanted (e.g. Menpo's 39-point profile annotations). Iterating a reader
yields samples, records SkipSample items in `reader.skipped` and lets DataError out.
"""
from __future__ import annotations

import abc
import os

import numpy as np

from ..errors import AlignError, DataError
from .sample import FaceSample

NUM_POINTS = 68


class SkipSample(AlignError):
    """A well-formed file the reader deliberately leaves out; the message says why."""

    def __init__(self, path, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: skipped, {reason}")


class Reader(abc.ABC):
    """Base class: subclasses implement items() and load(item)."""

    fmt = ""

    def __init__(self):
        self.skipped: list = []

    @abc.abstractmethod
    def items(self) -> list:
        """The dataset's items (annotation paths or tuples), sorted, for load()."""

    @abc.abstractmethod
    def load(self, item) -> FaceSample:
        """One item as a FaceSample (DataError or SkipSample when it cannot be used)."""

    def describe(self, item) -> str:
        """A short name for an item in skip lists (its annotation file by default)."""
        return str(item[0] if isinstance(item, tuple) else item)

    def image_root(self) -> str:
        """Folder that .lst paths are written relative to."""
        return os.getcwd()

    def __iter__(self):
        self.skipped = []
        for item in self.items():
            try:
                yield self.load(item)
            except SkipSample as skip:
                self.skipped.append((self.describe(item), skip.reason))

    def __len__(self):
        return len(self.items())


def checked_points(values, path, line=None, n=NUM_POINTS, dims=2) -> np.ndarray:
    """float32 (n, dims) points, all finite; DataError naming the file otherwise."""
    arr = np.asarray(values)
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
        raise DataError(path, f"landmarks are not numeric (dtype {arr.dtype})", line)
    if arr.shape != (n, dims):
        raise DataError(path, f"landmarks have shape {arr.shape}, expected ({n}, {dims})", line)
    with np.errstate(over="ignore", invalid="ignore"):
        arr = arr.astype(np.float32)
    if not np.all(np.isfinite(arr)):
        raise DataError(path, "landmarks contain NaN/inf or values too large for float32", line)
    return arr


def require_file(path, what: str, owner) -> str:
    """Return `path` if it is a file; else DataError on the annotation that needs it."""
    if path is None or not os.path.isfile(path):
        raise DataError(owner, f"{what} not found" + (f": {path}" if path else ""))
    return os.fspath(path)


def sorted_files(root, suffix: str) -> list:
    """All files under root whose name ends with suffix (case-insensitive), sorted by relative
    path. Symlinked folders are followed, but each real folder is walked once."""
    found, seen = [], set()
    for folder, dirs, files in os.walk(root, followlinks=True):  # datasets are often symlinked in
        real = os.path.realpath(folder)
        if real in seen:  # a link back to a folder already walked (a loop, or the same data twice)
            dirs[:] = []
            continue
        seen.add(real)
        # real folders before links to them, so a file keeps its real path where it has one
        dirs.sort(key=lambda d: (os.path.islink(os.path.join(folder, d)), d))
        for name in files:
            if name.lower().endswith(suffix.lower()):
                found.append(os.path.join(folder, name))
    return sorted(found, key=lambda p: os.path.relpath(p, root))


# Landmark sanity limits for packing: how far outside the image a point may lie (in image
# sizes; faces cut by the border are kept) and the smallest landmark-box side in pixels.
MAX_OUTSIDE = 0.5
MIN_FACE_SIDE = 4.0


def landmark_problem(points, width: int, height: int) -> tuple | None:
    """(kind, message) saying why these landmarks cannot describe a face in a width x
    height image, or None. `kind` is what the packer counts skips by."""
    xy = np.asarray(points, dtype=np.float64)[:, :2]
    lo, hi = xy.min(axis=0), xy.max(axis=0)
    margin = MAX_OUTSIDE * np.array([width, height], float)
    if np.any(lo < -margin) or np.any(hi > np.array([width, height], float) + margin):
        return ("landmarks far outside the image", f"landmarks far outside the {width}x{height} image "
                f"(x {lo[0]:.0f}..{hi[0]:.0f}, y {lo[1]:.0f}..{hi[1]:.0f})")
    if max(hi - lo) < MIN_FACE_SIDE:
        return "degenerate landmarks", f"degenerate landmarks (their box is {hi[0] - lo[0]:.1f} x {hi[1] - lo[1]:.1f} px)"
    return None
