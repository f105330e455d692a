"""Benchmarks behind `tools/bench.py train` and `tools/bench.py infer` (not tests).

Variants are timed side by side in one process, round-robin, so load from other
processes hits them alike; medians and ratios are reported.
"""
from __future__ import annotations

import os
import resource
import statistics
import tempfile
import time
from dataclasses import replace

import mxnet as mx
import numpy as np

from .cpu_graph import fast_cpu_convolutions, fold_batchnorm, freeze_tap_weights
from .data.iterator import AlignIter
from .export import quantize_int8
from .fan_gauge import FanGauge
from .losses import label_names, training_symbol
from .model import HeatmapModel
from .recipe import load_recipe
from .symbols.backend import COMPILED, PORTABLE, RELEASE, choose
from .symbols.network import build_heatmaps, get_symbol
from .train import data_config, loss_config


def peak_rss_gb() -> float:
    """Peak resident memory of this process and its finished children (GB)."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(own, kids) / 1024 / 1024


def synthetic_rec(count: int = 160, seed: int = 5) -> str:
    """A small packed synthetic 2D set in a temporary folder (when no --rec is given)."""
    # Lazy: the face renderer (OpenGL, scipy) and the packer load only when no --rec is given.
    from .datasets.w300 import W300Reader
    from .pack import pack_dataset
    from .synthetic.dataset import generate_folder
    from .synthetic.generate import SynthConfig

    root = tempfile.mkdtemp(prefix="bench-")
    generate_folder(os.path.join(root, "raw"), count, seed=seed, config=SynthConfig(mode="2d"), workers=2)
    pack_dataset(W300Reader([os.path.join(root, "raw")]), root, "train", workers=2, progress=False)
    return os.path.join(root, "train.rec")


def bench_train(recipe_name: str, width: float, batch: int, steps: int, rounds: int, rec: str | None,
                workers: int) -> dict:
    """Seconds per training step with the iterator running vs a fixed in-memory batch
    (the fast deformable convolution, node means chosen for the CPU)."""
    recipe = load_recipe(recipe_name, multiplier=width)
    loss = loss_config(recipe)
    rec = rec or synthetic_rec()
    dcfg = replace(data_config(recipe, loss, batch, True, seed=0, num_workers=workers), last_batch="discard")
    it = AlignIter(rec, dcfg)
    sym = training_symbol(build_heatmaps(recipe.network, backend=choose(None, dcn="fast")), loss,
                          recipe.network.heatmap_size)
    mod = mx.mod.Module(sym, data_names=["data"], label_names=label_names(loss), context=mx.cpu())
    mod.bind(data_shapes=it.provide_data, label_shapes=it.provide_label)
    mod.init_params(mx.init.Xavier(rnd_type="gaussian", factor_type="in", magnitude=2))
    mod.init_optimizer(optimizer="nadam", optimizer_params={"learning_rate": 1e-6})

    def next_batch():
        try:
            return it.next()
        except StopIteration:
            it.reset()
            return it.next()

    first = next_batch()
    fixed = mx.io.DataBatch([d.copy() for d in first.data], [l.copy() for l in first.label])

    def step(batch_obj):
        mod.forward_backward(batch_obj)
        mod.update()
        for out in mod.get_outputs():
            out.wait_to_read()

    step(fixed)  # warm-up: MKLDNN primitives, memory pools
    times = {"iterator": [], "fixed": []}
    for _ in range(rounds):
        for mode in ("iterator", "fixed"):
            start = time.perf_counter()
            for _ in range(steps):
                step(next_batch() if mode == "iterator" else fixed)
            times[mode].append((time.perf_counter() - start) / steps)
    it.close()
    out = {"recipe": recipe_name, "width": width, "batch": batch, "steps_per_round": steps, "rounds": rounds,
           "data_workers": workers, "pairs": dcfg.pairs, "peak_rss_gb": round(peak_rss_gb(), 2)}
    for mode, ts in times.items():
        med = statistics.median(ts)
        out[mode] = {"seconds_per_step": round(med, 3), "samples_per_s": round(batch / med, 2),
                     "all": [round(t, 3) for t in ts]}
    out["data_pipeline_overhead_pct"] = round(
        100 * (out["iterator"]["seconds_per_step"] / out["fixed"]["seconds_per_step"] - 1), 1)
    return out


def _fractional_offsets(args: dict, seed: int = 0) -> dict:
    """Offset-conv biases of fractional shifts in (-1.5, 1.5) px, so DCN timings match a
    trained model's (zero offsets let the fast blend skip three of four corners)."""
    rng = np.random.RandomState(seed)
    return {k: (mx.nd.array(rng.uniform(-1.5, 1.5, v.shape)) if k.endswith("_offset_bias") else v)
            for k, v in args.items()}


