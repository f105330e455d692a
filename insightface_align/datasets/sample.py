"""The one record type every dataset reader yields."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np


@dataclass
class FaceSample:
    """One annotated face.

    points: (68, 2) or (68, 3) float32, x/y in 0-based pixel-centre coordinates of the
    image at `image_path` (a pixel's centre is at integer coordinates; the 300W
    `.pts` files are 1-based and their reader subtracts 1). z, when present, is the
    dataset's depth value, unchanged.
    occluded: optional (68,) bool, True where the annotation marks the point occluded.
    box: optional face box (x0, y0, x1, y1) in the same coordinates.
    """

    image_path: str
    points: np.ndarray
    occluded: Optional[np.ndarray] = None
    box: Optional[tuple] = None
    source: str = ""
    extra: dict = field(default_factory=dict)
