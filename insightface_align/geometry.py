"""Face windows and 2x3 affine maps shared by the packer, the iterator and inference.

Convention everywhere: 0-based pixel-centre coordinates (pixel (i, j) has its centre
at x=j, y=i), the same convention cv2.warpAffine uses, so one matrix moves both the
image and its points.

The window rule (the release did not publish its own; this is ours, used by the packer
*and* by inference so they agree): a face box (x0, y0, x1, y1) gives a square window
centred on the box centre whose side is WINDOW_SCALE x max(box width, height). That
window is what the 128x128 network input covers; in the 384x384 records it is the
central 256x256 (BASE_SCALE) region.

Two conventions place the window (CONVENTIONS; a model records the one it was trained
under, checkpoint.py):
  centred  the window centre lands on the output's middle, (size - 1) / 2: mirroring
           and the heatmap codec are exact and unbiased (heatmaps.py);
  release  the original release's: the centre lands on pixel size / 2 (record pixel 192
           -> input pixel 64), and a face box's centre is truncated to an integer first,
           as its inference script did.
"""
from __future__ import annotations

import numpy as np

WINDOW_SCALE = 2.0
RECORD_SIZE = 384
BASE_SCALE = 256
CONVENTIONS = ("centred", "release")
DEFAULT_CONVENTION = "centred"


def check_convention(convention: str) -> str:
    """The convention name, or ValueError naming the choices."""
    if convention not in CONVENTIONS:
        raise ValueError(f"unknown convention {convention!r}; choose one of {', '.join(CONVENTIONS)}")
    return convention


def output_centre(size: int, convention: str = DEFAULT_CONVENTION) -> float:
    """The output pixel coordinate a window's centre lands on."""
    return size / 2.0 if check_convention(convention) == "release" else (size - 1) / 2.0


def landmark_box(points: np.ndarray) -> tuple:
    """Tight (x0, y0, x1, y1) box of the (x, y) columns of `points`."""
    xy = np.asarray(points, dtype=np.float64)[:, :2]
    x0, y0 = xy.min(axis=0)
    x1, y1 = xy.max(axis=0)
    return float(x0), float(y0), float(x1), float(y1)


def window_from_box(box, scale: float = WINDOW_SCALE, convention: str = DEFAULT_CONVENTION) -> tuple:
    """(cx, cy, side) of the square window the network input covers for a face box."""
    x0, y0, x1, y1 = (float(v) for v in box)
    side = scale * max(x1 - x0, y1 - y0, 1.0)
    cx, cy = (x0 + x1) / 2.0, (y0 + y1) / 2.0
    if check_convention(convention) == "release":
        cx, cy = float(int(cx)), float(int(cy))
    return cx, cy, side


def window_matrix(cx: float, cy: float, side: float, out_size: int,
                  angle_deg: float = 0.0, scale: float = 1.0, convention: str = DEFAULT_CONVENTION) -> np.ndarray:
    """2x3 matrix mapping source pixel centres so the window lands on an out_size square.

    The window centre goes to the output centre (output_centre); `angle_deg` rotates
    counter-clockwise on screen and `scale` > 1 zooms in, both about the centre. Without
    rotation the release convention's matrix equals the release's own to the last bit.
    """
    k = scale * out_size / float(side)
    a = np.deg2rad(angle_deg)
    cos, sin = np.cos(a) * k, np.sin(a) * k
    half = output_centre(out_size, convention)
    # Rotation on screen with y pointing down: counter-clockwise uses +sin on x<-y.
    m = np.array([[cos, sin, 0.0], [-sin, cos, 0.0]], dtype=np.float64)
    m[:, 2] = [half, half] - m[:, :2] @ np.array([cx, cy])
    return m


def transform_points(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Apply a 2x3 affine to the (x, y) columns; extra columns (z) pass through unchanged."""
    pts = np.array(points, dtype=np.float64, copy=True)
    pts[:, :2] = pts[:, :2] @ np.asarray(matrix)[:, :2].T + np.asarray(matrix)[:, 2]
    return pts


def invert_affine(matrix: np.ndarray) -> np.ndarray:
    """Inverse of a 2x3 affine map, as a 2x3 matrix."""
    full = np.vstack([np.asarray(matrix, dtype=np.float64), [0.0, 0.0, 1.0]])
    return np.linalg.inv(full)[:2]
