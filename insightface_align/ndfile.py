"""A structural check of MXNet NDArray files (`.params`, `.states`) before mx.nd.load reads them.

mx.nd.load trusts the sizes written in the file: a flipped bit in a shape can make it
allocate gigabytes and get the process killed, or fail with an undecodable name. This
walks the layout MXNet 1.x writes (list magic, arrays with their shapes and dtypes,
then the names) and checks that every size fits inside the file, without allocating.
"""
from __future__ import annotations

import os
import struct

from .errors import DataError

LIST_MAGIC = 0x112
ARRAY_MAGICS = (0xF993FAC9, 0xF993FACA)  # NDArray V2 and V3 headers
DTYPE_BYTES = {0: 4, 1: 8, 2: 2, 3: 1, 4: 4, 5: 1, 6: 8, 7: 1, 12: 2}  # mshadow type flags
MAX_NDIM = 32


class _Cursor:
    def __init__(self, data: bytes, path: str):
        self.data, self.pos, self.path = data, 0, path

    def take(self, fmt: str, what: str):
        size = struct.calcsize(fmt)
        if self.pos + size > len(self.data):
            raise DataError(self.path, f"truncated inside {what} (byte {self.pos} of {len(self.data)})")
        values = struct.unpack_from(fmt, self.data, self.pos)
        self.pos += size
        return values if len(values) > 1 else values[0]

    def skip(self, size: int, what: str):
        if size < 0 or self.pos + size > len(self.data):
            raise DataError(self.path, f"{what} needs {size} bytes but only {len(self.data) - self.pos} remain "
                                       "(truncated or corrupt)")
        self.pos += size


def check_ndarray_bytes(data: bytes, path: str = "<ndarray file>") -> int:
    """Number of arrays in an MXNet NDArray file's bytes; DataError naming `path` when
    its layout is not exactly what MXNet writes (dense arrays only)."""
    cur = _Cursor(data, path)
    if cur.take("<Q", "the header") != LIST_MAGIC:
        raise DataError(path, "not an MXNet NDArray file (wrong magic number)")
    cur.take("<Q", "the header")
    count = cur.take("<Q", "the array count")
    if count > len(data) // 16:
        raise DataError(path, f"claims {count} arrays, more than the file can hold")
    for i in range(count):
        what = f"array {i}"
        if cur.take("<I", what) not in ARRAY_MAGICS:
            raise DataError(path, f"{what}: bad header (corrupt file)")
        if cur.take("<i", what) != 0:
            raise DataError(path, f"{what}: sparse storage is not expected here")
        ndim = cur.take("<i", what)
        if ndim == 0:
            continue
        if not 0 < ndim <= MAX_NDIM:
            raise DataError(path, f"{what}: {ndim} dimensions (corrupt file)")
        dims = cur.take("<" + "q" * ndim, what)
        dims = dims if isinstance(dims, tuple) else (dims,)
        if any(d < 0 for d in dims):
            raise DataError(path, f"{what}: negative dimension in shape {dims} (corrupt file)")
        cur.take("<ii", what)  # context: device type, device id
        dtype = cur.take("<i", what)
        if dtype not in DTYPE_BYTES:
            raise DataError(path, f"{what}: unknown element type {dtype} (corrupt file)")
        size = DTYPE_BYTES[dtype]
        for d in dims:
            size *= d
            if size > len(data):
                break
        cur.skip(size, f"{what} of shape {dims}")
    names = cur.take("<Q", "the name count")
    if names not in (0, count):
        raise DataError(path, f"{names} names for {count} arrays (corrupt file)")
    for i in range(names):
        length = cur.take("<Q", f"name {i}")
        cur.skip(length, f"name {i}")
        try:
            data[cur.pos - length:cur.pos].decode("utf-8")
        except UnicodeDecodeError:
            raise DataError(path, f"name {i} is not text (corrupt file)") from None
    if cur.pos != len(data):
        raise DataError(path, f"{len(data) - cur.pos} unexpected bytes after the arrays (corrupt file)")
    return count


def check_ndarray_file(path) -> int:
    """check_ndarray_bytes on a file, with read errors named."""
    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as exc:
        raise DataError(path, f"cannot read ({exc.strerror or exc})") from None
    return check_ndarray_bytes(data, path)
