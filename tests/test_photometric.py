"""Photometric augmentation: pixels change, geometry does not; each switch really switches."""
import cv2
import numpy as np
import pytest

from insightface_align.data import photometric
from insightface_align.data.config import DataConfig
from insightface_align.data.iterator import AlignIter
from insightface_align.data.photometric import Photometric, augment
from insightface_align.errors import ConfigError

from test_augment import dotted_record

ALL = Photometric(colour=1.0, grey=0.0, noise=1.0, blur=0.0, jpeg=1.0, border=0.0)


def _batches(rec, photometric, epochs=1):
    cfg = DataConfig(batch_size=6, pairs="both", seed=5, photometric=photometric)
    out = []
    with AlignIter(rec, cfg) as it:
        for _ in range(epochs):
            for b in it:
                out.append((b.data[0].asnumpy(), np.array(b.points), np.array(b.crop_matrix)))
            it.reset()
    return out


def test_points_and_crops_are_untouched_by_photometric_changes(tmp_path):
    rec, _ = dotted_record(tmp_path)
    plain = _batches(rec, Photometric())
    photo = _batches(rec, ALL)
    assert len(plain) == len(photo)
    for (d0, p0, m0), (d1, p1, m1) in zip(plain, photo):
        np.testing.assert_array_equal(p0, p1)
        np.testing.assert_array_equal(m0, m1)
        assert np.abs(d0.astype(float) - d1.astype(float)).mean() > 2.0


def test_photometric_draws_are_deterministic_and_shared_by_a_pair(tmp_path):
    rec, _ = dotted_record(tmp_path)
    a = _batches(rec, ALL)
    b = _batches(rec, ALL)
    for (d0, _, _), (d1, _, _) in zip(a, b):
        np.testing.assert_array_equal(d0, d1)


def test_each_operation_does_what_it_says():
    rng = np.random.default_rng(0)
    img = (rng.uniform(0, 255, (128, 128, 3))).astype(np.uint8)
    grey = augment(img, Photometric(grey=1.0), np.random.default_rng(1))
    assert np.array_equal(grey[..., 0], grey[..., 1]) and np.array_equal(grey[..., 1], grey[..., 2])
    border = augment(img, Photometric(border=1.0), np.random.default_rng(2))
    zeroed = np.all(border == 0, axis=2)
    assert zeroed.sum() >= 128 and np.array_equal(border[~zeroed], img[~zeroed])
    rows, cols = np.nonzero(zeroed)
    assert rows.min() == 0 or cols.min() == 0 or rows.max() == 127 or cols.max() == 127
    blurred = augment(img, Photometric(blur=1.0), np.random.default_rng(3))
    assert np.abs(np.diff(blurred.astype(float), axis=1)).mean() < np.abs(np.diff(img.astype(float), axis=1)).mean()
    assert np.array_equal(augment(img, Photometric(), np.random.default_rng(4)), img)


@pytest.mark.parametrize("bad", [{"colour": 1.5}, {"colour": "often"}, {"colour": True}, {"sharpen": 0.5}, [0.5]])
def test_bad_probabilities_are_config_errors(bad):
    with pytest.raises(ConfigError):
        Photometric.from_dict(bad)


def _colour_reference(img, u):
    """The colour operation step by step in floats (what its single colour matrix must equal)."""
    f = img.astype(np.float64)
    f = f * (0.6 + 0.8 * u[0]) + (-30 + 60 * u[1])
    mean = f.mean()
    f = (f - mean) * (0.6 + 0.8 * u[2]) + mean
    grey = f.mean(axis=2, keepdims=True)
    f = grey + (f - grey) * (0.5 + u[3])
    f *= 0.9 + 0.2 * u[4:7]
    return np.clip(np.rint(f), 0, 255)


@pytest.mark.parametrize("seed", range(6))
def test_colour_matrix_equals_the_step_by_step_jitter(seed):
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 256, (64, 64, 3)).astype(np.uint8)
    u = rng.random(8)
    u[7] = 8.5 / 17   # no hue shift
    got = photometric._colour(img, u).astype(float)
    assert np.abs(got - _colour_reference(img, u)).max() <= 1.0


def test_noise_has_its_drawn_strength_and_differs_between_draws():
    img = np.full((128, 128, 3), 128, np.uint8)
    u = np.array([0.5, 0.0, 0.3, 0.7, 0, 0, 0, 0])         # sigma 7, chroma 0.2 * 7
    a = photometric._noise(img, u).astype(float)
    shot = np.sqrt(128 / 255 + 0.05)
    expected = shot * np.hypot(7.0, 1.4)
    assert abs(a.std() - expected) < 0.1 * expected
    assert abs(a.mean() - 128) < 0.5
    b = photometric._noise(img, np.array([0.5, 0.0, 0.9, 0.1, 0, 0, 0, 0])).astype(float)
    assert np.abs(a - b).mean() > 1.0
    big = np.full((600, 600, 3), 128, np.uint8)   # larger than the table of normals: fresh ones
    assert abs(photometric._noise(big, u).astype(float).std() - expected) < 0.1 * expected


def test_jpeg_operation_keeps_the_image_close():
    rng = np.random.default_rng(0)
    img = cv2.GaussianBlur(rng.integers(0, 256, (128, 128, 3)).astype(np.uint8), (0, 0), 2)
    out = photometric._jpeg(img, np.full(8, 0.5))
    assert out.shape == img.shape and out.dtype == np.uint8
    assert 0 < np.abs(out.astype(float) - img).mean() < 4
