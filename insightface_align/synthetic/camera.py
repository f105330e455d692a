"""Head pose and pinhole projection into the image.

Angles in degrees, applied as R = Rz(roll) Ry(yaw) Rx(pitch) to model points (x right,
y up, z toward the camera). Positive yaw turns the nose toward the image right, positive
pitch tilts the head down, positive roll turns the face counter-clockwise on screen.
The camera sits at distance `dist` (mm) on the +z axis looking at the head centre; image
coordinates are 0-based pixel centres, y down.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def rotation(pitch: float, yaw: float, roll: float) -> np.ndarray:
    """3x3 rotation for angles in degrees (R = Rz(roll) @ Ry(yaw) @ Rx(pitch))."""
    p, y, r = np.deg2rad([pitch, yaw, roll])
    rx = np.array([[1, 0, 0], [0, np.cos(p), -np.sin(p)], [0, np.sin(p), np.cos(p)]])
    ry = np.array([[np.cos(y), 0, np.sin(y)], [0, 1, 0], [-np.sin(y), 0, np.cos(y)]])
    rz = np.array([[np.cos(r), -np.sin(r), 0], [np.sin(r), np.cos(r), 0], [0, 0, 1]])
    return rz @ ry @ rx


@dataclass(frozen=True)
class Camera:
    """Pose plus pinhole intrinsics; `project` maps model points to pixels."""

    pitch: float
    yaw: float
    roll: float
    dist: float  # mm from the camera to the head centre
    focal: float  # pixels
    cx: float  # pixel position of the optical axis (where the head centre projects)
    cy: float

    @property
    def matrix(self) -> np.ndarray:
        return rotation(self.pitch, self.yaw, self.roll)

    def to_view(self, points: np.ndarray) -> np.ndarray:
        """Model points -> rotated points (x right, y up, z toward the camera)."""
        return np.asarray(points, dtype=np.float64) @ self.matrix.T

    def project(self, points: np.ndarray) -> tuple:
        """(uv (N, 2) pixels, depth (N,) mm from the camera) of model points."""
        q = self.to_view(points)
        depth = self.dist - q[:, 2]
        uv = np.stack([self.cx + self.focal * q[:, 0] / depth,
                       self.cy - self.focal * q[:, 1] / depth], axis=1)
        return uv, depth

    @property
    def scale(self) -> float:
        """Pixels per millimetre at the head centre's depth."""
        return self.focal / self.dist

    def pose_para(self) -> np.ndarray:
        """AFLW2000-3D-style [pitch, yaw, roll (radians), tx, ty, tz, scale]."""
        p, y, r = np.deg2rad([self.pitch, self.yaw, self.roll])
        return np.array([p, y, r, self.cx, self.cy, self.dist, self.scale])


def fit_camera(points: np.ndarray, pitch: float, yaw: float, roll: float, dist: float,
               box_side: float, centre: tuple) -> Camera:
    """Camera whose projection of `points` has a bounding box of max side `box_side`
    pixels centred at `centre`."""
    unit = Camera(pitch, yaw, roll, dist, 1.0, 0.0, 0.0)
    uv, _ = unit.project(points)
    lo, hi = uv.min(axis=0), uv.max(axis=0)
    focal = box_side / max(float(np.max(hi - lo)), 1e-9)
    mid = (lo + hi) / 2.0 * focal
    return Camera(pitch, yaw, roll, dist, focal, centre[0] - mid[0], centre[1] - mid[1])
