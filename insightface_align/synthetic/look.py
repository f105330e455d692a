"""What one synthetic person looks like: skin, eyes, hair, make-up, accessories, lights.

Everything here is sampled from the face's random stream and is plain data; skin.py turns
it into a texture and scene.py into meshes and lights. Colours are sRGB triples in 0..1.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Skin albedo from very light to very dark (sRGB, 0..1).
SKIN_TONES = np.array([[0.97, 0.86, 0.78], [0.93, 0.78, 0.68], [0.88, 0.70, 0.58],
                       [0.80, 0.60, 0.47], [0.70, 0.50, 0.38], [0.58, 0.40, 0.29],
                       [0.45, 0.30, 0.22], [0.33, 0.22, 0.16], [0.90, 0.75, 0.60],
                       [0.78, 0.62, 0.45]])
HAIR_COLOURS = np.array([[0.05, 0.04, 0.04], [0.12, 0.08, 0.06], [0.25, 0.16, 0.10],
                         [0.42, 0.28, 0.16], [0.65, 0.50, 0.32], [0.85, 0.72, 0.50],
                         [0.55, 0.25, 0.12], [0.62, 0.62, 0.62], [0.20, 0.20, 0.22],
                         [0.08, 0.06, 0.05]])
IRIS_COLOURS = np.array([[0.22, 0.12, 0.06], [0.35, 0.20, 0.08], [0.12, 0.07, 0.04],
                         [0.40, 0.35, 0.15], [0.30, 0.42, 0.30], [0.35, 0.50, 0.65],
                         [0.45, 0.55, 0.62], [0.50, 0.50, 0.50]])
MAKEUP_COLOURS = np.array([[0.60, 0.05, 0.10], [0.75, 0.25, 0.35], [0.45, 0.10, 0.20],
                           [0.70, 0.45, 0.40], [0.30, 0.20, 0.35], [0.25, 0.30, 0.45],
                           [0.50, 0.35, 0.25], [0.85, 0.55, 0.55]])
BEARDS = ("none", "stubble", "moustache", "goatee", "full")
HAIRSTYLES = ("bald", "short", "medium", "long", "bangs", "bun")


@dataclass(frozen=True)
class Look:
    """Appearance parameters of one face (colours sRGB 0..1, lengths in mm)."""

    skin: np.ndarray
    redness: float  # how much red blotching and flush
    blotch: float  # low-frequency skin tone variation
    pores: float  # high-frequency texture strength
    freckles: float  # density 0..1
    age: float  # 0 young .. 1 old (wrinkles, greying)
    lip: np.ndarray
    iris: np.ndarray
    pupil: float  # pupil radius (mm)
    gaze: tuple  # iris offset as fractions of the eye half-width / half-height
    brow: np.ndarray
    brow_density: float
    brow_width: float  # multiplier of the brow band's thickness
    hair: np.ndarray
    hairstyle: str
    hairline: float  # forehead hairline height (mm, eye height = 0)
    hair_volume: float  # scalp hair thickness (mm)
    beard: str
    beard_density: float
    eyeliner: float  # 0 none .. 1 heavy
    eyeshadow: float
    eyeshadow_colour: np.ndarray
    lipstick: float
    lipstick_colour: np.ndarray
    blush: float
    shine: float  # specular strength of the skin
    shininess: float  # Blinn-Phong exponent
    cloth: np.ndarray
    cloth_pattern: int  # 0 plain, 1 stripes, 2 noise, 3 checks
    glasses: str  # "none", "clear", "sun"
    glasses_colour: np.ndarray
    hat: bool
    hat_colour: np.ndarray
    seed: int  # texture noise seed


def _pick(rng, table):
    i, j = rng.integers(len(table), size=2)
    return np.clip(table[i] + rng.uniform(0, 1) * (table[j] - table[i]) * 0.5, 0, 1)


def sample_look(rng: np.random.Generator) -> Look:
    """A random person: tones and features drawn wide so a network sees every kind."""
    skin = _pick(rng, SKIN_TONES) * rng.uniform(0.93, 1.05, 3)
    age = float(rng.beta(1.5, 2.5))
    hair = HAIR_COLOURS[rng.integers(len(HAIR_COLOURS))] * rng.uniform(0.85, 1.15)
    if age > 0.65 and rng.random() < 0.5:
        hair = hair + (np.array([0.75, 0.75, 0.74]) - hair) * rng.uniform(0.3, 1.0)
    hair = np.clip(hair, 0, 1)
    style = HAIRSTYLES[int(rng.choice(len(HAIRSTYLES), p=[0.07, 0.33, 0.2, 0.22, 0.1, 0.08]))]
    male = rng.random() < 0.5
    beard = "none"
    if male and rng.random() < 0.55:
        beard = BEARDS[1 + int(rng.choice(4, p=[0.45, 0.15, 0.15, 0.25]))]
    makeup = (not male) and rng.random() < 0.55
    lip = np.clip(skin * np.array([0.92, 0.62, 0.62]) + rng.normal(0, 0.03, 3), 0, 1)
    brow = np.clip(hair * rng.uniform(0.5, 1.0) + skin * 0.1, 0, 1) if rng.random() < 0.85 else \
        np.clip(skin * rng.uniform(0.3, 0.6), 0, 1)
    glasses_draw = rng.random()
    glasses = "clear" if glasses_draw < 0.15 else ("sun" if glasses_draw < 0.2 else "none")
    return Look(
        skin=np.clip(skin, 0, 1),
        redness=float(rng.uniform(0, 1) ** 2),
        blotch=float(rng.uniform(0.02, 0.12)),
        pores=float(rng.uniform(0.008, 0.035)),
        freckles=float(rng.uniform(0, 1) ** 4 if rng.random() < 0.3 else 0.0),
        age=age,
        lip=lip,
        iris=np.clip(IRIS_COLOURS[rng.integers(len(IRIS_COLOURS))] * rng.uniform(0.8, 1.2), 0, 1),
        pupil=float(rng.uniform(1.4, 2.8)),
        gaze=(float(rng.normal(0, 0.25)), float(rng.normal(0, 0.15))),
        brow=brow,
        brow_density=float(rng.uniform(0.4, 1.0)),
        brow_width=float(rng.uniform(0.6, 1.4)),
        hair=hair,
        hairstyle=style,
        hairline=float(rng.uniform(42, 70) if style != "bald" else 200.0),
        hair_volume=float(rng.uniform(2, 14)),
        beard=beard,
        beard_density=float(rng.uniform(0.4, 1.0)),
        eyeliner=float(rng.uniform(0.3, 1.0) if makeup and rng.random() < 0.6 else 0.0),
        eyeshadow=float(rng.uniform(0.2, 0.8) if makeup and rng.random() < 0.5 else 0.0),
        eyeshadow_colour=MAKEUP_COLOURS[rng.integers(len(MAKEUP_COLOURS))],
        lipstick=float(rng.uniform(0.3, 1.0) if makeup and rng.random() < 0.6 else 0.0),
        lipstick_colour=MAKEUP_COLOURS[rng.integers(len(MAKEUP_COLOURS))],
        blush=float(rng.uniform(0.1, 0.5) if makeup and rng.random() < 0.5 else 0.0),
        shine=float(rng.uniform(0.05, 0.45)),
        shininess=float(rng.uniform(8, 40)),
        cloth=rng.uniform(0.05, 0.9, 3),
        cloth_pattern=int(rng.integers(4)),
        glasses=glasses,
        glasses_colour=rng.uniform(0.0, 0.6, 3) * (0.3 if rng.random() < 0.6 else 1.0),
        hat=bool(rng.random() < 0.06),
        hat_colour=rng.uniform(0.05, 0.9, 3),
        seed=int(rng.integers(2**31)),
    )
