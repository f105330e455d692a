"""Aligner: landmarks for faces in full images, the 68->5 points and ArcFace alignment.

Crop rule (shared with the packer, geometry.py): the network input covers a square of
2.0 x max(box width, height) centred on the face box, scaled to 128x128.
Images are BGR uint8 (cv2.imread / InsightFace convention); points come back as (x, y)
in the original image's pixel-centre coordinates.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import cv2
import numpy as np

from .confidence import point_confidence
from .errors import AlignError, DataError
from .detect import default_detector
from .models import bundled_prefix
from .geometry import DEFAULT_CONVENTION, invert_affine, transform_points, window_from_box, window_matrix
from .heatmaps import DEFAULT_DECODER, decode, flip_average

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


class InputError(AlignError, ValueError):
    """An image or a face box the Aligner cannot use; the message says what is wrong."""


def read_image(path) -> np.ndarray:
    """A BGR uint8 image from any file OpenCV reads (EXIF orientation ignored, as the packer does)."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise DataError(path, "no such image file")
    image = cv2.imread(path, cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
    if image is None or image.size == 0:
        raise DataError(path, "not an image OpenCV can decode")
    return image


def as_bgr(image, rgb: bool = False) -> np.ndarray:
    """Validate an image and return it as BGR uint8 (H, W, 3).

    Accepts a path, or a uint8 array that is grey (H, W) / (H, W, 1), colour (H, W, 3) or
    colour with alpha (H, W, 4; alpha is dropped). `rgb=True` says the array's channels are
    R, G, B (PIL, matplotlib) rather than OpenCV's B, G, R. Floats, uint16, bool and empty
    arrays are refused: silently rescaling them would move every point."""
    if isinstance(image, (str, bytes, os.PathLike)):
        return read_image(image)
    if image is None:
        raise InputError("image is None (did cv2.imread fail to read the file?)")
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise InputError(f"image dtype {image.dtype}: expected uint8 0..255 (convert floats with "
                         "(img * 255).round().astype(np.uint8), 16-bit with img >> 8)")
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (3, 4)):
        raise InputError(f"image shape {image.shape}: expected (H, W), (H, W, 3) or (H, W, 4)")
    if image.shape[0] < 2 or image.shape[1] < 2:
        raise InputError(f"image shape {image.shape}: too small to hold a face")
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    if image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_RGBA2BGR if rgb else cv2.COLOR_BGRA2BGR)
    return np.ascontiguousarray(image[:, :, ::-1]) if rgb else image


def check_box(box, shape) -> tuple:
    """A face box as 4 finite floats (x0, y0, x1, y1) with x1 > x0, y1 > y0, overlapping the image."""
    try:
        values = tuple(float(v) for v in box)
    except (TypeError, ValueError):
        raise InputError(f"face box {box!r}: expected 4 numbers x0, y0, x1, y1") from None
    if len(values) != 4:
        raise InputError(f"face box {box!r}: expected 4 numbers x0, y0, x1, y1, got {len(values)}")
    if not all(np.isfinite(values)):
        raise InputError(f"face box {values}: not finite")
    x0, y0, x1, y1 = values
    if x1 <= x0 or y1 <= y0:
        raise InputError(f"face box {values}: x1 must exceed x0 and y1 exceed y0")
    height, width = shape[:2]
    if x1 <= 0 or y1 <= 0 or x0 >= width or y0 >= height:
        raise InputError(f"face box {values}: outside the {width}x{height} image")
    return values


