"""Pack any dataset reader into the release's indexed RecordIO (NAME.rec/.idx + .lst).

Each face becomes one record (data/record.py): the 384x384 crop around the face box
(or, without one, the tight landmark box) and its 136 label floats. Work is spread over
processes; the parent writes records in the readers' sorted item order, so the same
input always gives byte-identical files whatever the worker count. Bad files (DataError)
and deliberate skips (SkipSample) are counted and listed, never fatal.

The three files form one set, replaced together:
- a lock file (.NAME.lock) admits one packer per set; a second one fails at once;
- the set is written into a private folder (.NAME.pack-XXXX) beside the outputs;
- a journal (.NAME.pack-journal) names that folder before the three renames start and is
  removed after them, so a packer killed between two renames leaves a journal that the
  next pack of the set (or `finish_interrupted`) completes: no kill leaves a mixed set;
- on an error, Ctrl-C or SIGTERM the private folder is removed and the old set is kept.
"""
from __future__ import annotations

import fcntl
import multiprocessing
import os
import shutil
import signal
import tempfile
import threading
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field

import mxnet as mx
import numpy as np
from tqdm import tqdm

from .data.record import crop_to_record, pack_record
from .datasets.base import SkipSample, landmark_problem
from .datasets.images import load_image
from .errors import DataError
from .geometry import DEFAULT_CONVENTION, check_convention, landmark_box
from .processes import exit_with_parent

BAD_FILE = "malformed or unreadable"
OUTPUT_SUFFIXES = (".rec", ".idx", ".lst")

# Workers start from a fresh server process, not a fork of this one: a fork of a process whose
# OpenCV/OpenMP/MXNet thread pools are running can deadlock in the child.
START_METHOD = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"


@dataclass
class PackSummary:
    """What one pack run produced; `skipped` holds (item, reason kind, full message)."""

    name: str
    written: int = 0
    skipped: list = field(default_factory=list)
    files: dict = field(default_factory=dict)

    def reasons(self) -> Counter:
        return Counter(kind for _, kind, _ in self.skipped)

    def report(self) -> str:
        lines = [f"{self.name}: {self.written} images written, {len(self.skipped)} skipped"]
        lines += [f"  {count:6d} x {kind}" for kind, count in sorted(self.reasons().items())]
        if self.skipped:
            lines.append(f"{self.name}: skipped files:")
            lines += [f"  {message}" for _, _, message in self.skipped]
        lines += [f"  -> {path}" for path in self.files.values()]
        return "\n".join(lines)


_STATE = {}  # per worker process: set once by the pool initializer, read by _process


STATE_KEYS = ("reader", "quality", "image_root", "convention")


def _init_worker(parent_pid: int, *init_args) -> None:
    """Pool initializer: Ctrl-C is handled by the parent only, and the worker ends itself
    when the packer dies (processes.exit_with_parent).

    (No cv2.setNumThreads here: calling it in a forked child deadlocks OpenCV's pool.)
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    exit_with_parent(parent_pid)
    _STATE.update(zip(STATE_KEYS, init_args))


def _process(item) -> tuple:
    return _process_with(_STATE, item)


def _process_with(state: dict, item) -> tuple:
    """Load, crop and encode one item: ("ok", record bytes, rel path) or ("skip", desc, kind, msg)."""
    reader = state["reader"]
    try:
        sample = reader.load(item)
        image = load_image(sample.image_path)
        points = np.asarray(sample.points, dtype=np.float32)[:, :2]
        problem = landmark_problem(points, image.shape[1], image.shape[0])
        if problem:
            return ("skip", reader.describe(item), problem[0], f"{reader.describe(item)}: {problem[1]}")
        box = sample.box if sample.box is not None else landmark_box(points)
        crop, crop_points = crop_to_record(image, points, box, state["convention"])
        record = pack_record(0, crop, crop_points, quality=state["quality"], occluded=sample.occluded)
    except SkipSample as skip:
        return ("skip", reader.describe(item), skip.reason, str(skip))
    except DataError as err:
        return ("skip", reader.describe(item), BAD_FILE, str(err))
    rel = os.path.relpath(os.path.abspath(sample.image_path), state["image_root"])
    return ("ok", record, rel)


def renumber(record: bytes, index: int) -> tuple:
    """The record with header id `index` (what pack_record(index, ...) gives) and its label."""
    header, payload = mx.recordio.unpack(record)
    return mx.recordio.pack(header._replace(id=int(index)), payload), np.asarray(header.label, np.float32)


def lst_line(index: int, label, rel_path: str) -> str:
    """One im2rec-style .lst line: index, the 136 label values, the image path."""
    return "\t".join([str(index)] + [f"{v:.6f}" for v in label] + [rel_path.replace(os.sep, "/")]) + "\n"


def _start(items, workers: int, init_args) -> tuple:
    """(result iterator in item order, pool or None). Work is submitted -- and the worker
    processes started -- right here, before any output file is open, so no child holds
    a copy of the writer. A process pool executor, unlike multiprocessing.Pool, raises
    BrokenProcessPool when a worker dies (e.g. a crashing decoder) instead of hanging."""
    if workers <= 1:
        state = dict(zip(STATE_KEYS, init_args))
        return (_process_with(state, item) for item in items), None
    chunk = max(1, min(16, len(items) // (workers * 8)))
    pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context(START_METHOD),
                               initializer=_init_worker, initargs=(os.getpid(),) + tuple(init_args))
    try:
        return pool.map(_process, items, chunksize=chunk), pool
    except BaseException:
        _stop_now(pool)
        raise


def _stop_now(pool: ProcessPoolExecutor) -> None:
    """End an interrupted pool at once. A graceful shutdown waits for the chunks being
    processed, which may never finish (a worker blocked reading a file); terminated
    workers instead make the pool fail what is pending and release its queues."""
    terminate = getattr(pool, "terminate_workers", None)  # Python >= 3.14
    if terminate is not None:
        terminate()
    else:
        for proc in list((getattr(pool, "_processes", None) or {}).values()):
            proc.terminate()
    pool.shutdown(wait=True, cancel_futures=True)


def _lock(output_dir: str, name: str):
    """An exclusive lock on the set NAME in output_dir, or DataError when another packer has it."""
    path = os.path.join(output_dir, f".{name}.lock")
    handle = open(path, "a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.close()
        raise DataError(os.path.join(output_dir, name + ".rec"),
                        "another pack is writing this set now; wait for it or choose another --name") from None
    return handle


def finish_interrupted(output_dir: str, name: str) -> bool:
    """Complete a set swap a killed packer left half done (its journal names the folder
    with the new files); remove private folders of packers that died before swapping.
    Call with the set's lock held. Returns True when a swap was completed."""
    journal = os.path.join(output_dir, f".{name}.pack-journal")
    completed = False
    if os.path.exists(journal):
        with open(journal, encoding="utf-8") as f:
            staged = os.path.join(output_dir, os.path.basename(f.read().strip()))
        for ext in OUTPUT_SUFFIXES:
            source = os.path.join(staged, name + ext)
            if os.path.exists(source):
                os.replace(source, os.path.join(output_dir, name + ext))
        os.remove(journal)
        completed = True
    for entry in os.listdir(output_dir):
        if entry.startswith(f".{name}.pack-") and os.path.isdir(os.path.join(output_dir, entry)):
            shutil.rmtree(os.path.join(output_dir, entry), ignore_errors=True)
    return completed


