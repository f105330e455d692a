"""Offline face detection with what the dependencies ship: OpenCV's bundled Haar cascade.

Any callable image_bgr -> list of (x0, y0, x1, y1[, score]) boxes can replace it in the
Aligner (e.g. an InsightFace RetinaFace/SCRFD wrapper).
"""
from __future__ import annotations

import os

import cv2
import numpy as np

from .errors import DataError


class HaarDetector:
    """cv2.CascadeClassifier on haarcascade_frontalface_default.xml from cv2.data."""

    def __init__(self, cascade: str = "haarcascade_frontalface_default.xml", scale_factor: float = 1.1,
                 min_neighbors: int = 5, min_size: int = 24):
        path = cascade if os.path.isabs(cascade) else os.path.join(cv2.data.haarcascades, cascade)
        self.classifier = cv2.CascadeClassifier(path)
        if self.classifier.empty():
            raise DataError(path, "could not load the Haar cascade")
        self.scale_factor, self.min_neighbors, self.min_size = scale_factor, min_neighbors, min_size

    def __call__(self, image_bgr: np.ndarray) -> list:
        grey = cv2.cvtColor(image_bgr, cv2.COLOR_BGR2GRAY) if image_bgr.ndim == 3 else image_bgr
        found = self.classifier.detectMultiScale(cv2.equalizeHist(grey), scaleFactor=self.scale_factor,
                                                 minNeighbors=self.min_neighbors,
                                                 minSize=(self.min_size, self.min_size))
        return [(float(x), float(y), float(x + w), float(y + h)) for x, y, w, h in found]
