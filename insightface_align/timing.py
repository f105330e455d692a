"""Latency measurement shared by model_stats and the benchmarks: median of repeated runs."""
from __future__ import annotations

import statistics
import time

import mxnet as mx
import numpy as np


def inference_module(sym, batch: int, input_size: int, ctx=None, arg_params=None, aux_params=None):
    """A bound inference Module with Xavier (or given) parameters, ready for forward()."""
    mod = mx.mod.Module(sym, data_names=["data"], label_names=None, context=ctx or mx.cpu())
    mod.bind(data_shapes=[("data", (batch, 3, input_size, input_size))], for_training=False)
    mod.init_params(mx.init.Xavier(rnd_type="gaussian", factor_type="in", magnitude=2),
                    arg_params=arg_params, aux_params=aux_params, allow_missing=True)
    return mod


def median_seconds(fn, repeats: int, warmup: int = 1) -> float:
    """Median wall time of fn() over `repeats` runs after `warmup` untimed runs."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def inference_latency(sym, batch: int, input_size: int, repeats: int = 5, ctx=None) -> float:
    """Median seconds for one forward pass (including the wait for the result)."""
    mod = inference_module(sym, batch, input_size, ctx)
    data = mx.nd.array(np.random.RandomState(0).uniform(0, 255, (batch, 3, input_size, input_size)))
    batch_obj = mx.io.DataBatch([data])

    def run():
        mod.forward(batch_obj, is_train=False)
        mod.get_outputs()[0].wait_to_read()

    return median_seconds(run, repeats)
