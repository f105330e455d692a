"""The 68-point horizontal-flip permutation, in one place (the iterator and the loss use it).

After mirroring an image, semantic landmark j of the mirrored face sits where landmark
FLIP_PERMUTATION[j] of the original moved to (index i becomes flip[i]). The
permutation is an involution: applying it twice is the identity.
"""
from __future__ import annotations

import numpy as np

FLIP_PERMUTATION = np.array(
    list(range(16, -1, -1))            # jaw 0..16
    + list(range(26, 16, -1))          # eyebrows 17..26
    + [27, 28, 29, 30]                 # nose bridge
    + [35, 34, 33, 32, 31]             # nose base
    + [45, 44, 43, 42, 47, 46]         # right eye <- left eye
    + [39, 38, 37, 36, 41, 40]         # left eye <- right eye
    + [54, 53, 52, 51, 50, 49, 48]     # outer upper lip
    + [59, 58, 57, 56, 55]             # outer lower lip
    + [64, 63, 62, 61, 60]             # inner upper lip
    + [67, 66, 65],                    # inner lower lip
    dtype=np.int64,
)
FLIP_PERMUTATION.setflags(write=False)


def mirror_matrix(size: int) -> np.ndarray:
    """2x3 horizontal mirror of a `size`-wide image in pixel-centre coordinates (x -> size-1-x)."""
    return np.array([[-1.0, 0.0, size - 1.0], [0.0, 1.0, 0.0]])


def flip_points(points: np.ndarray, width: int) -> np.ndarray:
    """Mirror (x, y) points of a `width`-wide image and relabel them with FLIP_PERMUTATION."""
    pts = np.array(points, dtype=np.float64, copy=True)
    pts[:, 0] = width - 1.0 - pts[:, 0]
    return pts[FLIP_PERMUTATION]
