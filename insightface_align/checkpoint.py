"""Checkpoints in MXNet's layout, written atomically, plus the trainer's resume state.

Files for step S under PREFIX: PREFIX-symbol.json, PREFIX-%04d.params (S), PREFIX-%04d.states
(optimizer, pickled with the optimizer itself so Nadam's schedule and the learning-rate
scheduler survive), PREFIX-%04d.json (step, epoch, batches done, metrics) and
PREFIX-latest.json pointing at the newest complete checkpoint (written last).
"""
from __future__ import annotations

import json
import os
import tempfile

import mxnet as mx

from .errors import DataError
from .fileio import atomic_write


def save_params(path: str, arg_params: dict, aux_params: dict) -> None:
    """Save arg:/aux: prefixed NDArrays (mx.model.save_checkpoint's format) atomically."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".params", dir=directory)
    os.close(fd)
    try:
        blob = {"arg:" + k: v.as_in_context(mx.cpu()) for k, v in arg_params.items()}
        blob.update({"aux:" + k: v.as_in_context(mx.cpu()) for k, v in aux_params.items()})
        mx.nd.save(tmp, blob)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def save_checkpoint(prefix: str, step: int, symbol, arg_params, aux_params, optimizer_states: bytes | None,
                    state: dict) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(prefix)), exist_ok=True)
    atomic_write("%s-symbol.json" % prefix, symbol.tojson(), "w")
    save_params("%s-%04d.params" % (prefix, step), arg_params, aux_params)
    if optimizer_states is not None:
        atomic_write("%s-%04d.states" % (prefix, step), optimizer_states)
    atomic_write("%s-%04d.json" % (prefix, step), json.dumps(dict(state, step=step), indent=1), "w")
    atomic_write("%s-latest.json" % prefix, json.dumps({"step": step}), "w")


def latest_step(prefix: str) -> int | None:
    path = "%s-latest.json" % prefix
    if not os.path.exists(path):
        return None
    try:
        return int(json.load(open(path))["step"])
    except (ValueError, KeyError, TypeError) as exc:
        raise DataError(path, f"unreadable checkpoint pointer ({exc})") from None


def load_state(prefix: str, step: int) -> dict:
    path = "%s-%04d.json" % (prefix, step)
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError) as exc:
        raise DataError(path, f"cannot read the trainer state ({exc})") from None


def load_params(prefix: str, epoch: int) -> tuple:
    """(arg_params, aux_params) of PREFIX-EPOCH.params with a clear error when missing/corrupt."""
    path = "%s-%04d.params" % (prefix, epoch)
    if not os.path.exists(path):
        raise DataError(path, "checkpoint parameters not found")
    try:
        blob = mx.nd.load(path)
    except mx.base.MXNetError as exc:
        raise DataError(path, f"not an MXNet parameter file ({str(exc).splitlines()[0]})") from None
    if not isinstance(blob, dict):
        raise DataError(path, "expected named parameters (arg:/aux: keys)")
    args = {k[4:]: v for k, v in blob.items() if k.startswith("arg:")}
    aux = {k[4:]: v for k, v in blob.items() if k.startswith("aux:")}
    if not args:
        raise DataError(path, "no arg: parameters inside")
    return args, aux
