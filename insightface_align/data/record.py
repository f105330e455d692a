"""The release's RecordIO record layout, written and read byte-compatibly.

Each record: an mx.recordio.IRHeader whose label is 136 float32 values, the 68 points
row-major in (y, x) order (the release's label_xfirst = False), followed by a JPEG of
RECORD_SIZE x RECORD_SIZE pixels with the face window's centre at the image centre and
the window (see geometry.py) spanning the central BASE_SCALE pixels.

Occlusion flags, where the annotation has them (COFW, the rendered faces), travel inside
the JPEG as a comment segment (data/occlusion.py), so the release's own reader reads
these records unchanged.
"""
from __future__ import annotations

import cv2
import mxnet as mx
import numpy as np

from ..errors import DataError
from ..geometry import (BASE_SCALE, DEFAULT_CONVENTION, RECORD_SIZE, transform_points, window_from_box,
                        window_matrix)
from .jpeg import decode_bgr
from .occlusion import with_occlusion

NUM_POINTS = 68


def crop_to_record(image_bgr: np.ndarray, points: np.ndarray, box, convention: str = DEFAULT_CONVENTION) -> tuple:
    """Warp a full image to the record frame for a face box; returns (image, points (68, 2)).
    The window centre lands where `convention` puts it (geometry.output_centre)."""
    cx, cy, side = window_from_box(box, convention=convention)
    # The window maps onto BASE_SCALE pixels; the record is RECORD_SIZE wide around it.
    m = window_matrix(cx, cy, side * RECORD_SIZE / BASE_SCALE, RECORD_SIZE, convention=convention)
    img = cv2.warpAffine(image_bgr, m, (RECORD_SIZE, RECORD_SIZE), flags=cv2.INTER_LINEAR,
                         borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    return img, transform_points(m, points)[:, :2].astype(np.float32)


def pack_record(index: int, image_bgr: np.ndarray, points_xy: np.ndarray, quality: int = 95,
                occluded=None) -> bytes:
    """Serialise one record exactly as the release laid it out (plus the occlusion
    comment when `occluded` is given)."""
    pts = np.asarray(points_xy, dtype=np.float32)[:, :2]
    if pts.shape != (NUM_POINTS, 2):
        raise ValueError(f"expected {NUM_POINTS}x2 points, got {pts.shape}")
    label = pts[:, ::-1].reshape(-1)  # (y, x) per point
    header = mx.recordio.IRHeader(0, label, int(index), 0)
    # The JPEG encoding of mx.recordio.pack_img, with the occlusion comment added when given.
    ok, jpeg = cv2.imencode(".jpg", image_bgr, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise ValueError("JPEG encoding failed")
    jpeg = jpeg.tobytes()
    return mx.recordio.pack(header, jpeg if occluded is None else with_occlusion(jpeg, occluded))


def unpack_record(buf: bytes, source: str = "<record>", decode: bool = True) -> tuple:
    """Parse one record into (image_bgr or raw JPEG bytes, points_xy (68, 2) float32, id)."""
    try:
        header, payload = mx.recordio.unpack(buf)
    except Exception as exc:  # struct errors from a truncated header
        raise DataError(source, f"not a RecordIO image record ({exc})") from None
    label = np.asarray(header.label, dtype=np.float32).reshape(-1)
    if label.size != 2 * NUM_POINTS:
        raise DataError(source, f"record {header.id}: label has {label.size} values, expected {2 * NUM_POINTS}")
    pts = label.reshape(NUM_POINTS, 2)[:, ::-1].copy()
    if not decode:
        return payload, pts, int(header.id)
    img = decode_bgr(payload)
    if img is None:
        raise DataError(source, f"record {header.id}: payload is not a decodable image")
    return img, pts, int(header.id)
