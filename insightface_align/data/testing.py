"""Release-layout record files for tests and benchmarks, written byte by byte.

`write_release_rec` does not go through record.pack_record: it lays out the IRHeader
struct, the 136 float32 labels (y, x per point) and the JPEG itself, then writes them
with MXIndexedRecordIO.write_idx, which is what the release's packer produced.
"""
from __future__ import annotations

import os
import struct

import cv2
import mxnet as mx
import numpy as np


def template_points() -> np.ndarray:
    """A rough 68-point face shape (x, y) in a unit box, in the iBUG ordering."""
    t = np.linspace(0, 1, 17)
    jaw = np.stack([t, 0.45 + 0.55 * np.sin(np.pi * t) ** 0.6 * 1.0 - 0.45 * (1 - np.sin(np.pi * t))], 1)
    jaw[:, 1] = 0.35 + 0.65 * np.sin(np.pi * t) ** 0.7
    brow_l = np.stack([np.linspace(0.12, 0.42, 5), [0.22, 0.16, 0.14, 0.15, 0.18]], 1)
    brow_r = np.stack([np.linspace(0.58, 0.88, 5), [0.18, 0.15, 0.14, 0.16, 0.22]], 1)
    bridge = np.stack([np.full(4, 0.5), np.linspace(0.3, 0.55, 4)], 1)
    base = np.stack([np.linspace(0.4, 0.6, 5), [0.6, 0.62, 0.63, 0.62, 0.6]], 1)

    def eye(cx):
        a = np.deg2rad([180, 120, 60, 0, 300, 240])
        return np.stack([cx + 0.09 * np.cos(a), 0.32 - 0.04 * np.sin(a)], 1)

    a_out = np.deg2rad(np.linspace(180, 0, 7))
    lip_top = np.stack([0.5 + 0.17 * np.cos(a_out), 0.76 - 0.04 * np.sin(a_out)], 1)
    a_low = np.deg2rad(np.linspace(-36, -144, 5))
    lip_low = np.stack([0.5 + 0.17 * np.cos(a_low), 0.76 - 0.07 * np.sin(a_low)], 1)
    in_top = np.stack([np.linspace(0.38, 0.62, 5), [0.77, 0.76, 0.755, 0.76, 0.77]], 1)
    in_low = np.stack([np.linspace(0.56, 0.44, 3), [0.79, 0.8, 0.79]], 1)
    pts = np.concatenate([jaw, brow_l, brow_r, bridge, base, eye(0.3), eye(0.7), lip_top, lip_low,
                          in_top, in_low])
    assert pts.shape == (68, 2)
    return pts


def random_face(rng: np.random.Generator, size: int = 384, face: float = 128.0) -> tuple:
    """(BGR image, points (68, 2)) of a drawn face centred in a `size` record, box ~`face` px."""
    # A smooth background with mild blurred texture, closer to photo JPEG statistics than noise.
    yy, xx = np.mgrid[0:size, 0:size] / float(size)
    tint = rng.integers(20, 90, size=3)
    grad = (60 * (rng.uniform(-1, 1) * xx + rng.uniform(-1, 1) * yy))[..., None]
    texture = cv2.GaussianBlur(rng.normal(0, 12, size=(size, size)).astype(np.float32), (0, 0), 1.5)[..., None]
    img = np.clip(tint + grad + texture, 0, 255).astype(np.uint8)
    c = (size - 1) / 2.0
    pts = (template_points() - 0.5) * face * rng.uniform(0.9, 1.0)
    ang = np.deg2rad(rng.uniform(-15, 15))
    rot = np.array([[np.cos(ang), -np.sin(ang)], [np.sin(ang), np.cos(ang)]])
    pts = pts @ rot.T + c + rng.uniform(-4, 4, size=2)
    skin = tuple(int(v) for v in rng.integers(120, 230, size=3))
    cv2.ellipse(img, (int(c), int(c)), (int(face * 0.55), int(face * 0.62)), 0, 0, 360, skin, -1, cv2.LINE_AA)
    for p in pts:
        cv2.circle(img, (int(round(p[0])), int(round(p[1]))), 2, (30, 30, 30), -1, cv2.LINE_AA)
    return img, pts.astype(np.float32)


def release_record_bytes(record_id: int, jpeg: bytes, points_xy: np.ndarray) -> bytes:
    """IRHeader(flag=136, label=0, id, id2=0) + 136 float32 (y, x per point) + JPEG bytes."""
    label = np.asarray(points_xy, dtype=np.float32)[:, ::-1].reshape(-1)
    return struct.pack("IfQQ", label.size, 0.0, int(record_id), 0) + label.astype("<f4").tobytes() + jpeg


def write_release_rec(prefix: str, samples, quality: int = 95) -> tuple:
    """Write PREFIX.rec/.idx from (BGR image, points) pairs; returns the two paths."""
    rec, idx = prefix + ".rec", prefix + ".idx"
    tmp_rec, tmp_idx = rec + ".tmp", idx + ".tmp"
    writer = mx.recordio.MXIndexedRecordIO(tmp_idx, tmp_rec, "w")
    try:
        for i, (img, pts) in enumerate(samples):
            ok, enc = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, quality])
            if not ok:
                raise ValueError("JPEG encoding failed")
            writer.write_idx(i, release_record_bytes(i, enc.tobytes(), pts))
    finally:
        writer.close()
    os.replace(tmp_rec, rec)
    os.replace(tmp_idx, idx)
    return rec, idx
