"""Aligner geometry (independent colour-dot oracle), 5 points + ArcFace alignment, detector, predict CLI."""
import json
import subprocess
import sys

import cv2
import numpy as np
import pytest

from conftest import ROOT
from insightface_align.aligner import ARCFACE_112, Aligner, arcface_align, five_points

RNG = np.random.RandomState(0)
# 68 colours on a 5-level grid: any two differ by >= 45 in some channel, far above the match threshold.
COLOURS = np.array([(r, g, b) for r in (60, 105, 150, 195, 240) for g in (60, 105, 150, 195, 240)
                    for b in (60, 105, 150, 195, 240)])[::1][:68]


def _dotted_image(points, shape=(300, 400)):
    img = np.zeros(shape + (3,), np.uint8)
    for (x, y), c in zip(points, COLOURS):
        cv2.circle(img, (int(round(x)), int(round(y))), 5, tuple(int(v) for v in c), -1)
    return img


class ColourOracle:
    """A stand-in network: finds each landmark's colour in the crop, returns a Gaussian there."""

    input_size = 128

    def __call__(self, batch):
        out = np.zeros((len(batch), 68, 64, 64), np.float32)
        ys, xs = np.mgrid[0:64, 0:64]
        for b, chw in enumerate(batch):
            bgr = chw.transpose(1, 2, 0)[:, :, ::-1]
            for k, colour in enumerate(COLOURS):
                d = np.abs(bgr - colour).sum(axis=2)
                yy, xx = np.nonzero(d < 6)
                if len(xx) == 0:
                    continue
                # Median: robust to the odd blended edge pixel that happens to match another colour.
                hx, hy = (np.median(xx) + 0.5) / 2 - 0.5, (np.median(yy) + 0.5) / 2 - 0.5
                out[b, k] = np.exp(-((xs - hx) ** 2 + (ys - hy) ** 2) / 2.0)
        return out


def _points():
    """68 well-separated points on a jittered 9x8 grid (14 px apart) around (200, 150)."""
    gy, gx = np.divmod(np.arange(68), 9)
    grid = np.stack([gx - 4.0, gy - 3.5], 1) * 14
    return np.array([200.0, 150.0]) + grid + RNG.uniform(-2, 2, (68, 2))


@pytest.mark.parametrize("box", [(150, 100, 250, 200), (140, 90, 260, 210), (160, 85, 240, 215)])
def test_points_come_back_in_image_coordinates(box):
    """The crop, the decoder and the inverse map agree: an oracle that only sees the crop
    returns the dots, and the Aligner puts them back where they were drawn."""
    pts = _points()
    aligner = Aligner(model=ColourOracle(), detector=lambda img: [])
    face = aligner.get(_dotted_image(pts), bbox=box)
    err = np.linalg.norm(face.points - pts, axis=1)
    # 2x down-sampling to 64x64 heatmaps and quarter-pixel decoding: about a heatmap pixel at most.
    assert err.max() < 2.5 and err.mean() < 1.2
    assert face.confidence.shape == (68,) and face.box == tuple(float(v) for v in box)
    assert np.all((face.confidence >= 0) & (face.confidence <= 1))


def test_detector_callable_and_no_face():
    pts = _points()
    calls = []

    def detector(img):
        calls.append(img.shape)
        return [(10, 10, 30, 30), (160, 110, 240, 190)]  # the larger box wins

    aligner = Aligner(model=ColourOracle(), detector=detector)
    face = aligner.get(_dotted_image(pts))
    assert calls and face.box == (160.0, 110.0, 240.0, 190.0)
    assert len(aligner.get_all(_dotted_image(pts))) == 2
    assert Aligner(model=ColourOracle(), detector=lambda img: []).get(_dotted_image(pts)) is None


def test_bundled_detectors_load_and_find_nothing_in_noise():
    from insightface_align.detect import HaarDetector, HogDetector, default_detector

    assert HaarDetector()(np.zeros((120, 160, 3), np.uint8)) == []
    assert HogDetector()(np.zeros((120, 160, 3), np.uint8)) == []
    assert isinstance(default_detector(), HogDetector)


