"""Photometric augmentation: pixels change, geometry does not; each switch really switches."""
import numpy as np
import pytest

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
