#!/usr/bin/env python
"""Throughput of the training iterator (samples/s) and where its time goes.

Packs a synthetic release-layout .rec when none is given, then times AlignIter with
coherent pairs for heatmap and coordinate targets, with and without reduced-resolution
JPEG decoding, in-process and with workers, then a recipe's own training iterator
(augmentation and photometric set included); times the record decoder against OpenCV's
imdecode on the same records; and profiles one in-process run to split the time into
read / decode / warp / targets / batching.

    tools/bench_data.py --rec data/synth2d/train.rec
    tools/bench_data.py --rec data/synth2d/train.rec --markdown docs/benchmarks.md   (make bench-data)

--markdown PAGE writes the throughput table, with a line naming the command line, the date and
the machine, between the page's `<!-- begin: tools/bench_data.py -->` and
`<!-- end: tools/bench_data.py -->` markers; the rest of the page is kept. The row of the
training defaults (heatmap targets, the default reduced decoding, the default worker count)
is in bold.
"""
from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import sys
import tempfile
import time

import numpy as np
from tqdm import tqdm

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from insightface_align.cli.common import HelpFormatter, error  # noqa: E402
from insightface_align.data.config import DataConfig  # noqa: E402
from insightface_align.data.iterator import AlignIter  # noqa: E402
from insightface_align.data.recfile import RecordFile  # noqa: E402
from insightface_align.data.testing import random_face, write_release_rec  # noqa: E402
from insightface_align.errors import AlignError  # noqa: E402

MARKDOWN_TAG = "tools/bench_data.py"
STAGES = {  # profile function name -> stage (cv2 builtins appear as '<name>')
    "decode_bgr": "decode", "warpAffine": "warp", "render_heatmaps": "targets",
    "read_sample": "read", "_plan": "augment plan",
}


def make_rec(prefix: str, count: int, seed: int) -> str:
    rng = np.random.default_rng(seed)
    faces = (random_face(rng) for _ in range(count))
    write_release_rec(prefix, tqdm(faces, total=count, desc="packing synthetic .rec", leave=False, mininterval=2))
    return prefix + ".rec"


def proc_cpu_seconds(pid: int) -> float:
    """utime + stime of a process (Linux /proc), 0 when unavailable."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return 0.0


def run(rec: str, cfg: DataConfig, batches: int) -> tuple:
    """(samples/s wall clock, CPU ms per sample over main + workers) after one warm-up batch."""
    with AlignIter(rec, cfg) as it:
        n, seen = 0, 0
        it.next()
        cpu0 = time.process_time() + sum(proc_cpu_seconds(p) for p in it.worker_pids)
        t = time.perf_counter()
        while seen < batches:
            try:
                b = it.next()
            except StopIteration:
                it.reset()
                continue
            n += b.data[0].shape[0]
            seen += 1
        wall = time.perf_counter() - t
        cpu = time.process_time() + sum(proc_cpu_seconds(p) for p in it.worker_pids) - cpu0
        return n / wall, 1e3 * cpu / n


def recipe_config(name: str, batch_size: int, workers: int) -> DataConfig:
    """The training iterator's config of a recipe, at this batch size and worker count."""
    from insightface_align.recipe import load_recipe
    from insightface_align.train import data_config, loss_config

    recipe = load_recipe(name)
    return data_config(recipe, loss_config(recipe), batch_size, True, seed=0, num_workers=workers)


DECODE_RECORDS, DECODE_ROUNDS = 200, 3


