"""AlignIter: the mx.io.DataIter the Module trainer consumes (training and validation).

Batch layout (B = batch_size images): `data` (B, 3, in, in) float32 RGB 0..255; labels
`softmax_label` (B, 68, hm, hm) Gaussian targets or `coord_label` (B, 68, 2) (x, y) in
heatmap pixel-centre coordinates; with coherent pairs rows are [I0, T0(I0), I1, ...]
and `pair_affine` (B, 6) / `pair_flip` (B,) describe each T (see augment.py). Each
DataBatch also carries numpy extras for evaluation: `points` (B, 68, 2) in input
pixels, `crop_matrix` (B, 2, 3) record -> input, `record_id` (B,), `flags` (B,) (bit 1:
the validation crop was widened, bit 2: a point is outside even the widest).

Arrays are wrapped zero-copy around reusable buffers: a batch stays valid until two
further `next()` calls (Module.fit reads the previous batch's labels after fetching
the next one); pass copy=True to get private arrays.
"""
from __future__ import annotations

import collections
import logging
import weakref

import mxnet as mx
import numpy as np

from .batch import BatchBuilder, batch_shapes
from .config import DataConfig
from .recfile import RecordFile
from .workers import WorkerPool

LOG = logging.getLogger(__name__)
_HOLD = 2  # batches handed out whose buffers must not be reused yet


def epoch_order(cfg: DataConfig, num_records: int, epoch: int) -> np.ndarray:
    """Record positions this shard reads in `epoch`: a (seed, epoch) shuffle, sliced k::n."""
    if cfg.shuffle:
        order = np.random.default_rng([int(cfg.seed), int(epoch), 0x5EED]).permutation(num_records)
    else:
        order = np.arange(num_records)
    k, n = cfg.shard
    return order[k::n]