def test_calibrated_detector_boxes_frame_rendered_faces_like_landmark_boxes():
    """The shipped HOG calibration maps detections on rendered faces onto their landmark boxes."""
    from insightface_align.detect import HogDetector
    from insightface_align.synthetic import SynthConfig, make_face

    det = HogDetector()
    centre_err, side_err, raw_side_err = [], [], []
    for i in range(24):
        face = make_face(91, i, SynthConfig(mode="2d", occlusion_prob=0.0))
        lo, hi = face.points.min(axis=0), face.points.max(axis=0)
        side = max(hi - lo)
        raw = [b for b in det.raw(face.image) if b[0] < (lo[0] + hi[0]) / 2 < b[2]]
        if not raw:
            continue
        x0, y0, x1, y1 = det.calibration(raw[0])
        centre_err.append(np.hypot((x0 + x1 - lo[0] - hi[0]) / 2, (y0 + y1 - lo[1] - hi[1]) / 2) / side)
        side_err.append(abs((x1 - x0) / side - 1))
        raw_side_err.append(abs(max(raw[0][2] - raw[0][0], raw[0][3] - raw[0][1]) / side - 1))
    assert len(centre_err) >= 12
    assert np.median(centre_err) < 0.12 and np.median(side_err) < 0.1
    assert np.median(side_err) <= np.median(raw_side_err)


def test_box_calibration_fit_recovers_known_constants():
    from insightface_align.detect import BoxCalibration

    truth = BoxCalibration(dx=0.03, dy=0.12, scale=0.9)
    rng = np.random.default_rng(0)
    det = [(x, y, x + s, y + s) for x, y, s in rng.uniform([0, 0, 40], [300, 300, 200], (20, 3))]
    fitted = BoxCalibration.fit(det, [truth(b) for b in det])
    assert fitted.dx == pytest.approx(0.03) and fitted.dy == pytest.approx(0.12)
    assert fitted.scale == pytest.approx(0.9)


def test_five_points_and_arcface_alignment():
    pts = np.zeros((68, 2))
    pts[36:42], pts[42:48] = ARCFACE_112[0] * 2 + 10, ARCFACE_112[1] * 2 + 10
    pts[30], pts[48], pts[54] = ARCFACE_112[2] * 2 + 10, ARCFACE_112[3] * 2 + 10, ARCFACE_112[4] * 2 + 10
    np.testing.assert_allclose(five_points(pts), ARCFACE_112 * 2 + 10)
    img = np.random.RandomState(1).randint(0, 255, (300, 300, 3)).astype(np.uint8)
    img = cv2.GaussianBlur(img, (0, 0), 3)
    aligned = arcface_align(img, pts)
    expected = cv2.resize(img[10:234, 10:234], (112, 112), interpolation=cv2.INTER_LINEAR)
    assert aligned.shape == (112, 112, 3)
    assert np.abs(aligned.astype(int) - expected.astype(int)).mean() < 3


def test_predict_cli(tmp_path):
    import mxnet as mx

    from insightface_align.symbols.config import NetConfig
    from insightface_align.symbols.network import get_symbol
    from insightface_align.export import save_deploy

    sym = get_symbol(NetConfig(block="cab", topology="sat3", depth=3, multiplier=0.125))
    mod = mx.mod.Module(sym, data_names=["data"], label_names=None)
    mod.bind(data_shapes=[("data", (1, 3, 128, 128))], for_training=False)
    mod.init_params(mx.init.Xavier())
    save_deploy(str(tmp_path / "m"), sym, *mod.get_params())
    (tmp_path / "in").mkdir()
    cv2.imwrite(str(tmp_path / "in" / "a.jpg"), _dotted_image(_points()))
    cv2.imwrite(str(tmp_path / "in" / "b.png"), _dotted_image(_points(), (200, 260)))
    (tmp_path / "in" / "broken.jpg").write_bytes(b"not an image")
    proc = subprocess.run([sys.executable, str(ROOT / "tools" / "predict.py"), str(tmp_path / "in"), "--prefix",
                           str(tmp_path / "m"), "--out", str(tmp_path / "out"), "--box", "150,100,250,200",
                           "--aligned"], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "2 image(s) written" in proc.stdout and "1 unreadable" in proc.stdout and "broken.jpg" in proc.stdout
    record = json.load(open(tmp_path / "out" / "a.json"))
    assert len(record["faces"]) == 1 and np.array(record["faces"][0]["points"]).shape == (68, 2)
    assert (tmp_path / "out" / "a-landmarks.jpg").exists() and (tmp_path / "out" / "b-face0-112.png").exists()
