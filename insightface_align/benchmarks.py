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

import mxnet as mx
import numpy as np


def peak_rss_gb() -> float:
    """Peak resident memory of this process and its finished children (GB)."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(own, kids) / 1024 / 1024


def synthetic_rec(count: int = 160, seed: int = 5) -> str:
    """A small packed synthetic 2D set in a temporary folder (when no --rec is given)."""
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
    """Seconds per training step with the iterator running vs a fixed in-memory batch."""
    from dataclasses import replace

    from insightface_align.symbols.network import build_heatmaps

    from .data.iterator import AlignIter
    from .losses import label_names, training_symbol
    from .recipe import load_recipe
    from .train import data_config, loss_config

    recipe = load_recipe(recipe_name, multiplier=width, dcn_impl="fast")
    loss = loss_config(recipe)
    rec = rec or synthetic_rec()
    dcfg = replace(data_config(recipe, loss, batch, True, seed=0, num_workers=workers), last_batch="discard")
    it = AlignIter(rec, dcfg)
    sym = training_symbol(build_heatmaps(recipe.network), loss, recipe.network.heatmap_size)
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
           "data_workers": workers, "peak_rss_gb": round(peak_rss_gb(), 2)}
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
    from insightface_align.symbols.network import get_symbol

    from .export import fold_batchnorm, freeze_tap_weights, quantize_int8, fast_cpu_convolutions
    from .recipe import load_recipe

    def init(sym):
        mod = mx.mod.Module(sym, data_names=["data"], label_names=None)
        mod.bind(data_shapes=[("data", (1, 3, 128, 128))], for_training=False)
        mx.random.seed(0)
        mod.init_params(mx.init.Xavier(rnd_type="gaussian", factor_type="in", magnitude=2))
        return mod.get_params()

    sdu = load_recipe("sdu-2d", multiplier=width).network
    cpu_ops = get_symbol(sdu.replace(dcn_impl="fast", mean_impl="fused"))
    args, aux = init(cpu_ops)
    args = _fractional_offsets(args)
    stock = sdu.replace(mean_impl="standard")
    fast = freeze_tap_weights(cpu_ops, args, aux)[:3]
    folded = fold_batchnorm(fast[0], dict(fast[1]), dict(fast[2]))[:3]  # it pops folded BNs from aux

    def hourglass():
        hg = get_symbol(load_recipe("hourglass2-resnet", multiplier=width).network)
        return (hg,) + init(hg)

    builders = {
        "sdu-2d native DCN (stock ops)": lambda: (get_symbol(stock.replace(dcn_impl="native")), args, aux),
        "sdu-2d portable DCN (stock ops)":
            lambda: freeze_tap_weights(get_symbol(stock.replace(dcn_impl="portable")), args, aux)[:3],
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
    issue's INT8 goal is "half of FAN", and only a side-by-side ratio survives VM drift.
    `only` selects variants by name (see _infer_variants).
    """
    from .fan_gauge import FanGauge

    threads = int(os.environ.get("OMP_NUM_THREADS") or os.cpu_count() or 1)
    fan = FanGauge(fan_python, threads) if fan_python else None
    try:
        return _bench_infer(width, repeats, big_batch, big_repeats, calib, fan, only)
    finally:
        if fan is not None:
            fan.close()


def _bench_infer(width: float, repeats: int, big_batch: int, big_repeats: int, calib: int, fan, only: tuple) -> dict:
    from .model import HeatmapModel

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
    it, fx = summary["iterator"], summary["fixed"]
    return "\n".join([
        f"| feed | s/step (batch {summary['batch']}) | samples/s |", "| --- | ---: | ---: |",
        f"| AlignIter ({summary['data_workers']} workers, pairs) | {it['seconds_per_step']:.3f} | "
        f"{it['samples_per_s']:.2f} |",
        f"| fixed in-memory batch | {fx['seconds_per_step']:.3f} | {fx['samples_per_s']:.2f} |",
        "", f"data pipeline overhead: {summary['data_pipeline_overhead_pct']:+.1f}%; "
            f"peak RSS {summary['peak_rss_gb']:.1f} GB"])
