"""Offline face detection with what the dependencies ship, and the box calibration that
makes a detector's box frame a face the way training crops did.

Default: dlib's HOG + linear SVM frontal face detector (compiled into the `dlib-bin`
wheel, no model file, Boost licence), run on a 2x up-sampled image so faces down to
~40 px are found. Fallback: OpenCV's Haar cascade. Any callable image_bgr -> list of
(x0, y0, x1, y1[, score]) boxes can replace either in the Aligner.

Calibration: training crops are cut around the tight box of the 68 landmarks; a
detector's box sits elsewhere (dlib's is smaller and lower than the landmark box, the Haar
box larger). `BoxCalibration` maps a detector box to the landmark box it predicts:
centre shifted by (dx, dy) x box size, side scaled by `scale`. The constants below were
fitted on rendered faces by tools/calibrate_detector.py (docs/detector.md gives the run).
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import cv2
import numpy as np

from .errors import DataError


@dataclass(frozen=True)
class BoxCalibration:
    """Detector box -> landmark box: centre + (dx, dy) * side, side * scale (square)."""

    dx: float = 0.0
    dy: float = 0.0
    scale: float = 1.0

    def __call__(self, box) -> tuple:
        x0, y0, x1, y1 = (float(v) for v in box[:4])
        side = max(x1 - x0, y1 - y0)
        cx = (x0 + x1) / 2.0 + self.dx * side
        cy = (y0 + y1) / 2.0 + self.dy * side
        half = 0.5 * self.scale * side
        return (cx - half, cy - half, cx + half, cy + half)

    def inverse(self, box) -> tuple:
        """Landmark box -> the (square) detector box this calibration maps onto it."""
        x0, y0, x1, y1 = (float(v) for v in box[:4])
        side = max(x1 - x0, y1 - y0) / self.scale
        cx = (x0 + x1) / 2.0 - self.dx * side
        cy = (y0 + y1) / 2.0 - self.dy * side
        return (cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2)

    @classmethod
    def fit(cls, detector_boxes, landmark_boxes) -> "BoxCalibration":
        """Least-squares constants from pairs of (detector box, tight landmark box)."""
        d = np.asarray(detector_boxes, float)[:, :4]
        t = np.asarray(landmark_boxes, float)[:, :4]
        if len(d) == 0 or len(d) != len(t):
            raise ValueError("need the same positive number of detector and landmark boxes")
        side = np.maximum(d[:, 2] - d[:, 0], d[:, 3] - d[:, 1])
        tside = np.maximum(t[:, 2] - t[:, 0], t[:, 3] - t[:, 1])
        dx = np.mean(((t[:, 0] + t[:, 2]) - (d[:, 0] + d[:, 2])) / 2.0 / side)
        dy = np.mean(((t[:, 1] + t[:, 3]) - (d[:, 1] + d[:, 3])) / 2.0 / side)
        scale = float(np.sum(side * tside) / np.sum(side * side))
        return cls(float(dx), float(dy), scale)


# Fitted by tools/calibrate_detector.py on rendered faces (see docs/detector.md).
HOG_CALIBRATION = BoxCalibration(dx=0.0042, dy=0.0887, scale=0.9313)
HAAR_CALIBRATION = BoxCalibration(dx=-0.0074, dy=0.1349, scale=0.7831)


class HaarDetector:
    """cv2.CascadeClassifier on haarcascade_frontalface_default.xml from cv2.data."""

    calibration = HAAR_CALIBRATION

    def __init__(self, cascade: str = "haarcascade_frontalface_default.xml", scale_factor: float = 1.1,
                 min_neighbors: int = 5, min_size: int = 24):
        path = cascade if os.path.isabs(cascade) else os.path.join(cv2.data.haarcascades, cascade)
        self.classifier = cv2.CascadeClassifier(path)
        if self.classifier.empty():
            raise DataError(path, "could not load the Haar cascade")
        self.scale_factor, self.min_neighbors, self.min_size = scale_factor, min_neighbors, min_size

    def raw(self, image_bgr: np.ndarray) -> list:
        """The cascade's own boxes (x0, y0, x1, y1)."""
        grey = cv2.cvtColor(image_bgr, cv2.COLOR_BGR2GRAY) if image_bgr.ndim == 3 else image_bgr
        found = self.classifier.detectMultiScale(cv2.equalizeHist(grey), scaleFactor=self.scale_factor,
                                                 minNeighbors=self.min_neighbors,
                                                 minSize=(self.min_size, self.min_size))
        return [(float(x), float(y), float(x + w), float(y + h)) for x, y, w, h in found]

    def __call__(self, image_bgr: np.ndarray) -> list:
        """Calibrated boxes: each frames the face as a landmark box would."""
        return [self.calibration(b) for b in self.raw(image_bgr)]


class HogDetector:
    """dlib's HOG frontal face detector (from the dlib-bin wheel), calibrated boxes + score."""

    calibration = HOG_CALIBRATION

    def __init__(self, upsample: int = 1, threshold: float = 0.0):
        try:
            import dlib
        except ImportError as exc:
            raise DataError("dlib", "the HOG detector needs the dlib-bin package "
                                    "(pip install dlib-bin); HaarDetector needs nothing extra") from exc
        self.detector = dlib.get_frontal_face_detector()
        self.upsample, self.threshold = int(upsample), float(threshold)

    def raw(self, image_bgr: np.ndarray) -> list:
        """dlib's own boxes (x0, y0, x1, y1, score), pixel-centre coordinates."""
        img = image_bgr
        if img.ndim == 2:
            img = cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
        rgb = np.ascontiguousarray(img[:, :, ::-1])
        rects, scores, _ = self.detector.run(rgb, self.upsample, self.threshold)
        # dlib's rectangles are inclusive pixel indices: right/bottom + 1 is the far edge.
        return [(float(r.left()), float(r.top()), float(r.right() + 1), float(r.bottom() + 1), float(s))
                for r, s in zip(rects, scores)]

    def __call__(self, image_bgr: np.ndarray) -> list:
        return [self.calibration(b) + (b[4],) for b in self.raw(image_bgr)]


def default_detector():
    """The HOG detector when dlib is installed, else the Haar cascade."""
    try:
        return HogDetector()
    except DataError:
        return HaarDetector()
