"""Train a recipe on packed RecordIO data (MXNet Module, Nadam, the paper's loss).

Examples:
  tools/train.py --recipe sdu-2d --data data/300w --gpus 0,1
  tools/train.py --recipe demo --data data/synth2d --cpus 1 --max-steps 200
Distributed (one process per worker, started by tools/launch_dist.py): --kvstore dist_sync.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

import mxnet as mx

from insightface_align.symbols.backend import DCN_CHOICES, MEAN_CHOICES

from ..errors import AlignError
from ..ndfile import check_ndarray_file
from ..recipe import load_recipe
from .common import HelpFormatter


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("--recipe", default="sdu-2d", help="recipe name (recipes/NAME.yaml) or path")
    p.add_argument("--data", required=True, help="folder holding train.rec/.idx and test sets (NAME.rec)")
    p.add_argument("--train-rec", default=None, help="training .rec (default: DATA/train.rec)")
    p.add_argument("--val", nargs="*", default=None,
                   help="validation set names in DATA (default: the recipe's val_sets that exist)")
    p.add_argument("--out", default=None, help="run folder (default: runs/RECIPE)")
    dev = p.add_mutually_exclusive_group()
    dev.add_argument("--gpus", default=None, help="comma-separated GPU ids, e.g. 0,1")
    dev.add_argument("--cpus", type=int, default=None, help="number of CPU contexts (default 1)")
    p.add_argument("--kvstore", default=None, help="local | device | dist_sync (default: device on GPUs, else local)")
    p.add_argument("--resume", action="store_true",
                   help="continue from the run folder's newest intact checkpoint (damaged newer ones are "
                        "named and skipped)")
    p.add_argument("--reset-optimizer", action="store_true",
                   help="with --resume: start the optimizer afresh (when its .states file is missing or unwanted)")
    p.add_argument("--trust-pickled-states", action="store_true",
                   help="with --resume: accept an older, pickled .states file (pickle can run code: only files "
                        "you made yourself)")
    p.add_argument("--pretrained", default=None, help="PREFIX,EPOCH of a checkpoint to start from")
    p.add_argument("--freeze-bn", action="store_true", help="use BatchNorm running statistics (fine-tuning)")
    p.add_argument("--width", type=float, default=None, help="override the recipe's width multiplier")
    p.add_argument("--dcn-impl", choices=list(DCN_CHOICES), default=None,
                   help="deformable convolution of the training graph (default auto: native on GPU, fast on CPU "
                        "with the compiled operators, portable without); checkpoints are saved with native")
    p.add_argument("--mean-impl", choices=list(MEAN_CHOICES), default=None,
                   help="node means of the training graph (default auto: fused on CPU with the compiled "
                        "operators, standard otherwise); checkpoints are saved with standard")
    for name, typ in (("lr", float), ("max-steps", int), ("batch-per-device", int), ("checkpoint-every", int),
                      ("keep-checkpoints", int), ("val-every", int), ("log-every", int), ("seed", int),
                      ("num-workers", int)):
        p.add_argument("--" + name, type=typ, default=None, help="override train.%s" % name.replace("-", "_"))
    p.add_argument("--lr-steps", default=None, help="comma-separated steps, e.g. 16000,24000")
    p.add_argument("--no-progress", action="store_true", help="no tqdm bar (logs only)")
    return p.parse_args(argv)


def contexts(args) -> list:
    if args.gpus:
        return [mx.gpu(int(i)) for i in args.gpus.split(",") if i.strip()]
    return [mx.cpu(i) for i in range(args.cpus or 1)]


def main(argv=None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    args = parse_args(argv)
    from ..train import RunSpec, TrainConfig, Trainer

    try:
        net_over = {}
        if args.width is not None:
            net_over["multiplier"] = args.width
        recipe = load_recipe(args.recipe, **net_over)
        train = dict(recipe.train)
        for key in ("lr", "max_steps", "batch_per_device", "checkpoint_every", "keep_checkpoints", "val_every",
                    "log_every", "seed", "num_workers"):
            value = getattr(args, key)
            if value is not None:
                train[key] = value
        if args.lr_steps is not None:
            train["lr_steps"] = [int(s) for s in args.lr_steps.split(",") if s.strip()]
        cfg = TrainConfig.from_dict(train)
        pretrained = None
        if args.pretrained:
            prefix, _, epoch = args.pretrained.rpartition(",")
            if not prefix or not epoch.isdigit():
                raise AlignError(f"--pretrained {args.pretrained!r}: expected PREFIX,EPOCH "
                                 "(e.g. runs/sdu-2d/model,30000)")
            pretrained = (prefix, int(epoch))
            check_ndarray_file("%s-%04d.params" % pretrained)  # a missing or damaged file fails before any work
        data = Path(args.data)
        train_rec = args.train_rec or str(data / "train.rec")
        if not os.path.exists(train_rec):
            raise AlignError(f"{train_rec}: training records not found (pack them with tools/pack_rec.py)")
        names = args.val if args.val is not None else recipe.data.get("val_sets", [])
        val = {n: str(data / f"{n}.rec") for n in names if (data / f"{n}.rec").exists()}
        missing = [n for n in names if n not in val]
        if missing:
            logging.warning("validation sets not found in %s: %s", data, ", ".join(missing))
        ctx = contexts(args)
        kvstore = args.kvstore or ("device" if args.gpus else "local")
        spec = RunSpec(train_rec=train_rec, out_dir=args.out or f"runs/{recipe.name}", val_recs=val, contexts=ctx,
                       kvstore=kvstore, resume=args.resume, pretrained=pretrained, freeze_bn=args.freeze_bn,
                       dcn_impl=args.dcn_impl, mean_impl=args.mean_impl,
                       reset_optimizer=args.reset_optimizer, trust_pickled_states=args.trust_pickled_states,
                       progress=not args.no_progress and sys.stderr.isatty())
        result = Trainer(recipe, cfg, spec).run()
    except AlignError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"finished at step {result['step']}" + (" (stopped by signal)" if result["stopped"] else ""))
    for name, m in (result["val"] or {}).items():
        print(f"  {name}: NME {100 * m['nme']:.2f}% ({m['normaliser']}, {m['count']} images)")
    return 130 if result["stopped"] else 0


if __name__ == "__main__":
    sys.exit(main())
