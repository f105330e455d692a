"""`--markdown PAGE`: the benchmark commands write their tables into a docs page between
generated-table markers (docs/benchmarks.md is made this way), and the tables read like the page's.

Every command runs here for real, on its smallest configuration (width 0.125, one repeat,
a few records), twice on the same page: the rest of the page stays as written and the block
holds one table and one line naming the command, the date and the machine.
"""
import datetime
import importlib.util
import re

import numpy as np
import pytest

from conftest import ROOT

from insightface_align.benchmarks import (DCN_DISPLAY, INFER_DISPLAY, cpu_model, dcn_markdown, infer_markdown,
                                          markdown_problem, seconds, train_table, write_markdown)
from insightface_align.cli import bench, model_stats

DOCS = ROOT / "docs" / "benchmarks.md"
TAGS = {
    "stats": "insightface-align stats",
    "dcn": "insightface-align bench dcn",
    "dcn-standard": "insightface-align bench dcn --mean-impl standard",
    "train": "insightface-align bench train",
    "infer": "insightface-align bench infer",
    "data": "tools/bench_data.py",
    "synth": "tools/bench_synth.py",
}


def _tool(name: str):
    spec = importlib.util.spec_from_file_location(f"{name}_tool", ROOT / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


bench_data = _tool("bench_data")
bench_synth = _tool("bench_synth")


def page_with(tag: str) -> str:
    """A page with hand-written prose (pipes included), the tag's markers around an old table,
    and another generated block that must be left alone."""
    return (f"# Benchmarks\n\nProse written by hand | with pipes | and `code`.\n\n"
            f"<!-- begin: {tag} -->\n| old | table |\n| --- | --- |\n| 1 | 2 |\n\nWritten by `an old run`.\n"
            f"<!-- end: {tag} -->\n\nMore prose after the table.\n\n"
            f"<!-- begin: somebody else -->\n| keep | me |\n| --- | --- |\n<!-- end: somebody else -->\n")


def split_block(page: str, tag: str):
    begin, end = f"<!-- begin: {tag} -->", f"<!-- end: {tag} -->"
    assert page.count(begin) == 1 and page.count(end) == 1, f"markers of {tag!r} not once each"
    head, rest = page.split(begin)
    body, tail = rest.split(end)
    return head, body, tail


def cells(line: str) -> list:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def check_block(path, original: str, tag: str, header: list) -> list:
    """The page outside the block is unchanged; the block is a table (this header, at least
    one data row) then one provenance line. Returns the table's data rows."""
    page = path.read_text(encoding="utf-8")
    head0, _, tail0 = split_block(original, tag)
    head, body, tail = split_block(page, tag)
    assert head == head0 and tail == tail0, "the page outside the markers changed"
    assert "| old | table |" not in body and "an old run" not in body
    lines = body.strip("\n").splitlines()
    n = next((i for i, line in enumerate(lines) if not line.startswith("|")), len(lines))
    table = lines[:n]
    assert cells(table[0]) == header
    assert all(re.fullmatch(r"-{3,}:?", c) for c in cells(table[1])), table[1]
    rows = table[2:]
    assert rows and all(len(cells(r)) == len(header) for r in rows), rows
    assert sum(line.startswith("|") for line in lines) == len(table), "more than one table in the block"
    written = [line for line in lines if line.startswith("Written by `")]
    assert len(written) == 1 and written[0] == lines[-1]
    assert datetime.date.today().isoformat() in written[0] and "--markdown" in written[0]
    assert cpu_model() in written[0] and "MXNet " in written[0] and "OpenMP thread" in written[0]
    return rows


def run_twice(tmp_path, tag: str, header: list, run) -> list:
    """Run the command twice on one page; both times the block holds exactly one fresh table."""
    path = tmp_path / "page.md"
    original = page_with(tag)
    path.write_text(original, encoding="utf-8")
    assert run(str(path)) == 0
    first = path.read_text(encoding="utf-8")
    check_block(path, original, tag, header)
    assert run(str(path)) == 0
    rows = check_block(path, original, tag, header)
    second = path.read_text(encoding="utf-8")
    assert len(second.splitlines()) == len(first.splitlines()), "the second run grew the page"
    return rows


# ---- each command, smallest configuration -------------------------------------------------------

def test_stats_writes_the_latency_table(tmp_path):
    rows = run_twice(tmp_path, TAGS["stats"], ["recipe", "CPU ms"] * 3, lambda page: model_stats.main(
        ["--recipes", "hourglass1-resnet", "unet2-cab", "--repeats", "1", "--width", "0.125", "--markdown", page]))
    assert len(rows) == 1
    row = cells(rows[0])
    assert row[0] == "hourglass1-resnet" and row[2] == "unet2-cab" and row[4:] == ["", ""]
    assert float(row[1]) > 0 and float(row[3]) > 0


def test_bench_dcn_writes_its_table_under_its_mean_impl(tmp_path):
    header = ["DCN", "train step s (batch 2)", "x no-DCN", "inference s/face (batch 1)", "x no-DCN"]
    rows = run_twice(tmp_path, TAGS["dcn"], header, lambda page: bench.main(
        ["dcn", "--width", "0.125", "--repeats", "1", "--infer-repeats", "1", "--batch", "2",
         "--variants", "none", "fast", "--quiet", "--markdown", page]))
    assert [cells(r)[0] for r in rows] == [DCN_DISPLAY["none"], DCN_DISPLAY["fast"]]
    assert cells(rows[0])[2] == cells(rows[0])[4] == "1.00"  # the floor's ratios

    # --mean-impl standard has a block of its own: the default one stays as it was.
    path = tmp_path / "page.md"
    page = path.read_text(encoding="utf-8").replace(
        "More prose after the table.", f"<!-- begin: {TAGS['dcn-standard']} -->\n<!-- end: {TAGS['dcn-standard']} -->")
    path.write_text(page, encoding="utf-8")
    assert bench.main(["dcn", "--width", "0.125", "--infer-repeats", "1", "--skip-train", "--variants", "none",
                       "--mean-impl", "standard", "--quiet", "--markdown", str(path)]) == 0
    after = path.read_text(encoding="utf-8")
    assert split_block(after, TAGS["dcn"])[1] == split_block(page, TAGS["dcn"])[1]
    standard = split_block(after, TAGS["dcn-standard"])[1]
    assert f"| {DCN_DISPLAY['none']} | - | - |" in standard and "--mean-impl standard" in standard


def test_bench_train_writes_its_table(tmp_path):
    from insightface_align.data.testing import random_face, write_release_rec

    rng = np.random.default_rng(0)
    rec, _ = write_release_rec(str(tmp_path / "faces"), [random_face(rng) for _ in range(6)])
    rows = run_twice(tmp_path, TAGS["train"], ["feed", "s/step", "samples/s"], lambda page: bench.main(
        ["train", "--recipe", "demo", "--width", "0.125", "--batch", "2", "--steps", "1", "--rounds", "1",
         "--rec", rec, "--workers", "0", "--markdown", page]))
    assert [cells(r)[0] for r in rows] == ["`AlignIter` (in-process, pairs)", "fixed in-memory batch"]
    body = split_block((tmp_path / "page.md").read_text(encoding="utf-8"), TAGS["train"])[1]
    assert "Data pipeline overhead " in body and "(demo at width 0.125, batch 2, 1 round of 1 step per feed)" in body


def test_bench_infer_writes_its_table_with_the_fan_column(tmp_path):
    header = ["model", "latency s/face (batch 1)", "x cpu ops", "x FAN", "cold-cache latency", "faces/s (batch 2)"]
    # a width other than 1.0 has a table of its own (docs/bundled-model.md holds the bundled width's)
    rows = run_twice(tmp_path, TAGS["infer"] + " --width 0.125", header, lambda page: bench.main(
        ["infer", "--width", "0.125", "--repeats", "1", "--big-batch", "2", "--big-repeats", "1", "--no-fan",
         "--only", "hourglass", "cpu ops (", "--markdown", page]))
    assert [cells(r)[0] for r in rows] == ["sdu-2d cpu ops (fast DCN, fused means)", "hourglass2-resnet"]
    assert cells(rows[0])[2] == "1.00" and cells(rows[1])[3] == "-"  # no gauge: x FAN stays, empty
    assert "no FAN gauge" in (tmp_path / "page.md").read_text(encoding="utf-8")


def test_bench_data_writes_its_table(tmp_path):
    rows = run_twice(tmp_path, TAGS["data"], ["targets", "reduced JPEG decode", "workers", "samples/s",
                                              "CPU ms/sample"], lambda page: bench_data.main(
        ["--records", "8", "--batch-size", "4", "--batches", "1", "--workers", "0", "--markdown", page]))
    assert [tuple(cells(r)[:3]) for r in rows] == [(t, r, "0") for t in ("heatmap", "coords")
                                                  for r in ("never", "auto", "always")] + [
        ("recipe bundled-2d", "auto", "0")]
    note = (tmp_path / "page.md").read_text(encoding="utf-8")
    assert "JPEG decoding of the first 8 records" in note and "OpenCV imdecode" in note and "simplejpeg" in note


def test_bench_synth_writes_its_table(tmp_path):
    rows = run_twice(tmp_path, TAGS["synth"], ["step", "faces", "faces/s", "1,000 faces"],
                     lambda page: bench_synth.main(["--count", "3", "--workers", "1", "--profile-faces", "1",
                                                    "--target", "1000", "--markdown", page]))
    assert [cells(r)[0] for r in rows] == ["**render, 1 worker**", "pack into a .rec, 1 worker",
                                           "**render (1 worker) + pack**"]
    assert [cells(r)[1] for r in rows] == ["**3**", "3", ""]
    assert all(number(cells(r)[2]) > 0 for r in rows[:2])
    page = (tmp_path / "page.md").read_text(encoding="utf-8")
    assert "One process, 1 faces under cProfile" in page and "texture bake" in page and "rendering" in page
    assert "OpenGL renderer " in page


def test_bench_synth_refuses_bad_counts_before_the_run(capsys):
    assert bench_synth.main(["--count", "0"]) == 2
    assert "--count" in capsys.readouterr().err


def test_bench_data_refuses_an_unknown_recipe_before_the_run(capsys):
    assert bench_data.main(["--recipe", "no-such-recipe", "--records", "8"]) == 2
    assert "no recipe 'no-such-recipe'" in capsys.readouterr().err


# ---- the page is never lost ---------------------------------------------------------------------

def test_a_page_without_the_markers_is_refused_before_the_run(tmp_path, capsys):
    path = tmp_path / "page.md"
    path.write_text("# Hand-written page\n\nNo markers here.\n", encoding="utf-8")
    # --recipes names a recipe that does not exist: the refusal must come before any work.
    assert model_stats.main(["--recipes", "no-such-recipe", "--markdown", str(path)]) == 2
    assert bench.main(["dcn", "--mean-impl", "standard", "--markdown", str(path)]) == 2
    assert bench_data.main(["--rec", str(tmp_path / "missing.rec"), "--markdown", str(path)]) == 2
    err = capsys.readouterr().err
    assert "<!-- begin: insightface-align stats -->" in err and "<!-- begin: tools/bench_data.py -->" in err
    assert "<!-- begin: insightface-align bench dcn --mean-impl standard -->" in err
    assert path.read_text(encoding="utf-8") == "# Hand-written page\n\nNo markers here.\n"
    assert "does not exist" in markdown_problem(str(tmp_path / "no-folder" / "page.md"), "x")


def test_a_new_page_holds_just_the_block(tmp_path):
    path = tmp_path / "new.md"
    assert markdown_problem(str(path), "t") is None
    write_markdown(str(path), "t", "| a |\n| --- |\n| 1 |", "tool --markdown new.md")
    text = path.read_text(encoding="utf-8")
    assert text.startswith("<!-- begin: t -->\n| a |\n| --- |\n| 1 |\n\nWritten by `tool --markdown new.md` on ")
    assert text.endswith("<!-- end: t -->\n")


def test_bench_data_explains_every_option():
    import argparse

    captured = []
    original = argparse.ArgumentParser.parse_args

    def capture(self, *args, **kwargs):
        captured.append(self)
        raise SystemExit(0)

    argparse.ArgumentParser.parse_args = capture
    try:
        with pytest.raises(SystemExit):
            bench_data.main([])
    finally:
        argparse.ArgumentParser.parse_args = original
    parser = captured[0]
    assert issubclass(parser.formatter_class, argparse.ArgumentDefaultsHelpFormatter)
    for action in parser._actions:
        assert action.help and action.help.strip(), action.option_strings
    parser.format_help()


def test_help_texts_name_the_option(capsys):
    for main, argv in ((model_stats.main, ["--help"]), (bench.main, ["dcn", "--help"]),
                       (bench.main, ["train", "--help"]), (bench.main, ["infer", "--help"]),
                       (bench_data.main, ["--help"]), (bench_synth.main, ["--help"])):
        with pytest.raises(SystemExit):
            main(argv)
        out = capsys.readouterr().out
        assert "--markdown PAGE" in out and "generated-table markers" in out


# ---- the formats are the page's: docs/benchmarks.md's tables come out of the formatters as they are --

def docs_table(tag: str) -> list:
    """The table lines of the tag's block in docs/benchmarks.md."""
    body = split_block(DOCS.read_text(encoding="utf-8"), tag)[1].strip("\n").splitlines()
    return [line for line in body if line.startswith("|")]


def number(text: str):
    text = text.strip("*")
    return None if text in ("-", "") else float(text.replace(",", ""))


def test_docs_page_has_every_block():
    for tag in TAGS.values():
        assert markdown_problem(str(DOCS), tag) is None, tag
        assert docs_table(tag), tag


def test_stats_table_reads_like_the_page():
    table = docs_table(TAGS["stats"])
    grid = [cells(r) for r in table[2:]]
    rows = [{"recipe": row[2 * g], "latency_ms": number(row[2 * g + 1])}
            for g in range(3) for row in grid if row[2 * g]]
    assert model_stats.latency_table(rows).splitlines() == table


@pytest.mark.parametrize("key", ["dcn", "dcn-standard"])
def test_dcn_table_reads_like_the_page(key):
    table = docs_table(TAGS[key])
    batch, infer_batch = map(int, re.findall(r"\(batch (\d+)\)", table[0]))
    names = {v: k for k, v in DCN_DISPLAY.items()}
    variants = {}
    for line in table[2:]:
        name, train, train_ratio, infer, infer_ratio = cells(line)
        row = {k: v for k, v in (("train_seconds", number(train)), ("train_ratio", number(train_ratio)),
                                 ("infer_seconds", None if number(infer) is None else number(infer) * infer_batch),
                                 ("infer_ratio", number(infer_ratio))) if v is not None}
        variants[names[name]] = row
    summary = {"config": {"batch": batch, "infer_batch": infer_batch}, "variants": variants}
    assert dcn_markdown(summary).splitlines() == table


def test_infer_table_reads_like_the_page():
    table = docs_table(TAGS["infer"])
    big = int(re.findall(r"\(batch (\d+)\)", table[0])[-1])
    names = {v: k for k, v in INFER_DISPLAY.items()}
    variants = {}
    for line in table[2:]:
        name, latency, vs_fast, vs_fan, cold, rate = cells(line)
        row = {"latency_s": number(latency), "latency_cold_s": number(cold)}
        for key, value in (("latency_vs_fast", vs_fast), ("latency_vs_fan", vs_fan),
                           ("throughput_faces_per_s", rate)):
            if number(value) is not None:
                row[key] = number(value)
        variants[names.get(name, name)] = row
    assert infer_markdown({"big_batch": big, "variants": variants}).splitlines() == table


def test_train_table_reads_like_the_page():
    table = docs_table(TAGS["train"])
    feed = cells(table[2])[0]
    match = re.fullmatch(r"`AlignIter` \((\d+) worker process(?:es)?, (pairs|no pairs)\)", feed)
    (it_s, it_rate), (fx_s, fx_rate) = [[number(c) for c in cells(r)[1:]] for r in table[2:4]]
    summary = {"recipe": "sdu-2d", "width": 1.0, "batch": 8, "steps_per_round": 3, "rounds": 2,
               "data_workers": int(match.group(1)), "pairs": "both" if match.group(2) == "pairs" else None,
               "peak_rss_gb": 8.4, "data_pipeline_overhead_pct": 8.8,
               "iterator": {"seconds_per_step": it_s, "samples_per_s": it_rate},
               "fixed": {"seconds_per_step": fx_s, "samples_per_s": fx_rate}}
    assert train_table(summary).splitlines()[:4] == table


def test_data_table_reads_like_the_page():
    table = docs_table(TAGS["data"])
    rows = []
    for line in table[2:]:
        targets, reduced, workers, rate, cpu_ms = cells(line)
        rows.append((targets, reduced.strip("*").replace(" (default)", ""), int(workers.strip("*")), number(rate),
                     number(cpu_ms)))
    assert bench_data.data_table(rows).splitlines() == table
    assert sum("**" in line for line in table) == 1  # the training defaults' row


def test_synth_table_reads_like_the_page():
    table = docs_table(TAGS["synth"])
    target = int(cells(table[0])[3].split()[0].replace(",", ""))
    renders, pack = [], None
    for line in table[2:]:
        step, count, rate, _ = (c.strip("*") for c in cells(line))
        if step.startswith("render, "):
            renders.append((int(step.split()[1]), int(count), number(rate)))
        elif step.startswith("pack into a .rec, "):
            pack = (int(step.split()[4]), int(count), number(rate))
    rebuilt = bench_synth.synth_table(renders, pack, target, renders[-1][0]).splitlines()
    assert rebuilt[:2] == table[:2] and len(rebuilt) == len(table)
    for mine, theirs in zip(rebuilt[2:], table[2:]):  # durations come from the unrounded rates
        assert cells(mine)[:3] == cells(theirs)[:3]
        assert re.fullmatch(r"\**(\d+ h \d\d min|\d+ min)?\**", cells(theirs)[3]), theirs


def test_durations_read_in_hours_and_minutes():
    assert [bench_synth.duration(s) for s in (59, 600, 3599, 3600, 6150)] == \
        ["1 min", "10 min", "1 h 00 min", "1 h 00 min", "1 h 42 min"]


def test_seconds_keep_three_significant_digits_below_one():
    assert [seconds(x) for x in (46.494, 6.78, 1.0, 0.253, 0.1, 0.0143, 0.00071, None, float("nan"))] == \
        ["46.49", "6.78", "1.00", "0.253", "0.100", "0.0143", "0.000710", "-", "-"]
