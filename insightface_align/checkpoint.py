"""Checkpoints in MXNet's layout, written atomically, plus the trainer's resume state.

Files for step S under PREFIX: PREFIX-symbol.json, PREFIX-%04d.params (S), PREFIX-%04d.states
(optimizer states and counters, so Nadam's schedule and the learning-rate scheduler
survive; an NDArray file that cannot run code, optimizer_states.py), PREFIX-%04d.json (step, epoch, batches done, metrics, and the
model's description: `network`, the NetConfig, `heatmap_loss` and `convention`) and
PREFIX-latest.json pointing at the newest complete checkpoint (written last).
Exports write the same PREFIX-%04d.json with only the model's description (MODEL_KEYS)
and `graph`, the form of the saved graph (export.py). docs/checkpoints.md has the layout.
"""
from __future__ import annotations

import json
import os

import mxnet as mx

from .errors import DataError, library_reason
from .fileio import atomic_path, atomic_write
from .optimizer_states import save_states

__all__ = ["MODEL_KEYS", "atomic_write", "average_params", "checkpoint_path", "checkpoint_problem", "latest_step",
           "load_config", "load_params", "load_state", "model_config", "prune_checkpoints", "resumable_step",
           "save_checkpoint", "save_params", "saved_steps"]

# What a checkpoint's json says about the model (as opposed to the trainer's state).
MODEL_KEYS = ("recipe", "network", "heatmap_loss", "convention")


def save_params(path: str, arg_params: dict, aux_params: dict) -> None:
    """Save arg:/aux: prefixed NDArrays (mx.model.save_checkpoint's format) atomically."""
    blob = {"arg:" + k: v.as_in_context(mx.cpu()) for k, v in arg_params.items()}
    blob.update({"aux:" + k: v.as_in_context(mx.cpu()) for k, v in aux_params.items()})
    with atomic_path(path, suffix=".params") as tmp:
        mx.nd.save(tmp, blob)


def checkpoint_path(prefix: str, step: int, ext: str) -> str:
    """PREFIX-NNNN.EXT, the file of checkpoint `step` with extension `ext` ('.params', ...)."""
    return "%s-%04d%s" % (prefix, step, ext)


def save_checkpoint(prefix: str, step: int, symbol, arg_params, aux_params, updater, state: dict) -> None:
    """Write checkpoint `step`; `updater` (an mx.optimizer.Updater, or None) gives the
    optimizer states, saved without pickle (optimizer_states.py)."""
    os.makedirs(os.path.dirname(os.path.abspath(prefix)), exist_ok=True)
    atomic_write("%s-symbol.json" % prefix, symbol.tojson(), "w")
    save_params(checkpoint_path(prefix, step, ".params"), arg_params, aux_params)
    if updater is not None:
        save_states(checkpoint_path(prefix, step, ".states"), updater)
    atomic_write(checkpoint_path(prefix, step, ".json"), json.dumps(dict(state, step=step), indent=1), "w")
    atomic_write("%s-latest.json" % prefix, json.dumps({"step": step}), "w")


def latest_step(prefix: str) -> int | None:
    path = "%s-latest.json" % prefix
    if not os.path.exists(path):
        return None
    try:
        return int(json.load(open(path))["step"])
    except (ValueError, KeyError, TypeError) as exc:
        raise DataError(path, f"unreadable checkpoint pointer ({exc})") from None


def saved_steps(prefix: str) -> list:
    """Steps with a parameters file under PREFIX, newest first."""
    folder, base = os.path.split(os.path.abspath(prefix))
    steps = []
    try:
        names = os.listdir(folder)
    except OSError:
        return []
    for name in names:
        stem, ext = os.path.splitext(name)
        if ext == ".params" and stem.startswith(base + "-") and stem[len(base) + 1:].isdigit():
            steps.append(int(stem[len(base) + 1:]))
    return sorted(steps, reverse=True)


def prune_checkpoints(prefix: str, keep: int) -> list:
    """Delete all but the newest `keep` checkpoints under PREFIX (params, optimizer states and
    step json); returns the removed steps, oldest first. The symbol and the latest pointer stay."""
    if keep < 1:
        raise ValueError(f"keep must be >= 1, got {keep}")
    removed = sorted(saved_steps(prefix)[keep:])
    for step in removed:
        for ext in (".params", ".states", ".json"):
            try:
                os.remove(checkpoint_path(prefix, step, ext))
            except FileNotFoundError:
                pass
    return removed


def checkpoint_problem(prefix: str, step: int, need_states: bool) -> str:
    """Why checkpoint `step` cannot be resumed from ('' when it can): each file it needs is
    present and well formed (NDArray layouts checked, json parsed)."""
    from .ndfile import check_ndarray_file
    from .optimizer_states import is_pickled

    needed = [checkpoint_path(prefix, step, ".params"), checkpoint_path(prefix, step, ".json")]
    if need_states:
        needed.append(checkpoint_path(prefix, step, ".states"))
    for path in needed:
        if not os.path.exists(path):
            return f"{path}: missing"
        try:
            if path.endswith(".json"):
                with open(path, encoding="utf-8") as f:
                    json.load(f)
            elif not (path.endswith(".states") and is_pickled(path)):  # pickled: load_states decides
                check_ndarray_file(path)
        except DataError as exc:
            return str(exc)
        except (OSError, ValueError) as exc:
            return f"{path}: unreadable ({exc})"
    return ""