def _infer_variants(width: float, calib_images: np.ndarray, only: tuple = ()) -> dict:
    """name -> (symbol, args, aux): sdu-2d with stock operators (native or portable DCN,
    standard means) and with the compiled CPU operators (fast DCN, fused means; also BN
    folded, the --winograd graph, INT8 with MXNet's INT8 operators only, with the
    project's INT8 units and deconvolutions, and with those and the INT8 CABs: the
    --int8 export), and hourglass2-resnet. The
    fast/portable graphs are the export's (tap GEMM weights frozen into parameters).
    `only`: keep the variants whose name contains one of these strings (case-insensitive);
    the others are not even built (the INT8 ones take a minute each to calibrate)."""

    def init(sym):
        mod = mx.mod.Module(sym, data_names=["data"], label_names=None)
        mod.bind(data_shapes=[("data", (1, 3, 128, 128))], for_training=False)
        mx.random.seed(0)
        mod.init_params(mx.init.Xavier(rnd_type="gaussian", factor_type="in", magnitude=2))
        return mod.get_params()

    sdu = load_recipe("sdu-2d", multiplier=width).network
    cpu_ops = get_symbol(sdu, backend=COMPILED)
    args, aux = init(cpu_ops)
    args = _fractional_offsets(args)
    fast = freeze_tap_weights(cpu_ops, args, aux)[:3]
    folded = fold_batchnorm(*fast)[:3]

    def hourglass():
        hg = get_symbol(load_recipe("hourglass2-resnet", multiplier=width).network)
        return (hg,) + init(hg)

    builders = {
        "sdu-2d native DCN (stock ops)": lambda: (get_symbol(sdu, backend=RELEASE), args, aux),
        "sdu-2d portable DCN (stock ops)":
            lambda: freeze_tap_weights(get_symbol(sdu, backend=PORTABLE), args, aux)[:3],
        "sdu-2d cpu ops (fast DCN, fused means)": lambda: fast,
        "sdu-2d cpu ops + BN folded": lambda: folded,
        "sdu-2d --winograd (Winograd, depthwise, deconvolution ops)": lambda: fast_cpu_convolutions(*folded)[:3],
        "sdu-2d INT8, MXNet's INT8 operators only":
            lambda: quantize_int8(*folded, calib_images, batch_size=8, int8_compiled=False),
        "sdu-2d INT8, CABs as MXNet's INT8 operators":
            lambda: quantize_int8(*folded, calib_images, batch_size=8, int8_cabs=False),
        "sdu-2d INT8 (cpu ops, folded)": lambda: quantize_int8(*folded, calib_images, batch_size=8),
        "hourglass2-resnet": hourglass}
    wanted = [name for name in builders if not only or any(o.lower() in name.lower() for o in only)]
    if not wanted:
        raise ValueError(f"--only {' '.join(only)} matches no variant; the variants are: {', '.join(builders)}")
    return {name: builders[name]() for name in wanted}


FAN_ROW = "FAN-4 (face-alignment, PyTorch, 256 px input)"


def bench_infer(width: float, repeats: int, big_batch: int, big_repeats: int, calib: int = 64,
                fan_python: str | None = None, only: tuple = ()) -> dict:
    """Per-face latency at batch 1 and throughput at batch `big_batch`, every variant side by side.

    With `fan_python` (an interpreter with torch and face-alignment), a 4-stack FAN with
    random weights runs in that interpreter as one more variant of the same rounds: the
    INT8 target is "half of FAN", and only a side-by-side ratio survives VM drift.
    `only` selects variants by name (see _infer_variants).
    """
    threads = int(os.environ.get("OMP_NUM_THREADS") or os.cpu_count() or 1)
    fan = FanGauge(fan_python, threads) if fan_python else None
    try:
        return _bench_infer(width, repeats, big_batch, big_repeats, calib, fan, only)
    finally:
        if fan is not None:
            fan.close()


