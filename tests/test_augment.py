"""Augmentation geometry: flip permutation, image/point consistency, coherent pairs."""
import cv2
import numpy as np
import pytest

from insightface_align.data.config import DataConfig
from insightface_align.data.flip import FLIP_PERMUTATION, flip_points
from insightface_align.data.iterator import AlignIter
from insightface_align.data.testing import write_release_rec
from insightface_align.errors import ConfigError

P = FLIP_PERMUTATION


def test_flip_permutation_is_an_involution_mapping_left_to_right():
    assert sorted(P.tolist()) == list(range(68))
    assert (P[P] == np.arange(68)).all()
    pairs = {0: 16, 8: 8, 17: 26, 21: 22, 27: 27, 30: 30, 31: 35, 33: 33, 36: 45, 39: 42, 37: 44,
             41: 46, 40: 47, 48: 54, 51: 51, 57: 57, 59: 55, 60: 64, 62: 62, 66: 66, 67: 65}
    for a, b in pairs.items():
        assert P[a] == b and P[b] == a


def test_flip_points_mirrors_and_relabels():
    pts = np.zeros((68, 2))
    pts[36] = [10.0, 5.0]          # left eye outer corner on the left
    out = flip_points(pts, 128)
    assert out[45].tolist() == [117.0, 5.0]   # becomes the right eye's outer corner


def palette():
    levels = [0, 64, 128, 192, 255]
    cols = [(r, g, b) for r in levels for g in levels for b in levels if max(r, g, b) >= 128]
    assert len(cols) >= 68
    return np.array(cols[:68], dtype=np.float64)   # RGB, >= 64 apart in some channel


def dotted_record(tmp_path, copies=6):
    """A record whose 68 landmarks are distinct coloured dots on a grid (JPEG 4:4:4, q100)."""
    cols = palette()
    grid = np.array([(c, r) for r in range(8) for c in range(9)][:68], dtype=np.float64)
    pts = 191.5 + (grid - [4.0, 3.5]) * 16.0
    img = np.full((384, 384, 3), 40, dtype=np.uint8)
    for p, rgb in zip(pts, cols):
        cv2.circle(img, (int(p[0]), int(p[1])), 6, tuple(int(v) for v in rgb[::-1]), -1)
    prefix = str(tmp_path / "dots")
    write_release_rec(prefix, [(img, pts)] * copies, quality=100)
    return prefix + ".rec", cols


def colour_index(img_chw, pt, cols):
    x, y = int(round(pt[0])), int(round(pt[1]))
    rgb = img_chw[:, y, x].astype(np.float64)
    return int(np.argmin(((cols - rgb) ** 2).sum(axis=1)))


def test_augmented_points_sit_on_their_coloured_dots(tmp_path):
    rec, cols = dotted_record(tmp_path)
    cfg = DataConfig(batch_size=6, pairs="both", sigma=1.0, seed=3)
    it = AlignIter(rec, cfg)
    checked, flipped_rows, plain_rows = 0, 0, 0
    for epoch in range(4):
        for b in it:
            data = b.data[0].asnumpy()
            for row in range(data.shape[0]):
                flipped = np.linalg.det(b.crop_matrix[row][:, :2]) < 0
                flipped_rows += flipped
                plain_rows += not flipped
                for j, pt in enumerate(b.points[row]):
                    if np.all((pt > 4) & (pt < 123)):
                        want = P[j] if flipped else j   # dot colour of the record's landmark
                        assert colour_index(data[row], pt, cols) == want, (epoch, row, j)
                        checked += 1
        it.reset()
    it.close()
    assert flipped_rows > 0 and plain_rows > 0
    assert checked > 0.8 * 68 * 6 * 2 * 4 / 2


def warp_heatmaps(hm, a, flip):
    """T(H): warp every channel with A (heatmap coords) and relabel when T mirrors."""
    src = hm[P] if flip else hm
    return np.stack([cv2.warpAffine(c, a, (64, 64), flags=cv2.INTER_LINEAR) for c in src])


