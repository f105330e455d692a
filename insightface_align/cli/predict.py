"""Predict 68 landmarks on images, folders or globs (the bundled model unless --prefix).

Examples:
  insightface-align predict photo.jpg                         # -> predictions/photo.json, photo-landmarks.jpg
  insightface-align predict photos/ --out out/ --format csv   # out/predictions.csv; sub-folders mirrored
  insightface-align predict data/synth2d-raw/test --prefix runs/demo/deploy --epoch 0 --all-faces

Output names mirror each input folder's layout (photos/a/face.jpg -> OUT/a/face.json);
folders are walked in sorted order, each real folder once (symlink loops are safe).
Every run also writes OUT/predictions-info.json: the model, the coordinate convention,
the landmark scheme and the counts. Exit code: 0 when every image was read, 1 when some
could not be (they are listed), 2 for a usage error (nothing is written).
"""
from __future__ import annotations

import argparse
import csv
import glob
import io
import json
import os
import sys

import numpy as np
from tqdm import tqdm

from ..datasets.images import IMAGE_EXTENSIONS
from ..errors import AlignError
from ..fileio import atomic_write, output_folder_problem
from ..metrics import DECODERS, DEFAULT_DECODER
from .common import HelpFormatter, error

IMAGE_EXT = IMAGE_EXTENSIONS  # every still-image format the readers (and OpenCV) decode
FORMATS = ("json", "jsonl", "csv", "pts")
COORDINATES = "x, y in input-image pixels, 0-based pixel centres (the top-left pixel's centre is 0, 0)"
COORDINATES_PTS = "x, y 1-based as in the iBUG 300-W .pts files (the top-left pixel's centre is 1, 1)"
SCHEME = "68-point iBUG 300-W markup (0-16 jaw, 17-26 brows, 27-35 nose, 36-47 eyes, 48-67 mouth)"


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("images", nargs="+", help="image files, folders or glob patterns")
    p.add_argument("--out", default="predictions", help="output folder")
    p.add_argument("--format", choices=FORMATS, default="json",
                   help="json: OUT/NAME.json per image; jsonl: one line per image in OUT/predictions.jsonl; "
                        "csv: one row per face in OUT/predictions.csv; pts: OUT/NAME.pts per face (300-W, 1-based)")
    p.add_argument("--prefix", default=None,
                   help="checkpoint prefix (PREFIX-symbol.json); default: the bundled 2D model")
    p.add_argument("--epoch", type=int, default=0, help="checkpoint epoch/step")
    p.add_argument("--ctx", default="cpu", help="cpu, or a GPU id such as 0")
    p.add_argument("--box", default=None,
                   help="x0,y0,x1,y1: use this face box in every image instead of detecting faces")
    p.add_argument("--all-faces", action="store_true", help="align every detected face, not only the largest")
    p.add_argument("--detector", choices=("hog", "haar"), default="hog",
                   help="face detector: dlib's HOG (falls back to haar without dlib) or OpenCV's Haar cascade")
    p.add_argument("--decoder", choices=DECODERS, default=DEFAULT_DECODER, help="heatmap decoder")
    p.add_argument("--flip-tta", action=argparse.BooleanOptionalAction, default=True,
                   help="average with the prediction on the mirrored image (two network passes per face; "
                        "--no-flip-tta halves the time)")
    p.add_argument("--winograd", action="store_true",
                   help="CPU: the fastest fp32 graph (BN folded, Winograd, depthwise and deconvolution operators)")
    p.add_argument("--no-draw", action="store_true", help="do not write OUT/NAME-landmarks.jpg pictures")
    p.add_argument("--aligned", action="store_true", help="also write 112x112 ArcFace-aligned crops per face")
    return p.parse_args(argv)


def _walk_sorted(folder: str):
    """Image files below `folder` in sorted order, following symlinks but entering each real folder once."""
    seen = set()
    for root, dirs, names in os.walk(folder, followlinks=True):
        real = os.path.realpath(root)
        if real in seen:
            dirs[:] = []
            continue
        seen.add(real)
        # real folders before links to them, so outputs keep the real names where possible
        dirs.sort(key=lambda d: (os.path.islink(os.path.join(root, d)), d))
        for name in sorted(names):
            if name.lower().endswith(IMAGE_EXT):
                yield os.path.join(root, name)


