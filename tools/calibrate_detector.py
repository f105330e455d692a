#!/usr/bin/env python
"""Fit a detector's box calibration on rendered faces (detector box -> tight landmark box).

Example: tools/calibrate_detector.py --detector hog --count 400
Prints the fitted BoxCalibration, the detection rate, and the round-trip error (how far
the calibrated box's centre and side land from the landmark box's, in box sides).
"""
from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
from tqdm import tqdm  # noqa: E402

from insightface_align.detect import BoxCalibration, HaarDetector, HogDetector  # noqa: E402
from insightface_align.synthetic import SynthConfig, make_face  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--detector", choices=("hog", "haar"), default="hog", help="detector to calibrate (default hog)")
    p.add_argument("--count", type=int, default=400, help="rendered faces (default 400)")
    p.add_argument("--seed", type=int, default=77, help="synthetic data seed (default 77)")
    args = p.parse_args(argv)
    if args.count < 10:
        p.error("--count must be >= 10")
    det = HogDetector() if args.detector == "hog" else HaarDetector()
    cfg = SynthConfig(mode="2d", occlusion_prob=0.0)
    pairs = []
    for i in tqdm(range(args.count), desc="render+detect"):
        face = make_face(args.seed, i, cfg)
        lo, hi = face.points.min(axis=0), face.points.max(axis=0)
        centre = (lo + hi) / 2
        boxes = [b for b in det.raw(face.image)
                 if b[0] <= centre[0] <= b[2] and b[1] <= centre[1] <= b[3]]
        if boxes:
            best = max(boxes, key=lambda b: (b[2] - b[0]) * (b[3] - b[1]))
            pairs.append((best[:4], (lo[0], lo[1], hi[0], hi[1])))
    if len(pairs) < 10:
        print(f"error: only {len(pairs)} of {args.count} faces detected; cannot fit", file=sys.stderr)
        return 2
    d, t = map(np.array, zip(*pairs))
    cal = BoxCalibration.fit(d, t)
    mapped = np.array([cal(b) for b in d])
    side_t = np.maximum(t[:, 2] - t[:, 0], t[:, 3] - t[:, 1])
    centre_err = np.linalg.norm((mapped[:, :2] + mapped[:, 2:]) / 2 - (t[:, :2] + t[:, 2:]) / 2, axis=1) / side_t
    side_err = np.abs((mapped[:, 2] - mapped[:, 0]) / side_t - 1)
    print(f"detected {len(pairs)}/{args.count} ({100 * len(pairs) / args.count:.1f}%)")
    print(f"BoxCalibration(dx={cal.dx:.4f}, dy={cal.dy:.4f}, scale={cal.scale:.4f})")
    print(f"centre error / side: median {np.median(centre_err):.3f}, p90 {np.percentile(centre_err, 90):.3f}; "
          f"side error: median {np.median(side_err):.3f}, p90 {np.percentile(side_err, 90):.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
