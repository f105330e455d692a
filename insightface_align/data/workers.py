"""Worker processes that fill shared-memory batch slots.

Memory is bounded: a fixed set of slots (shared RawArrays) is allocated up front and a
slot is handed to a worker only when free, so at most `len(slots)` batches exist. The
processes are daemons, ignore Ctrl-C (the parent decides), exit when their parent
disappears, and are terminated/joined by `close()`, by garbage collection of the pool
(weakref.finalize) and at interpreter exit.
"""
from __future__ import annotations

import multiprocessing as mp
import os
import queue
import signal
import traceback
import weakref

import cv2
import numpy as np

from ..errors import DataError
from ..processes import process_alive
from .batch import BatchBuilder

_ALIGN = 64


class SharedSlot:
    """One batch's arrays carved out of a single shared byte buffer."""

    def __init__(self, ctx, shapes: dict, raw=None):
        offsets, total = {}, 0
        for name, (shape, dtype) in shapes.items():
            offsets[name] = total
            nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
            total += (nbytes + _ALIGN - 1) // _ALIGN * _ALIGN
        self.raw = raw if raw is not None else ctx.RawArray("b", max(total, 1))
        self.shapes = shapes
        self.offsets = offsets
        self.arrays = self.views()

    def views(self) -> dict:
        """Fresh numpy views of the buffer (each call gives independent view objects)."""
        base = np.frombuffer(self.raw, dtype=np.uint8)
        out = {}
        for name, (shape, dtype) in self.shapes.items():
            n = int(np.prod(shape)) * np.dtype(dtype).itemsize
            out[name] = base[self.offsets[name]:self.offsets[name] + n].view(dtype).reshape(shape)
        return out


def _worker_main(cfg, records, raws, shapes, tasks, done, parent_pid):
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    cv2.setNumThreads(1)
    slots = [SharedSlot(None, shapes, raw).arrays for raw in raws]
    builder = BatchBuilder(cfg, records)
    while True:
        try:
            task = tasks.get(timeout=0.5)
        except queue.Empty:
            if not process_alive(parent_pid):  # the iterator's process is gone: do not linger
                return
            continue
        if task is None:
            return
        tag, slot, positions, epoch = task
        try:
            builder.fill(slots[slot], positions, epoch)
            done.put((tag, slot, None))
        except DataError as exc:
            msg = str(exc)
            prefix = exc.path if exc.line is None else f"{exc.path}:{exc.line}"
            done.put((tag, slot, ("data", exc.path, msg[len(prefix) + 2:], exc.line)))
        except BaseException:  # report anything else verbatim, then keep serving
            done.put((tag, slot, ("other", traceback.format_exc())))


def _shutdown(procs, tasks, done):
    for _ in procs:
        try:
            tasks.put_nowait(None)
        except (queue.Full, ValueError, OSError):  # queue full or already closed: join/terminate below
            pass
    for p in procs:
        p.join(timeout=2.0)
    for p in procs:
        if p.is_alive():
            p.terminate()
            p.join(timeout=2.0)
        if p.is_alive():
            os.kill(p.pid, signal.SIGKILL)
            p.join()
    for q in (tasks, done):
        q.cancel_join_thread()
        q.close()


class WorkerPool:
    """`num_workers` processes filling `num_slots` shared batch slots on request."""

    def __init__(self, cfg, records, shapes: dict, num_slots: int, start_method: str | None = None):
        # A fresh server process, not a fork of this one: forking a process whose OpenCV/OpenMP/MXNet
        # thread pools are running deadlocks the child (seen in cv2.setNumThreads after MXNet use).
        method = start_method or ("forkserver" if "forkserver" in mp.get_all_start_methods() else "spawn")
        ctx = mp.get_context(method)
        self.slots = [SharedSlot(ctx, shapes) for _ in range(num_slots)]
        self.tasks = ctx.Queue()
        self.done = ctx.Queue()
        self.procs = [ctx.Process(target=_worker_main, name=f"align-data-{i}", daemon=True,
                                  args=(cfg, records, [s.raw for s in self.slots], shapes,
                                        self.tasks, self.done, os.getpid()))
                      for i in range(cfg.num_workers)]
        for p in self.procs:
            p.start()
        self._finalizer = weakref.finalize(self, _shutdown, self.procs, self.tasks, self.done)

    @property
    def pids(self) -> list:
        return [p.pid for p in self.procs]

    def submit(self, tag, slot: int, positions, epoch: int) -> None:
        self.tasks.put((tag, slot, np.asarray(positions, dtype=np.int64), int(epoch)))

    def get(self):
        """Next finished (tag, slot); raises the worker's error, or if a worker died."""
        while True:
            try:
                tag, slot, err = self.done.get(timeout=1.0)
            except queue.Empty:
                dead = [p for p in self.procs if not p.is_alive()]
                if dead:
                    self.close()
                    raise RuntimeError(f"data worker {dead[0].name} (pid {dead[0].pid}) died "
                                       f"with exit code {dead[0].exitcode}") from None
                continue
            if err is None:
                return tag, slot
            self.close()
            if err[0] == "data":
                raise DataError(err[1], err[2], line=err[3])
            raise RuntimeError(f"data worker failed:\n{err[1]}")

    def close(self) -> None:
        """Stop and join every worker (idempotent)."""
        self._finalizer()
