"""COFW-68 reader: images from `COFW_test_color.mat`, 68 points from `N_points.mat`.

`COFW_test_color.mat` (Burgos-Artizzu et al.) holds the cell array `IsT` of 507 RGB or
grey uint8 images and `bboxesT` (507x4, [x y w h]); the released file is MATLAB v7.3
(HDF5), older copies v5 -- both load (see matfile.py). The 68-point re-annotations
(Ghiasi & Fowlkes) are one file per image, `test_annotations/N_points.mat` with
`Points` (68x2, x y) and `Occ` (68x1, 1 = occluded), N the 1-based index into IsT.

The images have no file of their own, so `items()` writes each one once as
`cofw_test_NNNN.png` into the `cache_dir` the caller names; samples then point at
those files like every other reader's. All coordinates are MATLAB 1-based; `origin`
= 1 is subtracted from points and boxes. Box (x0, y0, x1, y1) = (x-1, y-1, x-1+w, y-1+h).
"""
from __future__ import annotations

import os
import re

import cv2
import numpy as np

from ..errors import DataError
from ..fileio import atomic_write
from .base import NUM_POINTS, Reader, checked_points, sorted_files
from .images import to_bgr_uint8
from .matfile import load_mat, require_var
from .sample import FaceSample

MAT_ORIGIN = 1.0
IMAGES_MAT = "cofw_test_color.mat"
POINTS_SUFFIX = "_points.mat"
_INDEX = re.compile(r"^(\d+)_points\.mat$", re.IGNORECASE)


def find_cofw_files(root) -> tuple:
    """(COFW_test_color.mat path, folder of the *_points.mat files) below root."""
    root = os.fspath(root)
    mats = [p for p in sorted_files(root, ".mat") if os.path.basename(p).lower() == IMAGES_MAT]
    if not mats:
        raise DataError(root, "COFW_test_color.mat not found below this folder")
    points = sorted_files(root, POINTS_SUFFIX)
    if not points:
        raise DataError(root, "no N_points.mat files (COFW-68 test_annotations) below this folder")
    return mats[0], os.path.commonpath([os.path.dirname(p) for p in points])


def write_png_atomic(path, image_bgr) -> None:
    """Write a PNG via a temporary name so a crash never leaves a half file."""
    ok, buf = cv2.imencode(".png", image_bgr)
    if not ok:
        raise DataError(path, "PNG encoding failed")
    atomic_write(path, buf.tobytes())


def mat_image_to_bgr(value, where) -> np.ndarray:
    """A MATLAB RGB/grey uint8 image (H, W[, 3]) as BGR uint8 (H, W, 3)."""
    arr = np.asarray(value)
    if arr.dtype == object or arr.ndim not in (2, 3) or arr.size == 0 or min(arr.shape[:2]) < 1:
        raise DataError(where, f"expected an HxW or HxWx3 image, got shape {arr.shape} dtype {arr.dtype}")
    if arr.ndim == 3 and arr.shape[2] == 3:
        arr = np.ascontiguousarray(arr[:, :, ::-1])  # MATLAB RGB -> BGR
    return to_bgr_uint8(arr, where)


class CofwReader(Reader):
    """COFW-68 test set; `cache_dir` receives the images extracted from the .mat."""

    fmt = "cofw"

    def __init__(self, mat_path, points_dir, cache_dir, origin: float = MAT_ORIGIN):
        super().__init__()
        self.mat_path = os.fspath(mat_path)
        self.points_dir = os.fspath(points_dir)
        self.cache_dir = os.fspath(cache_dir)
        self.origin = float(origin)
        self._items = None

    @classmethod
    def from_folder(cls, root, cache_dir, origin: float = MAT_ORIGIN):
        mat_path, points_dir = find_cofw_files(root)
        return cls(mat_path, points_dir, cache_dir, origin)

    def image_root(self) -> str:
        return self.cache_dir

    def _boxes(self, data, count):
        if "bboxesT" not in data:
            return None
        boxes = require_var(data, "bboxesT", self.mat_path)
        if boxes.shape != (count, 4):
            raise DataError(self.mat_path, f"variable 'bboxesT' has shape {boxes.shape}, expected ({count}, 4)")
        return boxes.astype(np.float64)

    def items(self) -> list:
        """Extract the needed images to cache_dir (once per reader) and list the work."""
        if self._items is not None:
            return self._items
        data = load_mat(self.mat_path, ["IsT", "bboxesT"])
        if "IsT" not in data:
            raise DataError(self.mat_path, "variable 'IsT' (cell array of images) missing")
        cells = np.asarray(data["IsT"])
        if cells.dtype != object:
            raise DataError(self.mat_path, f"variable 'IsT' should be a cell array, got {cells.dtype} {cells.shape}")
        images = cells.ravel(order="F")
        boxes = self._boxes(data, images.size)
        os.makedirs(self.cache_dir, exist_ok=True)
        items = []
        for path in sorted_files(self.points_dir, POINTS_SUFFIX):
            match = _INDEX.match(os.path.basename(path))
            index = int(match.group(1)) - 1 if match else -1
            error = png = box = None
            if not match:
                error = "name should be N_points.mat with N the 1-based image index"
            elif not 0 <= index < images.size:
                error = f"image index {index + 1} outside IsT (1..{images.size})"
            else:
                try:
                    img = mat_image_to_bgr(images[index], f"{self.mat_path}: IsT{{{index + 1}}}")
                    png = os.path.join(self.cache_dir, f"cofw_test_{index + 1:04d}.png")
                    write_png_atomic(png, img)
                except DataError as exc:
                    error = str(exc)
                if boxes is not None:
                    x, y, w, h = boxes[index]
                    x0, y0 = x - self.origin, y - self.origin
                    box = (float(x0), float(y0), float(x0 + w), float(y0 + h))
                    if not (np.all(np.isfinite(box)) and w > 0 and h > 0):
                        error, box = f"bboxesT row {index + 1} is not a positive finite box: {boxes[index]}", None
            items.append((path, png, box, error))
        self._items = items
        return items

    def load(self, item) -> FaceSample:
        path, png, box, error = item
        if error is not None:
            raise DataError(path, error)
        data = load_mat(path, ["Points", "Occ"])
        points = checked_points(require_var(data, "Points", path, (NUM_POINTS, 2)), path)
        points -= self.origin
        occluded = None
        if "Occ" in data:
            occ = require_var(data, "Occ", path)
            if occ.size != NUM_POINTS:
                raise DataError(path, f"variable 'Occ' has {occ.size} values, expected {NUM_POINTS}")
            occluded = occ.reshape(-1) != 0
        return FaceSample(image_path=png, points=points, occluded=occluded, box=box,
                          source=os.path.relpath(path, self.points_dir))
