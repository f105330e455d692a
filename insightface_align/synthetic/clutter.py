"""Everything around the face: cluttered backgrounds, COFW-like occluders, image degradation."""
from __future__ import annotations

import functools
import os

import cv2
import numpy as np


# Photographs that scikit-image ships (no faces among them): real textures for backgrounds.
_PHOTOS = ("brick.png", "coffee.png", "chelsea.png", "rocket.jpg", "motorcycle_left.png",
           "motorcycle_right.png", "grass.png", "gravel.png", "hubble_deep_field.jpg", "coins.png",
           "clock_motion.png", "horse.png", "moon.png", "page.png", "text.png", "color.png",
           "retina.jpg", "ihc.png", "logo.png")


@functools.lru_cache(maxsize=1)
def _photos() -> tuple:
    """The shipped photographs as BGR uint8 arrays (those that fail to load are left out)."""
    import skimage.data  # noqa: PLC0415 - only data generation needs it
    out = []
    for name in _PHOTOS:
        img = cv2.imread(os.path.join(skimage.data.data_dir, name), cv2.IMREAD_COLOR)
        if img is not None and min(img.shape[:2]) >= 64:
            out.append(img)
    return tuple(out)


def _photo_crop(rng: np.random.Generator, size: int) -> np.ndarray:
    photos = _photos()
    if not photos:
        return _procedural(rng, size)
    img = photos[int(rng.integers(len(photos)))]
    h, w = img.shape[:2]
    side = int(rng.uniform(0.3, 1.0) * min(h, w))
    y0, x0 = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
    crop = cv2.resize(img[y0:y0 + side, x0:x0 + side], (size, size), interpolation=cv2.INTER_AREA)
    if rng.random() < 0.5:
        crop = crop[:, ::-1]
    gains = rng.uniform(0.6, 1.3, 3).astype(np.float32)
    return np.clip(crop.astype(np.float32) * gains, 0, 255).astype(np.uint8)


def _room(rng: np.random.Generator, size: int) -> np.ndarray:
    """Walls, a floor line, windows and furniture-like blocks: large flat areas with edges."""
    img = np.empty((size, size, 3), np.float32)
    img[:] = rng.uniform(30, 230, 3)
    for _ in range(int(rng.integers(2, 7))):
        x0, x1 = np.sort(rng.uniform(-0.2, 1.2, 2) * size)
        y0, y1 = np.sort(rng.uniform(-0.2, 1.2, 2) * size)
        colour = rng.uniform(0, 255, 3)
        sub = img[max(int(y0), 0):max(int(y1), 0), max(int(x0), 0):max(int(x1), 0)]
        ramp = np.linspace(rng.uniform(0.7, 1.0), rng.uniform(0.7, 1.3), sub.shape[0])[:, None, None]
        sub[:] = colour * ramp
    yy = np.linspace(-1, 1, size, dtype=np.float32)[:, None, None]
    img *= 1.0 + rng.uniform(-0.3, 0.3) * yy
    return np.clip(img, 0, 255).astype(np.uint8)


def background(rng: np.random.Generator, size: int) -> np.ndarray:
    """A photo crop, a room-like scene or procedural clutter, often defocused (uint8 BGR)."""
    r = rng.random()
    img = _photo_crop(rng, size) if r < 0.4 else (_room(rng, size) if r < 0.65 else _procedural(rng, size))
    if rng.random() < 0.6:
        img = cv2.GaussianBlur(img, (0, 0), rng.uniform(0.8, 6.0))
    return img


