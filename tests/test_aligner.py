"""Aligner geometry (independent colour-dot oracle), 5 points + ArcFace alignment, detector, predict CLI."""
import json
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest

from conftest import ROOT
from insightface_align.aligner import ARCFACE_112, Aligner, arcface_align, five_points
from insightface_align.geometry import invert_affine, transform_points

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
    aligner = Aligner(model=ColourOracle(), flip_tta=False, detector=lambda img: [])
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

    aligner = Aligner(model=ColourOracle(), flip_tta=False, detector=detector)
    face = aligner.get(_dotted_image(pts))
    assert calls and face.box == (160.0, 110.0, 240.0, 190.0)
    assert len(aligner.get_all(_dotted_image(pts))) == 2
    assert Aligner(model=ColourOracle(), flip_tta=False, detector=lambda img: []).get(_dotted_image(pts)) is None


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


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    """A deploy checkpoint of a small random network (predict's plumbing, not accuracy)."""
    import mxnet as mx

    from insightface_align.export import save_deploy
    from insightface_align.symbols.config import NetConfig
    from insightface_align.symbols.network import get_symbol

    sym = get_symbol(NetConfig(block="cab", topology="sat3", depth=3, multiplier=0.125))
    mod = mx.mod.Module(sym, data_names=["data"], label_names=None)
    mod.bind(data_shapes=[("data", (1, 3, 128, 128))], for_training=False)
    mod.init_params(mx.init.Xavier())
    prefix = str(tmp_path_factory.mktemp("tiny") / "m")
    save_deploy(prefix, sym, *mod.get_params())
    return prefix


def _photo_tree(root):
    """in/a/face.jpg, in/b/face.jpg (same name, other folder), in/b/face.png, in/broken.jpg."""
    for sub, shape, ext in (("a", (300, 400), ".jpg"), ("b", (200, 260), ".jpg"), ("b", (220, 280), ".png")):
        (root / sub).mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(root / sub / ("face" + ext)), _dotted_image(_points(), shape))
    (root / "broken.jpg").write_bytes(b"not an image")


def test_predict_cli_mirrors_folders_and_fails_on_unreadable(tmp_path, tiny_model):
    _photo_tree(tmp_path / "in")
    proc = subprocess.run([sys.executable, "-m", "insightface_align", "predict", str(tmp_path / "in"),
                           "--prefix", tiny_model, "--out", str(tmp_path / "out"), "--box", "150,100,250,200",
                           "--aligned"], capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr[-2000:]  # one input could not be read
    assert "3 of 4 image(s) predicted" in proc.stdout and "1 unreadable" in proc.stdout
    assert "broken.jpg" in proc.stderr
    out = tmp_path / "out"
    record = json.load(open(out / "a" / "face.json"))
    assert len(record["faces"]) == 1 and np.array(record["faces"][0]["points"]).shape == (68, 2)
    assert record["coordinates"].startswith("x, y in input-image pixels, 0-based")
    assert record["model"]["prefix"] == os.path.abspath(tiny_model) and record["model"]["epoch"] == 0
    # b/face.jpg and b/face.png do not overwrite each other or a/face.*
    assert (out / "b" / "face_jpg.json").exists() and (out / "b" / "face_png.json").exists()
    assert (out / "a" / "face-landmarks.jpg").exists() and (out / "b" / "face_png-face0-112.png").exists()
    info = json.load(open(out / "predictions-info.json"))
    assert info["images"] == 4 and info["predicted"] == 3 and info["faces"] == 3
    assert len(info["unreadable"]) == 1 and "broken.jpg" in info["unreadable"][0]


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "pts"])
def test_predict_formats_agree_with_json(tmp_path, tiny_model, fmt):
    from insightface_align.cli.predict import main
    from insightface_align.datasets.pts import read_pts

    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(2):
        cv2.imwrite(str(folder / f"p{i}.png"), _dotted_image(_points(), (260 + 20 * i, 400)))
    common = [str(folder), "--prefix", tiny_model, "--box", "150,100,250,200", "--no-draw"]
    assert main(common + ["--out", str(tmp_path / "ref")]) == 0
    assert main(common + ["--out", str(tmp_path / "got"), "--format", fmt]) == 0
    ref = {i: np.array(json.load(open(tmp_path / "ref" / f"p{i}.json"))["faces"][0]["points"]) for i in range(2)}
    got = tmp_path / "got"
    assert not list(got.glob("*-landmarks.jpg"))
    if fmt == "jsonl":
        lines = [json.loads(line) for line in open(got / "predictions.jsonl")]
        assert [os.path.basename(r["image"]) for r in lines] == ["p0.png", "p1.png"]
        points = {i: np.array(r["faces"][0]["points"]) for i, r in enumerate(lines)}
    elif fmt == "csv":
        import csv

        rows = list(csv.reader(open(got / "predictions.csv")))
        assert len(rows) == 3 and len(rows[0]) == 7 + 136 + 68 and rows[0][7:9] == ["x0", "y0"]
        points = {i: np.array(rows[1 + i][7:7 + 136], float).reshape(68, 2) for i in range(2)}
    else:
        points = {i: read_pts(str(got / f"p{i}.pts")) - 1.0 for i in range(2)}  # .pts are 1-based
    for i in range(2):
        np.testing.assert_allclose(points[i], ref[i], atol=2e-3)
    assert json.load(open(got / "predictions-info.json"))["format"] == fmt