@pytest.mark.parametrize("pairs", ["affine", "flip", "both"])
def test_coherent_pair_targets_equal_transformed_targets(tmp_path, pairs):
    rec, _ = dotted_record(tmp_path, copies=4)
    it = AlignIter(rec, DataConfig(batch_size=8, pairs=pairs, sigma=1.5, seed=1))
    b = it.next()
    hm = b.label[0].asnumpy()
    aff = b.label[1].asnumpy()
    flips = b.label[2].asnumpy()
    data = b.data[0].asnumpy()
    it.close()
    if pairs == "flip":
        assert flips.tolist() == [1.0] * 8
    if pairs == "affine":
        assert flips.tolist() == [0.0] * 8
    compared = 0
    for i in range(0, 8, 2):
        assert (aff[i] == aff[i + 1]).all() and flips[i] == flips[i + 1]
        a = aff[i].reshape(2, 3).astype(np.float64)
        assert (np.linalg.det(a[:, :2]) < 0) == bool(flips[i])
        th = warp_heatmaps(hm[i], a, bool(flips[i]))
        # Points agree exactly: odd points = A(even points) relabelled.
        even_hm_pts = (b.points[i] + 0.5) * 0.5 - 0.5
        odd_hm_pts = (b.points[i + 1] + 0.5) * 0.5 - 0.5
        moved = even_hm_pts @ a[:, :2].T + a[:, 2]
        np.testing.assert_allclose(odd_hm_pts, moved[P] if flips[i] else moved, atol=1e-3)
        for j in range(68):
            if not (np.all((odd_hm_pts[j] > 3) & (odd_hm_pts[j] < 60))
                    and np.all((even_hm_pts[P[j] if flips[i] else j] > 3))
                    and np.all((even_hm_pts[P[j] if flips[i] else j] < 60))):
                continue
            peak_t = np.array(np.unravel_index(th[j].argmax(), th[j].shape))
            peak_odd = np.array(np.unravel_index(hm[i + 1, j].argmax(), (64, 64)))
            assert np.abs(peak_t - peak_odd).max() <= 1, (i, j)
            compared += 1
        # Images too: the odd image is the even image warped by T (in input coordinates).
        s = np.array([[0.5, 0, -0.25], [0, 0.5, -0.25], [0, 0, 1]])
        a_in = (np.linalg.inv(s) @ np.vstack([a, [0, 0, 1]]) @ s)[:2]
        even = np.ascontiguousarray(data[i].transpose(1, 2, 0))
        warped = cv2.warpAffine(even, a_in, (128, 128), flags=cv2.INTER_LINEAR)
        mask = cv2.warpAffine(np.ones((128, 128), np.float32), a_in, (128, 128)) > 0.999
        mask = cv2.erode(mask.astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
        diff = np.abs(warped - data[i + 1].transpose(1, 2, 0))[mask]
        assert mask.sum() > 2000 and diff.mean() < 8.0
    assert compared > 100


def test_pairs_need_an_even_batch():
    with pytest.raises(ConfigError, match="even"):
        DataConfig(batch_size=5, pairs="flip")
    with pytest.raises(ConfigError, match="pairs"):
        DataConfig(batch_size=4, pairs="mirror")


@pytest.mark.parametrize("reduced", ["never", "always"])
@pytest.mark.parametrize("train", [False, True])
def test_blob_centroids_match_points_to_a_tenth_of_a_pixel(tmp_path, reduced, train):
    """Sub-pixel agreement of image and points, including the half-resolution decode offset."""
    centres = np.array([[150.3, 160.7], [231.6, 170.2], [190.9, 236.4]])
    ys, xs = np.mgrid[0:384, 0:384]
    img = np.zeros((384, 384), np.float64)
    for cx, cy in centres:
        img += 250 * np.exp(-((xs - cx) ** 2 + (ys - cy) ** 2) / (2 * 7.0 ** 2))
    img = np.repeat(np.clip(img, 0, 255).round().astype(np.uint8)[..., None], 3, axis=2)
    pts = np.full((68, 2), 191.5)
    pts[[36, 45, 57]] = centres          # 36/45 swap under flips, 57 stays
    rec = str(tmp_path / "blobs")
    write_release_rec(rec, [(img, pts)] * 4, quality=100)
    cfg = DataConfig(batch_size=4, train=train, shuffle=False, reduced_decode=reduced,
                     pairs="both" if train else None, seed=4)
    with AlignIter(rec + ".rec", cfg) as it:
        b = it.next()
    data = b.data[0].asnumpy().mean(axis=1)
    gy, gx = np.mgrid[0:128, 0:128]
    for row in range(4):
        for j in (36, 45, 57):
            px, py = b.points[row, j]
            win = (np.abs(gx - px) < 12) & (np.abs(gy - py) < 12)
            if not (10 < px < 117 and 10 < py < 117):
                continue
            w = data[row] * win
            cx, cy = (w * gx).sum() / w.sum(), (w * gy).sum() / w.sum()
            assert abs(cx - px) < 0.1 and abs(cy - py) < 0.1, (row, j, cx - px, cy - py)
