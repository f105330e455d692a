#!/usr/bin/env python
"""Speed of the synthetic face generator and of packing its output, and what a big
training set costs at those rates.

Renders COUNT 2D faces with each worker count (generate_folder, as make_synthetic.py and
make data-synth-big do), packs the last folder into a release-layout .rec (pack_dataset, as
pack_rec.py does), and projects the time of a TARGET-face training set: rendering plus
packing at the measured rates. A one-process profile of a few faces splits a face's time
into the texture bake, OpenGL rendering (including the read-back, which waits for the
rasteriser) and the rest. Run it with nothing else busy: the rates are wall-clock.

    tools/bench_synth.py
    tools/bench_synth.py --markdown docs/benchmarks.md      (make bench-synth)

--markdown PAGE writes the table, the profile line and a provenance line between the page's
`<!-- begin: tools/bench_synth.py -->` and `<!-- end: tools/bench_synth.py -->` markers; the
rest of the page is kept.
"""
from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import sys
import tempfile
import time

from tqdm import tqdm

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from insightface_align.cli.common import HelpFormatter, error  # noqa: E402

MARKDOWN_TAG = "tools/bench_synth.py"
# Profile entries (file name, function name) -> stage of a face's time.
STAGES = {("skin.py", "bake_head_texture"): "texture bake",
          ("gl_render.py", "render"): "rendering", ("gl_render.py", "depth_only"): "rendering"}


def render_rate(out_dir: str, count: int, workers: int, seed: int) -> float:
    """Faces per second of generate_folder with `workers` processes (start-up included)."""
    from insightface_align.synthetic.dataset import generate_folder
    from insightface_align.synthetic.generate import SynthConfig

    with tqdm(total=count, desc=f"rendering, {_workers(workers)}", leave=False, mininterval=1) as bar:
        start = time.perf_counter()
        generate_folder(out_dir, count, seed, SynthConfig(mode="2d"), workers=workers,
                        overwrite=True, progress=bar.update)
        return count / (time.perf_counter() - start)


def pack_rate(raw_dir: str, out_dir: str, workers: int) -> tuple:
    """(packed count, faces per second) of packing a rendered folder into a .rec."""
    from insightface_align.datasets.w300 import W300Reader
    from insightface_align.pack import pack_dataset

    start = time.perf_counter()
    summary = pack_dataset(W300Reader([raw_dir]), out_dir, "train", workers=workers, progress=True)
    return summary.written, summary.written / (time.perf_counter() - start)


def profile_faces(count: int, seed: int) -> tuple:
    """(ms per face, {stage: ms per face}) of `count` faces rendered in this process."""
    import cv2

    from insightface_align.synthetic.generate import SynthConfig, make_face

    cv2.setNumThreads(1)
    os.environ.setdefault("LP_NUM_THREADS", "1")  # as in a worker (before the context opens)
    config = SynthConfig(mode="2d")
    make_face(seed, 10_000, config)  # opens the OpenGL context, builds the template head
    prof = cProfile.Profile()
    start = time.perf_counter()
    prof.enable()
    for i in range(count):
        make_face(seed, i, config)
    prof.disable()
    total = (time.perf_counter() - start) * 1e3 / count
    stages = {}
    for (path, _, func), row in pstats.Stats(prof).stats.items():
        stage = STAGES.get((os.path.basename(path), func))
        if stage:
            stages[stage] = stages.get(stage, 0.0) + row[3] * 1e3 / count  # cumulative time
    stages["rest"] = total - sum(stages.values())
    return total, stages


def duration(seconds: float) -> str:
    """`1 h 25 min` / `12 min`."""
    minutes = int(round(seconds / 60))
    return f"{minutes // 60} h {minutes % 60:02d} min" if minutes >= 60 else f"{minutes} min"


def _workers(count: int) -> str:
    return f"{count} worker{'' if count == 1 else 's'}"


