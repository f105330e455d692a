"""The two crop/target conventions (geometry.py, heatmaps.py) and the release's protocol.

`release` is checked against the release's arithmetic written out here from its
published scripts (its crop: scikit-image similarity transforms composed scale,
translate, rotate, translate around record pixel 192 -> input pixel 64; its targets:
int() of the transformed point; its decoder; its NME), `centred` against exact
sub-pixel geometry.
"""
import json
import os
import subprocess
import sys

import cv2
import mxnet as mx
import numpy as np
import pytest
from skimage import transform as stf

from insightface_align.aligner import Aligner
from insightface_align.data.config import DataConfig
from insightface_align.data.flip import FLIP_PERMUTATION
from insightface_align.data.iterator import AlignIter
from insightface_align.data.recfile import RecordFile
from insightface_align.data.record import crop_to_record
from insightface_align.data.targets import render_heatmaps
from insightface_align.data.testing import random_face, write_release_rec
from insightface_align.errors import DataError
from insightface_align.evaluate import release_protocol
from insightface_align.geometry import output_centre, window_from_box, window_matrix
from insightface_align.heatmaps import decode, target_points
from insightface_align.model import model_info

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def release_matrix(centre, side, out=128, degrees=0.0):
    """The release's img_helper.transform matrix, composed with scikit-image as it did."""
    r = float(out) / side
    t = (stf.SimilarityTransform(scale=r) + stf.SimilarityTransform(translation=(-centre[0] * r, -centre[1] * r))
         + stf.SimilarityTransform(rotation=np.deg2rad(degrees))
         + stf.SimilarityTransform(translation=(out / 2, out / 2)))
    return t.params[0:2]


@pytest.fixture(scope="module")
def faces():
    rng = np.random.default_rng(17)
    return [random_face(rng) for _ in range(10)]


@pytest.fixture(scope="module")
def rec(tmp_path_factory, faces):
    return write_release_rec(str(tmp_path_factory.mktemp("conv") / "faces"), faces)[0]


def test_window_centres_and_the_release_matrix_bit_for_bit():
    assert output_centre(128, "centred") == 63.5 and output_centre(128, "release") == 64.0
    for side in (256.0, 276.0, 356.0):
        ours = window_matrix(192.0, 192.0, side, 128, convention="release")
        assert np.array_equal(ours, release_matrix((192.0, 192.0), side)), side
    # The release's inference crop: integer box centre, 2 x the longer side.
    box = (101.7, 80.2, 201.3, 210.9)
    cx, cy, side = window_from_box(box, convention="release")
    assert (cx, cy) == (151.0, 145.0) and side == pytest.approx(2 * 130.7)
    assert window_from_box(box)[:2] == pytest.approx((151.5, 145.55))
    centred = window_matrix(151.5, 145.55, side, 128)
    assert centred @ np.array([151.5, 145.55, 1.0]) == pytest.approx([63.5, 63.5])


def test_release_inputs_and_targets_equal_the_release_arithmetic(rec, faces):
    """Validation crops, 128-px validation targets, 64-px training targets (augmentation at
    rest) and mirrored training targets, each against the release's formula."""
    records = RecordFile(rec)
    m = release_matrix((192.0, 192.0), 256.0)
    val = DataConfig(batch_size=1, train=False, shuffle=False, convention="release", heatmap_size=128, sigma=0.0)
    train = DataConfig(batch_size=1, train=True, shuffle=False, convention="release", sigma=0.0, rotate=0.0,
                       scale=(1.0, 1.0), flip=False)
    with AlignIter(rec, val, copy=True) as vit, AlignIter(rec, train, copy=True) as tit:
        for i, (vb, tb) in enumerate(zip(vit, tit)):
            jpeg, label, _ = records.read_sample(i)
            rgb = mx.image.imdecode(jpeg).asnumpy()              # the release decodes with MXNet, RGB
            expect = cv2.warpAffine(rgb, m, (128, 128), borderValue=0.0).transpose(2, 0, 1)
            assert np.array_equal(vb.data[0].asnumpy()[0], expect.astype(np.float32)), i
            moved = np.array([m @ np.array([x, y, 1.0]) for x, y in label.astype(np.float64)])
            for maps, scale, size in ((vb.label[0].asnumpy()[0], 1.0, 128), (tb.label[0].asnumpy()[0], 0.5, 64)):
                want = (moved * scale).astype(np.int32)
                y, x = np.divmod(maps.reshape(68, -1).argmax(axis=1), size)
                assert np.array_equal(np.stack([x, y], 1), want), (i, size)
                assert np.all(maps.reshape(68, -1).sum(axis=1) == 1.0)
            # The release mirrors a training sample's target maps (fliplr, flip order).
            mirrored_in = moved[FLIP_PERMUTATION].copy()
            mirrored_in[:, 0] = 127.0 - mirrored_in[:, 0]
            got = target_points(mirrored_in[None], 128, 64, "release", np.array([True]))[0]
            unflipped = (moved * 0.5).astype(np.int32)
            want = np.stack([63 - unflipped[:, 0], unflipped[:, 1]], 1)[FLIP_PERMUTATION]
            assert np.array_equal(got, want), i