def _swap_in(staged: str, output_dir: str, name: str) -> dict:
    """Move the staged set over the old one under the journal; returns the final paths."""
    journal = os.path.join(output_dir, f".{name}.pack-journal")
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.journal-", dir=output_dir)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(os.path.basename(staged))
    os.replace(tmp, journal)
    final = {}
    for ext in (".idx", ".lst", ".rec"):
        final[ext] = os.path.join(output_dir, name + ext)
        os.replace(os.path.join(staged, name + ext), final[ext])
    os.remove(journal)
    return {ext: final[ext] for ext in OUTPUT_SUFFIXES}


class _Terminated(KeyboardInterrupt):
    """SIGTERM while packing: unwound like Ctrl-C so workers and temporaries are cleaned up."""


def _raise_terminated(signum, frame):
    raise _Terminated()


def pack_dataset(reader, output_dir, name: str, workers: int | None = None, quality: int = 95,
                 progress: bool = True, convention: str = DEFAULT_CONVENTION) -> PackSummary:
    """Write output_dir/NAME.rec, .idx and .lst from a reader; returns the summary.

    `convention` places each face window in its record (geometry.py): `centred` on
    record pixel 191.5, `release` on pixel 192 with the box centre truncated.

    Raises DataError if no item could be packed (nothing is written then) or another
    packer holds the set.
    """
    if not name or os.sep in name or name.startswith("."):
        raise ValueError(f"invalid set name {name!r}")
    workers = (os.cpu_count() or 1) if workers is None else int(workers)
    check_convention(convention)
    output_dir = os.fspath(output_dir)
    os.makedirs(output_dir, exist_ok=True)
    lock = _lock(output_dir, name)
    previous = signal.getsignal(signal.SIGTERM) if _main_thread() else None
    try:
        if previous is not None:
            signal.signal(signal.SIGTERM, _raise_terminated)
        finish_interrupted(output_dir, name)
        staged = tempfile.mkdtemp(prefix=f".{name}.pack-", dir=output_dir)
        try:
            summary = _pack_into(reader, staged, name, workers, (quality, convention), progress)
            summary.files = _swap_in(staged, output_dir, name)
        finally:
            shutil.rmtree(staged, ignore_errors=True)
        return summary
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
        lock.close()


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def _pack_into(reader, folder: str, name: str, workers: int, options: tuple, progress: bool) -> PackSummary:
    """Write the set into `folder` (a private staging folder)."""
    paths = {ext: os.path.join(folder, name + ext) for ext in OUTPUT_SUFFIXES}
    items = reader.items()
    summary = PackSummary(name=name)
    image_root = os.path.abspath(reader.image_root())
    writer = lst = bar = None
    quality, convention = options
    results, pool = _start(items, workers, (reader, quality, image_root, convention))
    try:
        writer = mx.recordio.MXIndexedRecordIO(paths[".idx"], paths[".rec"], "w")
        lst = open(paths[".lst"], "w", encoding="utf-8", newline="\n")
        bar = tqdm(total=len(items), desc=f"pack {name}", unit="img", disable=not progress)
        for result in results:
            if result[0] == "ok":
                record, label = renumber(result[1], summary.written)
                writer.write_idx(summary.written, record)
                lst.write(lst_line(summary.written, label, result[2]))
                summary.written += 1
            else:
                summary.skipped.append(result[1:])
            bar.update(1)
        writer.close()
        lst.close()
        if summary.written == 0:
            first = summary.skipped[0][2] if summary.skipped else "no items found"
            raise DataError(image_root, f"no usable samples for {name!r} ({len(summary.skipped)} skipped; "
                                        f"first: {first})")
    except BaseException:
        if pool is not None:
            _stop_now(pool)
        if bar is not None:
            bar.close()
        if writer is not None:
            writer.close()
        if lst is not None:
            lst.close()
        raise
    bar.close()
    if pool is not None:
        pool.shutdown(wait=True)
    return summary