def synth_table(renders: list, pack: tuple, target: int, bold_workers: int) -> str:
    """Rows: each (workers, faces, rate) of `renders`, the packing rate of `pack` (workers,
    faces, rate), and in bold the projected time of a `target`-face set (rendering with
    `bold_workers` workers, then packing)."""
    lines = [f"| step | faces | faces/s | {target:,} faces |", "| --- | ---: | ---: | ---: |"]
    for workers, count, rate in renders:
        cells = [f"render, {_workers(workers)}", f"{count}", f"{rate:.1f}", duration(target / rate)]
        if workers == bold_workers:
            cells = [f"**{c}**" for c in cells]
        lines.append("| " + " | ".join(cells) + " |")
    pack_workers, pack_count, prate = pack
    lines.append(f"| pack into a .rec, {_workers(pack_workers)} | {pack_count} | {prate:.0f} | "
                 f"{duration(target / prate)} |")
    best = {w: r for w, _, r in renders}.get(bold_workers)
    if best:
        total = target / best + target / prate
        lines.append(f"| **render ({_workers(bold_workers)}) + pack** | | | **{duration(total)}** |")
    return "\n".join(lines)


def profile_note(faces: int, total: float, stages: dict) -> str:
    parts = ", ".join(f"{name} {ms:.0f} ms ({100 * ms / total:.0f}%)" for name, ms in stages.items())
    return f"One process, {faces} faces under cProfile: {total:.0f} ms per face; {parts}."


def gl_renderer_name() -> str:
    from insightface_align.synthetic.gl_render import renderer

    info = renderer().ctx.info
    return f"OpenGL renderer {info.get('GL_RENDERER', 'unknown')}"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    ap.add_argument("--count", type=int, default=600, help="faces rendered per worker count")
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2],
                    help="worker counts to time (the last one also packs and is projected)")
    ap.add_argument("--target", type=int, default=100_000, help="training-set size to project")
    ap.add_argument("--profile-faces", type=int, default=40,
                    help="faces of the one-process profile (0 skips it)")
    ap.add_argument("--seed", type=int, default=7, help="data set seed")
    ap.add_argument("--markdown", metavar="PAGE", default=None,
                    help="also write the table into this markdown page, between its generated-table "
                         "markers (see the description above); the rest of the page is kept")
    args = ap.parse_args(argv)
    if args.count < 1 or args.target < 1 or args.profile_faces < 0 or min(args.workers) < 1:
        return error("--count, --target and --workers must be >= 1, --profile-faces >= 0")
    if args.markdown:
        from insightface_align.benchmarks import markdown_preflight

        problem, command, load_before = markdown_preflight(args.markdown, MARKDOWN_TAG, "tools/bench_synth.py", argv)
        if problem:  # before the run, not after it
            return error(problem)
    from insightface_align.synthetic.gl_render import RenderError

    renders = []
    try:
        with tempfile.TemporaryDirectory(prefix="bench-synth-") as tmp:
            raw = os.path.join(tmp, "raw")
            for workers in args.workers:
                rate = render_rate(raw, args.count, workers, args.seed)
                renders.append((workers, args.count, rate))
                print(f"render, {_workers(workers)}: {rate:.2f} faces/s "
                      f"({args.target:,} faces in {duration(args.target / rate)})", flush=True)
            pack = (args.workers[-1], *pack_rate(raw, tmp, args.workers[-1]))
            print(f"pack, {_workers(pack[0])}: {pack[2]:.0f} faces/s", flush=True)
        stages = None
        if args.profile_faces:
            total, stages = profile_faces(args.profile_faces, args.seed)
            print(profile_note(args.profile_faces, total, stages))
        gl_name = gl_renderer_name()
    except RenderError as exc:
        return error(str(exc))
    table = synth_table(renders, pack, args.target, args.workers[-1])
    print("\n" + table)
    if args.markdown:
        from insightface_align.benchmarks import write_markdown

        notes = (profile_note(args.profile_faces, total, stages),) if stages else ()
        write_markdown(args.markdown, MARKDOWN_TAG, table, command, load_before, notes=notes,
                       extra=(gl_name, "one rasteriser thread per worker (LP_NUM_THREADS=1)"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
