"""One synthetic labelled face from (seed, index): the generator's single entry point.

The scene (scene.py: textured head, mouth, ears, neck and clothes, hair, hat, glasses;
random lights) is rendered by OpenGL (gl_render.py) with smooth per-pixel shading, a
depth test and shadows, composited over a background (clutter.py), optionally occluded,
then degraded as a camera would (blur, noise, colour casts, JPEG).

Labels: in 3D mode (AFLW2000-3D convention) the 68 points are the projections of the 3D
landmarks, visible or not. 2D mode (|yaw| <= 60 degrees) follows 300-W: the same points,
except the jaw, which is annotated where its outline is seen (`jaw_contour`). Per-point
self-occlusion (`visible`) and occluder flags (`occluded`) are returned alongside.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from . import clutter, scene
from .camera import Camera, fit_camera
from .gl_render import renderer
from .look import sample_look
from .morph import Morph, apply_morph, sample_morph
from .template import TemplateHead, landmark_t, landmark_xy, surface_point, template_head

MODES = ("2d", "3d")


@dataclass(frozen=True)
class SynthConfig:
    """How to generate: mode ('2d' semi-frontal, '3d' full profile), image size, extras."""

    mode: str = "2d"
    size: int = 256
    face_fraction: tuple = (0.34, 0.5)  # landmark box side / image side
    occlusion_prob: float = 0.5
    max_occlusion: float = 0.4
    debug_dots: bool = False  # paint known-colour dots at the landmarks, no degradations

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        if self.size < 64:
            raise ValueError(f"size must be >= 64, got {self.size}")

    @property
    def max_yaw(self) -> float:
        return 60.0 if self.mode == "2d" else 90.0


@dataclass
class SyntheticFace:
    """A rendered face and its labels (0-based pixel-centre coordinates)."""

    image: np.ndarray  # (size, size, 3) uint8 BGR
    points: np.ndarray  # (68, 2) projected landmarks, visible or not
    pt3d: np.ndarray  # (68, 3) x, y pixels; z = depth toward the camera in pixels
    visible: np.ndarray  # (68,) bool, False where the head itself hides the point
    occluded: np.ndarray  # (68,) bool, True where an occluder covers the point
    coverage: float  # fraction of the landmark hull covered by the occluder
    camera: Camera
    morph: Morph
    jpeg_quality: int
    extra: dict = field(default_factory=dict)

    @property
    def pose_para(self) -> np.ndarray:
        return self.camera.pose_para()


def sample_pose(rng: np.random.Generator, mode: str) -> tuple:
    """(pitch, yaw, roll) in degrees; 2D mode keeps |yaw| <= 60."""
    if mode == "2d":
        yaw = rng.uniform(-60, 60) if rng.random() < 0.3 else rng.normal(0, 20)
        yaw = float(np.clip(yaw, -60, 60))
        pitch = float(np.clip(rng.normal(0, 10), -25, 25))
        roll = float(np.clip(rng.normal(0, 10), -30, 30))
    else:
        yaw = rng.uniform(-90, 90) if rng.random() < 0.5 else rng.normal(0, 30)
        yaw = float(np.clip(yaw, -90, 90))
        pitch = float(np.clip(rng.normal(0, 12), -35, 35))
        roll = float(np.clip(rng.normal(0, 10), -35, 35))
    return pitch, yaw, roll


def face_rng(seed: int, index: int, mode: str) -> np.random.Generator:
    """The random stream of image `index` of a `mode` data set with `seed`.

    Worker-independent; the mode is mixed in so 2D and 3D sets with one seed differ.
    """
    return np.random.default_rng(np.random.SeedSequence([int(seed), int(index), MODES.index(mode)]))


# A landmark counts as visible unless a surface is this much nearer at its pixel.
VISIBILITY_TOLERANCE_MM = 3.0


def scene_eye_z(points: np.ndarray, cam: Camera) -> np.ndarray:
    """z of model points in the camera frame (negative in front of the camera)."""
    return cam.to_view(points)[:, 2] - cam.dist


def jaw_contour(head: TemplateHead, morph: Morph, cam: Camera, steps: int = 40) -> np.ndarray:
    """(17, 2) 300-W jaw points: where the jaw line is seen, not where the hidden 3D point is.

    Jaw point j lies on the horizontal surface curve (t from 0 to t_j at its height y_j).
    The annotated point is the curve's outermost projection on the side it belongs to: on a
    frontal face or the near side that is the 3D landmark itself; on the far side of a turned
    face it is the cheek's silhouette.
    """
    xy = landmark_xy()[:17]
    t_j = landmark_t(xy)
    frac = np.linspace(0.0, 1.0, steps)
    t = (t_j[:, None] * frac[None]).ravel()
    y = np.repeat(xy[:, 1], steps)
    pts, nose = surface_point(t, y)
    probe = TemplateHead(vertices=pts, triangles=head.triangles[:0], region=head.region[:0],
                         param=np.stack([t, y], axis=1), nose=nose, tri_param=head.tri_param[:0])
    uv, _ = cam.project(apply_morph(probe, morph))
    uv = uv.reshape(17, steps, 2)
    # The side's outward direction on screen: the projected model x axis at the face.
    ref, _ = cam.project(np.array([[0.0, -40.0, 80.0], [10.0, -40.0, 80.0]]))
    axis = (ref[1] - ref[0]) / max(np.linalg.norm(ref[1] - ref[0]), 1e-9)
    side = np.sign(xy[:, 0])
    out = uv[:, -1].copy()
    for j in np.flatnonzero(side != 0):
        k = int(np.argmax(uv[j] @ (axis * side[j])))
        out[j] = uv[j, k]
    return out


def _place_camera(rng, config, verts, pitch, yaw, roll) -> Camera:
    size = config.size
    dist = float(rng.uniform(350, 1500))
    side = float(rng.uniform(*config.face_fraction)) * size
    centre = size / 2.0 + np.clip(rng.normal(0, 0.05 * size, 2), -0.12 * size, 0.12 * size)
    cam = fit_camera(verts[:68], pitch, yaw, roll, dist, side, (centre[0], centre[1]))
    uv, _ = cam.project(verts[:68])
    # Keep every landmark (visible or not) inside the frame with a margin.
    margin = 0.04 * size
    lo, hi = uv.min(axis=0), uv.max(axis=0)
    shift = np.maximum(margin - lo, 0) - np.maximum(hi - (size - 1 - margin), 0)
    if np.any(shift):
        cam = Camera(pitch, yaw, roll, dist, cam.focal, cam.cx + shift[0], cam.cy + shift[1])
    return cam


def _expose(rng, rgb: np.ndarray, alpha: np.ndarray, body_mask: np.ndarray) -> np.ndarray:
    """Auto-exposure: scale the light so the person's mean brightness lands on a random
    target (dim to bright), as a camera would; highlights may still clip."""
    sel = body_mask & (alpha > 0.99)
    if not sel.any():
        return rgb
    mean = float(rgb[sel].mean())
    target = float(np.clip(rng.normal(0.5, 0.1), 0.22, 0.72))
    return rgb * np.float32(target / max(mean, 1e-3))


def _paint_debug_dots(image: np.ndarray, points: np.ndarray, depth: np.ndarray,
                      visible: np.ndarray) -> None:
    """Known-colour dots at the visible labels, far ones first so near ones stay whole."""
    for i in np.argsort(-depth, kind="stable"):
        if visible[i]:
            centre = (int(round(points[i, 0] * 16)), int(round(points[i, 1] * 16)))
            cv2.circle(image, centre, 21, debug_dot_colour(i), -1, cv2.LINE_8, 4)


def debug_dot_colour(index: int) -> tuple:
    """Debug dot colour of landmark `index`: magenta with the index in green (3 * index)."""
    return (255, 3 * int(index), 255)


def make_face(seed: int, index: int, config: SynthConfig, pose: tuple | None = None,
              morph: Morph | None = None) -> SyntheticFace:
    """Render face `index` of the data set `seed`; `pose`/`morph` override the sampled ones."""
    rng = face_rng(seed, index, config.mode)
    size = config.size
    head = template_head()
    sampled_morph = sample_morph(rng)
    morph = morph if morph is not None else sampled_morph
    sampled_pose = sample_pose(rng, config.mode)
    pitch, yaw, roll = pose if pose is not None else sampled_pose
    verts = apply_morph(head, morph)
    look = sample_look(rng)
    cam = _place_camera(rng, config, verts, pitch, yaw, roll)
    uv, depth = cam.project(verts[:68])
    lighting = scene.sample_lighting(rng)

    # The person, then what can hide parts of them.
    body = [scene.head_mesh(head, verts, cam, look, rng), scene.body_mesh(cam, look, rng)]
    body += scene.ear_meshes(verts, cam, look, rng) + scene.mouth_meshes(verts, cam, look, rng)
    extras = []
    if look.hairstyle in ("medium", "long"):
        extras.append(scene.long_hair_mesh(cam, look, rng))
    if look.hat:
        extras.append(scene.hat_mesh(head, verts, cam, look, rng))
    if look.glasses != "none" and not config.debug_dots:
        extras += scene.glasses_meshes(verts, cam, look, rng)
    gl = renderer()
    rgb, alpha, _ = gl.render(body + extras, lighting, cam.focal, cam.cx, cam.cy, size,
                              depth=False)
    self_depth = gl.depth_only(body, cam.focal, cam.cx, cam.cy, size)

    rgb = _expose(rng, rgb, alpha, body_mask=np.isfinite(self_depth))
    backdrop = clutter.background(rng, size).astype(np.float32) / 255.0
    image = rgb[..., ::-1] + (1.0 - alpha[..., None]) * backdrop
    image = np.clip(image * 255.0 + 0.5, 0, 255).astype(np.uint8)

    # Visibility: front-facing and not behind the head or body; occlusion: behind an extra.
    normals = body[0].normals[:68]
    eye_pos = body[0].positions[:68]
    view = -eye_pos / np.linalg.norm(eye_pos, axis=1, keepdims=True)
    facing = np.einsum("ij,ij->i", normals, view) > -0.15  # grazing points still count
    ij = np.clip(np.round(uv).astype(int), 0, size - 1)
    lm_depth = -scene_eye_z(verts[:68], cam)
    visible = facing & (self_depth[ij[:, 1], ij[:, 0]] >= lm_depth - VISIBILITY_TOLERANCE_MM)
    occluded = np.zeros(68, bool)
    if extras:
        worn_depth = gl.depth_only(extras, cam.focal, cam.cx, cam.cy, size)
        occluded = visible & (worn_depth[ij[:, 1], ij[:, 0]] < lm_depth - VISIBILITY_TOLERANCE_MM)
    points = uv.astype(np.float64)
    if config.mode == "2d":
        points[:17] = jaw_contour(head, morph, cam)
        moved = np.linalg.norm(points[:17] - uv[:17], axis=1) > 0.5
        visible[:17] |= moved  # a silhouette point is seen by construction
    coverage = 0.0
    occ_draw = rng.random()
    if not config.debug_dots:
        if occ_draw < config.occlusion_prob:
            mask, coverage = clutter.add_occluder(rng, image, points, config.max_occlusion,
                                                  look.skin[::-1] * 255.0)
            pij = np.clip(np.round(points).astype(int), 0, size - 1)
            occluded |= mask[pij[:, 1], pij[:, 0]] > 0
        image = clutter.degrade(rng, image)
        quality = int(rng.integers(40, 96))
    else:
        _paint_debug_dots(image, points, depth, visible)
        quality = 100
    z = cam.to_view(verts[:68])[:, 2] * cam.scale
    pt3d = np.concatenate([uv, z[:, None]], axis=1)
    return SyntheticFace(image=image, points=points, pt3d=pt3d, visible=visible,
                         occluded=occluded, coverage=float(coverage), camera=cam, morph=morph,
                         jpeg_quality=quality, extra={"body_depth": self_depth, "look": look})