def decode_times(rec: str) -> tuple:
    """(records decoded, [(decoder, resolution, microseconds per record)]): OpenCV's imdecode and
    data/jpeg.py on the same first records, alternating, best of DECODE_ROUNDS (the iterator's
    decoder against the one it replaces)."""
    import cv2

    from insightface_align.data.jpeg import decode_bgr, decode_with_opencv

    cv2.setNumThreads(1)   # as in the workers
    records = RecordFile(rec)
    payloads = [records.read_sample(i)[0] for i in range(min(DECODE_RECORDS, len(records)))]
    best = {}
    for _ in range(DECODE_ROUNDS):
        for name, fn in (("OpenCV imdecode", decode_with_opencv), ("simplejpeg (data/jpeg.py)", decode_bgr)):
            for half in (False, True):
                t = time.perf_counter()
                for payload in payloads:
                    fn(payload, half)
                per = 1e6 * (time.perf_counter() - t) / len(payloads)
                key = (name, "half" if half else "full")
                best[key] = min(best.get(key, per), per)
    return len(payloads), [(name, res, us) for (name, res), us in best.items()]


def decode_note(times: list, count: int) -> str:
    """One sentence comparing the decoders (the block holds one table)."""
    us = {(name, res): v for name, res, v in times}
    names = sorted({name for name, _, _ in times}, key=lambda n: n.startswith("simplejpeg"))
    parts = [f"{name} {us[(name, 'full')]:,.0f} µs full / {us[(name, 'half')]:,.0f} µs half resolution"
             for name in names]
    return (f"JPEG decoding of the first {count} records, per record, best of {DECODE_ROUNDS} alternating rounds: "
            + "; ".join(parts) + ".")


def profile(rec: str, cfg: DataConfig, batches: int) -> tuple:
    """Per-stage seconds of an in-process run (cProfile, inclusive times)."""
    prof = cProfile.Profile()
    with AlignIter(rec, cfg.replace(num_workers=0)) as it:
        it.next()
        prof.enable()
        t = time.perf_counter()
        for _ in range(batches):
            try:
                it.next()
            except StopIteration:
                it.reset()
        total = time.perf_counter() - t
        prof.disable()
    stats = pstats.Stats(prof).stats
    stages = dict.fromkeys(list(STAGES.values()), 0.0)
    for (_file, _line, name), (_cc, _nc, _tt, ct, _callers) in stats.items():
        for key, stage in STAGES.items():
            if name in (key, f"<{key}>"):   # cv2 builtins show as '<warpAffine>'
                stages[stage] += ct
    # _plan includes nothing of the others; read_sample excludes decoding (done by _decode).
    stages["batching/other"] = total - sum(stages.values())
    return total, stages