@pytest.mark.parametrize("case, message", [
    ("box3", "--box '1,2,3'"),
    ("boxnan", "finite"),
    ("boxinverted", "x1 > x0"),
    ("missing", "{tmp}/missing.jpg: no such file or folder"),
    ("empty", "{tmp}/empty: holds no image"),
    ("outfile", "{tmp}/file: --out exists and is not a folder"),
])
def test_predict_validates_arguments_before_loading_the_model(tmp_path, capsys, case, message):
    from insightface_align.cli.predict import main

    (tmp_path / "empty").mkdir()
    (tmp_path / "file").write_text("x")
    image = str(tmp_path / "in.png")
    cv2.imwrite(image, _dotted_image(_points()))
    out = ["--out", str(tmp_path / "out")]
    args = {"box3": [image, "--box", "1,2,3"] + out, "boxnan": [image, "--box", "nan,0,10,10"] + out,
            "boxinverted": [image, "--box", "50,50,10,10"] + out,
            "missing": [str(tmp_path / "missing.jpg")] + out, "empty": [str(tmp_path / "empty")] + out,
            "outfile": [image, "--out", str(tmp_path / "file")]}[case]
    # The prefix does not exist: the argument error must come before any model loading.
    assert main(args + ["--prefix", str(tmp_path / "no-model")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message.format(tmp=tmp_path) in err, err
    assert not (tmp_path / "out").exists()


def test_predict_walks_symlink_loops_once(tmp_path):
    from insightface_align.cli.predict import expand

    (tmp_path / "in" / "sub").mkdir(parents=True)
    for name in ("in/x.jpg", "in/sub/y.jpg"):
        cv2.imwrite(str(tmp_path / name), np.zeros((8, 8, 3), np.uint8))
    os.symlink(tmp_path / "in", tmp_path / "in" / "sub" / "loop")
    os.symlink(tmp_path / "in" / "sub", tmp_path / "in" / "again")
    files = expand([str(tmp_path / "in")])
    assert sorted(name for _, name in files) == ["sub/y", "x"]


class _BoxDetector:
    """Finds the dotted face wherever it is drawn: the box of non-black pixels."""

    def __call__(self, img):
        ys, xs = np.nonzero(img.max(axis=2) > 0)
        return [(xs.min(), ys.min(), xs.max(), ys.max())] if len(xs) else []


def test_aligner_accepts_paths_grey_bgra_and_rgb_alike(tmp_path):
    pts = _points()
    aligner = Aligner(model=ColourOracle(), flip_tta=False, detector=_BoxDetector())
    bgr = _dotted_image(pts)
    box = (150, 100, 250, 200)
    ref = aligner.get(bgr, bbox=box).points
    path = tmp_path / "face.png"
    cv2.imwrite(str(path), bgr)
    np.testing.assert_allclose(aligner.get(str(path), bbox=box).points, ref)
    np.testing.assert_allclose(aligner.get(path, bbox=box).points, ref)
    np.testing.assert_allclose(aligner.get(bgr[:, :, ::-1].copy(), bbox=box, rgb=True).points, ref)
    np.testing.assert_allclose(aligner.get(cv2.cvtColor(bgr, cv2.COLOR_BGR2BGRA), bbox=box).points, ref)
    grey = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
    assert aligner.get(grey, bbox=box).points.shape == (68, 2)
    assert aligner.get(grey[:, :, None], bbox=box).points.shape == (68, 2)


@pytest.mark.parametrize("image, message", [
    (None, "image is None"),
    (np.zeros((300, 400, 3), np.float32), "dtype float32: expected uint8"),
    (np.zeros((300, 400, 3), np.uint16), "dtype uint16"),
    (np.zeros((300, 400, 3), bool), "dtype bool"),
    (np.zeros((0, 0, 3), np.uint8), "too small"),
    (np.zeros((300, 400, 2), np.uint8), "expected (H, W), (H, W, 3) or (H, W, 4)"),
    ("/no/such/face.jpg", "/no/such/face.jpg: no such image file"),
])
def test_aligner_refuses_images_it_would_misread(image, message):
    from insightface_align.errors import AlignError

    aligner = Aligner(model=ColourOracle(), flip_tta=False, detector=_BoxDetector())
    with pytest.raises(AlignError) as exc:
        aligner.get(image, bbox=(150, 100, 250, 200))
    assert message in str(exc.value)


@pytest.mark.parametrize("box, message", [
    ((np.nan, 100, 250, 200), "not finite"),
    ((250, 100, 150, 200), "x1 must exceed x0"),
    ((500, 400, 600, 500), "outside the 400x300 image"),
    ((1, 2, 3), "got 3"),
    ("abcd", "expected 4 numbers"),
])
def test_aligner_refuses_bad_boxes(box, message):
    from insightface_align.aligner import InputError

    aligner = Aligner(model=ColourOracle(), flip_tta=False, detector=_BoxDetector())
    with pytest.raises(InputError) as exc:
        aligner.get(_dotted_image(_points()), bbox=box)
    assert message in str(exc.value)


def test_get_batch_detects_when_no_boxes_are_given():
    pts = _points()
    aligner = Aligner(model=ColourOracle(), flip_tta=False, detector=_BoxDetector())
    empty = np.zeros((300, 400, 3), np.uint8)
    faces = aligner.get_batch([_dotted_image(pts), empty, _dotted_image(pts)])
    assert faces[1] is None and faces[0] is not None
    np.testing.assert_allclose(faces[0].points, faces[2].points)
    assert np.abs(faces[0].points - pts).max() < 1.5
    with pytest.raises(ValueError):
        aligner.get_batch([empty], [(0, 0, 10, 10), (0, 0, 10, 10)])


class _Recorder(ColourOracle):
    """The colour oracle, remembering every batch it is given."""

    def __init__(self):
        self.batches = []

    def __call__(self, batch):
        self.batches.append(np.array(batch))
        return super().__call__(batch)


def test_flip_tta_is_the_default_and_averages_with_the_mirrored_crop():
    from insightface_align.heatmaps import decode, flip_average

    pts = _points()
    img, box = _dotted_image(pts), (150, 100, 250, 200)
    default, single = _Recorder(), _Recorder()
    with_tta = Aligner(model=default, detector=lambda i: []).get(img, bbox=box)
    without = Aligner(model=single, detector=lambda i: [], flip_tta=False).get(img, bbox=box)
    assert len(default.batches) == 2 and len(single.batches) == 1
    crop = single.batches[0]
    np.testing.assert_array_equal(default.batches[0], crop)
    np.testing.assert_array_equal(default.batches[1], crop[..., ::-1])      # the mirror image
    heat = flip_average(ColourOracle(), crop, ColourOracle()(crop))
    want, _ = decode(heat, "centroid", 128, "centred")
    _, m = Aligner(model=ColourOracle(), detector=lambda i: []).crop(img, box)
    np.testing.assert_allclose(with_tta.points, transform_points(invert_affine(m), want[0])[:, :2], atol=1e-4)
    assert not np.allclose(with_tta.points, without.points)
