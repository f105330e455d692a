"""Indexed RecordIO reading without MXNet, so worker processes stay MXNet-free.

Reads exactly what mx.recordio.MXIndexedRecordIO writes: the `.idx` text index
("key<TAB>offset" per line) and, in the `.rec`, records framed as
[magic uint32][cflag<<29 | length uint32][payload padded to 4 bytes]; a payload that
contained the magic word was split into parts (cflag 1 = first, 2 = middle, 3 = last)
and the magic is re-inserted between them. The payload starts with the IRHeader
struct `IfQQ` (flag, label, id, id2); flag > 0 means `flag` float32 labels follow.
"""
from __future__ import annotations

import mmap
import os
import struct

import numpy as np

from ..errors import DataError

MAGIC = 0xCED7230A
_MAGIC_BYTES = struct.pack("<I", MAGIC)
_IR_FORMAT = "<IfQQ"
_IR_SIZE = struct.calcsize(_IR_FORMAT)
NUM_POINTS = 68


def read_index(idx_path: str) -> tuple:
    """Parse a `.idx` file into (keys, offsets) int64 arrays in file order."""
    keys, offsets = [], []
    try:
        with open(idx_path, "rb") as f:
            raw = f.read()
    except OSError as exc:
        raise DataError(idx_path, f"cannot read index ({exc.strerror})") from None
    for lineno, line in enumerate(raw.split(b"\n"), start=1):
        if not line.strip():
            continue
        parts = line.strip().split(b"\t")
        try:
            if len(parts) != 2:
                raise ValueError
            key, off = int(parts[0]), int(parts[1])
        except ValueError:
            raise DataError(idx_path, "expected 'key<TAB>offset' integers", line=lineno) from None
        if off < 0 or key < 0:
            raise DataError(idx_path, "negative key or offset", line=lineno)
        keys.append(key)
        offsets.append(off)
    if not keys:
        raise DataError(idx_path, "index lists no records")
    keys_a = np.asarray(keys, dtype=np.int64)
    if np.unique(keys_a).size != keys_a.size:
        raise DataError(idx_path, "index lists a key twice")
    return keys_a, np.asarray(offsets, dtype=np.int64)


class RecordFile:
    """Random access to the records of one `.rec` through its offsets (memory-mapped).

    Opens lazily and reopens after a fork, so one object can be handed to workers.
    """

    def __init__(self, rec_path: str, idx_path: str | None = None):
        self.rec_path = str(rec_path)
        self.idx_path = str(idx_path) if idx_path else os.path.splitext(self.rec_path)[0] + ".idx"
        self.keys, self.offsets = read_index(self.idx_path)
        if not os.path.isfile(self.rec_path):
            raise DataError(self.rec_path, "record file not found")
        self._size = os.path.getsize(self.rec_path)
        bad = np.nonzero(self.offsets + 8 > self._size)[0]
        if bad.size:
            raise DataError(self.idx_path, f"offset {self.offsets[bad[0]]} lies past the end of {self.rec_path}",
                            line=int(bad[0]) + 1)
        self._pid = None
        self._mm = None
        self._file = None

    def __len__(self) -> int:
        return int(self.keys.size)

    def __getstate__(self):
        state = dict(self.__dict__)
        state.update(_pid=None, _mm=None, _file=None)
        return state

    def _map(self):
        if self._pid != os.getpid() or self._mm is None:
            self._file = open(self.rec_path, "rb")
            self._mm = mmap.mmap(self._file.fileno(), 0, access=mmap.ACCESS_READ) if self._size else b""
            self._pid = os.getpid()
        return self._mm

    def close(self):
        """Release the mapping (it is reopened on the next read)."""
        if self._mm is not None and self._pid == os.getpid() and not isinstance(self._mm, bytes):
            self._mm.close()
            self._file.close()
        self._mm = self._file = self._pid = None

    def read(self, i: int) -> bytes:
        """Raw payload of the i-th record in index order (parts re-joined)."""
        mm = self._map()
        pos = int(self.offsets[i])
        where = f"{self.rec_path} (record key {int(self.keys[i])} at offset {pos})"
        chunks = []
        part = 0
        while True:
            if pos + 8 > self._size:
                raise DataError(where, "truncated record header")
            magic, lrec = struct.unpack_from("<II", mm, pos)
            if magic != MAGIC:
                raise DataError(where, "bad RecordIO magic (index and record file disagree?)")
            cflag, length = lrec >> 29, lrec & ((1 << 29) - 1)
            start = pos + 8
            if start + length > self._size:
                raise DataError(where, "record runs past the end of the file")
            if cflag not in ((0, 1) if part == 0 else (2, 3)):
                raise DataError(where, f"bad continuation flag {cflag} in part {part}")
            chunks.append(mm[start:start + length])
            pos = start + ((length + 3) & ~3)
            part += 1
            if cflag in (0, 3):
                break
            chunks.append(_MAGIC_BYTES)
        return b"".join(chunks)

    def read_sample(self, i: int) -> tuple:
        """(jpeg bytes, points (68, 2) float32 (x, y) in record pixels, record id)."""
        return parse_payload(self.read(i), f"{self.rec_path} (record key {int(self.keys[i])})")


def parse_payload(buf: bytes, where: str) -> tuple:
    """Split a release record payload into (jpeg bytes, points_xy (68, 2) float32, id)."""
    if len(buf) < _IR_SIZE:
        raise DataError(where, "record shorter than its IRHeader")
    flag, _label, rid, _id2 = struct.unpack_from(_IR_FORMAT, buf, 0)
    if flag != 2 * NUM_POINTS:
        raise DataError(where, f"label has {flag} values, expected {2 * NUM_POINTS} (68 points as y, x)")
    end = _IR_SIZE + 4 * flag
    if len(buf) < end:
        raise DataError(where, "record shorter than its label")
    label = np.frombuffer(buf, dtype="<f4", count=flag, offset=_IR_SIZE)
    if not np.all(np.isfinite(label)):
        raise DataError(where, "label holds non-finite values")
    if rid >= 2 ** 63:  # the header field is uint64; ids are record counters, never this large
        raise DataError(where, f"implausible record id {rid} (corrupted header?)")
    pts = label.reshape(NUM_POINTS, 2)[:, ::-1].astype(np.float32)
    return buf[end:], pts, int(rid)
