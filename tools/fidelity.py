#!/usr/bin/env python3
"""Run the original release's data iterator, test_rec_nme.py and Handler beside this
project's equivalents on one packed set and one checkpoint, and print the differences.

Needs a checkout of the release (github.com/deepinsight/insightface; its
alignment/heatmap folder) and a Python with the release's dependencies (`make fidelity`
builds .venv-release for that). The release's code runs in a scratch folder, in its own
process (tools/fidelity_release.py); nothing of it is imported here.

The checkpoint is copied without its json, so this project loads it as it loads any
release checkpoint: network inferred from the graph, `release` convention.

Example:
  tools/fidelity.py --release ../insightface --release-python .venv-release/bin/python
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile

import numpy as np

from insightface_align.cli.common import HelpFormatter, write_generated
from insightface_align.errors import AlignError

RELEASE_FILES = ("data.py", "img_helper.py", "metric.py", "test_rec_nme.py", "test.py")
HERE = os.path.dirname(os.path.abspath(__file__))


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("--release", required=True, help="checkout of deepinsight/insightface")
    p.add_argument("--release-python", default=sys.executable, help="Python with the release's dependencies")
    p.add_argument("--prefix", default=None, help="checkpoint prefix (default: the bundled model)")
    p.add_argument("--epoch", type=int, default=0, help="checkpoint number")
    p.add_argument("--rec", default=None,
                   help="packed set (default: COUNT rendered faces packed under the release convention)")
    p.add_argument("--count", type=int, default=100, help="rendered faces when no --rec is given")
    p.add_argument("--markdown", default=None, help="write the table into this page between its markers")
    return p.parse_args(argv)


def release_folder(release: str, scratch: str) -> str:
    """A copy of the release's alignment/heatmap scripts with config.py made from its
    sample_config.py, as the release's README instructs."""
    src = os.path.join(release, "alignment", "heatmap")
    missing = [f for f in RELEASE_FILES + ("sample_config.py",) if not os.path.exists(os.path.join(src, f))]
    if missing:
        raise AlignError(f"{src}: not the release's alignment/heatmap folder (missing {', '.join(missing)})")
    dst = os.path.join(scratch, "release")
    os.makedirs(dst)
    for name in RELEASE_FILES:
        shutil.copy(os.path.join(src, name), dst)
    shutil.copy(os.path.join(src, "sample_config.py"), os.path.join(dst, "config.py"))
    return dst


def release_style_checkpoint(prefix: str, epoch: int, scratch: str) -> str:
    """Symbol and parameters only, as the release's checkpoints come."""
    out = os.path.join(scratch, "ckpt", "model")
    os.makedirs(os.path.dirname(out))
    shutil.copy(prefix + "-symbol.json", out + "-symbol.json")
    shutil.copy("%s-%04d.params" % (prefix, epoch), "%s-%04d.params" % (out, epoch))
    return out


def rendered_set(scratch: str, count: int) -> tuple:
    """(rec path, [(image path, landmark box)]) of `count` rendered faces packed under `release`."""
    from insightface_align.datasets.w300 import W300Reader
    from insightface_align.geometry import landmark_box
    from insightface_align.pack import pack_dataset
    from insightface_align.synthetic.dataset import generate_folder
    from insightface_align.synthetic.generate import SynthConfig

    raw = os.path.join(scratch, "raw")
    generate_folder(raw, count, seed=2018, config=SynthConfig(mode="2d"), workers=os.cpu_count() or 1)
    reader = W300Reader([raw])
    pack_dataset(reader, os.path.join(scratch, "set"), "fidelity", progress=False, convention="release")
    jobs = []
    for item in reader.items()[:8]:
        sample = reader.load(item)
        jobs.append((sample.image_path, list(landmark_box(sample.points))))
    return os.path.join(scratch, "set", "fidelity.rec"), jobs


def project_side(prefix: str, epoch: int, rec: str, jobs: list) -> dict:
    import cv2

    from insightface_align.aligner import Aligner
    from insightface_align.data.config import DataConfig
    from insightface_align.data.iterator import AlignIter
    from insightface_align.evaluate import release_protocol
    from insightface_align.heatmaps import target_points
    from insightface_align.data.flip import FLIP_PERMUTATION
    from insightface_align.model import HeatmapModel

    model = HeatmapModel.load(prefix, epoch, batch_size=8)
    cfg = DataConfig(batch_size=1, train=False, shuffle=False, num_workers=0, last_batch="pad",
                     convention=model.convention, heatmap_size=128, sigma=0.0)
    data, val, points = [], [], []
    with AlignIter(rec, cfg, copy=True) as it:
        for batch in it:
            if batch.flags[0] & 2:
                continue  # the release skips these faces
            data.append(batch.data[0].asnumpy()[0])
            label = batch.label[0].asnumpy()[0]
            y, x = np.divmod(label.reshape(68, -1).argmax(axis=1), 128)
            val.append(np.stack([x, y], axis=1))
            points.append(batch.points[0])
    points = np.stack(points)
    train = target_points(points, 128, 64, model.convention)
    mirrored = points[:, FLIP_PERMUTATION].copy()
    mirrored[..., 0] = 127.0 - mirrored[..., 0]
    mirror = target_points(mirrored, 128, 64, model.convention, np.ones(len(points), bool))
    protocol = release_protocol(model, rec, DataConfig(batch_size=8, train=False, shuffle=False, num_workers=0,
                                                       last_batch="pad"), "2d")
    aligner = Aligner(model=HeatmapModel.load(prefix, epoch), decoder="release", flip_tta=False,
                      detector=lambda image: [])
    aligned = [aligner.get(cv2.imread(path), bbox=box).points for path, box in jobs]
    return {"val_data": np.stack(data), "val_points": np.stack(val), "train_points": train.astype(int),
            "mirror_points": mirror.astype(int), "nme": float(np.mean(protocol["nme"])),
            "handler_points": np.stack(aligned), "convention": model.convention}