def test_flipped_training_rows_get_mirrored_release_targets(rec):
    """Through the iterator: with flips on, each flipped row's targets are the release's
    mirrored maps of the same crop unflipped."""
    common = dict(batch_size=10, train=True, shuffle=False, convention="release", sigma=0.0, rotate=0.0,
                  scale=(1.0, 1.0))
    with AlignIter(rec, DataConfig(**common, flip=True), copy=True) as a, \
            AlignIter(rec, DataConfig(**common, flip=False), copy=True) as b:
        fa, fb = next(iter(a)), next(iter(b))
    la, lb = fa.label[0].asnumpy(), fb.label[0].asnumpy()
    flipped = [i for i in range(10) if not np.array_equal(la[i], lb[i])]
    assert 0 < len(flipped) < 10
    for i in flipped:
        assert np.array_equal(la[i], lb[i][FLIP_PERMUTATION, :, ::-1]), i


def test_decoding_is_unbiased_under_both_conventions():
    rng = np.random.default_rng(3)
    pts = rng.uniform(8, 120, size=(150, 68, 2))
    for convention, sigma in (("centred", 1.0), ("release", 0.0), ("release", 1.0)):
        maps = render_heatmaps(target_points(pts, 128, 64, convention), 64, sigma)
        for decoder in ("centroid", "subpixel", "argmax"):
            got, _ = decode(maps, decoder, 128, convention)
            bias = np.abs((got - pts).reshape(-1, 2).mean(axis=0)).max()
            limit = 0.01 if (convention, decoder) == ("centred", "centroid") else 0.03
            assert bias < limit, (convention, sigma, decoder, bias)
    # The release's own decoder on its own targets sits a pixel up-left, as documented.
    maps = render_heatmaps(target_points(pts, 128, 64, "release"), 64, 0.0)
    got, _ = decode(maps, "release", 128, "release")
    assert (got - pts).reshape(-1, 2).mean(axis=0) == pytest.approx([-1.0, -1.0], abs=0.05)


@pytest.mark.parametrize("convention", ["centred", "release"])
def test_rendered_faces_round_trip_under_each_convention(tmp_path, convention):
    """Faces packed and cropped under a convention: the crop's points map back onto the
    record's, and decoding perfect targets lands on the true points."""
    from insightface_align.synthetic.generate import SynthConfig, make_face

    samples = []
    for i in range(4):
        face = make_face(51, i, SynthConfig(mode="2d"))
        lo, hi = face.points.min(axis=0), face.points.max(axis=0)
        samples.append(crop_to_record(face.image, face.points, (lo[0], lo[1], hi[0], hi[1]), convention))
    rec = write_release_rec(str(tmp_path / "faces"), samples)[0]
    centre = output_centre(384, convention)
    for _, points in samples:
        assert np.abs(points.mean(axis=0) - centre).max() < 40  # the face sits around the record centre
    sigma = 1.0 if convention == "centred" else 0.0
    cfg = DataConfig(batch_size=4, train=False, shuffle=False, convention=convention, sigma=sigma)
    with AlignIter(rec, cfg, copy=True) as it:
        batch = next(iter(it))
    for k in range(4):
        m = np.vstack([batch.crop_matrix[k], [0, 0, 1]])
        back = (np.linalg.inv(m)[:2, :2] @ batch.points[k].T).T + np.linalg.inv(m)[:2, 2]
        assert back == pytest.approx(samples[k][1], abs=2e-3)
    got, _ = decode(batch.label[0].asnumpy(), "centroid", 128, convention)
    err = np.abs(got - batch.points).mean()
    assert err < (0.05 if convention == "centred" else 0.6), err


def test_checkpoints_carry_their_convention(tmp_path):
    def write(name, config):
        prefix = str(tmp_path / name)
        open(prefix + "-symbol.json", "w").write("{}")
        if config is not None:
            open(prefix + "-0000.json", "w").write(json.dumps(config))
        return prefix

    assert model_info(write("ours", {"convention": "release", "graph": "deploy"}), 0).convention == "release"
    assert model_info(write("older", {"heatmap_loss": "mse"}), 0).convention == "centred"
    assert model_info(write("release", None), 0).convention == "release"
    with pytest.raises(DataError, match="unknown convention 'sideways'"):
        model_info(write("bad", {"convention": "sideways"}), 0)