def resumable_step(prefix: str, need_states: bool) -> tuple:
    """(step, [problems of newer checkpoints skipped]) of the newest intact checkpoint at or
    below the latest pointer; (None, []) when the run has none. DataError naming the
    newest checkpoint's problem when checkpoints exist but none is intact."""
    latest = latest_step(prefix)
    steps = [s for s in saved_steps(prefix) if latest is None or s <= latest]
    if latest is None and not steps:
        return None, []
    skipped = []
    for step in steps:
        problem = checkpoint_problem(prefix, step, need_states)
        if not problem:
            return step, skipped
        skipped.append(problem)
    if latest is not None and not steps:
        skipped.append(checkpoint_path(prefix, latest, ".params") + ": missing")
    hint = (" (--reset-optimizer resumes without the optimizer states)"
            if need_states and any(".states" in p for p in skipped) else "")
    raise DataError(prefix, "no intact checkpoint to resume from: " + "; ".join(skipped) + hint)


def load_state(prefix: str, step: int) -> dict:
    path = checkpoint_path(prefix, step, ".json")
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError) as exc:
        raise DataError(path, f"cannot read the trainer state ({exc})") from None


def load_config(prefix: str, epoch: int) -> dict:
    """PREFIX-EPOCH.json as a dict; {} when there is none or it is unreadable (the
    release's checkpoints have none: they load by their saved graph)."""
    try:
        with open(checkpoint_path(prefix, epoch, ".json"), encoding="utf-8") as f:
            values = json.load(f)
    except (OSError, ValueError):
        return {}
    return values if isinstance(values, dict) else {}


def model_config(prefix: str, epoch: int) -> dict:
    """The model's description from a checkpoint's json (MODEL_KEYS that are present)."""
    values = load_config(prefix, epoch)
    return {k: values[k] for k in MODEL_KEYS if k in values}


def load_params(prefix: str, epoch: int) -> tuple:
    """(arg_params, aux_params) of PREFIX-EPOCH.params with a clear error when missing/corrupt."""
    path = checkpoint_path(prefix, epoch, ".params")
    if not os.path.exists(path):
        raise DataError(path, "checkpoint parameters not found")
    from .ndfile import check_ndarray_file

    check_ndarray_file(path)  # layout checked first: a cut or garbage file gets a plain reason
    try:
        blob = mx.nd.load(path)
    except mx.base.MXNetError as exc:
        raise DataError(path, f"not an MXNet parameter file ({library_reason(exc)})") from None
    if not isinstance(blob, dict):
        raise DataError(path, "expected named parameters (arg:/aux: keys)")
    args = {k[4:]: v for k, v in blob.items() if k.startswith("arg:")}
    aux = {k[4:]: v for k, v in blob.items() if k.startswith("aux:")}
    if not args:
        raise DataError(path, "no arg: parameters inside")
    return args, aux


def average_params(prefix: str, steps) -> tuple:
    """(arg_params, aux_params): the element-wise mean of checkpoints `steps` of one run.

    Averaging the weights of several checkpoints along one training trajectory (as
    stochastic weight averaging does) smooths out where a constant learning rate leaves
    the weights bouncing; BatchNorm's running statistics are averaged alike. The
    checkpoints must describe the same model (json) and hold the same tensors.
    """
    steps = list(steps)
    if not steps:
        raise ValueError("no checkpoints to average")
    first = "%s-%04d" % (prefix, steps[0])
    model = model_config(prefix, steps[0])
    sums = None
    for step in steps:
        where = "%s-%04d" % (prefix, step)
        if model_config(prefix, step) != model:
            raise DataError(where + ".json", f"describes another model than {first}.json")
        args, aux = load_params(prefix, step)
        blob = {("arg", k): v for k, v in args.items()}
        blob.update({("aux", k): v for k, v in aux.items()})
        if sums is None:
            sums = {k: v.astype("float64") for k, v in blob.items()}
            continue
        if blob.keys() != sums.keys():
            odd = sorted(set(blob) ^ set(sums))[0]
            raise DataError(where + ".params", f"tensor {odd[0]}:{odd[1]} is not in every checkpoint")
        for k, v in blob.items():
            if v.shape != sums[k].shape:
                raise DataError(where + ".params", f"{k[0]}:{k[1]} has shape {v.shape}, {first} has "
                                                   f"{sums[k].shape}")
            sums[k] += v.astype("float64")
    mean = {k: (v / len(steps)).astype("float32") for k, v in sums.items()}
    return ({k: v for (kind, k), v in mean.items() if kind == "arg"},
            {k: v for (kind, k), v in mean.items() if kind == "aux"})