def _glob_root(pattern: str) -> str:
    """The folder part of a glob before its first wildcard: output names are relative to it."""
    parts = pattern.split(os.sep)
    fixed = []
    for part in parts[:-1]:
        if any(ch in part for ch in "*?["):
            break
        fixed.append(part)
    return os.sep.join(fixed) or "."


def expand(inputs) -> list:
    """[(path, name)] for the inputs; `name` is the output name without extension.

    Raises AlignError (before anything runs) for a missing input, an input that holds no
    image, or two images that would write the same output."""
    found = []
    for item in inputs:
        if os.path.isdir(item):
            files = [(path, os.path.relpath(path, item)) for path in _walk_sorted(item)]
        elif any(ch in item for ch in "*?["):
            root = _glob_root(item)
            files = [(path, os.path.relpath(path, root)) for path in sorted(glob.glob(item, recursive=True))
                     if os.path.isfile(path)]
        elif os.path.isfile(item):
            files = [(item, os.path.basename(item))]
        else:
            raise AlignError(f"{item}: no such file or folder")
        if not files:
            raise AlignError(f"{item}: holds no image ({', '.join(IMAGE_EXT[:6])}, ...)")
        found += files
    stems = {}
    for path, rel in found:
        stems.setdefault(os.path.splitext(rel)[0], []).append(path)
    out, claimed, seen_real = [], {}, set()
    for path, rel in found:
        real = os.path.realpath(path)
        if real in seen_real:  # the same file reached twice (listed twice, or through a link)
            continue
        seen_real.add(real)
        stem = os.path.splitext(rel)[0]
        # photo.jpg and photo.png side by side keep their extensions in the output names
        name = stem if len(stems[stem]) == 1 else stem + "_" + os.path.splitext(rel)[1][1:]
        if name in claimed:
            raise AlignError(f"{path}: would write the same output as {claimed[name]}; "
                             "run them separately or pass their parent folder")
        claimed[name] = path
        out.append((path, name))
    return out


def _parse_box(text: str | None):
    if text is None:
        return None
    try:
        box = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise AlignError(f"--box {text!r}: expected four numbers x0,y0,x1,y1") from None
    if len(box) != 4 or not all(np.isfinite(box)) or box[2] <= box[0] or box[3] <= box[1]:
        raise AlignError(f"--box {text!r}: expected four finite numbers x0,y0,x1,y1 with x1 > x0 and y1 > y0")
    return box


def _check_out(out: str) -> None:
    problem = output_folder_problem(out)
    if problem:
        raise AlignError(problem)


def draw(image, faces) -> np.ndarray:
    import cv2

    canvas = image.copy()
    scale = max(1, int(round(max(image.shape[:2]) / 400)))
    for face in faces:
        x0, y0, x1, y1 = (int(round(v)) for v in face.box)
        cv2.rectangle(canvas, (x0, y0), (x1, y1), (0, 200, 255), scale)
        for (x, y), c in zip(face.points, face.confidence):
            colour = (0, 255, 0) if c >= 0.2 else (0, 0, 255)
            cv2.circle(canvas, (int(round(x)), int(round(y))), scale + 1, colour, -1, cv2.LINE_AA)
    return canvas


def face_record(face) -> dict:
    return {"box": [round(float(v), 2) for v in face.box], "points": face.points.round(3).tolist(),
            "confidence": face.confidence.round(4).tolist(), "five_points": face.five.round(3).tolist()}


def csv_header() -> list:
    return (["image", "face", "box_x0", "box_y0", "box_x1", "box_y1", "mean_confidence"]
            + [f"{axis}{i}" for i in range(68) for axis in "xy"] + [f"c{i}" for i in range(68)])


def csv_row(path: str, index: int, face) -> list:
    return ([path, index, *[round(float(v), 2) for v in face.box], round(float(face.confidence.mean()), 4)]
            + [round(float(v), 3) for v in face.points.reshape(-1)] + [round(float(c), 4) for c in face.confidence])


