"""The bundled model: ships with the package, loads without arguments, aligns rendered faces."""
import numpy as np

from insightface_align.aligner import Aligner
from insightface_align.metrics import mean_shape_in_box, per_image_nme
from insightface_align.models import BUNDLED_2D, bundled_prefix
from insightface_align.synthetic import SynthConfig, make_face


def test_bundled_files_are_in_the_package():
    prefix, epoch = bundled_prefix()
    assert prefix == BUNDLED_2D and epoch == 0
    import json
    import os

    meta = json.load(open(prefix + "-0000.json"))
    assert meta["recipe"] == "bundled-2d" and meta["heatmap_loss"] == "softmax_ce"
    assert os.path.getsize(prefix + "-0000.params") < 20 * 2**20


def test_bundled_model_aligns_rendered_faces_better_than_the_mean_shape():
    aligner = Aligner()
    preds, gts = [], []
    for i in range(8):
        face = make_face(303, i, SynthConfig(mode="2d", occlusion_prob=0.0))
        lo, hi = face.points.min(axis=0), face.points.max(axis=0)
        got = aligner.get(face.image, bbox=(lo[0], lo[1], hi[0], hi[1]))
        assert got.points.shape == (68, 2)
        assert np.all((got.confidence >= 0) & (got.confidence <= 1))
        preds.append(got.points)
        gts.append(face.points)
    preds, gts = np.array(preds), np.array(gts)
    model = per_image_nme(preds, gts, "outer_corners")
    baseline = per_image_nme(mean_shape_in_box(gts), gts, "outer_corners")
    assert np.median(model) < np.median(baseline), (model, baseline)


def test_confidence_drops_where_a_render_is_occluded():
    """Covering the mouth with a flat patch lowers the mouth points' confidence, not the eyes'."""
    import cv2

    aligner = Aligner()
    drops, eye_changes = [], []
    for i in range(6):
        face = make_face(304, i, SynthConfig(mode="2d", occlusion_prob=0.0), pose=(0.0, 0.0, 0.0))
        lo, hi = face.points.min(axis=0), face.points.max(axis=0)
        box = (lo[0], lo[1], hi[0], hi[1])
        clean = aligner.get(face.image, bbox=box).confidence
        covered = face.image.copy()
        hull = cv2.convexHull(np.round(face.points[48:68]).astype(np.int32))
        cv2.fillConvexPoly(covered, hull, (128, 128, 128))
        cv2.fillConvexPoly(covered, np.round((hull - hull.mean(axis=0)) * 1.6 + hull.mean(axis=0)).astype(np.int32),
                           (128, 128, 128))
        hidden = aligner.get(covered, bbox=box).confidence
        drops.append(clean[48:68].mean() - hidden[48:68].mean())
        eye_changes.append(abs(clean[36:48].mean() - hidden[36:48].mean()))
    assert np.mean(drops) > 0.05 and np.mean(drops) > 2 * np.mean(eye_changes), (drops, eye_changes)
