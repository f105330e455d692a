"""Pack face-alignment datasets into the release's indexed RecordIO (NAME.rec/.idx/.lst).

One set:   pack_rec.py --format 300w --input DATA/ibug --output data/2d --name ibug
All sets:  pack_rec.py --auto 2d --input DATA --output data/2d   (see --help for folders)
"""
from __future__ import annotations

import argparse
import os
import sys


from insightface_align.datasets.layout import SETS, detect_sets, make_reader
from insightface_align.errors import DataError
from insightface_align.fileio import output_folder_problem
from insightface_align.geometry import CONVENTIONS, DEFAULT_CONVENTION
from insightface_align.pack import pack_dataset
from .common import HelpFormatter

FORMATS = ("300w", "menpo", "cofw", "aflw2000", "300wlp", "list")


def _layout_help() -> str:
    lines = ["--auto folder names below --input (case-insensitive):"]
    for dims, specs in SETS.items():
        for spec in specs:
            opt = f" [+ {', '.join(spec.optional)}]" if spec.optional else ""
            lines.append(f"  {dims}: {spec.name}.rec <- {', '.join(spec.folders)}{opt}")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, epilog=_layout_help(), formatter_class=HelpFormatter)
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--format", choices=FORMATS, help="pack one set of this format")
    mode.add_argument("--auto", choices=sorted(SETS), help="detect the standard sets below --input")
    parser.add_argument("--input", nargs="+", required=True,
                        help="data folder(s) (300w/menpo accept several), COFW/AFLW2000/300W_LP folder, or a list file")
    parser.add_argument("--output", required=True, help="output folder for NAME.rec/.idx/.lst")
    parser.add_argument("--name", help="output set name with --format (release names: train, ibug, "
                        "cofw_testset, 300W, AFLW2000-3D)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                        help="worker processes (default: all cores)")
    parser.add_argument("--quality", type=int, default=95, help="JPEG quality of the 384x384 crops")
    parser.add_argument("--cache", help="where COFW images extracted from the .mat go (default: OUTPUT/cache)")
    parser.add_argument("--convention", choices=CONVENTIONS, default=DEFAULT_CONVENTION,
                        help="where each face window's centre lands in its record: centred (pixel 191.5) or "
                             "release (pixel 192, box centre truncated, as the original release)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.format and not args.name:
        parser.error("--name is required with --format")
    if args.auto and len(args.input) != 1:
        parser.error("--auto takes one data folder as --input")
    if not 1 <= args.quality <= 100:
        parser.error("--quality must be in 1..100")
    problem = output_folder_problem(args.output, "--output")
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    cache = args.cache or os.path.join(args.output, "cache")
    try:
        if args.auto:
            sets = detect_sets(args.input[0], args.auto, cache)
            print("found sets: " + ", ".join(name for name, _ in sets))
        else:
            sets = [(args.name, make_reader(args.format, args.input, os.path.join(cache, args.name)))]
    except (DataError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    summaries, failed = [], []
    for name, reader in sets:
        try:
            summaries.append(pack_dataset(reader, args.output, name, workers=args.workers,
                                          quality=args.quality, progress=not args.no_progress,
                                          convention=args.convention))
        except (DataError, ValueError) as exc:
            failed.append(f"{name}: {exc}")
        except KeyboardInterrupt:  # Ctrl-C or SIGTERM: pack_dataset has already cleaned up
            print(f"\nerror: {os.path.join(args.output, name)}: interrupted; this set was not written "
                  "(an earlier set of that name is unchanged)", file=sys.stderr)
            return 130
    print()
    for summary in summaries:
        print(summary.report())
    for line in failed:
        print(f"error: {line}", file=sys.stderr)
    return 2 if failed else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("\ninterrupted: the set being packed was not written (no partial files left)", file=sys.stderr)
        sys.exit(130)
