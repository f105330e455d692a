#!/usr/bin/env python
"""Write the documentation's pictures of rendered faces: a grid of renders and a strip
with their 2D labels (green: visible, red: hidden by the head itself).

Example: tools/synthetic_montage.py --out docs/images
"""
from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from insightface_align.fileio import atomic_write  # noqa: E402
from insightface_align.synthetic import SynthConfig, make_face  # noqa: E402


def _jpeg(path: str, img: np.ndarray) -> None:
    ok, enc = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 88])
    if not ok:
        raise ValueError(f"{path}: JPEG encoding failed")
    atomic_write(path, enc.tobytes())


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="docs/images", help="output folder (default docs/images)")
    p.add_argument("--seed", type=int, default=101, help="data set seed (default 101, the bundled set's)")
    p.add_argument("--rows", type=int, default=3, help="rows of 8 faces in the grid (default 3)")
    args = p.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    cfg = SynthConfig(mode="2d")
    faces = [make_face(args.seed, i, cfg) for i in range(8 * args.rows)]
    tiles = [cv2.resize(f.image, (192, 192), interpolation=cv2.INTER_AREA) for f in faces]
    grid = np.vstack([np.hstack(tiles[i:i + 8]) for i in range(0, len(tiles), 8)])
    _jpeg(os.path.join(args.out, "synthetic-faces.jpg"), grid)
    strip = []
    for f in faces[:8]:
        img = f.image.copy()
        for (x, y), vis in zip(f.points, f.visible):
            cv2.circle(img, (int(round(x * 4)), int(round(y * 4))), 5, (0, 230, 0) if vis else (0, 0, 255),
                       -1, cv2.LINE_AA, 2)
        strip.append(cv2.resize(img, (192, 192), interpolation=cv2.INTER_AREA))
    _jpeg(os.path.join(args.out, "synthetic-labels.jpg"), np.hstack(strip))
    print(f"wrote {args.out}/synthetic-faces.jpg and synthetic-labels.jpg")
    return 0


if __name__ == "__main__":
    sys.exit(main())
