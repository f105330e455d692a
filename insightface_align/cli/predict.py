"""Predict 68 landmarks on images: draws points and boxes, writes JSON per image.

Examples:
  tools/predict.py photos/*.jpg --prefix deploy/sdu-2d --epoch 0 --out predictions/
  tools/predict.py photos/ --prefix runs/demo/model --epoch 1800 --all-faces --box 10,20,110,140
Folders are searched for images; globs are expanded; unreadable images are reported and skipped.
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import sys

import cv2
import numpy as np
from tqdm import tqdm

from ..checkpoint import atomic_write
from ..errors import AlignError
from ..metrics import DECODERS, DEFAULT_DECODER

IMAGE_EXT = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("images", nargs="+", help="image files, folders or glob patterns")
    p.add_argument("--prefix", default=None,
                   help="checkpoint prefix (default: the bundled 2D model shipped in the package)")
    p.add_argument("--epoch", type=int, default=0, help="checkpoint epoch/step (default 0)")
    p.add_argument("--out", required=True, help="output folder (annotated images + JSON)")
    p.add_argument("--ctx", default="cpu")
    p.add_argument("--box", default=None, help="x0,y0,x1,y1 face box to use for every image (skips detection)")
    p.add_argument("--all-faces", action="store_true", help="align every detected face, not only the largest")
    p.add_argument("--detector", choices=("hog", "haar"), default="hog",
                   help="face detector: dlib's HOG (default; falls back to haar without dlib) or "
                        "OpenCV's Haar cascade")
    p.add_argument("--decoder", choices=DECODERS, default=DEFAULT_DECODER)
    p.add_argument("--flip-tta", action="store_true")
    p.add_argument("--winograd", action="store_true",
                   help="CPU: the fastest fp32 graph (the --winograd export's: BN folded, Winograd, depthwise and "
                        "deconvolution operators; ~1.3x faster)")
    p.add_argument("--aligned", action="store_true", help="also write the 112x112 ArcFace-aligned crops")
    return p.parse_args(argv)


def expand(inputs) -> list:
    files = []
    for item in inputs:
        if os.path.isdir(item):
            for root, _, names in os.walk(item):
                files += [os.path.join(root, n) for n in sorted(names) if n.lower().endswith(IMAGE_EXT)]
        elif any(ch in item for ch in "*?["):
            files += sorted(glob.glob(item, recursive=True))
        else:
            files.append(item)
    return files


def draw(image, faces) -> np.ndarray:
    canvas = image.copy()
    scale = max(1, int(round(max(image.shape[:2]) / 400)))
    for face in faces:
        x0, y0, x1, y1 = (int(round(v)) for v in face.box)
        cv2.rectangle(canvas, (x0, y0), (x1, y1), (0, 200, 255), scale)
        for (x, y), c in zip(face.points, face.confidence):
            colour = (0, 255, 0) if c >= 0.2 else (0, 0, 255)
            cv2.circle(canvas, (int(round(x)), int(round(y))), scale + 1, colour, -1, cv2.LINE_AA)
    return canvas


def main(argv=None) -> int:
    args = parse_args(argv)
    from ..aligner import Aligner, arcface_align
    from ..detect import HaarDetector, default_detector
    from ..model import contexts_from_string

    try:
        detector = default_detector() if args.detector == "hog" else HaarDetector()
        aligner = Aligner(args.prefix, args.epoch, contexts_from_string(args.ctx), decoder=args.decoder,
                          flip_tta=args.flip_tta, winograd=args.winograd, detector=detector)
        box = tuple(float(v) for v in args.box.split(",")) if args.box else None
        if box is not None and len(box) != 4:
            raise AlignError(f"--box {args.box!r}: expected x0,y0,x1,y1")
    except (AlignError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    files = expand(args.images)
    os.makedirs(args.out, exist_ok=True)
    unreadable, no_face, done = [], [], 0
    for path in tqdm(files, desc="predict", unit="img", disable=not sys.stderr.isatty()):
        image = cv2.imread(path, cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
        if image is None:
            unreadable.append(path)
            continue
        if box is not None:
            faces = aligner.get_batch([image], [box])
        elif args.all_faces:
            faces = aligner.get_all(image)
        else:
            face = aligner.get(image)
            faces = [face] if face is not None else []
        if not faces:
            no_face.append(path)
        stem = os.path.splitext(os.path.basename(path))[0]
        record = {"image": os.path.abspath(path), "faces": [
            {"box": list(f.box), "points": f.points.round(3).tolist(), "confidence": f.confidence.round(4).tolist(),
             "five_points": f.five.round(3).tolist()} for f in faces]}
        atomic_write(os.path.join(args.out, stem + ".json"), json.dumps(record), "w")
        ok, png = cv2.imencode(".jpg", draw(image, faces))
        atomic_write(os.path.join(args.out, stem + "-landmarks.jpg"), png.tobytes())
        if args.aligned:
            for i, f in enumerate(faces):
                ok, enc = cv2.imencode(".png", arcface_align(image, f.points))
                atomic_write(os.path.join(args.out, f"{stem}-face{i}-112.png"), enc.tobytes())
        done += 1
    print(f"{done} image(s) written to {args.out}; {len(no_face)} without a detected face; "
          f"{len(unreadable)} unreadable")
    for path in unreadable:
        print(f"  unreadable: {path}")
    return 0 if done else 1


if __name__ == "__main__":
    sys.exit(main())
