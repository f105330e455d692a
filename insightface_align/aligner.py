"""Aligner: landmarks for faces in full images, the 68->5 points and ArcFace alignment.

Crop rule (shared with the packer, geometry.py): the network input covers a square of
2.0 x max(box width, height) centred on the face box, scaled to 128x128.
Images are BGR uint8 (cv2.imread / InsightFace convention); points come back as (x, y)
in the original image's pixel-centre coordinates.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from .confidence import point_confidence
from .detect import default_detector
from .models import bundled_prefix
from .evaluate import flip_average
from .geometry import invert_affine, transform_points, window_from_box, window_matrix
from .metrics import DEFAULT_DECODER, decode

# The standard 112x112 ArcFace template: left eye, right eye, nose tip, left and right mouth corner
# (image left/right), as used by InsightFace's recognition pipelines.
ARCFACE_112 = np.array([[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655],
                        [70.7299, 92.2041]], dtype=np.float64)


def five_points(points68: np.ndarray) -> np.ndarray:
    """Eye centres (mean of each eye's six points), nose tip (30), mouth corners (48, 54)."""
    p = np.asarray(points68, dtype=np.float64)[:, :2]
    return np.stack([p[36:42].mean(axis=0), p[42:48].mean(axis=0), p[30], p[48], p[54]])


def arcface_align(image_bgr: np.ndarray, points68: np.ndarray, size: int = 112) -> np.ndarray:
    """Similarity-align a face to the ArcFace template (size 112, or scaled for others)."""
    from skimage.transform import SimilarityTransform

    tform = SimilarityTransform()
    if not tform.estimate(five_points(points68), ARCFACE_112 * (size / 112.0)):
        raise ValueError("degenerate landmarks: cannot estimate a similarity transform")
    return cv2.warpAffine(image_bgr, tform.params[:2], (size, size), borderValue=0.0)


@dataclass
class Face:
    box: tuple             # (x0, y0, x1, y1) the crop was built from
    points: np.ndarray     # (68, 2) in image coordinates
    confidence: np.ndarray  # (68,) in [0, 1]: heatmap mass at the peak (confidence.py)

    @property
    def five(self) -> np.ndarray:
        return five_points(self.points)


class Aligner:
    """Heatmap model + crop rule + decoder. `get(image, bbox=None)` aligns the largest face.

    With no prefix (and no model) it loads the bundled 2D model; with no detector it uses
    detect.default_detector() (dlib's HOG, calibrated to the training crops)."""

    def __init__(self, prefix: str | None = None, epoch: int = 0, ctx=None, batch_size: int = 1, detector=None,
                 decoder: str = DEFAULT_DECODER, flip_tta: bool = False, model=None, winograd: bool = False):
        if model is None:
            from .model import HeatmapModel

            if prefix is None:
                prefix, epoch = bundled_prefix()
            model = HeatmapModel.load(prefix, epoch, ctx, batch_size, winograd=winograd)
        self.model = model
        self.input_size = getattr(model, "input_size", 128)
        self.decoder, self.flip_tta = decoder, flip_tta
        self._detector = detector

    @property
    def detector(self):
        if self._detector is None:
            self._detector = default_detector()
        return self._detector

    def detect(self, image_bgr: np.ndarray) -> list:
        boxes = [tuple(float(v) for v in b[:4]) for b in self.detector(image_bgr)]
        return sorted(boxes, key=lambda b: (b[2] - b[0]) * (b[3] - b[1]), reverse=True)

    def crop(self, image_bgr: np.ndarray, box) -> tuple:
        """(input RGB float32 (3, in, in), 2x3 matrix image -> input) for one face box."""
        cx, cy, side = window_from_box(box)
        m = window_matrix(cx, cy, side, self.input_size)
        img = cv2.warpAffine(image_bgr, m, (self.input_size, self.input_size), flags=cv2.INTER_LINEAR,
                             borderValue=0)
        if img.ndim == 2:
            img = cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
        return img[:, :, ::-1].transpose(2, 0, 1).astype(np.float32), m

    def get_batch(self, images: list, boxes: list) -> list:
        """One Face per (image, box) pair, predicted in batches."""
        crops, mats = zip(*(self.crop(img, box) for img, box in zip(images, boxes))) if images else ((), ())
        if not crops:
            return []
        batch = np.stack(crops)
        heat = self.model(batch)
        if self.flip_tta:
            heat = flip_average(self.model, batch, heat)
        pts, _ = decode(heat, self.decoder, self.input_size)
        conf = point_confidence(heat, getattr(self.model, "heatmap_kind", "softmax_ce"))
        faces = []
        for box, m, p, c in zip(boxes, mats, pts, conf):
            faces.append(Face(box=tuple(box), points=transform_points(invert_affine(m), p)[:, :2], confidence=c))
        return faces

    def get(self, image_bgr: np.ndarray, bbox=None) -> Face | None:
        """The largest detected face (or the given box); None when no face is found."""
        if bbox is None:
            boxes = self.detect(image_bgr)
            if not boxes:
                return None
            bbox = boxes[0]
        return self.get_batch([image_bgr], [bbox])[0]

    def get_all(self, image_bgr: np.ndarray) -> list:
        boxes = self.detect(image_bgr)
        return self.get_batch([image_bgr] * len(boxes), boxes)
