"""Optimizer states in a file that cannot run code when loaded.

MXNet's own `save_optimizer_states` pickles the updater, and unpickling a crafted file
runs arbitrary code: a `.states` file in a run folder someone else prepared would own
the machine on `--resume`. This format is an MXNet NDArray file (`mx.nd.save`: named
arrays, no code) holding every state array plus one `__meta__` entry, the UTF-8 JSON of
the layout and of the optimizer's scalar counters (update counts, Nadam's momentum
schedule, the learning-rate scheduler's position). Loading restores them onto the
freshly built optimizer of the same recipe.

A pickled `.states` (an older checkpoint) is refused unless the caller says it trusts it.
"""
from __future__ import annotations

import json

import mxnet as mx
import numpy as np

from .errors import DataError
from .fileio import atomic_path
from .ndfile import check_ndarray_file

FORMAT = "insightface-align optimizer states 1"
META = "__meta__"
PICKLE_MAGIC = b"\x80"


# What changes while training (the rest is rebuilt from the recipe): update counts, Nadam's
# momentum schedule, and where the learning-rate scheduler stands.
OPTIMIZER_COUNTERS = ("num_update", "begin_num_update", "_index_update_count", "m_schedule")
SCHEDULER_COUNTERS = ("base_lr", "count", "cur_step_ind")


def _scalars(obj, names) -> dict:
    """The named attributes of `obj` that are JSON-safe scalars or dicts of int -> number."""
    out = {}
    for key, value in ((k, getattr(obj, k)) for k in names if hasattr(obj, k)):
        if isinstance(value, (bool, int, float, str)) or value is None:
            out[key] = value
        elif isinstance(value, dict) and all(isinstance(k, int) and isinstance(v, (int, float)) and
                                             not isinstance(v, bool) for k, v in value.items()):
            out[key] = {"__intkeys__": {str(k): v for k, v in value.items()}}
    return out


def _restore(obj, values: dict, names) -> None:
    for key, value in values.items():
        if key not in names or not hasattr(obj, key):
            continue
        if isinstance(value, dict) and "__intkeys__" in value:
            value = {int(k): v for k, v in value["__intkeys__"].items()}
        setattr(obj, key, value)


def save_states(path: str, updater) -> None:
    """Write an mx.optimizer.Updater's states and its optimizer's counters to `path`."""
    arrays, layout = {}, {}
    for index, state in updater.states.items():
        key = str(index)
        if state is None:
            layout[key] = "none"
        elif isinstance(state, mx.nd.NDArray):
            layout[key] = "array"
            arrays[f"s:{key}"] = state.as_in_context(mx.cpu())
        elif isinstance(state, (tuple, list)) and all(isinstance(s, mx.nd.NDArray) for s in state):
            layout[key] = f"tuple:{len(state)}"
            for k, s in enumerate(state):
                arrays[f"s:{key}:{k}"] = s.as_in_context(mx.cpu())
        else:
            raise TypeError(f"optimizer state {index} is a {type(state).__name__}: not saved by this format")
    optimizer = updater.optimizer
    meta = {"format": FORMAT, "optimizer": type(optimizer).__name__.lower(), "layout": layout,
            "optimizer_scalars": _scalars(optimizer, OPTIMIZER_COUNTERS),
            "scheduler_scalars": (_scalars(optimizer.lr_scheduler, SCHEDULER_COUNTERS)
                                  if optimizer.lr_scheduler is not None else None)}
    arrays[META] = mx.nd.array(np.frombuffer(json.dumps(meta).encode("utf-8"), dtype=np.uint8), dtype=np.uint8)
    with atomic_path(path, suffix=".states") as tmp:
        mx.nd.save(tmp, arrays)


def is_pickled(path: str) -> bool:
    with open(path, "rb") as f:
        return f.read(1) == PICKLE_MAGIC


def load_states(path: str, updater, trust_pickle: bool = False) -> None:
    """Restore `updater` (a fresh one for the same recipe) from `path`.

    DataError naming the file when it is missing, corrupt, of another optimizer or
    shape, or pickled and not trusted."""
    try:
        pickled = is_pickled(path)
    except OSError as exc:
        raise DataError(path, f"cannot read the optimizer states ({exc.strerror or exc})") from None
    if pickled:
        if not trust_pickle:
            raise DataError(path, "optimizer states in Python's pickle format, which can run code when loaded; "
                                  "refused. If you made this file yourself, resume with --trust-pickled-states "
                                  "(it is rewritten safely at the next checkpoint), or use --reset-optimizer")
        with open(path, "rb") as f:
            updater.set_states(f.read())
        return
    check_ndarray_file(path)  # sizes inside the file checked before MXNet allocates anything
    try:
        blob = mx.nd.load(path)
    except Exception as exc:  # MXNetError, or a UnicodeDecodeError on a corrupt array name
        first = (str(exc).splitlines() or [type(exc).__name__])[0][:200]
        raise DataError(path, f"not an optimizer-states file, or corrupt ({first})") from None
    if not isinstance(blob, dict) or META not in blob:
        raise DataError(path, "not an optimizer-states file (no __meta__ entry)")
    try:
        meta = json.loads(blob[META].asnumpy().astype(np.uint8).tobytes().decode("utf-8"))
    except (ValueError, UnicodeDecodeError, RecursionError, mx.base.MXNetError) as exc:
        raise DataError(path, f"corrupt __meta__ entry ({exc})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT or not isinstance(meta.get("layout"), dict):
        raise DataError(path, f"unknown optimizer-states format {meta.get('format') if isinstance(meta, dict) else None!r}")
    optimizer = updater.optimizer
    if meta.get("optimizer") != type(optimizer).__name__.lower():
        raise DataError(path, f"states of optimizer {meta.get('optimizer')!r}, but this run uses "
                              f"{type(optimizer).__name__.lower()!r} (use --reset-optimizer to start it afresh)")
    states = {}
    for key, kind in meta["layout"].items():
        try:
            index = int(key)
            if kind == "none":
                states[index] = None
            elif kind == "array":
                states[index] = blob[f"s:{key}"]
            elif isinstance(kind, str) and kind.startswith("tuple:"):
                states[index] = tuple(blob[f"s:{key}:{k}"] for k in range(int(kind[6:])))
            else:
                raise ValueError(f"layout {kind!r}")
        except (KeyError, ValueError) as exc:
            raise DataError(path, f"state {key}: missing or malformed ({exc})") from None
    for name, target, names in (("optimizer_scalars", optimizer, OPTIMIZER_COUNTERS),
                                ("scheduler_scalars", optimizer.lr_scheduler, SCHEDULER_COUNTERS)):
        scalars = meta.get(name)
        if scalars is not None and target is not None:
            if not isinstance(scalars, dict):
                raise DataError(path, f"corrupt {name}")
            _restore(target, scalars, names)
    if hasattr(optimizer, "_all_index_update_counts"):  # MXNet keeps the same dict under both names
        optimizer._all_index_update_counts[0] = optimizer._index_update_count
    updater.states = states
    updater.states_synced = dict.fromkeys(states, False)
