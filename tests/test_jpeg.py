"""The fast record decoder gives OpenCV's pixels exactly, for good, odd and damaged payloads."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from insightface_align.data.jpeg import decode_bgr, decode_with_opencv
from insightface_align.data.occlusion import with_occlusion
from insightface_align.data.testing import random_face

FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _face(seed: int, size: int = 384) -> np.ndarray:
    return random_face(np.random.default_rng(seed), size=size, face=size / 3)[0]


def _encode(img: np.ndarray, *params) -> bytes:
    ok, enc = cv2.imencode(".jpg", img, list(params))
    assert ok
    return enc.tobytes()


FACE = _face(0)
JPEG = _encode(FACE, cv2.IMWRITE_JPEG_QUALITY, 95)


def _same(payload: bytes, half: bool, exact: bool = True) -> None:
    """decode_bgr refuses what OpenCV refuses and otherwise gives its shape (and its pixels
    when `exact`)."""
    fast, ref = decode_bgr(payload, half), decode_with_opencv(payload, half)
    if ref is None:
        assert fast is None
    else:
        assert fast is not None and fast.shape == ref.shape and fast.dtype == np.uint8
        if exact:
            assert np.array_equal(fast, ref)


@pytest.mark.parametrize("half", [False, True])
@pytest.mark.parametrize("kind", ["q95", "q50", "progressive", "grey", "444", "odd-size", "occlusion-comment"])
def test_decodes_exactly_as_opencv(kind, half):
    img = FACE
    params = [cv2.IMWRITE_JPEG_QUALITY, 95]
    if kind == "q50":
        params = [cv2.IMWRITE_JPEG_QUALITY, 50]
    elif kind == "progressive":
        params += [cv2.IMWRITE_JPEG_PROGRESSIVE, 1]
    elif kind == "grey":
        img = cv2.cvtColor(FACE, cv2.COLOR_BGR2GRAY)
    elif kind == "444":
        params += [cv2.IMWRITE_JPEG_SAMPLING_FACTOR, cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444]
    elif kind == "odd-size":
        img = _face(1, size=301)[:, :297]
    payload = _encode(img, *params)
    if kind == "occlusion-comment":
        payload = with_occlusion(payload, np.arange(68) % 3 == 0)
    out = decode_bgr(payload, half)
    assert out.ndim == 3 and out.shape[2] == 3
    h, w = img.shape[:2]
    assert out.shape[:2] == (((h + 1) // 2, (w + 1) // 2) if half else (h, w))
    _same(payload, half)


@pytest.mark.parametrize("fmt", [".png", ".bmp", ".webp"])
def test_other_formats_go_to_opencv(fmt):
    ok, enc = cv2.imencode(fmt, FACE)
    assert ok
    out = decode_bgr(enc.tobytes())
    assert out is not None and out.shape == FACE.shape
    _same(enc.tobytes(), False)


def test_empty_and_garbage_give_none():
    assert decode_bgr(b"") is None
    assert decode_bgr(b"\xff\xd8") is None
    assert decode_bgr(b"not an image at all") is None


@FAST
@given(cut=st.integers(0, len(JPEG)), half=st.booleans())
def test_truncated_payloads_are_refused_or_decoded_as_opencv_does(cut, half):
    """Shapes only: OpenCV leaves the rows past the cut uninitialised (not even its own
    repeated decodes agree there)."""
    _same(JPEG[:cut], half, exact=False)


@FAST
@given(data=st.data(), half=st.booleans())
def test_corrupted_payloads_are_refused_or_decoded_as_opencv_does(data, half):
    """Pixels may differ where a damaged quantisation table overflows the inverse DCT
    (the two libjpeg-turbo builds wrap differently); acceptance and shape may not."""
    buf = bytearray(JPEG)
    for _ in range(data.draw(st.integers(1, 8))):
        pos = data.draw(st.integers(0, len(buf) - 1))
        buf[pos] = data.draw(st.integers(0, 255))
    _same(bytes(buf), half, exact=False)


def test_damaged_entropy_data_decodes_as_opencv_does():
    """Damage after the headers is warned about: OpenCV's lenient decode is used, pixel for pixel."""
    buf = bytearray(JPEG)
    rng = np.random.default_rng(0)
    for pos in rng.integers(len(JPEG) // 2, len(JPEG) - 2, size=20):
        buf[pos] ^= 0x5A
    _same(bytes(buf), False)
    _same(bytes(buf), True)


@FAST
@given(payload=st.binary(max_size=600), half=st.booleans())
def test_random_bytes_after_a_jpeg_marker(payload, half):
    _same(b"\xff\xd8" + payload, half, exact=False)
