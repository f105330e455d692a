"""The release side of tools/fidelity.py: runs the original release's own code and saves
what it produced. Not part of the package, never imported by it.

Run by tools/fidelity.py with the working directory set to a scratch copy of the
release's alignment/heatmap folder (with config.py made from its sample_config.py, as
its README says), under a Python that has the release's dependencies.

Saves to OUT (.npz):
  val_data      (N, 3, 128, 128) float32  FaceSegIter(aug_level=0) input tensors
  val_points    (N, 68, 2) int            the argmax (x, y) of each validation target
  train_points  (N, 68, 2) int            training targets (64 px) with the augmentation at rest
  mirror_points (N, 68, 2) int            the same with force_mirror
  keys          (N,) int                  record keys, in order
  handler_points (M, 68, 2) float         Handler.get on each image and box, mapped back to the image
"""
import argparse
import ast
import json
import os
import sys
import types

import numpy as np


def _argmax_points(label: np.ndarray) -> np.ndarray:
    """(68, H, W) one-pixel targets -> (68, 2) integer (x, y) of each peak."""
    flat = label.reshape(label.shape[0], -1).argmax(axis=1)
    y, x = np.divmod(flat, label.shape[2])
    return np.stack([x, y], axis=1)


def iterator_outputs(rec: str) -> dict:
    import data as release_data  # the release's data.py (cwd)

    it = release_data.FaceSegIter(path_imgrec=rec, batch_size=1, aug_level=0)
    val_data, val_points = [], []
    for batch in it:
        val_data.append(batch.data[0].asnumpy()[0])
        val_points.append(_argmax_points(batch.label[0].asnumpy()[0]))

    # Training targets with the augmentation held at rest: no rotation, scale ratio 1, no flip.
    saved = {name: getattr(np.random, name) for name in ("randint", "randn", "rand")}
    np.random.randint, np.random.randn, np.random.rand = (lambda *a, **k: 0), (lambda *a, **k: 0.0), \
        (lambda *a, **k: 1.0)
    out = {"train_points": [], "mirror_points": [], "keys": []}
    try:
        for mirror in (False, True):
            it = release_data.FaceSegIter(path_imgrec=rec, batch_size=1, aug_level=1, force_mirror=mirror)
            for key in it.oseq:
                it.seq, it.cur = [key], 0
                image, label, annot = it.next_sample()
                found = it.get_data(image, label, annot)
                points = _argmax_points(found[1]) if found is not None else np.full((68, 2), -1)
                out["mirror_points" if mirror else "train_points"].append(points)
                if not mirror:
                    out["keys"].append(key)
    finally:
        for name, fn in saved.items():
            setattr(np.random, name, fn)
    return {"val_data": np.stack(val_data).astype(np.float32), "val_points": np.stack(val_points),
            "train_points": np.stack(out["train_points"]), "mirror_points": np.stack(out["mirror_points"]),
            "keys": np.asarray(out["keys"])}


def handler_points(prefix: str, epoch: int, jobs: list) -> np.ndarray:
    """The release's Handler class from test.py (its module code, which needs a GPU and its
    MTCNN models, is not run), with a detector that returns the given box."""
    import cv2

    source = open("test.py", encoding="utf-8").read()
    tree = ast.parse(source)
    keep = [node for node in tree.body if isinstance(node, (ast.Import, ast.ImportFrom, ast.ClassDef))]
    box_of = {}

    class FixedBoxDetector:
        def __init__(self, *args, **kwargs):
            pass

        def detect_face(self, img, det_type=0):
            x0, y0, x1, y1 = box_of["box"]
            return np.array([[x0, y0, x1, y1, 1.0]]), np.zeros((1, 10))

    sys.modules["mtcnn_detector"] = types.SimpleNamespace(MtcnnDetector=FixedBoxDetector)
    namespace = {"__name__": "release_test", "__file__": "test.py"}
    exec(compile(ast.Module(body=keep, type_ignores=[]), "test.py", "exec"), namespace)
    handler = namespace["Handler"](prefix, epoch, ctx_id=-1)
    out = []
    for path, box in jobs:
        box_of["box"] = box
        landmark, m = handler.get(cv2.imread(path))
        inverse = cv2.invertAffineTransform(m)
        out.append(landmark @ inverse[:, :2].T + inverse[:, 2])
    return np.stack(out)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rec", required=True)
    p.add_argument("--prefix", required=True)
    p.add_argument("--epoch", type=int, default=0)
    p.add_argument("--jobs", required=True, help="JSON list of [image path, [x0, y0, x1, y1]] for the Handler")
    p.add_argument("--out", required=True)
    args = p.parse_args()
    sys.path.insert(0, os.getcwd())  # the release's modules (data, img_helper, config)
    result = iterator_outputs(args.rec)
    with open(args.jobs, encoding="utf-8") as f:
        jobs = json.load(f)
    result["handler_points"] = handler_points(args.prefix, args.epoch, jobs)
    np.savez(args.out, **result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
