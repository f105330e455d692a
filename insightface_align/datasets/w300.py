"""300W family (LFPW, Helen, AFW, IBUG, 300W-test) and Menpo2D readers: image + `.pts`.

Coordinate convention: the iBUG `.pts` files are 1-based (the top-left pixel's centre
is (1, 1)), so the readers subtract `origin` = 1 to give 0-based pixel-centre
coordinates. The image is the file next to the .pts with the same stem, in any format
OpenCV reads (images.IMAGE_EXTENSIONS).
"""
from __future__ import annotations

import os

from ..errors import DataError
from .base import NUM_POINTS, Reader, SkipSample, checked_points, require_file, sorted_files
from .images import find_image
from .pts import read_pts
from .sample import FaceSample
from .synth_meta import OcclusionIndex

PTS_ORIGIN = 1.0
MENPO_PROFILE_POINTS = 39


class PtsReader(Reader):
    """Every `.pts` under one or more root folders, sorted by (root, relative path)."""

    fmt = "300w"

    def __init__(self, roots, origin: float = PTS_ORIGIN):
        super().__init__()
        self.roots = [os.fspath(r) for r in ([roots] if isinstance(roots, (str, os.PathLike)) else roots)]
        self.origin = float(origin)
        self.occlusion = OcclusionIndex()  # rendered sets carry occlusion flags in synth_meta.jsonl
        for root in self.roots:
            if not os.path.isdir(root):
                raise DataError(root, "input folder not found")

    def items(self) -> list:
        return [(path, root) for root in self.roots for path in sorted_files(root, ".pts")]

    def image_root(self) -> str:
        return os.path.commonpath(self.roots) if len(self.roots) > 1 else self.roots[0]

    def _unwanted(self, path, n_points: int) -> None:
        """Hook for subclasses that skip some well-formed files."""

    def load(self, item) -> FaceSample:
        path, root = item
        raw = read_pts(path)
        self._unwanted(path, raw.shape[0])
        if raw.shape[0] != NUM_POINTS:
            raise DataError(path, f"n_points is {raw.shape[0]}, expected {NUM_POINTS}")
        image = require_file(find_image(os.path.splitext(path)[0]), "image (same name, any format OpenCV reads)", path)
        points = checked_points(raw - self.origin, path)
        return FaceSample(image_path=image, points=points, occluded=self.occlusion.lookup(path),
                          source=os.path.relpath(path, root))


class W300Reader(PtsReader):
    """LFPW, Helen, AFW, IBUG and the 300W test set: 68-point `.pts` only."""

    fmt = "300w"


class MenpoReader(PtsReader):
    """Menpo2D: 68-point semi-frontal files are read, 39-point profile files skipped and counted."""

    fmt = "menpo"

    def _unwanted(self, path, n_points: int) -> None:
        if n_points == MENPO_PROFILE_POINTS:
            raise SkipSample(path, f"profile annotation ({MENPO_PROFILE_POINTS} points)")
