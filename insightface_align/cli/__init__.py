"""The `insightface-align` command: one entry point, one subcommand per tool.

    insightface-align predict photo.jpg          # landmarks with the bundled model
    insightface-align train --recipe sdu-2d --data data/2d
    python -m insightface_align --help

Each subcommand is a module of this package with a `main(argv)`; `tools/NAME.py` in a
checkout are thin wrappers around the same functions.
"""
from __future__ import annotations

import importlib
import sys

# subcommand -> (module under insightface_align.cli, one-line summary)
COMMANDS = {
    "predict": ("predict", "landmarks for images or folders (bundled model by default)"),
    "pack": ("pack", "pack 300-W / Menpo / COFW / AFLW2000-3D / 300W-LP folders into RecordIO"),
    "synth": ("synth", "render a labelled synthetic face set (2D or 3D)"),
    "train": ("train", "train a recipe on packed records"),
    "test-nme": ("test_nme", "evaluate a checkpoint on packed test sets (NME, AUC, failure rate)"),
    "export": ("export", "fold BatchNorm, add CPU operators, Winograd, INT8 or ONNX for deployment"),
    "stats": ("model_stats", "parameters, size and latency of every recipe (Table 1 of the paper)"),
    "bench": ("bench", "side-by-side speed benchmarks (slow)"),
    "demo": ("demo", "synthetic data -> train -> evaluate -> export, end to end on a CPU"),
    "launch-dist": ("launch_dist", "start a local dist_sync training (scheduler, servers, workers)"),
    "build-ops": ("build_ops", "build or check the compiled CPU operator library"),
}


def _usage() -> str:
    width = max(map(len, COMMANDS))
    lines = ["usage: insightface-align COMMAND [options]   (insightface-align COMMAND --help)", "",
             "commands:"]
    lines += [f"  {name:<{width}}  {summary}" for name, (_, summary) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv:
        print(_usage(), file=sys.stderr)
        return 2
    if argv[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0
    if argv[0] in ("-V", "--version"):
        from insightface_align import __version__

        print("insightface-align", __version__)
        return 0
    name = argv[0]
    if name not in COMMANDS:
        print(f"error: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(f"insightface_align.cli.{COMMANDS[name][0]}")
    # argparse names the program after argv[0]: show the subcommand in usage lines.
    saved, sys.argv = sys.argv, [f"insightface-align {name}", *argv[1:]]
    try:
        return module.main(argv[1:])
    except KeyboardInterrupt:  # Ctrl-C: a tool that cleans up does so before this
        print(f"\ninsightface-align {name}: interrupted", file=sys.stderr)
        return 130
    finally:
        sys.argv = saved
