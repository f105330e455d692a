"""AFLW2000-3D reader: `imageNNNNN.jpg` + `imageNNNNN.mat` (`pt3d_68` 3x68, `Pose_Para` 1x7).

The fitted landmarks come from 3DDFA's MATLAB code, whose x/y are 1-based like the
iBUG files (3DDFA's own Python port subtracts 1 "for Python compatibility"); we
subtract `origin` = 1 from x and y. z is kept unchanged in the third column.
`Pose_Para` (pitch, yaw, roll, tx, ty, tz, scale) goes to sample.extra["pose"].
"""
from __future__ import annotations

import os

import numpy as np

from ..errors import DataError
from .base import NUM_POINTS, Reader, checked_points, require_file, sorted_files
from .images import find_image
from .matfile import load_mat, require_var
from .sample import FaceSample

MAT_ORIGIN = 1.0


class Aflw2000Reader(Reader):
    """Every `.mat` in the folder (sorted) with its same-stem image."""

    fmt = "aflw2000"

    def __init__(self, root, origin: float = MAT_ORIGIN):
        super().__init__()
        self.root = os.fspath(root)
        self.origin = float(origin)
        if not os.path.isdir(self.root):
            raise DataError(self.root, "input folder not found")

    def items(self) -> list:
        return sorted_files(self.root, ".mat")

    def image_root(self) -> str:
        return self.root

    def load(self, item) -> FaceSample:
        path = item
        data = load_mat(path, ["pt3d_68", "Pose_Para"])
        pts = require_var(data, "pt3d_68", path, (3, NUM_POINTS))
        points = checked_points(pts.T, path, dims=3)
        points[:, :2] -= self.origin
        extra = {}
        if "Pose_Para" in data:
            pose = require_var(data, "Pose_Para", path)
            if pose.size != 7:
                raise DataError(path, f"variable 'Pose_Para' has {pose.size} values, expected 7")
            extra["pose"] = pose.reshape(-1).astype(np.float32)
        image = require_file(find_image(os.path.splitext(path)[0]), "image with the same name", path)
        return FaceSample(image_path=image, points=points, source=os.path.relpath(path, self.root), extra=extra)
