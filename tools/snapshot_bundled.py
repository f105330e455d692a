#!/usr/bin/env python
"""Copy the newest checkpoint of the bundled model's training run into the repository.

  training/bundled-2d/   everything --resume needs (params, optimizer states, step json,
                         symbol, latest pointer) plus train_log.jsonl and curves.png;
                         older snapshots are removed so only the newest is in the tree
  insightface_align/models/bundled-2d/   the inference copy (symbol, params, config) as
                         epoch 0, which Aligner() loads by default; with --average N its
                         parameters are the mean of the run's newest N checkpoints
Both get the network's training graph on MXNet's stock operators as model-symbol.json
(what the trainer saves), so they load in plain MXNet whatever code trained them.

Restore a run from the snapshot with: cp -r training/bundled-2d runs/bundled-2d
Example: tools/snapshot_bundled.py --run runs/bundled-2d --average 3
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import shutil
import sys
from dataclasses import replace

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from insightface_align.checkpoint import (MODEL_KEYS, average_params, latest_step, save_params,  # noqa: E402
                                         saved_steps)
from insightface_align.errors import AlignError  # noqa: E402
from insightface_align.geometry import DEFAULT_CONVENTION  # noqa: E402
from insightface_align.cli.common import HelpFormatter  # noqa: E402
from insightface_align.fileio import atomic_write  # noqa: E402
from insightface_align.recipe import load_recipe  # noqa: E402
from insightface_align.symbols.config import NetConfig  # noqa: E402
from insightface_align.train import recipe_symbol  # noqa: E402


def stock_symbol_json(meta: dict) -> str:
    """The checkpoint's training graph (its recipe's losses, its stored network) on the
    release's stock operators, as the trainer saves it."""
    recipe = replace(load_recipe(meta["recipe"]), network=NetConfig.from_dict(meta["network"]))
    return recipe_symbol(recipe).tojson()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("--run", default="runs/bundled-2d", help="training run folder")
    p.add_argument("--training", default=os.path.join(ROOT, "training", "bundled-2d"),
                   help="resumable snapshot folder")
    p.add_argument("--package", default=os.path.join(ROOT, "insightface_align", "models", "bundled-2d"),
                   help="inference copy folder")
    p.add_argument("--training-only", action="store_true",
                   help="update only the resumable snapshot; the package keeps its model (promote a checkpoint "
                        "to the package only when it passes tests/test_bundled_model.py)")
    p.add_argument("--average", type=int, default=1, metavar="N",
                   help="package the mean of the parameters of the run's newest N checkpoints (weight "
                        "averaging; 1: the newest checkpoint as it is)")
    args = p.parse_args(argv)
    prefix = os.path.join(args.run, "model")
    step = latest_step(prefix)
    if step is None:
        print(f"error: {args.run}: no complete checkpoint (model-latest.json)", file=sys.stderr)
        return 2
    if args.average < 1:
        print(f"error: --average {args.average}: must be at least 1", file=sys.stderr)
        return 2
    averaged = [s for s in saved_steps(prefix) if s <= step][:args.average]
    if len(averaged) < args.average:
        print(f"error: --average {args.average}: {args.run} has {len(averaged)} checkpoints up to step {step}",
              file=sys.stderr)
        return 2
    package_params = None
    if not args.training_only and args.average > 1:
        try:
            package_params = average_params(prefix, averaged)
        except AlignError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    src = {ext: "%s-%04d.%s" % (prefix, step, ext) for ext in ("params", "states", "json")}
    for path in list(src.values()) + [prefix + "-symbol.json"]:
        if not os.path.exists(path):
            print(f"error: {path}: missing", file=sys.stderr)
            return 2
    os.makedirs(args.training, exist_ok=True)
    for old in glob.glob(os.path.join(args.training, "model-*")):
        if not old.endswith("-symbol.json"):
            os.remove(old)
    for ext, path in src.items():
        shutil.copyfile(path, os.path.join(args.training, os.path.basename(path)))
    meta = json.load(open(src["json"]))
    symbol = stock_symbol_json(meta)
    atomic_write(os.path.join(args.training, "model-symbol.json"), symbol, "w")
    for extra in ("train_log.jsonl", "curves.png"):
        if os.path.exists(os.path.join(args.run, extra)):
            shutil.copyfile(os.path.join(args.run, extra), os.path.join(args.training, extra))
    atomic_write(os.path.join(args.training, "model-latest.json"), json.dumps({"step": step}), "w")
    if args.training_only:
        print(f"step {step}: {args.training} updated (package unchanged)")
        return 0

    os.makedirs(args.package, exist_ok=True)
    pkg = os.path.join(args.package, "model")
    if package_params is None:
        shutil.copyfile(src["params"], pkg + "-0000.params")
    else:
        save_params(pkg + "-0000.params", *package_params)
    atomic_write(pkg + "-symbol.json", symbol, "w")
    keep = {k: meta[k] for k in MODEL_KEYS if k in meta}
    keep.setdefault("convention", DEFAULT_CONVENTION)  # checkpoints written before the key: centred
    keep["network"] = NetConfig.from_dict(meta["network"]).to_dict()  # architecture only
    keep["trained_steps"] = step
    if args.average > 1:
        keep["averaged_steps"] = sorted(averaged)
    atomic_write(pkg + "-0000.json", json.dumps(keep, indent=1), "w")
    what = f"the mean of steps {', '.join(map(str, sorted(averaged)))}" if args.average > 1 else f"step {step}"
    print(f"step {step}: {args.training} updated; {args.package} holds {what}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