class Aligner:
    """Heatmap model + crop rule + decoder. `get(image, bbox=None)` aligns the largest face.

    With no prefix (and no model) it loads the bundled 2D model; with no detector it uses
    detect.default_detector() (dlib's HOG, calibrated to the training crops). Images are
    paths or uint8 arrays, BGR unless `rgb=True` (see `as_bgr`). `flip_tta` (on by default)
    averages each face's heatmaps with those of its mirror image: two network passes for
    clearly better points (docs/evaluation.md); turn it off for half the inference time."""

    def __init__(self, prefix: str | None = None, epoch: int = 0, ctx=None, batch_size: int = 1, detector=None,
                 decoder: str = DEFAULT_DECODER, flip_tta: bool = True, model=None, winograd: bool = False):
        if model is None:
            from .model import HeatmapModel  # lazy: MXNet is imported only to load a checkpoint

            if prefix is None:
                prefix, epoch = bundled_prefix()
            model = HeatmapModel.load(prefix, epoch, ctx, batch_size, winograd=winograd)
        self.model = model
        self.input_size = getattr(model, "input_size", 128)
        # The crop and decoding follow the convention the model was trained under (geometry.py).
        self.convention = getattr(model, "convention", DEFAULT_CONVENTION)
        self.decoder, self.flip_tta = decoder, flip_tta
        self._detector = detector

    @property
    def detector(self):
        if self._detector is None:
            self._detector = default_detector()
        return self._detector

    def detect(self, image, rgb: bool = False) -> list:
        """Face boxes (x0, y0, x1, y1), largest first."""
        image_bgr = as_bgr(image, rgb)
        boxes = [tuple(float(v) for v in b[:4]) for b in self.detector(image_bgr)]
        return sorted(boxes, key=lambda b: (b[2] - b[0]) * (b[3] - b[1]), reverse=True)

    def crop(self, image_bgr: np.ndarray, box) -> tuple:
        """(input RGB float32 (3, in, in), 2x3 matrix image -> input) for one face box."""
        cx, cy, side = window_from_box(box, convention=self.convention)
        m = window_matrix(cx, cy, side, self.input_size, convention=self.convention)
        img = cv2.warpAffine(image_bgr, m, (self.input_size, self.input_size), flags=cv2.INTER_LINEAR,
                             borderValue=0)
        if img.ndim == 2:
            img = cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
        return img[:, :, ::-1].transpose(2, 0, 1).astype(np.float32), m

    def get_batch(self, images: list, boxes: list | None = None, rgb: bool = False) -> list:
        """One result per image, predicted in one batch.

        With `boxes` (one per image) every result is a Face. Without, each image's largest
        detected face is aligned, and images where no face is found give None."""
        images = [as_bgr(img, rgb) for img in images]
        if boxes is None:
            found = [self.detect(img) for img in images]
            boxes = [b[0] if b else None for b in found]
        elif len(boxes) != len(images):
            raise InputError(f"{len(images)} images but {len(boxes)} face boxes")
        else:
            boxes = [check_box(box, img.shape) for img, box in zip(images, boxes)]
        todo = [i for i, box in enumerate(boxes) if box is not None]
        results = [None] * len(images)
        if not todo:
            return results
        crops, mats = zip(*(self.crop(images[i], boxes[i]) for i in todo))
        batch = np.stack(crops)
        heat = self.model(batch)
        if self.flip_tta:
            heat = flip_average(self.model, batch, heat)
        pts, _ = decode(heat, self.decoder, self.input_size, self.convention)
        conf = point_confidence(heat, getattr(self.model, "heatmap_kind", "softmax_ce"))
        for k, i in enumerate(todo):
            results[i] = Face(box=tuple(boxes[i]), points=transform_points(invert_affine(mats[k]), pts[k])[:, :2],
                              confidence=conf[k])
        return results

    def get(self, image, bbox=None, rgb: bool = False) -> Face | None:
        """The largest detected face (or the face in `bbox`); None when no face is found."""
        image_bgr = as_bgr(image, rgb)
        if bbox is None:
            boxes = self.detect(image_bgr)
            if not boxes:
                return None
            bbox = boxes[0]
        return self.get_batch([image_bgr], [bbox])[0]

    def get_all(self, image, rgb: bool = False) -> list:
        """Every detected face, largest first."""
        image_bgr = as_bgr(image, rgb)
        boxes = self.detect(image_bgr)
        return self.get_batch([image_bgr] * len(boxes), boxes) if boxes else []