def release_nme(args, release_dir: str, prefix: str, rec: str) -> float:
    run = subprocess.run([args.release_python, "test_rec_nme.py", "--rec", rec, "--prefix", prefix, "--epoch",
                          str(args.epoch), "--gpu", "-1"], cwd=release_dir, capture_output=True, text=True)
    if run.returncode != 0:
        raise AlignError(f"the release's test_rec_nme.py failed:\n{run.stderr[-2000:]}")
    return float(run.stdout.strip().splitlines()[-1])


def compare(ours: dict, theirs: dict, release_score: float) -> list:
    """Rows (check, result) of the comparison."""
    rows = []
    same = ours["val_data"].shape == theirs["val_data"].shape
    diff = np.abs(ours["val_data"] - theirs["val_data"]).max() if same else float("nan")
    rows.append(("input tensors, validation crops (full decoding)",
                 f"{len(theirs['val_data'])} crops; " + ("bit-identical" if same and diff == 0 else
                                                          f"max difference {diff} grey levels")))
    for key, label in (("val_points", "validation targets (128 px)"), ("train_points", "training targets (64 px)"),
                       ("mirror_points", "mirrored training targets (64 px)")):
        a, b = ours[key], theirs[key]
        if a.shape != b.shape:
            rows.append((label, f"shapes differ: {a.shape} vs {b.shape}"))
            continue
        rows.append((label, f"{int(np.any(a != b, axis=-1).sum())} of {a.shape[0] * a.shape[1]} points differ"))
    rows.append(("test_rec_nme.py NME (%) vs test-nme --protocol release",
                 f"{100 * release_score:.4f} vs {100 * ours['nme']:.4f} "
                 f"(difference {100 * abs(release_score - ours['nme']):.4f})"))
    d = np.abs(ours["handler_points"] - theirs["handler_points"])
    if d.size:
            rows.append(("Handler.get vs Aligner(decoder='release'), points in the image",
                     f"{len(d)} faces; max difference {d.max():.4f} px, mean {d.mean():.4f} px"))
    return rows


def main(argv=None) -> int:
    args = parse_args(argv)
    from insightface_align.aligner import bundled_prefix

    if os.sep in args.release_python:  # the release's scripts run in another working directory
        args.release_python = os.path.abspath(args.release_python)
    prefix, epoch = (args.prefix, args.epoch) if args.prefix else bundled_prefix()
    args.epoch = epoch
    scratch = tempfile.mkdtemp(prefix="fidelity-")
    try:
        release_dir = release_folder(os.path.abspath(args.release), scratch)
        ckpt = release_style_checkpoint(os.path.abspath(prefix), epoch, scratch)
        if args.rec:
            rec, jobs = os.path.abspath(args.rec), []
        else:
            print(f"rendering and packing {args.count} faces (release convention) ...")
            rec, jobs = rendered_set(scratch, args.count)
        jobs_path = os.path.join(scratch, "jobs.json")
        with open(jobs_path, "w", encoding="utf-8") as f:
            json.dump(jobs, f)
        out = os.path.join(scratch, "release.npz")
        print("running the release's FaceSegIter and Handler ...")
        run = subprocess.run([args.release_python, os.path.join(HERE, "fidelity_release.py"), "--rec", rec,
                              "--prefix", ckpt, "--epoch", str(epoch), "--jobs", jobs_path, "--out", out],
                             cwd=release_dir, capture_output=True, text=True)
        if run.returncode != 0:
            raise AlignError(f"the release side failed:\n{run.stderr[-3000:]}")
        theirs = dict(np.load(out))
        print("running the release's test_rec_nme.py ...")
        score = release_nme(args, release_dir, ckpt, rec)
        print("running this project's equivalents ...")
        ours = project_side(ckpt, epoch, rec, jobs)
        if not jobs:
            ours["handler_points"] = theirs["handler_points"] = np.zeros((0, 68, 2))
    except AlignError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    rows = compare(ours, theirs, score)
    table = ("| check (convention: %s) | result |\n|---|---|\n" % ours["convention"]
             + "".join(f"| {check} | {result} |\n" for check, result in rows))
    print(table)
    if args.markdown:
        write_generated(args.markdown, table, "fidelity")
    return 0


if __name__ == "__main__":
    sys.exit(main())