def data_table(rows) -> str:
    """The throughput table of docs/benchmarks.md from (targets, reduced_decode, workers,
    samples/s, CPU ms/sample) rows; the training defaults' row in bold."""
    from insightface_align.train_config import TrainConfig

    base = DataConfig()
    lines = ["| targets | reduced JPEG decode | workers | samples/s | CPU ms/sample |",
             "| --- | --- | ---: | ---: | ---: |"]
    for label_mode, reduced, workers, rate, cpu_ms in rows:
        default = (label_mode, reduced, workers) == (base.label_mode, base.reduced_decode, TrainConfig().num_workers)
        bold = (lambda text: f"**{text}**") if default else str
        lines.append(f"| {label_mode} | {bold(reduced + ' (default)' if default else reduced)} | {bold(workers)} | "
                     f"{bold(f'{rate:,.0f}')} | {cpu_ms:.2f} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    ap.add_argument("--rec", help="existing release-layout .rec (default: pack a synthetic one)")
    ap.add_argument("--records", type=int, default=1000, help="synthetic records to pack")
    ap.add_argument("--batch-size", type=int, default=40, help="samples per batch")
    ap.add_argument("--batches", type=int, default=60, help="timed batches per configuration")
    ap.add_argument("--workers", type=int, nargs="+", default=[0, 2], help="worker counts to time (0 = in-process)")
    ap.add_argument("--pairs", default="both", choices=["affine", "flip", "both", "none"],
                    help="coherent pairs of the batches (none: plain samples)")
    ap.add_argument("--sigma", type=float, default=1.0, help="heatmap Gaussian sigma (px)")
    ap.add_argument("--recipe", default="bundled-2d",
                    help="also time this recipe's own training iterator (its augmentation, photometric set, "
                         "pairs and occlusion-aware targets) at the same batch size; 'none' skips it")
    ap.add_argument("--markdown", metavar="PAGE", default=None,
                    help="also write the throughput table into this markdown page, between its generated-table "
                         "markers (see the description above); the rest of the page is kept")
    args = ap.parse_args(argv)
    pairs = None if args.pairs == "none" else args.pairs
    if args.recipe != "none":
        try:
            recipe_config(args.recipe, args.batch_size, 0)   # an unknown or broken recipe fails before the run
        except AlignError as exc:
            return error(str(exc))
    if args.markdown:
        from insightface_align.benchmarks import markdown_preflight

        problem, command, load_before = markdown_preflight(args.markdown, MARKDOWN_TAG, "tools/bench_data.py", argv)
        if problem:  # before the run, not after it
            return error(problem)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        rec = args.rec or make_rec(os.path.join(tmp, "bench"), args.records, 0)
        size = os.path.getsize(rec) / 1e3
        print(f"records: {rec} ({size / 1e3:.1f} MB), batch {args.batch_size}, pairs={pairs}, "
              f"cpus={os.cpu_count()}, load average {os.getloadavg()[0]:.2f}")
        ncpu = os.cpu_count() or 1
        print(f"{'targets':8} {'reduced':7} {'workers':7} {'samples/s':>10} {'cpu ms/sample':>14} "
              f"{f'idle {ncpu}-core estimate':>22}")
        for label_mode in ("heatmap", "coords"):
            for reduced in ("never", "auto", "always"):
                for nw in args.workers:
                    cfg = DataConfig(batch_size=args.batch_size, pairs=pairs, label_mode=label_mode,
                                     sigma=args.sigma, num_workers=nw, reduced_decode=reduced)
                    rate, cpu_ms = run(rec, cfg, args.batches)
                    rows.append((label_mode, reduced, nw, rate, cpu_ms))
                    # CPU time is what the machine must supply; on idle cores the workers (or the
                    # single process) can use at most min(ncpu, workers or 1) of them.
                    est = 1e3 / cpu_ms * min(ncpu, max(nw, 1))
                    print(f"{label_mode:8} {reduced:7} {nw:7d} {rate:10.0f} {cpu_ms:14.3f} {est:22.0f}",
                          flush=True)
        if args.recipe != "none":
            for nw in args.workers:
                cfg = recipe_config(args.recipe, args.batch_size, nw)
                rate, cpu_ms = run(rec, cfg, args.batches)
                rows.append((f"recipe {args.recipe}", cfg.reduced_decode, nw, rate, cpu_ms))
                print(f"{'recipe ' + args.recipe:8} {cfg.reduced_decode:7} {nw:7d} {rate:10.0f} {cpu_ms:14.3f}",
                      flush=True)
        decoded, times = decode_times(rec)
        print()
        for name, res, us in times:
            print(f"decode {res:4} {name:26} {us:8.0f} us/record")
        for reduced in ("never", "always"):
            cfg = DataConfig(batch_size=args.batch_size, pairs=pairs, sigma=args.sigma, reduced_decode=reduced)
            total, stages = profile(rec, cfg, args.batches)
            n = args.batches * args.batch_size
            print(f"\nin-process profile, heatmap targets, reduced_decode={reduced}: "
                  f"{n / total:.0f} samples/s under cProfile")
            for name, sec in stages.items():
                print(f"  {name:15} {1e3 * sec / n:6.3f} ms/sample  {100 * sec / total:5.1f}%")
    if args.markdown:
        from insightface_align.benchmarks import plural, write_markdown

        source = f"{args.records} synthetic records packed by the tool" if not args.rec else None
        write_markdown(args.markdown, MARKDOWN_TAG, data_table(rows), command, load_before,
                       notes=(decode_note(times, decoded),),
                       extra=tuple(x for x in (f"batch {args.batch_size}", f"pairs {pairs}", f"sigma {args.sigma:g}",
                                               f"{plural(args.batches, 'timed batch', 'es')} per row", source) if x))
    return 0


if __name__ == "__main__":
    sys.exit(main())
