"""Evaluate a checkpoint on packed test sets (or raw dataset folders): NME, failure rate, AUC, CED.

Examples:
  tools/test_nme.py --prefix runs/sdu-2d/model --epoch 30000 --rec data/300w/ibug.rec data/300w/cofw_testset.rec
  tools/test_nme.py --prefix model/deploy --epoch 0 --dataset aflw2000:/data/AFLW2000 --out results/
Writes OUT/NAME-summary.json, NAME-per_image.csv, NAME-ced.csv, NAME-ced.png per test set.

Protocols: `paper` (default) crops and decodes under the model's own convention and
normalises by the paper's distance for each set; `release` reproduces the original
release's test_rec_nme.py (its crops, decoder, integer pixels and normalisers).
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import os
import sys
import tempfile

import numpy as np
from tqdm import tqdm

from ..errors import AlignError
from ..fileio import atomic_write, output_folder_problem
from ..metrics import (DECODERS, DEFAULT_DECODER, NORMALISERS, ced, default_normaliser, mean_shape_in_box,
                       per_image_nme, summarise)
from .common import HelpFormatter


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("--prefix", required=True, help="checkpoint prefix (PREFIX-symbol.json, PREFIX-EPOCH.params)")
    p.add_argument("--epoch", type=int, required=True, help="checkpoint number (step for our runs, 0 for exports)")
    src = p.add_argument_group("test sets (at least one)")
    src.add_argument("--rec", nargs="*", default=[], help="packed test sets (ours or the release's .rec)")
    src.add_argument("--dataset", nargs="*", default=[], metavar="FORMAT:PATH",
                     help="raw dataset folders read by the readers, e.g. 300w:/data/ibug aflw2000:/data/AFLW2000")
    p.add_argument("--ctx", default="cpu", help="cpu, or GPU ids such as 0 or 0,1")
    p.add_argument("--batch-size", type=int, default=None,
                   help="images per forward (default 8 on the CPU, where the full-width sdu-2d ran 13%% faster "
                        "per face than at 32; 32 on GPUs)")
    p.add_argument("--normaliser", choices=NORMALISERS, default=None,
                   help="default by set name: ibug/cofw eye_centre, 300W outer_corners, menpo box_diagonal, "
                        "AFLW2000 box_sqrt")
    p.add_argument("--protocol", choices=("paper", "release"), default="paper",
                   help="paper: the model's convention, the paper's normalisers; release: the original release's "
                        "test_rec_nme.py exactly (its decoder and normalisers; --decoder, --normaliser and "
                        "--flip-tta do not apply)")
    p.add_argument("--landmark-type", choices=("2d", "3d"), default=None,
                   help="--protocol release: 2d normalises by the eye-centre distance, 3d by the landmark-box "
                        "diagonal (default: 3d for AFLW2000 sets, else 2d)")
    p.add_argument("--decoder", choices=DECODERS, default=DEFAULT_DECODER, help="heatmap decoder")
    p.add_argument("--flip-tta", action="store_true", help="average with the prediction on the mirrored image")
    p.add_argument("--allow-bad-records", action="store_true",
                   help="exit 0 even when unreadable records were left out of a score (they are still listed)")
    p.add_argument("--winograd", action="store_true",
                   help="CPU: run the fastest fp32 graph (the --winograd export's; ~1.3x "
                        "faster, NME equal to 3 decimals on the synthetic set); default: the exact graph")
    p.add_argument("--threshold", type=float, default=0.10, help="failure / AUC threshold (fraction)")
    p.add_argument("--out", default=None, help="folder for the CSV/JSON/PNG outputs (default: no files)")
    args = p.parse_args(argv)
    if not args.rec and not args.dataset:
        p.error("give --rec and/or --dataset")
    if args.batch_size is not None and args.batch_size < 1:
        p.error("--batch-size must be at least 1")
    if args.protocol == "release":
        given = [flag for flag, on in (("--normaliser", args.normaliser), ("--flip-tta", args.flip_tta),
                                       ("--decoder", args.decoder != DEFAULT_DECODER)) if on]
        if given:
            p.error(f"{', '.join(given)} cannot be used with --protocol release (it fixes them as the release did)")
    elif args.landmark_type is not None:
        p.error("--landmark-type applies to --protocol release only")
    return args


def release_landmark_type(set_name: str) -> str:
    """The release script's --landmark-type for a set: 3d for AFLW2000-3D, else 2d."""
    return "3d" if default_normaliser(set_name) == "box_sqrt" else "2d"


def _set_name(path: str) -> str:
    return os.path.splitext(os.path.basename(os.path.normpath(path)))[0]


def _csv_text(header, rows) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buf.getvalue()


def write_reports(out_dir: str, name: str, result: dict, errors: np.ndarray, summary: dict, threshold: float):
    from ..plots import plot_ced

    os.makedirs(out_dir, exist_ok=True)
    base = os.path.join(out_dir, name)
    atomic_write(base + "-summary.json", json.dumps(summary, indent=1), "w")
    rows = [[int(i), "%.6f" % e] + ["%.3f" % v for v in p.reshape(-1)]
            for i, e, p in zip(result["record_id"], errors, result["pred"])]
    header = ["record_id", "nme"] + [f"{a}{k}" for k in range(68) for a in ("x", "y")]
    atomic_write(base + "-per_image.csv", _csv_text(header, rows), "w")
    xs, frac = ced(errors, threshold)
    atomic_write(base + "-ced.csv", _csv_text(["nme", "fraction"], [["%.5f" % x, "%.5f" % f] for x, f in zip(xs, frac)]),
                 "w")
    plot_ced({name: (xs, frac)}, threshold, base + "-ced.png", title=f"{name}: CED")


