"""Per-point occlusion flags carried inside a record's JPEG as a comment segment.

OCCLUSION_TAG followed by 68 ASCII '0'/'1' (1 = an occluder hides the point), placed
after the SOI and APPn segments. Every JPEG decoder skips comments, so records with
flags stay readable by the release's own reader; records without them read as "no
occlusion known". Pure bytes work: the iterator's worker processes need no MXNet.
"""
from __future__ import annotations

import numpy as np

NUM_POINTS = 68
OCCLUSION_TAG = b"insightface-align occluded:"
_SOI, _COM = b"\xff\xd8", b"\xff\xfe"


def _header_segments(jpeg: bytes, limit: int = 16):
    """(offset, marker, length) of the APPn and comment segments right after the SOI, at
    most `limit` of them; stops at anything else or at a segment cut short."""
    pos = 2
    for _ in range(limit):
        if len(jpeg) < pos + 4 or jpeg[pos] != 0xFF:
            return
        marker, length = jpeg[pos + 1], int.from_bytes(jpeg[pos + 2:pos + 4], "big")
        if not (0xE0 <= marker <= 0xEF or marker == 0xFE):
            return
        yield pos, marker, length
        pos += 2 + length


def with_occlusion(jpeg: bytes, occluded) -> bytes:
    """The JPEG with a comment segment holding the 68 occlusion flags, after its SOI and
    any APPn segments (so a JFIF header stays first)."""
    flags = np.asarray(occluded, dtype=bool).reshape(-1)
    if flags.size != NUM_POINTS:
        raise ValueError(f"expected {NUM_POINTS} occlusion flags, got {flags.size}")
    body = OCCLUSION_TAG + b"".join(b"1" if f else b"0" for f in flags)
    pos = 2
    for at, marker, length in _header_segments(jpeg):
        if marker > 0xEF:
            break
        pos = at + 2 + length
    return jpeg[:pos] + _COM + (len(body) + 2).to_bytes(2, "big") + body + jpeg[pos:]


def occlusion_flags(jpeg: bytes):
    """(68,) bool occlusion flags of a record's JPEG, or None when it carries none."""
    if jpeg[:2] != _SOI:
        return None
    for pos, marker, length in _header_segments(jpeg):
        body = jpeg[pos + 4:pos + 2 + length]
        if marker == 0xFE and body.startswith(OCCLUSION_TAG):
            flags = body[len(OCCLUSION_TAG):]
            if len(flags) != NUM_POINTS or set(flags) - {48, 49}:
                return None
            return np.frombuffer(flags, dtype=np.uint8) == 49
    return None