class AlignIter(mx.io.DataIter):
    """Indexed-RecordIO face iterator (release layout) with augmentation and coherent pairs."""

    def __init__(self, rec_path: str, cfg: DataConfig, idx_path: str | None = None, copy: bool = False,
                 start_method: str | None = None, epoch: int | None = None, skip_batches: int | None = None):
        """rec_path: NAME.rec (NAME.idx beside it unless idx_path); epoch/skip_batches
        override the config's start point (resume); start_method: how the worker
        processes start (default 'forkserver', or 'spawn' where forkserver is missing;
        see workers.WorkerPool)."""
        if epoch is not None or skip_batches is not None:
            cfg = cfg.replace(epoch=cfg.epoch if epoch is None else epoch,
                              skip_batches=cfg.skip_batches if skip_batches is None else skip_batches)
        super().__init__(cfg.batch_size)
        self.cfg = cfg
        self.copy = copy
        self.records = RecordFile(rec_path, idx_path)
        self.builder = BatchBuilder(cfg, self.records)
        self.rows_per_record = 2 if cfg.pairs is not None else 1
        self.records_per_batch = self.builder.records_per_batch()
        self._shapes = batch_shapes(cfg)
        self.data_names = ["data"]
        self.label_names = ["softmax_label" if cfg.label_mode == "heatmap" else "coord_label"]
        if cfg.pairs is not None:
            self.label_names += ["pair_affine", "pair_flip"]
        num_slots = (cfg.num_workers * cfg.prefetch if cfg.num_workers else 1) + _HOLD
        self._pool = None
        if cfg.num_workers:
            self._pool = WorkerPool(cfg, self.records, self._shapes, num_slots, start_method)
            self._slots = self._pool.slots
        else:
            self._slots = [_LocalSlot(self._shapes) for _ in range(num_slots)]
        self._free = collections.deque(range(num_slots))
        self._held = collections.deque()      # (slot, [NDArrays handed out])
        self._stale = 0                       # results of an abandoned epoch still in flight
        self._generation = 0
        self.epoch = int(cfg.epoch)
        self._begin(int(cfg.skip_batches))
        self._closed = False
        self._finalizer = weakref.finalize(self, _close_pool, self._pool)

    # -- DataIter interface ---------------------------------------------------------------
    @property
    def provide_data(self):
        return [mx.io.DataDesc("data", self._shapes["data"][0], np.float32)]

    @property
    def provide_label(self):
        return [mx.io.DataDesc(n, self._shapes[n][0], np.float32) for n in self.label_names]

    def reset(self):
        """Start the next epoch (new shuffle from (seed, epoch)); a no-op rewind before any batch."""
        if self._started:
            self.epoch += 1
            self._begin(0)
        else:
            self._begin(self._first)

    def next(self):
        if self._closed:
            raise RuntimeError("AlignIter is closed")
        if self._next >= self.num_batches:
            self._started = True          # an exhausted epoch (even a resumed one) advances on reset
            if not self._reported:
                self._reported = True
                self._report()
            raise StopIteration
        self._started = True
        self._dispatch()
        slot = self._collect(self._next)
        arrays = self._slots[slot].arrays
        pad = self._pad_of(self._next)
        self._next += 1
        real = self.batch_size - pad
        flags = arrays["flags"][:real]
        self.widened += int(np.count_nonzero(flags & 1))
        self.still_outside += int(np.count_nonzero(flags & 2))
        self.bad_records += int(arrays["bad_records"][0])
        self.samples_seen += real
        views = self._slots[slot].views()
        if self.copy:
            def wrap(a):
                return mx.nd.from_numpy(a.copy(), zero_copy=True)
        else:
            def wrap(a):
                return mx.nd.from_numpy(a, zero_copy=True)
        data = [wrap(views["data"])]
        label = [wrap(views[n]) for n in self.label_names]
        batch = mx.io.DataBatch(data=data, label=label, pad=pad, index=None,
                                provide_data=self.provide_data, provide_label=self.provide_label)
        batch.points = arrays["points"].copy()
        batch.crop_matrix = arrays["crop_matrix"].reshape(-1, 2, 3).copy()
        batch.record_id = arrays["record_id"].copy()
        batch.flags = arrays["flags"].copy()
        self._held.append((slot, [] if self.copy else data + label))
        while len(self._held) > _HOLD:
            self._release_oldest()
        return batch

    def getpad(self):
        return self._pad_of(max(self._next - 1, 0))

    # -- bookkeeping ----------------------------------------------------------------------
    def _begin(self, first_batch: int):
        self._abandon_in_flight()
        self._order = epoch_order(self.cfg, len(self.records), self.epoch)
        per = self.records_per_batch
        full, rest = divmod(len(self._order), per)
        self.num_batches = full + (1 if rest and self.cfg.last_batch == "pad" else 0)
        self._rest = rest
        self._first = first_batch
        self._next = first_batch
        self._dispatched = first_batch
        self._ready = {}
        self._started = False
        self._reported = False
        self.widened = self.still_outside = self.bad_records = self.samples_seen = 0

    @property
    def batches_done(self) -> int:
        """Batches of the current epoch already returned (resume with skip_batches=this)."""
        return self._next

    def _positions(self, b: int) -> np.ndarray:
        per = self.records_per_batch
        idx = np.arange(b * per, (b + 1) * per) % len(self._order)
        return self._order[idx]

    def _pad_of(self, b: int) -> int:
        if b == self.num_batches - 1 and self._rest and self.cfg.last_batch == "pad":
            return (self.records_per_batch - self._rest) * self.rows_per_record
        return 0

    def _dispatch(self):
        if self._pool is None:
            return
        while self._free and self._dispatched < self.num_batches and \
                self._dispatched - self._next < self.cfg.num_workers * self.cfg.prefetch:
            slot = self._free.popleft()
            self._pool.submit((self._generation, self._dispatched), slot,
                              self._positions(self._dispatched), self.epoch)
            self._dispatched += 1

    def _collect(self, b: int) -> int:
        if self._pool is None:
            slot = self._free.popleft()
            self.builder.fill(self._slots[slot].arrays, self._positions(b), self.epoch)
            return slot
        while b not in self._ready:
            try:
                (gen, done_b), slot = self._pool.get()
            except BaseException:
                self._closed = True
                raise
            if gen != self._generation:
                self._stale -= 1
                self._free.append(slot)
                self._dispatch()
                continue
            self._ready[done_b] = slot
        return self._ready.pop(b)

    def _release_oldest(self):
        slot, nds = self._held.popleft()
        for nd in nds:
            _wait_for_readers(nd)
        self._free.append(slot)
        self._dispatch()

    def _abandon_in_flight(self):
        if not hasattr(self, "_ready"):
            return
        self._free.extend(self._ready.values())
        if self._pool is not None:
            self._stale += self._dispatched - self._next - len(self._ready)
        self._generation += 1

    def _report(self):
        if not self.cfg.train and self.samples_seen:
            LOG.info("%s: %d of %d samples needed a wider window (+%g px steps), %d still outside "
                     "after %d retries", self.records.rec_path, self.widened, self.samples_seen,
                     self.cfg.widen_step, self.still_outside, self.cfg.widen_retries)
        if self.bad_records:
            LOG.warning("%s: %d unreadable records replaced by the next readable one",
                        self.records.rec_path, self.bad_records)

    # -- shutdown -------------------------------------------------------------------------
    @property
    def worker_pids(self) -> list:
        return self._pool.pids if self._pool is not None else []

    def close(self):
        """Stop the worker processes (also done on garbage collection and at exit)."""
        self._closed = True
        self._finalizer()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class _LocalSlot:
    """In-process batch buffers with the SharedSlot interface."""

    def __init__(self, shapes: dict):
        self.arrays = {n: np.zeros(s, dtype=d) for n, (s, d) in shapes.items()}

    def views(self) -> dict:
        return {n: a.view() for n, a in self.arrays.items()}


def _wait_for_readers(nd):
    """Block until every engine operation queued on `nd` (e.g. Module's copy of the
    batch into its executors) has finished, so its buffer can be refilled.

    MXNet's wait-to-write (reached through to_dlpack_for_write, whose capsule is then
    dropped) waits for pending reads without queueing an operation of its own, so the
    engine's OpenMP threads are not woken (and left spinning) once per batch.
    """
    mx.nd.to_dlpack_for_write(nd)


def _close_pool(pool):
    if pool is not None:
        pool.close()
