"""MXNet execution engine for CPU inference processes; must act before MXNet is imported.

MXNet reads MXNET_ENGINE_TYPE once, when it loads. Its default (threaded) engine runs
operators on worker threads, which pays off when work overlaps (training: data, compute,
kvstore; several GPUs). A batch-1 CPU forward has nothing to overlap, and on this
2-core machine the NaiveEngine (operators run in the calling thread) made it ~8% faster
(`tools/bench.py engines`). The inference tools (predict, test_nme, bench infer) pick it
for CPU runs unless the user set an engine; library users set the variable themselves.
This module imports nothing heavy, so it can run first.
"""
from __future__ import annotations

import os
import sys

ENGINE_VARIABLE = "MXNET_ENGINE_TYPE"
NAIVE = "NaiveEngine"


def _ctx_argument(argv: list) -> str:
    """Value of --ctx in argv (default "cpu"), as the inference CLIs parse it."""
    for i, arg in enumerate(argv):
        if arg == "--ctx" and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith("--ctx="):
            return arg.split("=", 1)[1]
    return "cpu"


def prefer_naive_engine(argv: list, environ=os.environ) -> bool:
    """Select the NaiveEngine for a CPU-only inference process. Returns True if it did.

    Leaves things alone when the user chose an engine, when MXNet is already loaded
    (too late to matter) or when --ctx names GPUs.
    """
    if ENGINE_VARIABLE in environ or "mxnet" in sys.modules:
        return False
    if _ctx_argument(argv).strip().lower() != "cpu":
        return False
    environ[ENGINE_VARIABLE] = NAIVE
    return True


def engine_name(environ=os.environ) -> str:
    """The engine MXNet uses in this process (its default is ThreadedEnginePerDevice)."""
    return environ.get(ENGINE_VARIABLE, "ThreadedEnginePerDevice")
