"""Benchmarks that need side-by-side measurement (the CPU is shared, so only ratios travel).

    python tools/bench.py dcn                 # paper model: native DCN vs fast DCN vs no DCN
    python tools/bench.py dcn --json out.json --repeats 3 --batch 8
    python tools/bench.py train               # sdu-2d step: data iterator vs a fixed batch
    python tools/bench.py infer               # latency/throughput: native, fast, folded, Winograd, INT8, hourglass
                                              # (and a 4-stack FAN in .venv-fan: make fan-gauge)
    python tools/bench.py dcn --markdown docs/benchmarks.md   # also write the table into the page

--markdown PAGE writes the command's table, with a line naming the command line, the date and
the machine, between the page's `<!-- begin: TAG -->` and `<!-- end: TAG -->` markers (TAG:
`insightface-align bench dcn`, `insightface-align bench dcn --mean-impl standard`,
`insightface-align bench train`, `insightface-align bench infer`); the rest of the page is kept.

`dcn` times, for the paper's model (cab / sat3 / depth 3 / 2 stacks / dcn 3, width 1.0),
a training step (forward + backward + SGD update of an MSE loss on every stack's
heatmaps) at --batch and inference at --infer-batch, for dcn_impl native, fast and
portable and for the same network without DCN (dcn 0, the floor), all with the same
node means (--mean-impl). Offset convs get fractional biases, so every bilinear sample
costs what it costs in a trained model. Variants run round-robin on the same inputs
so load from other processes hits them alike (training modules are bound one at a
time); medians are reported with their ratio to the floor.
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import time
from .common import HelpFormatter, error

# MXNet reads OMP_NUM_THREADS once, when it loads. Left unset it ran one thread on this 2-core
# machine while the FAN gauge took both (docs/benchmarks.md): default to one per core, as
# `make bench` sets it, so every variant and the gauge run with the same count.
os.environ.setdefault("OMP_NUM_THREADS", str(os.cpu_count() or 1))

import mxnet as mx
import numpy as np
from tqdm import tqdm

from insightface_align.fileio import atomic_write
from insightface_align.symbols.backend import AUTO, MEAN_CHOICES, Backend, choose
from insightface_align.symbols.config import NetConfig
from insightface_align.symbols.network import build_heatmaps, get_symbol

VARIANTS = ("none", "native", "fast", "portable")
MARKDOWN_HELP = ("also write the table into this markdown page, between its generated-table markers "
                 "(see the description above); the rest of the page is kept")


def paper_config(variant: str, multiplier: float) -> NetConfig:
    """The paper's model; variant 'none' drops the deformable convs (dcn=0)."""
    return NetConfig(block="cab", topology="sat3", depth=3, stacks=2, dcn=0 if variant == "none" else 3,
                     multiplier=multiplier)


def variant_backend(variant: str, mean_impl: str = AUTO) -> Backend:
    """The operators of a variant: its deformable convolution, the node means asked for."""
    return choose(None, "native" if variant == "none" else variant, mean_impl)


def trained_like_offsets(mod: mx.mod.Module, seed: int) -> None:
    """Give every offset conv a bias of fractional shifts in (-1.5, 1.5) px.

    Zero-initialised offset convs put every sample on a pixel centre, where the fast
    blend skips three of the four bilinear corners: timings would flatter it against a
    trained model. With these biases every sample is fractional, as after training.
    """
    args, aux = mod.get_params()
    rng = np.random.RandomState(seed)
    changed = False
    for name, value in args.items():
        if name.endswith("_offset_bias"):
            args[name] = mx.nd.array(rng.uniform(-1.5, 1.5, value.shape))
            changed = True
    if changed:
        mod.set_params(args, aux)


def train_module(cfg: NetConfig, backend: Backend, batch: int, seed: int) -> mx.mod.Module:
    """Bound module whose loss is the mean squared error of every stack's heatmaps."""
    heatmaps = build_heatmaps(cfg, backend=backend)
    label = mx.sym.Variable("label")
    loss = mx.sym.add_n(*[mx.sym.mean(mx.sym.square(h - label)) for h in heatmaps])
    sym = mx.sym.MakeLoss(loss, name="loss")
    mod = mx.mod.Module(sym, data_names=["data"], label_names=["label"], context=mx.cpu())
    size = cfg.heatmap_size
    mod.bind(data_shapes=[("data", (batch, 3, cfg.input_size, cfg.input_size))],
             label_shapes=[("label", (batch, cfg.num_classes, size, size))])
    mx.random.seed(seed)
    mod.init_params(mx.init.Xavier(rnd_type="gaussian", factor_type="in", magnitude=2))
    trained_like_offsets(mod, seed)
    mod.init_optimizer(optimizer="sgd", optimizer_params={"learning_rate": 1e-6, "momentum": 0.9})
    return mod


