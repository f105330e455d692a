"""300W-LP reader: `<subset>/<name>.jpg` with `landmarks/<subset>/<name>_pts.mat`.

The landmark files hold `pts_2d` (the original 2D annotation, 68x2) and `pts_3d` (the
3D-consistent landmarks projected to 2D, 68x2, what AFLW2000-3D is scored against);
`key` picks one (default pts_3d). Only the non-flipped subsets (AFW, HELEN, IBUG,
LFPW) have landmark files, which gives the paper's 61,225 training images; the
`*_Flip` folders are not read. Coordinates are 1-based MATLAB (3DDFA) values; we
subtract `origin` = 1.
"""
from __future__ import annotations

import os

from ..errors import DataError
from .base import NUM_POINTS, Reader, checked_points, require_file, sorted_files
from .images import find_image
from .matfile import load_mat, require_var
from .sample import FaceSample

MAT_ORIGIN = 1.0
SUFFIX = "_pts.mat"


class W300LPReader(Reader):
    """Items are the `landmarks/**/NAME_pts.mat` files, sorted by relative path."""

    fmt = "300wlp"

    def __init__(self, root, key: str = "pts_3d", origin: float = MAT_ORIGIN):
        super().__init__()
        if key not in ("pts_2d", "pts_3d"):
            raise ValueError(f"key must be pts_2d or pts_3d, got {key!r}")
        self.root = os.fspath(root)
        self.key = key
        self.origin = float(origin)
        if not os.path.isdir(os.path.join(self.root, "landmarks")):
            raise DataError(self.root, "no 'landmarks' folder (expected 300W_LP/landmarks/<subset>/<name>_pts.mat)")

    def items(self) -> list:
        return sorted_files(os.path.join(self.root, "landmarks"), SUFFIX)

    def image_root(self) -> str:
        return self.root

    def load(self, item) -> FaceSample:
        path = item
        rel = os.path.relpath(path, os.path.join(self.root, "landmarks"))
        stem = os.path.join(self.root, rel[: -len(SUFFIX)])
        data = load_mat(path, [self.key])
        points = checked_points(require_var(data, self.key, path, (NUM_POINTS, 2)), path)
        points -= self.origin
        image = require_file(find_image(stem), f"image {stem}.jpg", path)
        return FaceSample(image_path=image, points=points, source=rel)
