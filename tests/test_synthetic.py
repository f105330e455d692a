"""Synthetic face generator: geometry, labels, determinism, file formats, CLI, speed."""
from __future__ import annotations

import filecmp
import json
import os
import time

import cv2
import numpy as np
import pytest
import scipy.io
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from insightface_align.datasets.writers import (MAT_ORIGIN, format_pts, write_aflw2000_mat,
                                                write_pts)
from insightface_align.synthetic import SynthConfig, generate_folder, item_name, make_face
from insightface_align.synthetic import clutter
from insightface_align.synthetic.generate import sample_pose
from insightface_align.synthetic.morph import EXPRESSIONS, N_IDENTITY, Morph, apply_morph
from insightface_align.synthetic.generate import debug_dot_colour, jaw_contour
from insightface_align.synthetic.gl_render import renderer
from insightface_align.synthetic.look import sample_look
from insightface_align.synthetic import scene
from insightface_align.synthetic.template import landmark_xy, template_head

# The 68-point horizontal flip permutation (insightface_align/data/flip.py): index i becomes FLIP[i].
FLIP = (list(range(16, -1, -1)) + list(range(26, 16, -1)) + [27, 28, 29, 30]
        + list(range(35, 30, -1)) + [45, 44, 43, 42, 47, 46, 39, 38, 37, 36, 41, 40]
        + list(range(54, 47, -1)) + list(range(59, 54, -1)) + list(range(64, 59, -1))
        + [67, 66, 65])
NEUTRAL = Morph(identity=np.zeros(N_IDENTITY), expression=np.zeros(len(EXPRESSIONS)))
DOT_COLOURS = np.array([debug_dot_colour(i) for i in range(68)])


def parse_pts_text(text: str) -> np.ndarray:
    """Tiny independent .pts parser (the test must not trust the writer's own helpers)."""
    lines = [ln.strip() for ln in text.strip().splitlines()]
    assert lines[0] == "version: 1" and lines[1] == "n_points: 68"
    assert lines[2] == "{" and lines[-1] == "}"
    return np.array([[float(v) for v in ln.split()] for ln in lines[3:-1]])


# ---------------------------------------------------------------- template
def test_template_follows_ibug_semantics():
    xy = landmark_xy()
    assert xy.shape == (68, 2)
    # Mirror symmetry under the standard flip permutation: left/right pairs are swapped.
    np.testing.assert_allclose(xy[FLIP, 0], -xy[:, 0])
    np.testing.assert_allclose(xy[FLIP, 1], xy[:, 1])
    # Order: jaw runs image-left to image-right through the chin, chin lowest.
    assert np.all(np.diff(xy[0:17, 0]) > 0) and np.argmin(xy[:, 1]) == 8
    # Brows above eyes above nose tip above mouth above chin.
    assert xy[17:27, 1].min() > xy[36:48, 1].max()
    assert xy[36:48, 1].min() > xy[30, 1] > xy[48:68, 1].max() > xy[8, 1]
    # Right eye (36-41) is on the image left: 36 outer corner, 39 inner corner.
    assert xy[36, 0] < xy[39, 0] < 0 < xy[42, 0] < xy[45, 0]
    # Upper lids 37, 38 above lower lids 41, 40; inner lip inside the outer lip.
    assert xy[37, 1] > xy[41, 1] and xy[44, 1] > xy[46, 1]
    assert xy[48, 0] < xy[60, 0] < xy[64, 0] < xy[54, 0]
    head = template_head()
    # Landmarks are the first 68 mesh vertices, the nose tip protrudes most.
    np.testing.assert_allclose(head.vertices[:68, :2], xy)
    assert np.argmax(head.vertices[:68, 2]) == 30
    assert head.triangles.max() < len(head.vertices)
    # Each landmark belongs to at least 3 triangles (it is part of the surface).
    counts = np.bincount(head.triangles.ravel(), minlength=len(head.vertices))
    assert counts[:68].min() >= 3