def _bench_infer(width: float, repeats: int, big_batch: int, big_repeats: int, calib: int, fan, only: tuple) -> dict:
    rng = np.random.RandomState(0)
    calib_images = rng.uniform(0, 255, (calib, 3, 128, 128)).astype(np.float32)
    variants = _infer_variants(width, calib_images, only)
    one = rng.uniform(0, 255, (1, 3, 128, 128)).astype(np.float32)
    many = rng.uniform(0, 255, (big_batch, 3, 128, 128)).astype(np.float32)
    results = {}
    # Batch 1: every variant bound at once and timed round-robin (load hits them alike). Each
    # turn runs a variant twice: the first call finds the caches filled by the other variants
    # ("cold"), the second is what a model serving a stream of faces sees (the reported latency).
    models = {name: HeatmapModel(sym, a, x, batch_size=1) for name, (sym, a, x) in variants.items()}
    for m in models.values():
        m(one)  # warm-up
    times = {name: {"cold": [], "warm": []} for name in models}
    if fan is not None:
        times[FAN_ROW] = {"cold": [], "warm": []}
        fan.pair()  # warm-up
    for _ in range(repeats):
        for name, m in models.items():
            for kind in ("cold", "warm"):
                start = time.perf_counter()
                m(one)
                times[name][kind].append(time.perf_counter() - start)
        if fan is not None:
            cold, warm = fan.pair()
            times[FAN_ROW]["cold"].append(cold)
            times[FAN_ROW]["warm"].append(warm)
    for name, ts in times.items():
        results[name] = {"latency_s": round(statistics.median(ts["warm"]), 4),
                         "latency_cold_s": round(statistics.median(ts["cold"]), 4)}
    del models
    # Large batches: one variant bound at a time (several at batch 32 exceed the machine's memory).
    for name, (sym, a, x) in variants.items():
        m = HeatmapModel(sym, a, x, batch_size=big_batch)
        m(many)
        ts = []
        for _ in range(big_repeats):
            start = time.perf_counter()
            m(many)
            ts.append(time.perf_counter() - start)
        med = statistics.median(ts)
        results[name]["throughput_faces_per_s"] = round(big_batch / med, 2)
        results[name]["batch_seconds_per_face"] = round(med / big_batch, 4)
        results[name]["peak_rss_gb_so_far"] = round(peak_rss_gb(), 1)
        del m
    if fan is not None:
        med = statistics.median(fan.batch(big_batch, big_repeats))
        results[FAN_ROW].update(throughput_faces_per_s=round(big_batch / med, 2),
                                batch_seconds_per_face=round(med / big_batch, 4))
    base = results.get("sdu-2d cpu ops (fast DCN, fused means)", {}).get("latency_s")
    fan_latency = results[FAN_ROW]["latency_s"] if fan is not None else None
    for row in results.values():
        if base:
            row["latency_vs_fast"] = round(row["latency_s"] / base, 2)
        if fan_latency:
            row["latency_vs_fan"] = round(row["latency_s"] / fan_latency, 3)
    return {"width": width, "repeats": repeats, "big_batch": big_batch,
            "engine": os.environ.get("MXNET_ENGINE_TYPE", "ThreadedEnginePerDevice"),
            "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
            "fan": fan.info if fan is not None else None, "variants": results}


def infer_table(summary: dict) -> str:
    fan = summary.get("fan")
    lines = [f"MXNet engine: {summary.get('engine', '?')}"]
    if fan:
        lines.append(f"FAN gauge: {fan['model']} on {tuple(fan['input'])}, torch {fan['torch']}, "
                     f"{fan['threads']} threads")
    lines += ["", "| model | latency s/face (batch 1) | x cpu ops |" + (" x FAN |" if fan else "")
              + f" cold-cache latency | faces/s (batch {summary['big_batch']}) |",
              "| --- | ---: | ---: |" + (" ---: |" if fan else "") + " ---: | ---: |"]
    for name, row in summary["variants"].items():
        vs_fast = f"{row['latency_vs_fast']:.2f}" if "latency_vs_fast" in row else "-"
        lines.append(f"| {name} | {row['latency_s']:.3f} | {vs_fast} |"
                     + (f" {row['latency_vs_fan']:.3f} |" if fan else "")
                     + f" {row.get('latency_cold_s', float('nan')):.3f} | "
                     f"{row.get('throughput_faces_per_s', float('nan')):.2f} |")
    return "\n".join(lines)


def train_table(summary: dict) -> str:
    """`bench train`'s table (the format of docs/benchmarks.md) and a line with the data
    pipeline's overhead, the peak memory and the settings the table does not show."""
    it, fx = summary["iterator"], summary["fixed"]
    workers = summary["data_workers"]
    feed = ("in-process" if workers == 0 else f"{workers} worker process{'es' if workers != 1 else ''}") + \
        (", pairs" if summary.get("pairs", True) else ", no pairs")
    return "\n".join([
        "| feed | s/step | samples/s |", "| --- | ---: | ---: |",
        f"| `AlignIter` ({feed}) | {seconds(it['seconds_per_step'])} | {it['samples_per_s']:.2f} |",
        f"| fixed in-memory batch | {seconds(fx['seconds_per_step'])} | {fx['samples_per_s']:.2f} |",
        "", f"Data pipeline overhead {summary['data_pipeline_overhead_pct']:+.1f}%; peak memory of the process "
            f"{summary['peak_rss_gb']:.1f} GB ({summary['recipe']} at width {summary['width']:g}, batch "
            f"{summary['batch']}, {plural(summary['rounds'], 'round')} of {plural(summary['steps_per_round'], 'step')} "
            "per feed)."])