class ShiftModel:
    """A stand-in network: each map is the image's red channel, pooled to 64 px and rolled
    by a per-point offset, so its peaks follow the image."""
    input_size, heatmap_size, heatmap_kind = 128, 64, "softmax_ce"

    def __init__(self, convention):
        self.convention = convention

    def __call__(self, images):
        red = images[:, 0].reshape(len(images), 64, 2, 64, 2).mean(axis=(2, 4))
        return np.stack([np.roll(red, (k % 5, k % 7), axis=(1, 2)) for k in range(68)], axis=1).astype(np.float32)


def test_release_protocol_is_the_release_scoring(rec, faces):
    """test_rec_nme.py's numbers, recomputed from its formula: integer gt pixels, bilinear
    upsampling + argmax, eye-centre distance of the integer gt pixels (box diagonal in 3d)."""
    model = ShiftModel("centred")
    cfg = DataConfig(batch_size=4, train=False, shuffle=False, last_batch="pad")
    records = RecordFile(rec)
    m = release_matrix((192.0, 192.0), 256.0)
    for kind in ("2d", "3d"):
        got = release_protocol(model, rec, cfg, kind)
        want = []
        for i in range(len(records)):
            jpeg, label, _ = records.read_sample(i)
            crop = cv2.warpAffine(mx.image.imdecode(jpeg).asnumpy(), m, (128, 128), borderValue=0.0)
            heat = model(crop.transpose(2, 0, 1)[None].astype(np.float32))[0]
            gt = np.array([(m @ np.array([x, y, 1.0])).astype(np.int32) for x, y in label.astype(np.float64)])
            pred = []
            for k in range(68):
                big = cv2.resize(heat[k], (128, 128))
                r, c = np.unravel_index(np.argmax(big), big.shape)
                pred.append((c, r))
            err = np.linalg.norm(np.array(pred) - gt, axis=1).mean()
            if kind == "2d":
                norm = np.linalg.norm((gt[36] + gt[39]) / 2 - (gt[42] + gt[45]) / 2)
            else:
                norm = np.linalg.norm(gt.max(axis=0) - gt.min(axis=0))
            want.append(err / norm)
        assert got["nme"] == pytest.approx(np.array(want), rel=1e-9), kind
        assert got["skipped"] == [] and len(got["record_id"]) == len(faces)


def test_release_protocol_skips_faces_outside_the_widest_crop(tmp_path, faces):
    img, pts = faces[0]
    far = pts.copy()
    far[0] = (2.0, 2.0)  # outside even a 356-px window around the record centre
    rec = write_release_rec(str(tmp_path / "far"), [faces[1], (img, far), faces[2]])[0]
    got = release_protocol(ShiftModel("centred"), rec, DataConfig(batch_size=2, train=False, shuffle=False,
                                                                  last_batch="pad"))
    assert got["skipped"] == [1] and list(got["record_id"]) == [0, 2]


def test_aligner_crops_and_decodes_by_the_model_convention():
    image = np.zeros((300, 300, 3), np.uint8)
    box = (100.7, 90.2, 180.3, 170.9)
    for convention in ("centred", "release"):
        aligner = Aligner(model=ShiftModel(convention), detector=lambda image: [])
        _, m = aligner.crop(image, box)
        cx, cy, side = window_from_box(box, convention=convention)
        assert np.array_equal(m, window_matrix(cx, cy, side, 128, convention=convention))
    handler_m = np.array([[128 / (80.7 * 2), 0, 64 - int((100.7 + 180.3) / 2) * 128 / (80.7 * 2)],
                          [0, 128 / (80.7 * 2), 64 - int((90.2 + 170.9) / 2) * 128 / (80.7 * 2)]])
    assert Aligner(model=ShiftModel("release"), detector=lambda i: []).crop(image, box)[1] == \
        pytest.approx(handler_m, abs=1e-12)


def test_test_nme_release_protocol_names_it_and_refuses_paper_options(tmp_path):
    bundled = os.path.join(ROOT, "insightface_align", "models", "bundled-2d", "model")
    rng = np.random.default_rng(5)
    rec = write_release_rec(str(tmp_path / "ibug"), [random_face(rng) for _ in range(3)])[0]
    env = dict(os.environ, PYTHONPATH=ROOT)
    base = [sys.executable, "-m", "insightface_align", "test-nme", "--prefix", bundled, "--epoch", "0", "--rec", rec]
    bad = subprocess.run(base + ["--protocol", "release", "--decoder", "argmax"], capture_output=True, text=True,
                         env=env)
    assert bad.returncode == 2 and "--decoder cannot be used with --protocol release" in bad.stderr
    run = subprocess.run(base + ["--protocol", "release", "--out", str(tmp_path / "out")], capture_output=True,
                         text=True, env=env)
    assert run.returncode == 0, run.stderr
    assert "| ibug | release | model | 3 | eye_centre |" in run.stdout
    summary = json.load(open(tmp_path / "out" / "ibug-summary.json"))
    assert summary["protocol"] == "release" and summary["normaliser"] == "eye_centre"
    assert summary["decoder"] == "release" and summary["convention"] == "release"
