"""Writers for the benchmark label formats, so generated data reads like the real files.

- 300W `.pts`: `version: 1`, `n_points: 68`, `{`, one `x y` line per point, `}`; the
  coordinates are 1-based pixel positions as in the released annotations. `write_pts`
  takes 0-based pixel-centre points (the project's convention) and adds 1.
- AFLW2000-3D `.mat`: `pt3d_68` (3 x 68: x, y, z) and `Pose_Para` (1 x 7: pitch, yaw,
  roll in radians, tx, ty, tz, scale), MATLAB 5 format. The released files come from
  3DDFA's MATLAB fitting, whose x/y are 1-based like the iBUG files (the project's
  reader, datasets/aflw2000.py, subtracts 1), so `write_aflw2000_mat` also takes 0-based
  x/y and writes them 1-based; z is written unchanged.

Every writer goes through a temporary file and `os.replace`, so a crash never leaves a
half-written file under the final name.
"""
from __future__ import annotations

import io

import cv2
import numpy as np
import scipy.io

from ..fileio import atomic_write

# A fixed MAT header text (scipy writes the current time there): byte-identical output
# for identical input is what makes seeded data sets reproducible.
_MAT_HEADER = b"MATLAB 5.0 MAT-file, written by insightface_align.datasets.writers"


def atomic_write_bytes(path, data: bytes) -> None:
    """Write `data` to `path` via a temporary file in the same folder and os.replace."""
    atomic_write(path, data, "wb")


def _as_points(points, cols: int, name: str) -> np.ndarray:
    pts = np.asarray(points, dtype=np.float64)
    if pts.ndim != 2 or pts.shape[1] < cols or not np.all(np.isfinite(pts[:, :cols])):
        raise ValueError(f"{name}: expected an (N, >={cols}) finite array, got shape {pts.shape}")
    return pts[:, :cols]


def format_pts(points_xy) -> str:
    """The text of a 300W .pts file for 0-based (N, 2) points (written 1-based)."""
    pts = _as_points(points_xy, 2, "points_xy") + 1.0
    lines = ["version: 1", f"n_points: {len(pts)}", "{"]
    lines += [f"{x:.3f} {y:.3f}" for x, y in pts]
    lines.append("}")
    return "\n".join(lines) + "\n"


def write_pts(path, points_xy) -> None:
    """Write a 300W-style .pts file; `points_xy` are 0-based, the file is 1-based."""
    atomic_write_bytes(path, format_pts(points_xy).encode("ascii"))


MAT_ORIGIN = 1.0


def aflw2000_mat_bytes(pt3d_68, pose_para, extra: dict | None = None) -> bytes:
    """The bytes of an AFLW2000-3D-style .mat (MATLAB 5, deterministic header).

    pt3d_68: 3x68 (or 68x3) with 0-based x, y; written 1-based (x, y + MAT_ORIGIN).
    """
    pt3d = np.array(pt3d_68, dtype=np.float64)
    if pt3d.shape == (68, 3):
        pt3d = pt3d.T.copy()
    if pt3d.shape != (3, 68) or not np.all(np.isfinite(pt3d)):
        raise ValueError(f"pt3d_68: expected a finite 3x68 array, got shape {pt3d.shape}")
    pt3d[:2] += MAT_ORIGIN
    pose = np.asarray(pose_para, dtype=np.float64).reshape(1, -1)
    if pose.shape != (1, 7) or not np.all(np.isfinite(pose)):
        raise ValueError(f"Pose_Para: expected 7 finite values, got shape {pose.shape}")
    content = {"pt3d_68": pt3d, "Pose_Para": pose}
    for key, value in (extra or {}).items():
        content[key] = value
    buf = io.BytesIO()
    scipy.io.savemat(buf, content, format="5", do_compression=False, oned_as="row")
    data = bytearray(buf.getvalue())
    data[:116] = _MAT_HEADER.ljust(116, b" ")
    return bytes(data)


def write_aflw2000_mat(path, pt3d_68, pose_para, extra: dict | None = None) -> None:
    """Write an AFLW2000-3D-style .mat with `pt3d_68` (3x68) and `Pose_Para` (1x7).

    pt3d_68 rows: x, y in 0-based pixel-centre coordinates (written 1-based, as in the
    released files), z unchanged; a (68, 3) array is accepted and transposed. Pose_Para
    is written as given. `extra` adds further variables (e.g. per-point visibility).
    """
    atomic_write_bytes(path, aflw2000_mat_bytes(pt3d_68, pose_para, extra))


def write_jpeg(path, image_bgr: np.ndarray, quality: int = 95) -> None:
    """Encode a BGR uint8 image as JPEG at `quality` and write it atomically."""
    ok, enc = cv2.imencode(".jpg", image_bgr, [int(cv2.IMWRITE_JPEG_QUALITY), int(quality)])
    if not ok:
        raise ValueError(f"{path}: JPEG encoding failed")
    atomic_write_bytes(path, enc.tobytes())
