"""One image loader for every reader, so all datasets decode the same way.

cv2 decodes JPEG, PNG, BMP, TIFF, WebP, JPEG 2000 and the PPM/PGM/PBM family, grey,
palette, 4-channel, CMYK and 16-bit files; we always return 3-channel BGR uint8. A JPEG or
PNG cut short (a partial download or copy) is refused: OpenCV would decode it with the
missing rows filled in, and the packer would store a smeared face. EXIF orientation is ignored on purpose: the
benchmark annotations were made on the stored pixel grid, not the rotated view.
"""
from __future__ import annotations

import os

import cv2
import numpy as np

from ..errors import DataError

# Every still-image format OpenCV's imdecode reads, as looked up beside an annotation.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".pgm", ".pbm", ".pnm", ".tif", ".tiff", ".webp",
                    ".jp2", ".jpe", ".dib", ".pxm", ".sr", ".ras")
_FLAGS = cv2.IMREAD_COLOR | cv2.IMREAD_ANYDEPTH | cv2.IMREAD_IGNORE_ORIENTATION


def to_bgr_uint8(img: np.ndarray, path) -> np.ndarray:
    """Normalise a decoded array to (H, W, 3) uint8; 16-bit is scaled by 255/65535."""
    if img.dtype == np.uint16:
        img = np.round(img.astype(np.float32) * (255.0 / 65535.0)).astype(np.uint8)
    elif img.dtype != np.uint8:
        raise DataError(path, f"unsupported pixel type {img.dtype} (expected 8- or 16-bit)")
    if img.ndim == 2:
        img = cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
    elif img.ndim == 3 and img.shape[2] == 1:
        img = cv2.cvtColor(img[:, :, 0], cv2.COLOR_GRAY2BGR)
    elif img.ndim == 3 and img.shape[2] == 4:
        img = cv2.cvtColor(img, cv2.COLOR_BGRA2BGR)
    elif img.ndim != 3 or img.shape[2] != 3:
        raise DataError(path, f"unsupported image shape {img.shape} (expected grey or colour)")
    return np.ascontiguousarray(img)


def load_image(path) -> np.ndarray:
    """Read an image file as BGR uint8 (H, W, 3); DataError if missing or undecodable."""
    path = os.fspath(path)
    try:
        data = np.fromfile(path, dtype=np.uint8)  # also works for non-ASCII paths
    except OSError as exc:
        raise DataError(path, f"cannot read image ({exc.strerror or exc})") from None
    img = cv2.imdecode(data, _FLAGS) if data.size else None
    if img is None:
        raise DataError(path, "not a decodable image (expected a format OpenCV reads: JPEG, PNG, BMP, TIFF, "
                              "WebP, PPM, ...)")
    truncated = truncation(data.tobytes())
    if truncated:
        raise DataError(path, truncated)
    return to_bgr_uint8(img, path)


def truncation(data: bytes) -> str | None:
    """Why a JPEG or PNG file is incomplete, or None.

    JPEG: the last scan (SOS marker FFDA) must be followed by the end-of-image marker
    FFD9; entropy-coded data cannot hold either unescaped, and an embedded thumbnail's
    FFD9 comes before the main image's scans. PNG: the IEND chunk must be present."""
    if data[:3] == b"\xff\xd8\xff":
        sos, eoi = data.rfind(b"\xff\xda"), data.rfind(b"\xff\xd9")
        if eoi < 0 or eoi < sos:
            return f"JPEG ends inside its image data at byte {len(data)} (truncated file)"
    elif data[:8] == b"\x89PNG\r\n\x1a\n" and data.rfind(b"IEND") < 0:
        return f"PNG has no IEND chunk after {len(data)} bytes (truncated file)"
    return None


def find_image(stem_path) -> str | None:
    """The image next to an annotation: same stem, any IMAGE_EXTENSIONS (case-insensitive)."""
    stem_path = os.fspath(stem_path)
    folder, stem = os.path.split(stem_path)
    folder = folder or "."
    for ext in IMAGE_EXTENSIONS:
        for cand in (stem + ext, stem + ext.upper()):
            full = os.path.join(folder, cand)
            if os.path.isfile(full):
                return full
    try:
        names = sorted(os.listdir(folder))
    except OSError:
        return None
    for name in names:  # mixed case such as .Jpg
        base, ext = os.path.splitext(name)
        if base == stem and ext.lower() in IMAGE_EXTENSIONS:
            return os.path.join(folder, name)
    return None