def test_rendered_head_has_no_holes():
    """Inside the landmark hull every pixel is covered by the person (mouth cavity included)."""
    cfg = SynthConfig(mode="2d", debug_dots=False, occlusion_prob=0.0)
    face = make_face(11, 0, cfg, pose=(0.0, 0.0, 0.0), morph=NEUTRAL)
    rng = np.random.default_rng(0)
    look = sample_look(rng)
    head = template_head()
    opened = Morph(np.zeros(N_IDENTITY), _expr(mouth_open=1.0))
    for morph in (NEUTRAL, opened):
        verts = apply_morph(head, morph)
        meshes = [scene.head_mesh(head, verts, face.camera, look, rng)]
        meshes += scene.mouth_meshes(verts, face.camera, look, rng)
        _, alpha, depth = renderer().render(meshes, scene.sample_lighting(rng), face.camera.focal,
                                            face.camera.cx, face.camera.cy, 256)
        uv, _ = face.camera.project(verts[:68])
        mask = cv2.erode(clutter.face_mask(uv, 256), np.ones((3, 3), np.uint8)) > 0
        assert mask.sum() > 5000
        assert alpha[mask].min() > 0.999 and np.isfinite(depth[mask]).all()


def _head_scene(seed: int = 3):
    cfg = SynthConfig(mode="2d", occlusion_prob=0.0)
    face = make_face(11, 0, cfg, pose=(10.0, 25.0, 0.0), morph=NEUTRAL)
    rng = np.random.default_rng(seed)
    head = template_head()
    verts = apply_morph(head, NEUTRAL)
    return [scene.head_mesh(head, verts, face.camera, sample_look(rng), rng)], face.camera


def test_lights_add_up_whatever_their_number():
    """The shading program is compiled per light count: in linear light (the square of the
    display value) a picture under several lights is the sum of the pictures under each,
    minus the ambient term counted once per extra light, for 0 to 4 lights."""
    meshes, cam = _head_scene()
    dirs = np.array([[0.3, 0.4, 0.9], [-0.8, 0.1, 0.5], [0.1, -0.6, 0.6], [0.9, 0.3, -0.2]])
    cols = np.array([[0.9, 0.8, 0.7], [0.2, 0.3, 0.5], [0.4, 0.1, 0.1], [0.3, 0.3, 0.3]])

    def linear(idx):
        light = scene.Lighting(dirs[idx], cols[idx], shadows=False)
        rgb, alpha, _ = renderer().render(meshes, light, cam.focal, cam.cx, cam.cy, 128, depth=False)
        return rgb.astype(np.float64) ** 2, alpha

    ambient, alpha = linear([])
    assert ambient.max() > 0.01  # the ambient term alone lights the head
    singles = [linear([i])[0] for i in range(4)]
    for idx in ([0, 1], [0, 2, 3], [0, 1, 2, 3]):
        together, alpha_k = linear(idx)
        expected = sum(singles[i] for i in idx) - (len(idx) - 1) * ambient
        assert np.array_equal(alpha_k, alpha)
        assert np.abs(together - expected).max() < 2e-3, idx
        assert np.abs(together - singles[0]).max() > 0.02, idx  # the extra lights did light it


def test_render_without_depth_gives_the_same_picture():
    meshes, cam = _head_scene(4)
    light = scene.sample_lighting(np.random.default_rng(5))
    rgb, alpha, depth = renderer().render(meshes, light, cam.focal, cam.cx, cam.cy, 96)
    rgb2, alpha2, none = renderer().render(meshes, light, cam.focal, cam.cx, cam.cy, 96, depth=False)
    assert none is None and np.isfinite(depth).any()
    assert np.array_equal(rgb, rgb2) and np.array_equal(alpha, alpha2)


