"""The FAN timing gauge of `tools/bench.py infer`: the worker's protocol and the client's errors.

The real worker needs torch and face-alignment (`make fan-gauge`), which the test
environment does not have; these tests drive the same `serve` loop with a stand-in
forward, and the real worker under the project's interpreter for the missing-torch path.
"""
from __future__ import annotations

import io
import json
import os
import sys
import time

import pytest

from insightface_align.benchmarks import infer_table
from insightface_align.fan_gauge import WORKER, BenchError, FanGauge

sys.path.insert(0, os.path.dirname(WORKER))
import fan_gauge as worker  # noqa: E402  (tools/fan_gauge.py)


def _fake_worker(tmp_path, body: str) -> str:
    path = tmp_path / "fake_worker.py"
    path.write_text(f"import sys, time\nsys.path.insert(0, {os.path.dirname(WORKER)!r})\n"
                    f"from fan_gauge import serve\n{body}\n")
    return str(path)


SLEEPY = """
calls = []
def forward(x):
    calls.append(x)
    time.sleep(0.02 * x)
sys.exit(serve(forward, lambda batch: batch, {"model": "fake", "input": [1], "threads": 1, "torch": "none"}))
"""


def test_pair_and_batch_report_the_worker_timings(tmp_path):
    with FanGauge(sys.executable, threads=1, worker=_fake_worker(tmp_path, SLEEPY)) as gauge:
        assert gauge.info["model"] == "fake"
        cold, warm = gauge.pair()
        assert 0.02 <= cold < 0.5 and 0.02 <= warm < 0.5  # one forward of batch 1 sleeps 20 ms
        seconds = gauge.batch(3, 2)
        assert len(seconds) == 2 and all(0.06 <= s < 1.0 for s in seconds)  # batch 3 sleeps 60 ms
        with pytest.raises(BenchError, match="batch and repeats must be positive"):
            gauge.batch(0, 1)
        assert len(gauge.pair()) == 2  # the worker goes on after an error


def test_serve_answers_each_line_and_reports_bad_requests():
    calls = []
    stdin = io.StringIO('{"cmd": "pair"}\nnot json\n{"cmd": "dance"}\n{"cmd": "quit"}\n{"cmd": "pair"}\n')
    stdout = io.StringIO()
    assert worker.serve(calls.append, lambda b: b, {"model": "m"}, stdin, stdout) == 0
    replies = [json.loads(line) for line in stdout.getvalue().splitlines()]
    assert replies[0] == {"ready": {"model": "m"}}
    assert set(replies[1]) == {"cold", "warm"} and calls == [1, 1]
    assert "JSONDecodeError" in replies[2]["error"] and "unknown command 'dance'" in replies[3]["error"]
    assert len(replies) == 4  # nothing after quit


def test_missing_interpreter_names_it_and_the_make_target(tmp_path):
    with pytest.raises(BenchError, match=r"nope/python: no such interpreter.*make fan-gauge"):
        FanGauge(str(tmp_path / "nope" / "python"), threads=1)


def test_worker_without_torch_reports_its_import_error():
    # The project's venv has no torch: the real worker dies at start-up, and the client says why.
    with pytest.raises(BenchError, match=r"exited during start \(status 2\):\n.*has no torch/face-alignment \(No module named 'torch'\); run `make fan-gauge`"):
        FanGauge(sys.executable, threads=1)


def test_worker_that_prints_garbage_or_dies_mid_run(tmp_path):
    garbage = _fake_worker(tmp_path, "print('hello there', flush=True)")
    with pytest.raises(BenchError, match="printed 'hello there', not a JSON reply"):
        FanGauge(sys.executable, threads=1, worker=garbage)
    dying = tmp_path / "dying.py"
    dying.write_text("import sys\nprint('{\"ready\": {}}', flush=True)\nsys.stdin.readline()\n"
                     "sys.stderr.write('boom\\n')\nsys.exit(3)\n")
    gauge = FanGauge(sys.executable, threads=1, worker=str(dying))
    with pytest.raises(BenchError, match=r"exited during pair \(status 3\):\nboom"):
        gauge.pair()
    gauge.close()


def test_close_stops_the_worker(tmp_path):
    gauge = FanGauge(sys.executable, threads=1, worker=_fake_worker(tmp_path, SLEEPY))
    proc = gauge._proc
    gauge.close()
    deadline = time.time() + 10
    while proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert proc.returncode == 0


def test_infer_table_shows_the_fan_ratio_only_with_a_gauge():
    rows = {"a": {"latency_s": 0.1, "latency_vs_fast": 1.0, "latency_vs_fan": 0.25, "latency_cold_s": 0.12,
                  "throughput_faces_per_s": 11.0},
            "FAN": {"latency_s": 0.4, "latency_vs_fast": 4.0, "latency_vs_fan": 1.0, "latency_cold_s": 0.41,
                    "throughput_faces_per_s": 2.6}}
    summary = {"big_batch": 32, "engine": "E", "variants": rows,
               "fan": {"model": "FAN(4)", "input": [1, 3, 256, 256], "torch": "2.13.0", "threads": 2}}
    table = infer_table(summary)
    assert "| x FAN |" in table and "| a | 0.100 | 1.00 | 0.250 | 0.120 | 11.00 |" in table
    assert "FAN(4) on (1, 3, 256, 256), torch 2.13.0, 2 threads" in table
    plain = infer_table(dict(summary, fan=None))
    assert "x FAN" not in plain and "| a | 0.100 | 1.00 | 0.120 | 11.00 |" in plain


def test_bench_infer_times_fan_in_the_same_rounds_and_filters_variants(tmp_path):
    from insightface_align.benchmarks import FAN_ROW, _bench_infer

    with FanGauge(sys.executable, threads=1, worker=_fake_worker(tmp_path, SLEEPY)) as gauge:
        summary = _bench_infer(0.125, repeats=2, big_batch=2, big_repeats=1, calib=8, fan=gauge,
                               only=("hourglass",))
    rows = summary["variants"]
    assert list(rows) == ["hourglass2-resnet", FAN_ROW]  # only the selected variant was built
    fan = rows[FAN_ROW]
    assert 0.02 <= fan["latency_s"] < 0.5 and fan["latency_vs_fan"] == 1.0
    assert 0.04 <= fan["batch_seconds_per_face"] * 2 < 1.0  # the fake sleeps 20 ms per face
    hg = rows["hourglass2-resnet"]
    assert hg["latency_vs_fan"] == round(hg["latency_s"] / fan["latency_s"], 3)
    assert "latency_vs_fast" not in hg and summary["fan"]["model"] == "fake"
    assert "| hourglass2-resnet |" in infer_table(summary) and "| - |" in infer_table(summary)
    with pytest.raises(ValueError, match="--only nothing-like-this matches no variant"):
        _bench_infer(0.125, 1, 2, 1, 8, None, ("nothing-like-this",))
