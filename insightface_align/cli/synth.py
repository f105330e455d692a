"""Generate a synthetic labelled face data set (300W-style 2D or AFLW2000-3D-style 3D folder).

Example: tools/make_synthetic.py --mode 2d --out data/synth2d/train --count 2000 --seed 1 --workers 2
"""
from __future__ import annotations

import argparse
import os
import sys
import time


from tqdm import tqdm

from insightface_align.synthetic import SynthConfig, generate_folder, make_face, montage
from .common import HelpFormatter


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=HelpFormatter)
    p.add_argument("--mode", choices=("2d", "3d"), required=True,
                   help="2d: |yaw| <= 60, 300-W labels (jaw on its seen outline), NAME.jpg + NAME.pts; "
                        "3d: yaw up to +/-90, imageNNNNN.jpg + .mat (AFLW2000-3D)")
    p.add_argument("--out", required=True, help="output folder (must not exist unless --overwrite)")
    p.add_argument("--count", type=int, required=True, help="number of images")
    p.add_argument("--seed", type=int, default=0, help="data set seed (image i depends on seed and i only)")
    p.add_argument("--start", type=int, default=0,
                   help="index of the first image (default 0): chunks of one big set")
    p.add_argument("--workers", type=int, default=max(1, min(2, os.cpu_count() or 1)),
                   help="worker processes (default: min(2, CPUs))")
    p.add_argument("--size", type=int, default=256, help="image side in pixels (default 256)")
    p.add_argument("--occlusion-prob", type=float, default=0.5,
                   help="probability that a face gets an occluder (default 0.5)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out folder")
    p.add_argument("--montage", metavar="PATH",
                   help="also save a PNG grid of the first 16 faces with their landmarks")
    p.add_argument("--debug-dots", action="store_true",
                   help="paint magenta dots at the landmarks, no occluders/blur/noise, JPEG quality 100")
    args = p.parse_args(argv)
    if args.count < 1:
        p.error("--count must be >= 1")
    if args.start < 0:
        p.error("--start must be >= 0")
    if args.workers < 1:
        p.error("--workers must be >= 1")
    if args.size < 64:
        p.error("--size must be >= 64")
    if not 0.0 <= args.occlusion_prob <= 1.0:
        p.error("--occlusion-prob must be in [0, 1]")
    if os.path.exists(args.out) and not args.overwrite:
        p.error(f"{args.out} already exists (use --overwrite to replace it)")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    config = SynthConfig(mode=args.mode, size=args.size, occlusion_prob=args.occlusion_prob,
                         debug_dots=args.debug_dots)
    start = time.time()
    with tqdm(total=args.count, desc=f"synth {args.mode}", unit="img") as bar:
        records = generate_folder(args.out, args.count, args.seed, config, workers=args.workers,
                                  overwrite=args.overwrite, progress=bar.update, start=args.start)
    elapsed = time.time() - start
    occluded = sum(1 for r in records if r["coverage"] > 0)
    print(f"wrote {len(records)} {args.mode} faces to {args.out} in {elapsed:.1f}s "
          f"({len(records) / max(elapsed, 1e-9):.1f} img/s, {args.workers} workers, "
          f"{occluded} with occluders)")
    if args.montage:
        faces = [make_face(args.seed, i, config)
                 for i in range(args.start, args.start + min(16, args.count))]
        montage(faces, args.montage)
        print(f"montage: {args.montage}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