def infer_module(cfg: NetConfig, backend: Backend, batch: int, seed: int) -> mx.mod.Module:
    mod = mx.mod.Module(get_symbol(cfg, backend=backend), data_names=["data"], label_names=None, context=mx.cpu())
    mod.bind(data_shapes=[("data", (batch, 3, cfg.input_size, cfg.input_size))], for_training=False)
    mx.random.seed(seed)
    mod.init_params(mx.init.Xavier(rnd_type="gaussian", factor_type="in", magnitude=2))
    trained_like_offsets(mod, seed)
    return mod


def _sync(mod: mx.mod.Module) -> None:
    for out in mod.get_outputs():
        out.wait_to_read()
    mx.nd.waitall()


def time_train_step(mod, batch) -> float:
    start = time.perf_counter()
    mod.forward_backward(batch)
    mod.update()
    _sync(mod)
    return time.perf_counter() - start


def time_inference(mod, batch) -> float:
    start = time.perf_counter()
    mod.forward(batch, is_train=False)
    _sync(mod)
    return time.perf_counter() - start


def bench_dcn(args) -> dict:
    rng = np.random.RandomState(0)
    probe = paper_config("none", args.width)
    size, side = probe.heatmap_size, probe.input_size
    train_batch = mx.io.DataBatch(
        data=[mx.nd.array(rng.uniform(0, 255, (args.batch, 3, side, side)))],
        label=[mx.nd.array(rng.uniform(0, 1, (args.batch, probe.num_classes, size, size)))])
    infer_batch = mx.io.DataBatch(data=[mx.nd.array(rng.uniform(0, 255, (args.infer_batch, 3, side, side)))])
    variants = [v for v in VARIANTS if v in args.variants]
    results = {v: {"train": [], "infer": []} for v in variants}

    # Inference first (small modules, all bound at once), round-robin after one warm-up.
    infer_mods = {v: infer_module(paper_config(v, args.width), variant_backend(v, args.mean_impl), args.infer_batch,
                                  args.seed)
                  for v in variants}
    for v in variants:
        time_inference(infer_mods[v], infer_batch)
    for _ in tqdm(range(args.infer_repeats), desc="inference rounds", disable=args.quiet):
        for v in variants:
            results[v]["infer"].append(time_inference(infer_mods[v], infer_batch))
    del infer_mods

    if not args.skip_train:
        # One bound training module at a time (three at batch 8 need > 24 GB): each round
        # binds, warms up and times every variant in turn, then frees it.
        for _ in tqdm(range(args.repeats), desc="training rounds", disable=args.quiet):
            for v in variants:
                mod = train_module(paper_config(v, args.width), variant_backend(v, args.mean_impl), args.batch,
                                   args.seed)
                time_train_step(mod, train_batch)
                results[v]["train"].append(time_train_step(mod, train_batch))
                del mod
                gc.collect()

    summary = {"config": {"model": "cab/sat3/depth3/stacks2/dcn3", "width": args.width, "batch": args.batch,
                          "mean_impl": args.mean_impl, "offsets": "fractional (offset biases in (-1.5, 1.5))",
                          "infer_batch": args.infer_batch, "repeats": args.repeats,
                          "infer_repeats": args.infer_repeats,
                          "omp_num_threads": os.environ.get("OMP_NUM_THREADS")},
               "variants": {}}
    for v in variants:
        row = {}
        for key in ("train", "infer"):
            if results[v][key]:
                row[key + "_seconds"] = float(np.median(results[v][key]))
                row[key + "_all"] = [round(t, 4) for t in results[v][key]]
        summary["variants"][v] = row
    floor = summary["variants"].get("none", {})
    for v, row in summary["variants"].items():
        for key in ("train", "infer"):
            if key + "_seconds" in row and key + "_seconds" in floor:
                row[key + "_ratio"] = row[key + "_seconds"] / floor[key + "_seconds"]
    return summary


def markdown_table(summary: dict) -> str:
    """The table of docs/benchmarks.md (insightface_align.benchmarks.dcn_markdown)."""
    from insightface_align.benchmarks import dcn_markdown

    return dcn_markdown(summary)


def markdown_tag(args) -> str:
    """The markers of a command's table in a --markdown page: one table per command, and
    for `dcn` one per --mean-impl (the page has the CPU defaults' table and the standard means'),
    for `infer` one per width."""
    if args.command == "dcn" and args.mean_impl != AUTO:
        return f"insightface-align bench dcn --mean-impl {args.mean_impl}"
    if args.command == "infer" and getattr(args, "width", 1.0) != 1.0:  # e.g. the bundled model's width
        return f"insightface-align bench infer --width {args.width:g}"
    return f"insightface-align bench {args.command}"


