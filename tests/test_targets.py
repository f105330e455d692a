"""Heatmap/coordinate targets: exact Gaussian values, single-pixel mode, off-map points."""
import numpy as np
import pytest

from insightface_align.data.targets import TAIL, inside, render_heatmaps


def dense_gaussian(points, size, sigma):
    """Reference: the Gaussian evaluated at every pixel (no truncation)."""
    ys, xs = np.mgrid[0:size, 0:size]
    p = np.asarray(points, dtype=np.float64)
    d2 = (xs[None, None] - p[..., 0, None, None]) ** 2 + (ys[None, None] - p[..., 1, None, None]) ** 2
    return np.exp(-d2 / (2 * sigma ** 2))


@pytest.mark.parametrize("sigma", [0.7, 1.0, 2.0, 20.0])
def test_gaussian_matches_dense_formula_including_borders(sigma):
    rng = np.random.default_rng(0)
    pts = rng.uniform(-0.49, 63.49, size=(3, 68, 2))
    pts[0, :4] = [[0.1, 0.2], [63.4, 63.3], [0.0, 62.9], [31.5, 31.5]]  # border cases
    got = render_heatmaps(pts, 64, sigma)
    want = dense_gaussian(pts, 64, sigma)
    assert got.dtype == np.float32 and got.shape == (3, 68, 64, 64)
    # Only values below TAIL may be dropped.
    np.testing.assert_allclose(got, want, atol=1.01 * TAIL, rtol=1e-5)
    assert np.abs(got - want)[want > TAIL].max() < 1e-5


def test_peak_is_one_at_integer_location_and_argmax_is_nearest_pixel():
    pts = np.array([[[10.0, 20.0], [40.3, 5.7]]])
    hm = render_heatmaps(pts, 64, 1.5)
    assert hm[0, 0, 20, 10] == pytest.approx(1.0)
    assert hm[0, 0, 20, 11] == pytest.approx(np.exp(-1 / (2 * 1.5 ** 2)), rel=1e-6)
    assert np.unravel_index(hm[0, 1].argmax(), (64, 64)) == (6, 40)
    assert hm[0, 1].max() < 1.0  # sub-pixel centre: the nearest pixel is below the peak


def test_round_centre_puts_peak_one_on_nearest_pixel():
    hm = render_heatmaps(np.array([[[40.3, 5.7]]]), 64, 1.0, round_centre=True)
    assert hm[0, 0, 6, 40] == pytest.approx(1.0)
    assert hm[0, 0, 6, 41] == pytest.approx(hm[0, 0, 6, 39])


def test_sigma_zero_is_single_pixel_at_rounded_location():
    pts = np.array([[[3.4, 60.6], [0.0, 0.0], [-0.4, 63.4]]])
    hm = render_heatmaps(pts, 64, 0.0)
    assert hm.sum(axis=(2, 3)).tolist() == [[1.0, 1.0, 1.0]]
    assert hm[0, 0, 61, 3] == 1.0 and hm[0, 1, 0, 0] == 1.0 and hm[0, 2, 63, 0] == 1.0


@pytest.mark.parametrize("sigma", [0.0, 1.0, 30.0])
def test_points_off_the_map_give_all_zero_heatmaps(sigma):
    pts = np.array([[[-0.6, 10.0], [10.0, 63.6], [70.0, -5.0], [10.0, 10.0]]])
    out = np.full((1, 4, 64, 64), 7.0, dtype=np.float32)   # stale values must be overwritten
    hm = render_heatmaps(pts, 64, sigma, out=out)
    assert hm is out
    assert not hm[0, :3].any()
    assert hm[0, 3].max() == pytest.approx(1.0)
    assert inside(pts, 64).tolist() == [[False, False, False, True]]


@pytest.mark.parametrize("input_size,heatmap_size", [(128, 64), (128, 32), (64, 32)])
def test_one_codec_maps_targets_and_decoded_points(input_size, heatmap_size):
    """The data pipeline's input -> heatmap map and the decoders' heatmap -> input map are
    one codec (heatmaps.py): a target rendered where the pipeline puts an input point
    decodes back to that point, and the two maps invert each other."""
    from insightface_align.data.augment import input_to_heatmap
    from insightface_align.data.config import DataConfig
    from insightface_align.heatmaps import decode, heatmap_to_input, input_to_heatmap_matrix, stride

    cfg = DataConfig(batch_size=1, input_size=input_size, heatmap_size=heatmap_size, train=False, num_workers=0)
    m = input_to_heatmap(cfg)
    np.testing.assert_array_equal(m, input_to_heatmap_matrix(input_size, heatmap_size))
    s = stride(input_size, heatmap_size)
    # The input's first and last pixel edges are the heatmap's: the same window.
    corners = np.array([[-0.5, -0.5], [input_size - 0.5, input_size - 0.5]])
    np.testing.assert_allclose(corners @ m[:, :2].T + m[:, 2], [[-0.5, -0.5], [heatmap_size - 0.5] * 2])
    pts = np.random.default_rng(1).uniform(0.2 * input_size, 0.8 * input_size, (2, 68, 2))
    on_map = pts @ m[:, :2].T + m[:, 2]
    np.testing.assert_allclose(heatmap_to_input(on_map, s), pts, atol=1e-9)
    got, _ = decode(render_heatmaps(on_map, heatmap_size, 1.0), "centroid", input_size)
    assert np.abs(got - pts).max() < 0.15 * s
    assert inside(on_map, heatmap_size).all() and not inside(np.array([[-0.51, 3.0]]), heatmap_size).any()
