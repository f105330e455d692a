"""Decode record payloads to BGR pixels, fast.

libjpeg-turbo through simplejpeg decodes the records' JPEGs several times faster than
OpenCV's imdecode (tools/bench_data.py measures both) and gives the same pixels. A payload
simplejpeg refuses (another format, CMYK, a damaged stream) goes to OpenCV, so what
decodes, and how damaged data looks, is exactly what OpenCV would give.
"""
from __future__ import annotations

import cv2
import numpy as np
import simplejpeg

_JPEG_START = b"\xff\xd8"


def decode_bgr(payload: bytes, half: bool = False) -> np.ndarray | None:
    """(H, W, 3) uint8 BGR pixels of an encoded image, at half resolution (libjpeg's 1/2
    DCT scaling, OpenCV's IMREAD_REDUCED_COLOR_2) when `half`; None when undecodable."""
    if payload[:2] == _JPEG_START:
        try:
            if not half:
                return simplejpeg.decode_jpeg(payload, colorspace="BGR")
            h, w = simplejpeg.decode_jpeg_header(payload)[:2]
            size = ((h + 1) // 2, (w + 1) // 2)
            # libjpeg picks the smallest M/8 scale reaching the minimum: 1/2 except on tiny images.
            img = simplejpeg.decode_jpeg(payload, colorspace="BGR", min_height=size[0], min_width=size[1])
            if img.shape[:2] == size:
                return img
        except ValueError:  # not decodable strictly: OpenCV decides (it is lenient with damage)
            pass
    return decode_with_opencv(payload, half)


def decode_with_opencv(payload: bytes, half: bool = False) -> np.ndarray | None:
    """The same decode through OpenCV alone (the reference the fast path is checked against)."""
    flag = cv2.IMREAD_REDUCED_COLOR_2 if half else cv2.IMREAD_COLOR
    data = np.frombuffer(payload, dtype=np.uint8)
    return cv2.imdecode(data, flag) if data.size else None