def _write_json(path: str, payload: dict) -> None:
    atomic_write(path, json.dumps(payload, indent=2), "w")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    dcn = sub.add_parser("dcn", formatter_class=HelpFormatter, help="paper model: training step and inference with native / fast / portable / "
                                      "no DCN")
    dcn.add_argument("--repeats", type=int, default=2,
                     help="training rounds; each binds every variant, warms up and times one step "
                          "(a native step takes ~40-70 s)")
    dcn.add_argument("--infer-repeats", type=int, default=10, help="timed inference rounds per variant")
    dcn.add_argument("--batch", type=int, default=8, help="training batch size")
    dcn.add_argument("--infer-batch", type=int, default=1, help="inference batch size")
    dcn.add_argument("--width", type=float, default=1.0, help="width multiplier of the network")
    dcn.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS),
                     help="which variants to run (ratios need 'none')")
    dcn.add_argument("--skip-train", action="store_true", help="only time inference")
    dcn.add_argument("--mean-impl", choices=list(MEAN_CHOICES), default=AUTO,
                     help="node means of every variant (standard = the release's operators)")
    dcn.add_argument("--seed", type=int, default=0, help="seed of the random weights and inputs")
    dcn.add_argument("--json", metavar="PATH", help="also write the results as JSON ('-' for stdout)")
    dcn.add_argument("--markdown", metavar="PAGE", help=MARKDOWN_HELP)
    dcn.add_argument("--quiet", action="store_true", help="no progress bars")
    train = sub.add_parser("train", formatter_class=HelpFormatter, help="sdu-2d training step with the data iterator vs a fixed batch")
    train.add_argument("--recipe", default="sdu-2d", help="recipe whose network is timed")
    train.add_argument("--width", type=float, default=1.0, help="width multiplier of the network")
    train.add_argument("--batch", type=int, default=8, help="training batch size")
    train.add_argument("--steps", type=int, default=3, help="steps per round and feed")
    train.add_argument("--rounds", type=int, default=2, help="alternating rounds (iterator, fixed)")
    train.add_argument("--rec", default=None, help="packed training set (default: 160 synthetic faces)")
    train.add_argument("--workers", type=int, default=2, help="data worker processes")
    train.add_argument("--json", metavar="PATH", help="also write the results as JSON ('-' for stdout)")
    train.add_argument("--markdown", metavar="PAGE", help=MARKDOWN_HELP)
    infer = sub.add_parser("infer", formatter_class=HelpFormatter, help="per-face latency and batch throughput of the deploy variants")
    infer.add_argument("--width", type=float, default=1.0, help="width multiplier of the network")
    infer.add_argument("--repeats", type=int, default=10, help="timed batch-1 rounds")
    infer.add_argument("--big-batch", type=int, default=32, help="batch size of the throughput rounds")
    infer.add_argument("--big-repeats", type=int, default=3, help="timed throughput rounds")
    infer.add_argument("--json", metavar="PATH", help="also write the results as JSON ('-' for stdout)")
    infer.add_argument("--markdown", metavar="PAGE", help=MARKDOWN_HELP)
    infer.add_argument("--fan-python", metavar="PY", default=None,
                       help="interpreter with torch and face-alignment that times a 4-stack FAN side by side "
                            "(default: .venv-fan/bin/python when `make fan-gauge` built it)")
    infer.add_argument("--no-fan", action="store_true", help="leave the FAN row out")
    infer.add_argument("--only", nargs="+", default=(), metavar="TEXT",
                       help="time only the variants whose name contains one of these (e.g. --only INT8 winograd); "
                            "fewer models in the process, as a deployment runs one")
    args = parser.parse_args(argv)
    if args.command == "dcn" and (args.repeats < 1 or args.infer_repeats < 1 or args.batch < 1
                                  or args.infer_batch < 1):
        parser.error("--repeats, --infer-repeats, --batch and --infer-batch must be positive")
    from insightface_align.benchmarks import command_line, load_average, markdown_problem, write_markdown

    tag = markdown_tag(args)
    if args.markdown:
        problem = markdown_problem(args.markdown, tag)
        if problem:  # before a run of many minutes, not after it
            return error(problem)
    command = command_line("insightface-align bench", argv)
    load_before = load_average()
    extra = ()
    if args.command == "train":
        from insightface_align.benchmarks import bench_train, train_table

        summary = bench_train(args.recipe, args.width, args.batch, args.steps, args.rounds, args.rec, args.workers)
        table = shown = train_table(summary)
    elif args.command == "infer":
        from insightface_align.benchmarks import bench_infer, infer_markdown, infer_table
        from insightface_align.fan_gauge import DEFAULT_PYTHON

        fan_python = None if args.no_fan else args.fan_python
        if fan_python is None and not args.no_fan:
            if os.path.exists(DEFAULT_PYTHON):
                fan_python = DEFAULT_PYTHON
            else:
                print(f"FAN gauge skipped: {DEFAULT_PYTHON} is not built (make fan-gauge)", file=sys.stderr)
        summary = bench_infer(args.width, args.repeats, args.big_batch, args.big_repeats, fan_python=fan_python,
                              only=tuple(args.only))
        shown, table = infer_table(summary), infer_markdown(summary)
        fan = summary.get("fan")
        extra = (f"FAN gauge torch {fan['torch']} with {fan['threads']} threads" if fan else "no FAN gauge",)
    else:
        summary = bench_dcn(args)
        table = shown = markdown_table(summary)
    if args.json != "-":  # stdout holds the JSON alone
        print(shown)
    if args.markdown:
        write_markdown(args.markdown, tag, table, command, load_before, extra=extra)
    if args.json == "-":
        print(json.dumps(summary, indent=2))
    elif args.json:
        _write_json(args.json, summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