def main(argv=None) -> int:
    args = parse_args(argv)
    try:  # every argument is checked before the model loads
        box = _parse_box(args.box)
        files = expand(args.images)
        _check_out(args.out)
        from ..model import contexts_from_string

        ctx = contexts_from_string(args.ctx)
    except AlignError as exc:
        return error(str(exc))
    import cv2

    from ..aligner import Aligner, InputError, arcface_align, read_image
    from ..datasets.writers import format_pts
    from ..detect import HaarDetector, default_detector

    try:
        detector = default_detector() if args.detector == "hog" else HaarDetector()
        aligner = Aligner(args.prefix, args.epoch, ctx, decoder=args.decoder, flip_tta=args.flip_tta,
                          winograd=args.winograd, detector=detector)
    except AlignError as exc:
        return error(str(exc))
    if args.prefix is None:
        from ..models import bundled_prefix

        model_prefix, model_epoch = bundled_prefix()
        model = {"name": "bundled-2d", "prefix": model_prefix, "epoch": model_epoch}
    else:
        model = {"name": os.path.basename(args.prefix), "prefix": os.path.abspath(args.prefix), "epoch": args.epoch}
    os.makedirs(args.out, exist_ok=True)
    unreadable, no_face, outside = [], [], []
    lines, rows, n_faces = [], [], 0
    for path, name in tqdm(files, desc="predict", unit="img", disable=not sys.stderr.isatty()):
        try:
            image = read_image(path)
        except AlignError as exc:
            unreadable.append(str(exc))
            continue
        try:
            if box is not None:
                faces = aligner.get_batch([image], [box])
            elif args.all_faces:
                faces = aligner.get_all(image)
            else:
                faces = [f for f in aligner.get_batch([image]) if f is not None]
        except InputError as exc:  # the --box does not overlap this image
            outside.append(f"{path}: {exc}")
            continue
        if not faces:
            no_face.append(path)
        n_faces += len(faces)
        record = {"image": os.path.abspath(path), "width": image.shape[1], "height": image.shape[0],
                  "faces": [face_record(f) for f in faces]}
        target = os.path.join(args.out, name)
        if args.format == "json":
            atomic_write(target + ".json", json.dumps({"model": model, "coordinates": COORDINATES,
                                                       "landmarks": SCHEME, **record}), "w")
        elif args.format == "jsonl":
            lines.append(json.dumps(record))
        elif args.format == "csv":
            rows += [csv_row(os.path.abspath(path), i, f) for i, f in enumerate(faces)]
        else:
            for i, f in enumerate(faces):
                atomic_write(target + (f"_face{i}" if i else "") + ".pts", format_pts(f.points), "w")
        if not args.no_draw:
            ok, jpg = cv2.imencode(".jpg", draw(image, faces))
            atomic_write(target + "-landmarks.jpg", jpg.tobytes())
        if args.aligned:
            for i, f in enumerate(faces):
                ok, png = cv2.imencode(".png", arcface_align(image, f.points))
                atomic_write(f"{target}-face{i}-112.png", png.tobytes())
    if args.format == "jsonl":
        atomic_write(os.path.join(args.out, "predictions.jsonl"), "".join(line + "\n" for line in lines), "w")
    elif args.format == "csv":
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(csv_header())
        writer.writerows(rows)
        atomic_write(os.path.join(args.out, "predictions.csv"), buf.getvalue(), "w")
    done = len(files) - len(unreadable) - len(outside)
    info = {"model": model, "format": args.format,
            "coordinates": COORDINATES_PTS if args.format == "pts" else COORDINATES, "landmarks": SCHEME,
            "images": len(files), "predicted": done, "faces": n_faces, "without_face": len(no_face),
            "unreadable": unreadable, "box_outside": outside}
    atomic_write(os.path.join(args.out, "predictions-info.json"), json.dumps(info, indent=1), "w")
    print(f"{done} of {len(files)} image(s) predicted into {args.out} ({n_faces} face(s)); "
          f"{len(no_face)} without a detected face; {len(unreadable)} unreadable; {len(outside)} box outside")
    for message in unreadable + outside:
        print(f"  skipped: {message}", file=sys.stderr)
    return 0 if not unreadable and not outside else 1


if __name__ == "__main__":
    sys.exit(main())
