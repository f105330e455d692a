"""Client of the FAN timing worker (tools/fan_gauge.py), for side-by-side benchmarks.

The worker runs in another interpreter (one with torch and face-alignment: `make
fan-gauge` builds `.venv-fan`), so PyTorch never loads next to MXNet; this class starts
it, asks for timings and turns anything that goes wrong into a BenchError that says
what and where.
"""
from __future__ import annotations

import json
import os
import subprocess

from .errors import AlignError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORKER = os.path.join(ROOT, "tools", "fan_gauge.py")
DEFAULT_PYTHON = os.path.join(ROOT, ".venv-fan", "bin", "python")


class BenchError(AlignError):
    """A benchmark's helper process is missing, failed to start or answered nonsense."""


class FanGauge:
    """A running FAN worker: `pair()` -> (cold, warm) seconds at batch 1, `batch(B, R)`."""

    def __init__(self, python: str, threads: int, modules: int = 4, worker: str = WORKER):
        if not os.path.exists(python):
            raise BenchError(f"{python}: no such interpreter for the FAN gauge (run `make fan-gauge`, "
                             "or pass --fan-python PATH to one with torch and face-alignment)")
        self.python, self.worker = python, worker
        cmd = [python, worker, "--threads", str(threads), "--modules", str(modules)]
        self._proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      text=True, bufsize=1)
        self.info = self._read("start")["ready"]

    def _read(self, what: str) -> dict:
        line = self._proc.stdout.readline()
        if not line:
            err = self._proc.stderr.read().strip().splitlines()
            self._proc.wait()
            tail = "\n".join(err[-5:]) if err else "(no output)"
            raise BenchError(f"{self.python} {self.worker}: the FAN worker exited during {what} "
                             f"(status {self._proc.returncode}):\n{tail}")
        try:
            reply = json.loads(line)
        except json.JSONDecodeError:
            raise BenchError(f"{self.python}: the FAN worker printed {line.strip()[:200]!r}, not a JSON reply") from None
        if not isinstance(reply, dict):
            raise BenchError(f"{self.python}: the FAN worker replied {reply!r}, not a JSON object")
        if "error" in reply:
            raise BenchError(f"{self.python}: the FAN worker failed during {what}: {reply['error']}")
        return reply

    def _ask(self, request: dict) -> dict:
        try:
            self._proc.stdin.write(json.dumps(request) + "\n")
            self._proc.stdin.flush()
        except BrokenPipeError:
            pass  # _read reports the exit with the worker's stderr
        return self._read(request["cmd"])

    def pair(self) -> tuple:
        reply = self._ask({"cmd": "pair"})
        return float(reply["cold"]), float(reply["warm"])

    def batch(self, batch: int, repeats: int) -> list:
        return [float(s) for s in self._ask({"cmd": "batch", "batch": batch, "repeats": repeats})["seconds"]]

    def close(self) -> None:
        if self._proc.poll() is None:
            try:
                self._proc.stdin.write(json.dumps({"cmd": "quit"}) + "\n")
                self._proc.stdin.flush()
                self._proc.wait(timeout=30)
            except (BrokenPipeError, subprocess.TimeoutExpired):
                self._proc.kill()
                self._proc.wait()
        for stream in (self._proc.stdin, self._proc.stdout, self._proc.stderr):
            stream.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