def evaluate_sets(args) -> list:
    from ..data.config import DataConfig
    from ..model import HeatmapModel, contexts_from_string

    contexts = contexts_from_string(args.ctx)
    batch_size = args.batch_size or (8 if all(c.device_type == "cpu" for c in contexts) else 32)
    model = HeatmapModel.load(args.prefix, args.epoch, contexts, batch_size, winograd=args.winograd)
    sets = [(_set_name(r), r) for r in args.rec]
    tmp = None
    if args.dataset:
        from ..datasets.layout import make_reader
        from ..pack import pack_dataset

        tmp = tempfile.TemporaryDirectory(prefix="test_nme-")
        for spec in args.dataset:
            fmt, _, path = spec.partition(":")
            if not path:
                raise AlignError(f"--dataset {spec!r}: expected FORMAT:PATH")
            name = _set_name(path)
            reader = make_reader(fmt, [path], cache_dir=os.path.join(tmp.name, "cache-" + name))
            pack_dataset(reader, tmp.name, name, progress=sys.stderr.isatty())
            sets.append((name, os.path.join(tmp.name, name + ".rec")))
    reports = []
    try:
        for name, rec in sets:
            if not os.path.exists(rec):
                raise AlignError(f"{rec}: test set not found")
            cfg = DataConfig(batch_size=batch_size, input_size=model.input_size,
                             heatmap_size=model.heatmap_size, train=False, shuffle=False, num_workers=0,
                             last_batch="pad", convention=model.convention)
            from ..data.recfile import RecordFile

            total = len(RecordFile(rec))
            with tqdm(total=total, desc=name, unit="img", disable=not sys.stderr.isatty()) as bar:
                from ..evaluate import predict_rec, release_protocol

                if args.protocol == "release":
                    kind = args.landmark_type or release_landmark_type(name)
                    result = release_protocol(model, rec, cfg, kind, progress=bar)
                else:
                    result = predict_rec(model, rec, cfg, args.decoder, args.flip_tta, progress=bar)
            if result["excluded"]:
                bad = result["excluded"]
                print(f"{rec}: {len(bad)} of {total} records unreadable, left out of the score:", file=sys.stderr)
                for index, reason in bad[:20]:
                    print(f"  record {index}: {reason}", file=sys.stderr)
                if len(bad) > 20:
                    print(f"  ... and {len(bad) - 20} more", file=sys.stderr)
            if len(result["record_id"]) == 0:
                raise AlignError(f"{rec}: no readable record to score")
            common = dict(set=name, rec=rec, protocol=args.protocol, records=total,
                          unreadable=[{"record": i, "reason": r} for i, r in result["excluded"]],
                          checkpoint=f"{args.prefix},{args.epoch}")
            if args.protocol == "release":
                errors, norm = result["nme"], result["normaliser"]
                summary = dict(summarise(errors, args.threshold), **common, normaliser=norm, landmark_type=kind,
                               convention="release", decoder="release", flip_tta=False,
                               skipped_outside_crop=result["skipped"], model_convention=model.convention)
            else:
                norm = args.normaliser or default_normaliser(name)
                errors = per_image_nme(result["pred"], result["gt"], norm)
                baseline = per_image_nme(mean_shape_in_box(result["gt"]), result["gt"], norm)
                summary = dict(summarise(errors, args.threshold), **common, normaliser=norm,
                               convention=model.convention, baseline_mean_shape=summarise(baseline, args.threshold),
                               decoder=args.decoder, flip_tta=args.flip_tta, widened=result["widened"])
            if args.out:
                write_reports(args.out, name, result, errors, summary, args.threshold)
            reports.append(summary)
    finally:
        if tmp is not None:
            tmp.cleanup()
    return reports


def main(argv=None) -> int:
    args = parse_args(argv)
    problem = output_folder_problem(args.out) if args.out else ""
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    try:
        reports = evaluate_sets(args)
    except AlignError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.protocol == "paper":
        print("(baseline: the average face shape stretched into each face's tight landmark box)")
    print(f"| set | protocol | model | images | normaliser | NME (%) | failure@{args.threshold:g} (%) "
          f"| AUC@{args.threshold:g} |")
    print("|---|---|---|---|---|---|---|---|")
    for r in reports:
        rows = [("model", r)] + ([("mean-shape baseline", r["baseline_mean_shape"])] if "baseline_mean_shape" in r else [])
        for label, m in rows:
            print(f"| {r['set']} | {r['protocol']} | {label} | {r['count']} | {r['normaliser']} | {100 * m['nme']:.3f} | "
                  f"{100 * m['failure_rate']:.2f} | {m['auc']:.4f} |")
    unreadable = sum(len(r["unreadable"]) for r in reports)
    for r in reports:
        outside = len(r.get("skipped_outside_crop", ()))
        print(f"{r['set']}: {r['count']} of {r['records']} faces scored"
              + (f", {len(r['unreadable'])} unreadable records left out" if r["unreadable"] else "")
              + (f", {outside} skipped as the release did (a point outside its widest crop)" if outside else ""))
    if unreadable and not args.allow_bad_records:
        print(f"error: {unreadable} unreadable record(s) left out of the scores (listed above); "
              "pass --allow-bad-records to accept scores without them", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
