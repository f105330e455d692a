"""Point confidence: in [0, 1], high for sharp peaks, low for flat or split maps."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from insightface_align.confidence import HEATMAP_KINDS, point_confidence


def gaussian_map(cx, cy, sigma, size=64, height=1.0):
    yy, xx = np.mgrid[0:size, 0:size]
    return height * np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * sigma ** 2))


@pytest.mark.parametrize("kind", HEATMAP_KINDS)
def test_sharp_peaks_beat_flat_and_split_maps(kind):
    scale = {"softmax_ce": 12.0, "sigmoid_ce": 12.0, "mse": 1.0}[kind]
    offset = {"softmax_ce": 0.0, "sigmoid_ce": -6.0, "mse": 0.0}[kind]
    sharp = gaussian_map(30, 20, 1.0) * scale + offset
    wide = gaussian_map(30, 20, 10.0) * scale + offset
    split = (gaussian_map(10, 10, 1.0) + gaussian_map(50, 50, 1.0)) * scale + offset
    flat = np.full((64, 64), offset)
    conf = point_confidence(np.stack([sharp, wide, split, flat])[:, None], kind)[:, 0]
    assert conf[0] > 0.8
    assert conf[1] < conf[0] - 0.3 and conf[2] < 0.6 and conf[3] < 0.01
    assert conf[0] > conf[1] and conf[0] > conf[2] > conf[3]


def test_raw_peak_height_alone_does_not_decide():
    """Softmax maps: a tall but smeared map scores below a lower sharp one."""
    tall_smeared = gaussian_map(30, 30, 8.0) * 13.0
    low_sharp = gaussian_map(30, 30, 0.8) * 9.0
    conf = point_confidence(np.stack([tall_smeared, low_sharp])[:, None], "softmax_ce")[:, 0]
    assert conf[1] > conf[0]


@settings(max_examples=60, deadline=None)
@given(arrays(np.float32, (2, 3, 16, 16), elements=st.floats(-1e4, 1e4, width=32)),
       st.sampled_from(HEATMAP_KINDS), st.integers(0, 4))
def test_confidence_is_always_a_probability(maps, kind, radius):
    conf = point_confidence(maps, kind, radius)
    assert conf.shape == (2, 3)
    assert np.all(np.isfinite(conf)) and np.all(conf >= 0.0) and np.all(conf <= 1.0)


def test_unknown_kind_is_refused():
    with pytest.raises(ValueError):
        point_confidence(np.zeros((1, 1, 4, 4)), "l1")
