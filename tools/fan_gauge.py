#!/usr/bin/env python
"""FAN timing worker for `tools/bench.py infer --fan-python PY` (run by that interpreter).

The project's INT8 target is half the time of a 4-stack FAN (Bulat & Tzimiropoulos;
the `face-alignment` package, PyTorch, CPU, random weights). CPU speed here drifts from
one VM to the next, so the bench times FAN side by side with its own models: it starts
this worker in a separate interpreter that has torch and face-alignment (`make
fan-gauge` builds `.venv-fan`; the project's venv stays free of PyTorch), and asks it for
one timed forward per round, between its own variants.

Protocol (one JSON object per line): the worker prints {"ready": ...} once the model is
built, then answers each request on stdin:
    {"cmd": "pair"}                     -> {"cold": s, "warm": s}  (two timed forwards)
    {"cmd": "batch", "batch": B, "repeats": R} -> {"seconds": [s, ...]}  (R timed forwards)
    {"cmd": "quit"}                     -> exits
Errors are answered as {"error": "..."}. This file imports nothing of the project, so the
worker runs in an environment without MXNet.
"""
from __future__ import annotations

import argparse
import json
import sys
import time


def serve(forward, make_input, ready: dict, stdin=sys.stdin, stdout=sys.stdout) -> int:
    """Answer timing requests on stdin with `forward(make_input(batch))` timings."""

    def say(obj):
        stdout.write(json.dumps(obj) + "\n")
        stdout.flush()

    say({"ready": ready})
    one = make_input(1)
    for line in stdin:
        try:
            req = json.loads(line)
            cmd = req["cmd"]
            if cmd == "quit":
                return 0
            if cmd == "pair":
                times = []
                for _ in range(2):
                    start = time.perf_counter()
                    forward(one)
                    times.append(time.perf_counter() - start)
                say({"cold": times[0], "warm": times[1]})
            elif cmd == "batch":
                batch, repeats = int(req["batch"]), int(req["repeats"])
                if batch < 1 or repeats < 1:
                    raise ValueError("batch and repeats must be positive")
                many = make_input(batch)
                forward(many)  # warm-up at this shape
                seconds = []
                for _ in range(repeats):
                    start = time.perf_counter()
                    forward(many)
                    seconds.append(time.perf_counter() - start)
                say({"seconds": seconds})
            else:
                raise ValueError(f"unknown command {cmd!r}")
        except Exception as exc:  # reported to the bench, which raises its own error
            say({"error": f"{type(exc).__name__}: {exc}"})
    return 0


def build_fan(modules: int, threads: int, side: int):
    """(forward, make_input, description) for FAN(modules) with random weights in eval mode."""
    import torch
    from face_alignment.models import FAN

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    net = FAN(modules).eval()

    def forward(x):
        with torch.inference_mode():
            return net(x)

    def make_input(batch):
        return torch.rand(batch, 3, side, side) * 255

    ready = {"model": f"FAN({modules})", "input": [1, 3, side, side], "threads": torch.get_num_threads(),
             "torch": torch.__version__}
    return forward, make_input, ready


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--modules", type=int, default=4, help="hourglass stacks (FAN-4 is the package's 2D model)")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (match MXNet's OpenMP threads)")
    parser.add_argument("--side", type=int, default=256, help="input side in pixels (FAN's input is 256x256)")
    args = parser.parse_args(argv)
    try:
        forward, make_input, ready = build_fan(args.modules, args.threads, args.side)
    except ImportError as exc:
        print(f"{sys.executable} has no torch/face-alignment ({exc}); run `make fan-gauge`", file=sys.stderr)
        return 2
    return serve(forward, make_input, ready)


if __name__ == "__main__":
    sys.exit(main())
