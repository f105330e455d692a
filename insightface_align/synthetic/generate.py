"""One synthetic labelled face from (seed, index): the generator's single entry point.

Labels follow the AFLW2000-3D convention in both modes: the 68 points are the 2D
projections of the 3D landmarks whether or not they are visible. 2D mode only samples
semi-frontal poses (|yaw| <= 45 degrees), where that matches the 300-W annotation style
closely; per-point self-occlusion (`visible`) and occluder coverage (`occluded`) are
returned alongside for later use.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from . import clutter
from .camera import Camera, fit_camera
from .morph import Morph, apply_morph, sample_morph
from .render import render_head, landmark_visibility, sample_look
from .template import template_head

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
        return 45.0 if self.mode == "2d" else 90.0


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
    """(pitch, yaw, roll) in degrees; 2D mode keeps |yaw| <= 45."""
    if mode == "2d":
        yaw = rng.uniform(-45, 45) if rng.random() < 0.35 else rng.normal(0, 20)
        yaw = float(np.clip(yaw, -45, 45))
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
    dist = float(rng.uniform(350, 1500))
    side = float(rng.uniform(*config.face_fraction)) * size
    centre = size / 2.0 + np.clip(rng.normal(0, 0.05 * size, 2), -0.12 * size, 0.12 * size)
    cam = fit_camera(verts[:68], pitch, yaw, roll, dist, side, (centre[0], centre[1]))
    uv, depth = cam.project(verts[:68])
    # Keep every landmark (visible or not) inside the frame with a margin.
    margin = 0.04 * size
    lo, hi = uv.min(axis=0), uv.max(axis=0)
    shift = np.maximum(margin - lo, 0) - np.maximum(hi - (size - 1 - margin), 0)
    if np.any(shift):
        cam = Camera(pitch, yaw, roll, dist, cam.focal, cam.cx + shift[0], cam.cy + shift[1])
        uv, depth = cam.project(verts[:68])

    image = clutter.background(rng, size)
    surface = render_head(image, head, verts, cam, look, debug_dots=config.debug_dots)
    visible = landmark_visibility(uv, depth, head, verts, cam, surface)
    occluded = np.zeros(68, bool)
    coverage = 0.0
    occ_draw = rng.random()
    if not config.debug_dots:
        if occ_draw < config.occlusion_prob:
            mask, coverage = clutter.add_occluder(rng, image, uv, config.max_occlusion, look.skin)
            ij = np.clip(np.round(uv).astype(int), 0, size - 1)
            occluded = mask[ij[:, 1], ij[:, 0]] > 0
        image = clutter.degrade(rng, image)
        quality = int(rng.integers(40, 96))
    else:
        quality = 100
    z = cam.to_view(verts[:68])[:, 2] * cam.scale
    pt3d = np.concatenate([uv, z[:, None]], axis=1)
    return SyntheticFace(image=image, points=uv.astype(np.float64), pt3d=pt3d, visible=visible,
                         occluded=occluded, coverage=float(coverage), camera=cam, morph=morph,
                         jpeg_quality=quality)