def test_ambient_occlusion_darkens_the_bottom_of_a_dent():
    """The sparse neighbour mean equals the per-vertex average over triangle edges (each
    edge counted once per triangle side it lies on); a vertex pushed into the surface gets
    less ambient light, a flat one none less."""
    n = 7
    yy, xx = np.mgrid[0:n, 0:n].astype(float)
    pos = np.stack([xx.ravel(), yy.ravel(), np.zeros(n * n)], axis=1)
    centre = (n // 2) * n + n // 2
    pos[centre, 2] = -2.0  # the dent (normals point to +z)
    quads = [(r * n + c, r * n + c + 1, (r + 1) * n + c + 1, (r + 1) * n + c)
             for r in range(n - 1) for c in range(n - 1)]
    tri = np.array([t for a, b, c, d in quads for t in ((a, b, c), (a, c, d))], np.int64)
    normals = np.tile([0.0, 0.0, 1.0], (n * n, 1))
    ao = scene._concavity_ao(pos, normals, tri, strength=0.05, rounds=1)
    neighbours = [[] for _ in range(n * n)]
    for a, b, c in tri:
        for i, j in ((a, b), (b, c), (c, a)):
            neighbours[i].append(j)
            neighbours[j].append(i)
    mean = np.array([pos[nb].mean(axis=0) for nb in neighbours])
    expected = np.clip(1.0 - 0.05 * np.maximum((mean - pos)[:, 2], 0.0), 0.35, 1.0)
    np.testing.assert_allclose(ao, expected, atol=1e-12)
    assert ao[centre] < 0.95 and ao[0] == 1.0


def test_texture_blend_is_the_alpha_mix_in_planar_layout():
    from insightface_align.synthetic import skin

    rng = np.random.default_rng(0)
    img = rng.random((3, 5, 4)).astype(np.float32)
    alpha = rng.random((5, 4)).astype(np.float32)
    colour = np.array([0.2, 0.5, 0.9])
    expected = img * (1 - alpha) + alpha * colour[:, None, None]
    skin._blend(img, colour, alpha)
    np.testing.assert_allclose(img, expected, atol=1e-6)
    tex = skin.bake_head_texture(sample_look(rng), rng)
    assert tex.shape == (skin.HEIGHT, skin.WIDTH, 4) and tex.dtype == np.uint8
    assert 60 < tex[..., :3].mean() < 230 and tex[..., 3].std() > 5


def test_smooth_shading_has_no_flat_facets():
    """Per-pixel shading: neighbouring skin pixels on the cheek differ by little (no steps)."""
    cfg = SynthConfig(mode="2d", debug_dots=True)
    face = make_face(11, 1, cfg, pose=(0.0, 0.0, 0.0), morph=NEUTRAL)
    grey = cv2.cvtColor(face.image, cv2.COLOR_BGR2GRAY).astype(float)
    cheek = face.points[[2, 3, 31, 41]].mean(axis=0).astype(int)
    patch = grey[cheek[1] - 5:cheek[1] + 6, cheek[0] - 5:cheek[0] + 6]
    assert np.abs(np.diff(patch, axis=1)).max() < 25


def _expr(**values) -> np.ndarray:
    e = np.zeros(len(EXPRESSIONS))
    for name, v in values.items():
        e[EXPRESSIONS.index(name)] = v
    return e


def test_expressions_move_the_right_landmarks():
    head = template_head()
    rest = apply_morph(head, NEUTRAL)
    opened = apply_morph(head, Morph(np.zeros(N_IDENTITY), _expr(mouth_open=1.0)))
    closed = apply_morph(head, Morph(np.zeros(N_IDENTITY), _expr(close_right=1.0, close_left=1.0)))
    gap = lambda v: np.linalg.norm(v[62] - v[66])  # noqa: E731
    assert gap(opened) > gap(rest) + 10.0
    np.testing.assert_allclose(opened[17:48], rest[17:48])  # the upper face stays put
    lid = lambda v: np.linalg.norm(v[37] - v[41]) + np.linalg.norm(v[44] - v[46])  # noqa: E731
    assert lid(closed) < 0.3 * lid(rest)
    np.testing.assert_allclose(closed[48:68], rest[48:68])


# ---------------------------------------------------------------- labels vs pixels
@pytest.mark.parametrize("mode", ["2d", "3d"])
def test_debug_dots_sit_at_the_labels(mode):
    """Each visible landmark's own dot colour is at (within 1 px of) its label."""
    cfg = SynthConfig(mode=mode, debug_dots=True)
    checked = shown_hidden = hidden = 0
    for index in range(6):
        face = make_face(21, index, cfg)
        ij = np.round(face.points).astype(int)
        own = np.zeros(68, bool)
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                own |= np.all(face.image[ij[:, 1] + dy, ij[:, 0] + dx] == DOT_COLOURS, axis=1)
        at = face.image[ij[:, 1], ij[:, 0]].astype(int)
        for i in np.flatnonzero(face.visible & ~own):
            # Only allowed when a neighbouring visible landmark's dot was painted over it.
            j = at[i, 1] // 3
            assert np.array_equal(at[i], DOT_COLOURS[j]) and face.visible[j], (index, i)
            assert np.linalg.norm(face.points[i] - face.points[j]) < 3.0
        checked += int(face.visible.sum())
        exact = np.all(face.image[ij[:, 1], ij[:, 0]] == DOT_COLOURS, axis=1)
        shown_hidden += int(np.sum(exact & ~face.visible))
        hidden += int(np.sum(~face.visible))
    assert checked > 200
    # Self-occluded points rarely show their own dot (only right at the silhouette).
    assert shown_hidden <= max(2, 0.1 * hidden)


def test_profile_labels_include_hidden_points_inside_the_frame():
    cfg = SynthConfig(mode="3d", debug_dots=True)
    face = make_face(5, 3, cfg, pose=(0.0, 80.0, 0.0), morph=NEUTRAL)
    assert face.points.shape == (68, 2)
    assert np.all(face.points >= 0) and np.all(face.points <= cfg.size - 1)
    # Yaw +80 turns the nose to the image right: the subject's left side is hidden.
    assert not face.visible[42:48].any() and not face.visible[9:17].any()
    assert face.visible[36:42].all() and face.visible[30]
    assert (~face.visible).sum() >= 20
    # Hidden points project inside the head, near the visible face (not flung away).
    box = face.points[face.visible]
    span = box.max(axis=0) - box.min(axis=0)
    assert np.all(face.points[~face.visible] >= box.min(axis=0) - 0.6 * span.max())
    assert np.all(face.points[~face.visible] <= box.max(axis=0) + 0.6 * span.max())
    # Far-side eye: no own dot where it is hidden.
    ij = np.round(face.points[42:48]).astype(int)
    assert not np.any(np.all(face.image[ij[:, 1], ij[:, 0]] == DOT_COLOURS[42:48], axis=1))
    # Depth: the nose tip is nearer the camera than the hidden far ear-side jaw point.
    assert face.pt3d[30, 2] > face.pt3d[16, 2]


def test_pose_ranges_per_mode():
    rng = np.random.default_rng(0)
    yaw2 = np.array([sample_pose(rng, "2d")[1] for _ in range(400)])
    yaw3 = np.array([sample_pose(rng, "3d")[1] for _ in range(400)])
    assert np.abs(yaw2).max() <= 60.0 and np.abs(yaw2).max() > 50.0
    assert np.abs(yaw3).max() <= 90.0 and np.sum(np.abs(yaw3) > 60) > 40


def test_jaw_contour_follows_the_silhouette_on_a_turned_face():
    """2D labels put the far-side jaw on the cheek's outline; 3D labels keep the 3D point."""
    head = template_head()
    for yaw in (40.0, -40.0):
        face2 = make_face(5, 1, SynthConfig(mode="2d", debug_dots=True), pose=(0.0, yaw, 0.0), morph=NEUTRAL)
        projected, _ = face2.camera.project(apply_morph(head, NEUTRAL)[:68])
        np.testing.assert_allclose(face2.points[17:], projected[17:])
        far = np.arange(9, 17) if yaw > 0 else np.arange(0, 8)
        near = np.arange(0, 8) if yaw > 0 else np.arange(9, 17)
        outward = 1.0 if yaw > 0 else -1.0
        moved = (face2.points[far, 0] - projected[far, 0]) * outward
        assert (moved > 2.0).sum() >= 4  # hidden 3D points replaced by outline points
        assert np.all(moved >= -1e-6)
        np.testing.assert_allclose(face2.points[near], projected[near], atol=1e-6)
        # Each moved point is on the head's outline: head just inside, something farther out.
        depth = face2.extra["body_depth"]
        for j in far[moved > 2.0]:
            x, y = face2.points[j]
            inside = depth[int(round(y)), int(round(x - 2 * outward))]
            outside = depth[int(round(y)), int(round(x + 3 * outward))]
            assert np.isfinite(inside) and (not np.isfinite(outside) or outside > inside + 10.0), j
    # The rule is the identity on a frontal face.
    cam = make_face(5, 1, SynthConfig(mode="3d"), pose=(0.0, 0.0, 0.0), morph=NEUTRAL).camera
    uv, _ = cam.project(apply_morph(head, NEUTRAL)[:17])
    np.testing.assert_allclose(jaw_contour(head, NEUTRAL, cam), uv, atol=0.05)


# ---------------------------------------------------------------- files
def test_folder_is_deterministic_and_worker_independent(tmp_path):
    cfg = SynthConfig(mode="2d")
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    generate_folder(str(a), 4, seed=7, config=cfg, workers=1)
    generate_folder(str(b), 4, seed=7, config=cfg, workers=2)
    generate_folder(str(c), 4, seed=8, config=cfg, workers=1)
    names = sorted(os.listdir(a))
    assert names == sorted(os.listdir(b))
    assert len([n for n in names if n.endswith(".jpg")]) == 4
    assert len([n for n in names if n.endswith(".pts")]) == 4
    match, mismatch, errors = filecmp.cmpfiles(a, b, names, shallow=False)
    assert mismatch == [] and errors == [] and len(match) == len(names)
    assert not filecmp.cmp(a / "synth_000000.jpg", c / "synth_000000.jpg", shallow=False)
    assert sorted(os.listdir(tmp_path)) == ["a", "b", "c"]  # no temp folders left


def test_pts_files_hold_one_based_labels(tmp_path):
    cfg = SynthConfig(mode="2d")
    out = tmp_path / "d"
    records = generate_folder(str(out), 3, seed=3, config=cfg)
    for index, rec in enumerate(records):
        face = make_face(3, index, cfg)
        pts = parse_pts_text((out / (item_name("2d", index) + ".pts")).read_text())
        np.testing.assert_allclose(pts, face.points + 1.0, atol=6e-4)
        assert rec["visible"] == face.visible.astype(int).tolist()
        assert abs(rec["yaw"]) <= 45.0
    meta = [json.loads(line) for line in (out / "synth_meta.jsonl").read_text().splitlines()]
    assert [m["name"] for m in meta] == ["synth_000000", "synth_000001", "synth_000002"]


def test_mat_files_have_aflw2000_keys_and_shapes(tmp_path):
    cfg = SynthConfig(mode="3d")
    out = tmp_path / "m"
    generate_folder(str(out), 2, seed=4, config=cfg)
    assert sorted(os.listdir(out))[:4] == ["image00000.jpg", "image00000.mat",
                                           "image00001.jpg", "image00001.mat"]
    face = make_face(4, 1, cfg)
    mat = scipy.io.loadmat(str(out / "image00001.mat"))
    assert mat["pt3d_68"].shape == (3, 68) and mat["Pose_Para"].shape == (1, 7)
    np.testing.assert_allclose(mat["pt3d_68"][:2].T, face.points + MAT_ORIGIN, atol=1e-9)
    np.testing.assert_allclose(mat["pt3d_68"][2], face.pt3d[:, 2], atol=1e-9)
    pose = mat["Pose_Para"][0]
    np.testing.assert_allclose(np.rad2deg(pose[:3]),
                               [face.camera.pitch, face.camera.yaw, face.camera.roll], atol=1e-9)
    assert mat["visible_68"].shape == (1, 68)
    np.testing.assert_array_equal(mat["visible_68"][0].astype(bool), face.visible)


def test_project_readers_read_the_generated_folders(tmp_path):
    from insightface_align.datasets import aflw2000 as aflw
    from insightface_align.datasets import w300
    generate_folder(str(tmp_path / "p2"), 2, seed=9, config=SynthConfig(mode="2d"))
    generate_folder(str(tmp_path / "p3"), 2, seed=9, config=SynthConfig(mode="3d"))
    reader2 = w300.W300Reader(str(tmp_path / "p2"))
    sample = reader2.load(reader2.items()[1])
    np.testing.assert_allclose(sample.points[:, :2], make_face(9, 1, SynthConfig(mode="2d")).points,
                               atol=6e-4)
    reader3 = aflw.Aflw2000Reader(str(tmp_path / "p3"))
    sample = reader3.load(reader3.items()[0])
    np.testing.assert_allclose(sample.points[:, :2], make_face(9, 0, SynthConfig(mode="3d")).points,
                               atol=1e-4)


@settings(max_examples=40, deadline=None)
@given(arrays(np.float64, (68, 2), elements=st.floats(-1e4, 1e4, allow_nan=False)))
def test_pts_writer_roundtrip_property(points):
    back = parse_pts_text(format_pts(points))
    np.testing.assert_allclose(back, points + 1.0, atol=6e-4)


def test_writers_reject_bad_input_and_leave_no_file(tmp_path):
    with pytest.raises(ValueError):
        write_pts(tmp_path / "x.pts", np.full((68, 2), np.nan))
    with pytest.raises(ValueError):
        write_aflw2000_mat(tmp_path / "x.mat", np.zeros((2, 68)), np.zeros(7))
    with pytest.raises(ValueError):
        write_aflw2000_mat(tmp_path / "x.mat", np.zeros((3, 68)), np.zeros(6))
    assert os.listdir(tmp_path) == []
    write_aflw2000_mat(tmp_path / "a.mat", np.zeros((3, 68)), np.zeros(7))
    write_aflw2000_mat(tmp_path / "b.mat", np.zeros((3, 68)), np.zeros(7))
    assert (tmp_path / "a.mat").read_bytes() == (tmp_path / "b.mat").read_bytes()


# ---------------------------------------------------------------- occluders
def test_occluder_coverage_is_bounded_and_measured():
    covers = []
    for k in range(25):
        rng = np.random.default_rng(k)
        img = np.zeros((256, 256, 3), np.uint8)
        face = make_face(13, k, SynthConfig(mode="2d", debug_dots=True))
        mask, cover = clutter.add_occluder(rng, img, face.points, max_cover=0.4)
        hull = clutter.face_mask(face.points, 256)
        assert cover <= 0.4
        assert cover == pytest.approx((mask & hull).sum() / hull.sum())
        covers.append(cover)
    covers = np.array(covers)
    assert np.mean(covers > 0.02) > 0.7 and covers.max() > 0.2


def test_occluded_flags_follow_the_occluder():
    cfg = SynthConfig(mode="2d", occlusion_prob=1.0)
    faces = [make_face(17, i, cfg) for i in range(6)]
    assert all(0.0 <= f.coverage <= 0.4 for f in faces)
    assert sum(f.occluded.any() for f in faces) >= 3
    # Without pasted occluders only worn things (glasses, hats, long hair) can hide points.
    for i in range(8):
        face = make_face(17, i, SynthConfig(mode="2d", occlusion_prob=0.0))
        look = face.extra["look"]
        worn = look.glasses != "none" or look.hat or look.hairstyle in ("medium", "long")
        assert worn or not face.occluded.any(), i


# ---------------------------------------------------------------- CLI and speed
def test_cli_writes_folder_and_montage(tmp_path, capsys):
    from insightface_align.cli import synth as tool
    with pytest.raises(SystemExit) as exc:
        tool.main(["--help"])
    assert exc.value.code == 0
    out = tmp_path / "cli"
    assert tool.main(["--mode", "3d", "--out", str(out), "--count", "3", "--seed", "1",
                      "--workers", "1", "--montage", str(tmp_path / "m.png")]) == 0
    assert "wrote 3 3d faces" in capsys.readouterr().out
    assert len(list(out.glob("*.mat"))) == 3 and (tmp_path / "m.png").stat().st_size > 1000
    with pytest.raises(SystemExit) as exc:  # refuses to clobber without --overwrite
        tool.main(["--mode", "3d", "--out", str(out), "--count", "1"])
    assert exc.value.code == 2
    assert tool.main(["--mode", "2d", "--out", str(out), "--count", "2", "--overwrite",
                      "--workers", "1"]) == 0
    assert sorted(p.suffix for p in out.iterdir() if p.suffix in (".mat", ".pts")) == [".pts"] * 2
    assert sorted(os.listdir(tmp_path)) == ["cli", "m.png"]  # no temp or old folders left


def test_generation_speed_sanity():
    make_face(0, 0, SynthConfig(mode="3d"))  # template build, once per process
    start = time.perf_counter()
    for i in range(20):
        make_face(0, i, SynthConfig(mode="3d"))
    # About 0.1 s per image on this machine; a generous bound for a shared machine.
    assert time.perf_counter() - start < 20.0