# ---- Tables written into documentation pages (`--markdown PAGE`) ----------------------------------
#
# Each benchmark command writes its table(s) between `<!-- begin: TAG -->` and `<!-- end: TAG -->`
# in PAGE (cli.common.write_generated), followed by a line naming the command line, the date and the
# machine, so the page says what produced every figure. The formats are those of docs/benchmarks.md.

# Display names of the `bench infer` variants on the page (the keys are the names --only matches)
# and the cells printed in bold there: the figures the fp32 and INT8 targets are about.
INFER_DISPLAY = {
    "sdu-2d native DCN (stock ops)": "sdu-2d native DCN (stock operators)",
    "sdu-2d portable DCN (stock ops)": "sdu-2d portable DCN (stock operators; the default export)",
    "sdu-2d --winograd (Winograd, depthwise, deconvolution ops)": "sdu-2d `--winograd`",
    "sdu-2d INT8 (cpu ops, folded)": "sdu-2d INT8 (`--int8`)",
}
INFER_BOLD = {
    "sdu-2d --winograd (Winograd, depthwise, deconvolution ops)": {"latency"},
    "sdu-2d INT8 (cpu ops, folded)": {"latency", "fan", "throughput"},
}
DCN_DISPLAY = {"none": "none (`sdu-nodcn`, the floor)", "native": "native (MXNet's operator)",
               "fast": "fast (compiled)", "portable": "portable (stock operators)"}


def plural(count, word: str, suffix: str = "s") -> str:
    """`1 round`, `2 rounds`."""
    return f"{count} {word}{'' if str(count) == '1' else suffix}"


def seconds(value: float | None) -> str:
    """A time as the page shows it: two decimals from 1 s up, three significant digits below."""
    if value is None or not np.isfinite(value):
        return "-"
    if value >= 1 or value <= 0:
        return f"{value:.2f}"
    decimals = 2 - int(np.floor(np.log10(value)))
    return f"{value:.{decimals}f}"


def _bold(text: str, on: bool) -> str:
    return f"**{text}**" if on else text


def dcn_markdown(summary: dict) -> str:
    """`bench dcn`'s table: training step and per-face inference time of each variant, and
    their ratios to the no-DCN floor ("-" where not measured)."""
    cfg = summary["config"]
    per_face = max(int(cfg["infer_batch"]), 1)
    lines = [f"| DCN | train step s (batch {cfg['batch']}) | x no-DCN | inference s/face (batch {cfg['infer_batch']}) "
             "| x no-DCN |", "| --- | ---: | ---: | ---: | ---: |"]
    for v, row in summary["variants"].items():
        infer = row["infer_seconds"] / per_face if "infer_seconds" in row else None
        ratio = {k: f"{row[k]:.2f}" if k in row else "-" for k in ("train_ratio", "infer_ratio")}
        lines.append(f"| {DCN_DISPLAY.get(v, v)} | {seconds(row.get('train_seconds'))} | {ratio['train_ratio']} | "
                     f"{seconds(infer)} | {ratio['infer_ratio']} |")
    return "\n".join(lines)


