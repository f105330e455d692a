"""Print the paper's Table 1 for our recipes: parameters, size, GFLOPs, CPU latency.

    insightface-align stats --recipes sdu hourglass2-cab
    insightface-align stats --markdown docs/benchmarks.md     # also write the latency table into the page

--markdown PAGE writes the CPU latency of every recipe (three recipe / ms column pairs), with a
line naming the command line, the date and the machine, between the page's
`<!-- begin: insightface-align stats -->` and `<!-- end: insightface-align stats -->` markers;
the rest of the page is kept."""
from __future__ import annotations

import argparse
import json
import sys

from tqdm import tqdm

from insightface_align.symbols.backend import AUTO, DCN_CHOICES, MEAN_CHOICES

from ..recipe import load_recipe, recipe_names
from ..errors import AlignError
from .common import HelpFormatter, error

MARKDOWN_TAG = "insightface-align stats"


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("--recipes", nargs="*", default=None, help="recipe names (default: every recipe)")
    p.add_argument("--repeats", type=int, default=5, help="timed forward passes per recipe (median reported)")
    p.add_argument("--no-latency", action="store_true", help="skip the CPU latency measurement")
    p.add_argument("--dcn-impl", choices=list(DCN_CHOICES), default=AUTO,
                   help="deformable convolution implementation for the latency column")
    p.add_argument("--mean-impl", choices=list(MEAN_CHOICES), default=AUTO,
                   help="node means for the latency column (standard = the release's operators)")
    p.add_argument("--width", type=float, default=None, help="override every recipe's width multiplier")
    p.add_argument("--json", action="store_true", help="print JSON lines instead of a table")
    p.add_argument("--markdown", metavar="PAGE", default=None,
                   help="also write the latency table into this markdown page, between its generated-table "
                        "markers (see the description above); the rest of the page is kept")
    return p.parse_args(argv)


def recipe_row(name: str, args) -> dict:
    from insightface_align.symbols.backend import choose
    from insightface_align.symbols.network import get_symbol
    from insightface_align.symbols.stats import graph_stats

    overrides = {} if args.width is None else {"multiplier": args.width}
    recipe = load_recipe(name, **overrides)
    cfg = recipe.network
    shape = (1, 3, cfg.input_size, cfg.input_size)
    sym = get_symbol(cfg, backend=choose(None, args.dcn_impl, args.mean_impl))
    stats = graph_stats(sym, shape)
    paper_mb = recipe.paper.get("size_mb") if cfg.multiplier == 1.0 else None
    row = {
        "recipe": name,
        "table1_row": recipe.paper.get("row"),
        "params": stats.params,
        "size_mb": round(stats.size_mb, 2),
        "paper_size_mb": paper_mb,
        "size_vs_paper_pct": round((stats.size_mb / paper_mb - 1) * 100, 1) if paper_mb else None,
        "gflops": round(stats.flops / 1e9, 2),
        "latency_ms": None,
    }
    if not args.no_latency:
        from ..timing import inference_latency

        row["latency_ms"] = round(inference_latency(sym, 1, cfg.input_size, repeats=args.repeats) * 1000, 1)
    return row


def format_table(rows) -> str:
    head = "| recipe | Table 1 row | params (M) | size MB | paper MB | vs paper | GFLOPs@128 | CPU ms (b=1) |"
    lines = [head, "|" + "---|" * 8]
    for r in rows:
        pct = f"{r['size_vs_paper_pct']:+.1f}%" if r["size_vs_paper_pct"] is not None else "-"
        lines.append("| {recipe} | {row} | {p:.2f} | {size_mb:.1f} | {paper} | {pct} | {gflops:.1f} | {lat} |".format(
            recipe=r["recipe"], row=r["table1_row"] or "-", p=r["params"] / 1e6, size_mb=r["size_mb"],
            paper=f"{r['paper_size_mb']:g}" if r["paper_size_mb"] is not None else "-", pct=pct, gflops=r["gflops"],
            lat=r["latency_ms"] if r["latency_ms"] is not None else "-"))
    return "\n".join(lines)


def latency_table(rows, groups: int = 3) -> str:
    """The CPU latency column as docs/benchmarks.md shows it: `groups` recipe / ms column pairs
    side by side, the recipes in order down each pair (the first pairs one row longer when the
    count does not divide), "-" where latency was not measured."""
    rows = list(rows)
    height = max(1, -(-len(rows) // groups))
    extra = len(rows) % groups or groups
    columns, start = [], 0
    for g in range(groups):
        take = height if g < extra else height - 1
        columns.append(rows[start:start + take])
        start += take
    lines = ["| " + " | ".join(["recipe | CPU ms"] * groups) + " |", "|" + "---|---:|" * groups]
    for i in range(height):
        cells = []
        for column in columns:
            if i < len(column):
                r = column[i]
                cells += [r["recipe"], f"{r['latency_ms']:.1f}" if r["latency_ms"] is not None else "-"]
            else:
                cells += ["", ""]
        lines.append("|" + "".join(f" {c} |" if c else " |" for c in cells))
    return "\n".join(lines)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.markdown:
        from ..benchmarks import command_line, load_average, markdown_problem

        problem = markdown_problem(args.markdown, MARKDOWN_TAG)
        if problem:  # before the run, not after it
            return error(problem)
        command, load_before = command_line("insightface-align stats", argv), load_average()
    names = args.recipes or recipe_names()
    rows = []
    try:
        for name in tqdm(names, desc="recipes", disable=args.json or not sys.stderr.isatty()):
            rows.append(recipe_row(name, args))
    except AlignError as exc:
        return error(str(exc))
    if args.json:
        for r in rows:
            print(json.dumps(r))
    else:
        print(format_table(rows))
    if args.markdown:
        from ..benchmarks import plural, write_markdown

        write_markdown(args.markdown, MARKDOWN_TAG, latency_table(rows), command, load_before,
                       extra=("latency not measured" if args.no_latency
                              else f"median of {plural(args.repeats, 'forward pass', 'es')} at batch 1",))
    return 0


if __name__ == "__main__":
    sys.exit(main())
