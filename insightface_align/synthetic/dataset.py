"""Write a synthetic data set as a 300W-style (2D) or AFLW2000-3D-style (3D) folder.

The folder is built under `OUT.tmp-XXXX` and renamed to `OUT` only when complete, so a
crash never leaves a half-written data set under the final name. Image i depends only on
(seed, i), so the output is byte-identical for any number of workers.

2D: `synth_NNNNNN.jpg` + `synth_NNNNNN.pts` (68 points, 1-based as in 300-W).
3D: `imageNNNNN.jpg` + `imageNNNNN.mat`: `pt3d_68` 3x68 (x, y 1-based pixels as in the
released files, z = depth toward the camera in pixels), `Pose_Para` 1x7 (pitch, yaw,
roll in radians; tx, ty = 1-based pixel of the head centre; tz = camera distance in mm;
scale = pixels per mm at the head centre), plus `visible_68` and `occluded_68` (1x68 uint8).
Both: `synth_meta.jsonl`, one JSON line per image (pose in degrees, per-point
self-occlusion visibility, occluder flags and coverage).
"""
from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import sys
import tempfile
from dataclasses import asdict

import cv2
import numpy as np

from ..datasets.synth_meta import META_NAME
from ..datasets.writers import MAT_ORIGIN, atomic_write_bytes, write_aflw2000_mat, write_jpeg, write_pts
from ..fileio import directory_mode
from .generate import SynthConfig, SyntheticFace, make_face



def item_name(mode: str, index: int) -> str:
    """File stem of image `index` (AFLW2000-3D style `image00042`, else `synth_000042`)."""
    return f"image{index:05d}" if mode == "3d" else f"synth_{index:06d}"


def write_face(folder: str, name: str, face: SyntheticFace, mode: str) -> dict:
    """Write one face's image and label file; returns its metadata record."""
    write_jpeg(os.path.join(folder, name + ".jpg"), face.image, face.jpeg_quality)
    if mode == "3d":
        extra = {"visible_68": face.visible.astype(np.uint8)[None],
                 "occluded_68": face.occluded.astype(np.uint8)[None]}
        pose = face.pose_para.copy()
        pose[3:5] += MAT_ORIGIN  # tx, ty: the head centre's pixel, 1-based like pt3d_68
        write_aflw2000_mat(os.path.join(folder, name + ".mat"), face.pt3d.T, pose, extra)
    else:
        write_pts(os.path.join(folder, name + ".pts"), face.points)
    cam = face.camera
    return {"name": name, "pitch": round(cam.pitch, 4), "yaw": round(cam.yaw, 4),
            "roll": round(cam.roll, 4), "visible": face.visible.astype(int).tolist(),
            "occluded": face.occluded.astype(int).tolist(), "coverage": round(face.coverage, 5),
            "expression": np.round(face.morph.expression, 4).tolist()}


def _job(args):
    folder, seed, index, config = args
    face = make_face(seed, index, config)
    return write_face(folder, item_name(config.mode, index), face, config.mode)


def _init_worker():
    cv2.setNumThreads(1)
    # One rasteriser thread per worker process: the workers already fill the cores.
    os.environ.setdefault("LP_NUM_THREADS", "1")


def generate_folder(out_dir: str, count: int, seed: int, config: SynthConfig, workers: int = 1,
                    overwrite: bool = False, progress=None, start: int = 0) -> list:
    """Render faces start .. start + count - 1 into `out_dir` atomically; returns the
    metadata records. Face i is the same whichever folder or chunk it is rendered in, so a
    big set can be made as resumable chunks.

    `progress`, if given, is called once per finished image (e.g. a tqdm update).
    """
    out_dir = os.path.abspath(out_dir)
    if count < 1:
        raise ValueError(f"count must be >= 1, got {count}")
    if start < 0:
        raise ValueError(f"start must be >= 0, got {start}")
    if os.path.exists(out_dir) and not overwrite:
        raise FileExistsError(f"{out_dir}: already exists (pass overwrite=True / --overwrite)")
    parent = os.path.dirname(out_dir)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=os.path.basename(out_dir) + ".tmp-", dir=parent)
    try:
        os.chmod(tmp, directory_mode())  # mkdtemp makes it 0700; the set is renamed into place
        jobs = [(tmp, seed, i, config) for i in range(start, start + count)]
        records = []
        if workers <= 1:
            _init_worker()
            for job in jobs:
                records.append(_job(job))
                if progress:
                    progress()
        else:
            # spawn: a forked child would inherit the parent's OpenGL (llvmpipe) and MXNet
            # threads in whatever state they were, which can deadlock.
            ctx = multiprocessing.get_context("spawn")
            with ctx.Pool(workers, initializer=_init_worker) as pool:
                for rec in pool.imap(_job, jobs, chunksize=4):
                    records.append(rec)
                    if progress:
                        progress()
        meta = "".join(json.dumps(r, sort_keys=True) + "\n" for r in records)
        atomic_write_bytes(os.path.join(tmp, META_NAME), meta.encode("ascii"))
        _info = {"mode": config.mode, "count": count, "start": start, "seed": seed,
                 "config": asdict(config)}
        atomic_write_bytes(os.path.join(tmp, "synth_info.json"),
                           json.dumps(_info, sort_keys=True, indent=1).encode("ascii"))
        if os.path.exists(out_dir):
            old = tempfile.mkdtemp(prefix=os.path.basename(out_dir) + ".old-", dir=parent)
            os.replace(out_dir, os.path.join(old, "x"))
            os.replace(tmp, out_dir)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out_dir)
        return records
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def montage(faces: list, path: str, columns: int = 4, draw_points: bool = True) -> None:
    """Save a grid of faces as PNG; landmarks green where visible, red where self-occluded."""
    tiles = []
    for face in faces:
        img = face.image.copy()
        if draw_points:
            for (x, y), vis in zip(face.points, face.visible):
                cv2.circle(img, (int(round(x * 4)), int(round(y * 4))), 4,
                           (0, 220, 0) if vis else (0, 0, 255), -1, cv2.LINE_AA, 2)
        tiles.append(img)
    while len(tiles) % columns:
        tiles.append(np.zeros_like(tiles[0]))
    rows = [np.hstack(tiles[i:i + columns]) for i in range(0, len(tiles), columns)]
    ok, enc = cv2.imencode(".png", np.vstack(rows))
    if not ok:
        raise ValueError(f"{path}: PNG encoding failed")
    atomic_write_bytes(path, enc.tobytes())