def _procedural(rng: np.random.Generator, size: int) -> np.ndarray:
    """A random gradient with blurred noise and a few shapes and lines (uint8 BGR)."""
    c0, c1 = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    ang = rng.uniform(0, 2 * np.pi)
    ramp = np.linspace(0.0, 1.0, size, dtype=np.float32)
    g = np.cos(ang) * ramp[None, :] + np.sin(ang) * ramp[:, None]
    g = (g - g.min()) / max(float(np.ptp(g)), 1e-6)
    img = c0.astype(np.float32) + g[..., None] * (c1 - c0).astype(np.float32)
    noise = rng.normal(0, 1, (size // 8 + 1, size // 8 + 1, 3)).astype(np.float32)
    noise = cv2.resize(noise, (size, size), interpolation=cv2.INTER_CUBIC)
    img += noise * np.float32(rng.uniform(5, 30))
    img = np.clip(img, 0, 255).astype(np.uint8)
    for _ in range(int(rng.integers(2, 12))):
        colour = tuple(float(v) for v in rng.uniform(0, 255, 3))
        kind = rng.integers(3)
        p = rng.uniform(-0.1, 1.1, 2) * size
        if kind == 0:
            q = p + rng.uniform(-0.5, 0.5, 2) * size
            cv2.rectangle(img, tuple(int(v) for v in p), tuple(int(v) for v in q), colour, -1)
        elif kind == 1:
            r = int(rng.uniform(0.03, 0.3) * size)
            cv2.circle(img, tuple(int(v) for v in p), r, colour, -1, cv2.LINE_AA)
        else:
            q = p + rng.uniform(-1, 1, 2) * size
            cv2.line(img, tuple(int(v) for v in p), tuple(int(v) for v in q), colour,
                     int(rng.integers(1, 8)), cv2.LINE_AA)
    k = int(rng.choice([0, 3, 5]))
    if k:
        img = cv2.GaussianBlur(img, (k, k), 0)
    return img


def face_mask(points_uv: np.ndarray, size: int) -> np.ndarray:
    """uint8 mask of the convex hull of the projected landmarks."""
    mask = np.zeros((size, size), np.uint8)
    hull = cv2.convexHull(np.round(points_uv * 16).astype(np.int32))
    cv2.fillConvexPoly(mask, hull, 1, cv2.LINE_8, 4)
    return mask


def _texture(rng: np.random.Generator, size: int, image: np.ndarray) -> np.ndarray:
    """A full-size texture to fill an occluder with: solid, stripes, noise or a patch."""
    kind = rng.integers(4)
    base = rng.uniform(0, 255, 3)
    if kind == 0:
        tex = np.tile(base, (size, size, 1)) + rng.normal(0, 4, (size, size, 1))
    elif kind == 1:
        other = rng.uniform(0, 255, 3)
        ang, period = rng.uniform(0, np.pi), rng.uniform(4, 20)
        yy, xx = np.mgrid[0:size, 0:size]
        s = (np.sin((np.cos(ang) * xx + np.sin(ang) * yy) * 2 * np.pi / period) > 0)[..., None]
        tex = np.where(s, base, other)
    elif kind == 2:
        n = rng.normal(0, 1, (size // 4 + 1, size // 4 + 1, 1)).astype(np.float32)
        n = cv2.resize(n, (size, size))[..., None]
        tex = base + 40 * n
    else:
        tex = np.roll(image, (int(rng.integers(size)), int(rng.integers(size))), axis=(0, 1))
        tex = cv2.flip(tex, int(rng.integers(-1, 2))).astype(np.float64)
    return np.clip(tex, 0, 255).astype(np.uint8)


def _shape_mask(rng: np.random.Generator, size: int, centre, radius: float) -> np.ndarray:
    mask = np.zeros((size, size), np.uint8)
    kind = rng.integers(4)
    cx, cy = centre
    if kind == 0:  # ellipse
        axes = (max(1, int(radius * rng.uniform(0.7, 1.4))), max(1, int(radius * rng.uniform(0.5, 1.0))))
        cv2.ellipse(mask, (int(cx), int(cy)), axes, float(rng.uniform(0, 180)), 0, 360, 1, -1)
    elif kind == 1:  # rotated rectangle (bar, mask, sunglasses-like)
        w, h = radius * rng.uniform(1.2, 2.6), radius * rng.uniform(0.35, 0.9)
        box = cv2.boxPoints(((cx, cy), (w, h), float(rng.uniform(-40, 40))))
        cv2.fillPoly(mask, [np.int32(box)], 1)
    elif kind == 2:  # irregular blob
        k = int(rng.integers(5, 10))
        a = np.sort(rng.uniform(0, 2 * np.pi, k))
        r = radius * rng.uniform(0.6, 1.3, k)
        pts = np.stack([cx + r * np.cos(a), cy + r * np.sin(a)], axis=1)
        cv2.fillPoly(mask, [np.int32(pts)], 1)
    else:  # hand-like: palm plus fingers
        cv2.ellipse(mask, (int(cx), int(cy)), (max(1, int(radius * 0.7)), max(1, int(radius * 0.55))),
                    0, 0, 360, 1, -1)
        ang = rng.uniform(0, 2 * np.pi)
        for f in range(4):
            a = ang + (f - 1.5) * 0.35
            p0 = (int(cx + 0.5 * radius * np.cos(a)), int(cy + 0.5 * radius * np.sin(a)))
            p1 = (int(cx + 1.3 * radius * np.cos(a)), int(cy + 1.3 * radius * np.sin(a)))
            cv2.line(mask, p0, p1, 1, max(1, int(radius * 0.22)))
    return mask


def add_occluder(rng: np.random.Generator, image: np.ndarray, points_uv: np.ndarray,
                 max_cover: float = 0.4, skin=None) -> tuple:
    """Paint one random occluder over the face in place.

    Returns (mask uint8, coverage) where coverage is the fraction of the landmark hull
    the occluder hides; it never exceeds `max_cover` (the shape shrinks until it fits).
    """
    size = image.shape[0]
    face = face_mask(points_uv, size)
    face_area = max(int(face.sum()), 1)
    target = rng.uniform(0.05, max_cover)
    ys, xs = np.nonzero(face)
    pick = int(rng.integers(len(xs))) if len(xs) else 0
    centre = (float(xs[pick]), float(ys[pick])) if len(xs) else (size / 2, size / 2)
    radius = np.sqrt(target * face_area / np.pi) * 1.2
    mask, cover = None, 0.0
    for _ in range(8):
        mask = _shape_mask(np.random.default_rng(rng.integers(2**31)), size, centre, radius)
        cover = float((mask & face).sum()) / face_area
        if cover <= max_cover:
            break
        radius *= 0.8 * np.sqrt(max_cover / cover)
    if cover > max_cover:
        return np.zeros_like(face), 0.0
    if skin is not None and rng.random() < 0.3:
        tex = np.clip(np.tile(np.asarray(skin) * rng.uniform(0.8, 1.1), (size, size, 1))
                      + rng.normal(0, 5, (size, size, 1)), 0, 255).astype(np.uint8)
    else:
        tex = _texture(rng, size, image)
    soft = cv2.GaussianBlur(mask.astype(np.float32), (3, 3), 0)[..., None]
    image[:] = np.clip(image * (1 - soft) + tex * soft, 0, 255).astype(np.uint8)
    return mask, cover


def degrade(rng: np.random.Generator, image: np.ndarray) -> np.ndarray:
    """Colour/gamma jitter, defocus or motion blur and sensor noise (uint8 in, uint8 out)."""
    gamma = rng.uniform(0.75, 1.3)
    lut = np.clip(255.0 * (np.arange(256) / 255.0) ** gamma, 0, 255).astype(np.uint8)
    img = cv2.LUT(image, lut).astype(np.float32) * rng.uniform(0.85, 1.15, 3).astype(np.float32)
    r = rng.random()
    if r < 0.45:
        img = cv2.GaussianBlur(img, (0, 0), rng.uniform(0.4, 1.6))
    elif r < 0.6:
        k = int(rng.integers(3, 9))
        kernel = np.zeros((k, k), np.float32)
        kernel[k // 2] = 1.0 / k
        rot = cv2.getRotationMatrix2D(((k - 1) / 2, (k - 1) / 2), float(rng.uniform(0, 180)), 1.0)
        kernel = cv2.warpAffine(kernel, rot, (k, k))
        kernel /= max(float(kernel.sum()), 1e-6)
        img = cv2.filter2D(img, -1, kernel)
    else:
        img = cv2.GaussianBlur(img, (0, 0), 0.5)
    img += np.float32(rng.uniform(0, 5)) * rng.standard_normal(img.shape, dtype=np.float32)
    return np.clip(img, 0, 255).astype(np.uint8)