def infer_markdown(summary: dict) -> str:
    """`bench infer`'s table as docs/benchmarks.md shows it: the page's names for the
    variants, the x FAN column always (with "-" when no gauge ran), the targets' cells in bold."""
    lines = [f"| model | latency s/face (batch 1) | x cpu ops | x FAN | cold-cache latency | "
             f"faces/s (batch {summary['big_batch']}) |", "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for name, row in summary["variants"].items():
        bold = INFER_BOLD.get(name, set())
        vs_fast = f"{row['latency_vs_fast']:.2f}" if "latency_vs_fast" in row else "-"
        vs_fan = f"{row['latency_vs_fan']:.3f}" if "latency_vs_fan" in row else "-"
        rate = f"{row['throughput_faces_per_s']:.2f}" if "throughput_faces_per_s" in row else "-"
        lines.append(f"| {INFER_DISPLAY.get(name, name)} | {_bold(seconds(row['latency_s']), 'latency' in bold)} | "
                     f"{vs_fast} | {_bold(vs_fan, 'fan' in bold and vs_fan != '-')} | "
                     f"{seconds(row.get('latency_cold_s'))} | {_bold(rate, 'throughput' in bold and rate != '-')} |")
    return "\n".join(lines)


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (Linux), else what the platform module says."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() in ("model name", "Model", "cpu model") and value.strip():
                    return " ".join(value.split())
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine() or "unknown CPU"


def command_line(prog: str, argv=None) -> str:
    """The command that ran: `prog ARGS` when the arguments were handed in (the
    insightface-align dispatcher, tests), else this process's own sys.argv; the environment
    variables that change the timings (OMP_NUM_THREADS, MXNET_ENGINE_TYPE) in front."""
    import shlex
    import sys

    if argv is None:
        prog, argv = sys.argv[0], sys.argv[1:]
        if os.path.isabs(prog) and not os.path.relpath(prog).startswith(".."):
            prog = os.path.relpath(prog)
    env = [f"{k}={shlex.quote(os.environ[k])}" for k in ("OMP_NUM_THREADS", "MXNET_ENGINE_TYPE") if k in os.environ]
    return " ".join(env + [prog] + [shlex.quote(str(a)) for a in argv])


def provenance(command: str, load_before: float | None = None, extra: tuple = ()) -> str:
    """One line saying what wrote a table: command line, date, CPU, threads, MXNet version."""
    import datetime

    threads = os.environ.get("OMP_NUM_THREADS")
    features = mx.runtime.Features()
    build = "MKLDNN" if features.is_enabled("MKLDNN") else ("CUDA" if features.is_enabled("CUDA") else "no MKLDNN")
    facts = [f"{cpu_model()} ({os.cpu_count()} CPUs)",
             plural(threads, "OpenMP thread") if threads else "OpenMP threads as MXNet chooses (OMP_NUM_THREADS unset)",
             f"MXNet {mx.__version__} ({build})",
             f"engine {os.environ.get('MXNET_ENGINE_TYPE', 'ThreadedEnginePerDevice')}", *extra]
    if load_before is not None:
        facts.append(f"load average {load_before:.2f} at the start")
    tick = "``" if "`" in command else "`"
    pad = " " if "`" in command else ""
    return (f"Written by {tick}{pad}{command}{pad}{tick} on {datetime.date.today().isoformat()}: "
            + ", ".join(facts) + ".")


def load_average() -> float | None:
    try:
        return os.getloadavg()[0]
    except OSError:
        return None


def markdown_problem(path: str, tag: str) -> str | None:
    """Why `path` cannot take the table tagged `tag` (None when it can): checked before a
    benchmark runs, so a long run never ends in a write that fails or replaces the whole
    page (write_generated replaces a page that lacks the markers)."""
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        return f"{path}: folder {folder} does not exist"
    if os.path.isdir(path):
        return f"{path}: is a folder"
    try:
        with open(path, encoding="utf-8") as f:
            page = f.read()
    except FileNotFoundError:
        return None  # a new page holding just this table
    except (OSError, UnicodeDecodeError) as e:
        return f"{path}: cannot read it ({e})"
    begin, end = f"<!-- begin: {tag} -->", f"<!-- end: {tag} -->"
    if page.strip() and not (begin in page and end in page and page.index(begin) < page.index(end)):
        return (f"{path}: no '{begin}' ... '{end}' markers; add them where the table goes "
                f"(the rest of the page is kept)")
    return None


def markdown_preflight(path: str, tag: str, prog: str, argv=None) -> tuple:
    """(problem, command line, load average) of a `--markdown PAGE` run, taken before the
    benchmark runs: `problem` (None when the page can take the table) stops it early."""
    return markdown_problem(path, tag), command_line(prog, argv), load_average()


def write_markdown(path: str, tag: str, table: str, command: str, load_before: float | None = None,
                   notes: tuple = (), extra: tuple = ()) -> None:
    """Write `table`, the `notes` lines and the provenance line between the `tag` markers of `path`."""
    from .cli.common import write_generated

    parts = [table.strip(), *[n.strip() for n in notes if n and n.strip()], provenance(command, load_before, extra)]
    # Commands that share a page (make stats and make bench) may finish together: each reads the
    # page and replaces it whole, so they take turns (a lock on the page's folder; the page
    # itself is replaced by a rename and cannot carry the lock).
    folder = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY)
    try:
        try:
            import fcntl

            fcntl.flock(folder, fcntl.LOCK_EX)
        except (ImportError, OSError):
            pass
        write_generated(path, "\n\n".join(parts), tag)
    finally:
        os.close(folder)
