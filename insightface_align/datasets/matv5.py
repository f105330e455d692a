"""A small pure-Python reader for MATLAB v5/v7 .mat files (numeric arrays and cells).

Why not scipy.io.loadmat: on corrupt input it can crash the interpreter (a flags byte
claiming a complex uint8 matrix segfaults scipy 1.15's mio5 reader), and a packer must
survive any file. This reader checks every length against the bytes actually present,
bounds decompression, and raises DataError for anything it cannot interpret.
Supported: numeric/logical matrices of any class, cell arrays of them, zlib-compressed
(v7) elements, both byte orders. Char/struct/sparse variables are skipped unless asked for.
"""
from __future__ import annotations

import struct
import zlib

import numpy as np

from ..errors import DataError

MAX_VARIABLE_BYTES = 512 * 1024 * 1024
_MAX_DEPTH = 8
MI_MATRIX, MI_COMPRESSED = 14, 15
# MAT data type -> numpy type code; MATLAB may store a class in a smaller type.
_MI_TYPES = {1: "i1", 2: "u1", 3: "i2", 4: "u2", 5: "i4", 6: "u4", 7: "f4", 9: "f8", 12: "i8", 13: "u8"}
# mxCLASS -> numpy dtype for numeric classes.
_MX_CLASSES = {6: "f8", 7: "f4", 8: "i1", 9: "u1", 10: "i2", 11: "u2", 12: "i4", 13: "u4", 14: "i8", 15: "u8"}
MX_CELL = 1
_CLASS_NAMES = {2: "struct", 3: "object", 4: "char", 5: "sparse"}
_FLAG_COMPLEX, _FLAG_LOGICAL = 0x0800, 0x0200


class _Buffer:
    """Bounds-checked reader over bytes with the file's byte order."""

    def __init__(self, data: bytes, order: str, path):
        self.data, self.order, self.path, self.pos = data, order, path, 0

    def fail(self, message):
        raise DataError(self.path, f"corrupt MAT v5 data at byte {self.pos}: {message}")

    def remaining(self) -> int:
        return len(self.data) - self.pos

    def tag(self) -> tuple:
        """(data type, payload bytes) of the next element; advances past it and its padding."""
        if self.remaining() < 8:
            self.fail("truncated element tag")
        first, second = struct.unpack_from(self.order + "II", self.data, self.pos)
        if first >> 16:  # small data element: type and size packed into 4 bytes
            mtype, nbytes = first & 0xFFFF, first >> 16
            if nbytes > 4:
                self.fail(f"small element claims {nbytes} bytes")
            payload = self.data[self.pos + 4:self.pos + 4 + nbytes]
            self.pos += 8
            return mtype, payload
        mtype, nbytes = first, second
        if nbytes > self.remaining() - 8:
            self.fail(f"element claims {nbytes} bytes, only {self.remaining() - 8} left")
        payload = self.data[self.pos + 8:self.pos + 8 + nbytes]
        step = nbytes if mtype == MI_COMPRESSED else (nbytes + 7) // 8 * 8
        self.pos = min(len(self.data), self.pos + 8 + step)
        return mtype, payload

    def numbers(self, mtype: int, payload: bytes) -> np.ndarray:
        code = _MI_TYPES.get(mtype)
        if code is None:
            self.fail(f"unexpected data type {mtype} for numeric data")
        dtype = np.dtype(self.order + code)
        if len(payload) % dtype.itemsize:
            self.fail(f"{len(payload)} bytes is not a whole number of {dtype} values")
        return np.frombuffer(payload, dtype=dtype)


def _matrix(buf: _Buffer, payload: bytes, wanted, depth: int):
    """Decode one miMATRIX payload into (name, value); value None if not wanted/unsupported."""
    if depth > _MAX_DEPTH:
        buf.fail("cells nested too deeply")
    if not payload:
        return "", np.zeros((0, 0))
    sub = _Buffer(payload, buf.order, buf.path)
    ftype, flags = sub.tag()
    if ftype != 6 or len(flags) != 8:
        sub.fail("missing array flags")
    word = struct.unpack(buf.order + "II", flags)[0]
    mclass = word & 0xFF
    dtype, dims = sub.tag()
    dims = [int(d) for d in sub.numbers(dtype, dims)]
    if len(dims) < 2 or any(d < 0 for d in dims):
        sub.fail(f"bad dimensions {dims}")
    ntype, name = sub.tag()
    name = name.decode("latin-1")
    if wanted is not None and name not in wanted:
        return name, None
    count = 1
    for d in dims:
        count *= d
    if mclass == MX_CELL:
        if count * 8 > sub.remaining():
            sub.fail(f"cell array claims {count} elements")
        cells = np.empty(count, dtype=object)
        for k in range(count):
            mtype, inner = sub.tag()
            if mtype != MI_MATRIX:
                sub.fail(f"cell element of type {mtype}, expected a matrix")
            cells[k] = _matrix(sub, inner, None, depth + 1)[1]
        return name, cells.reshape(dims, order="F")
    if mclass not in _MX_CLASSES:
        return name, _Unsupported(mclass)
    if word & _FLAG_COMPLEX:
        sub.fail("complex arrays are not supported")
    real = sub.numbers(*sub.tag())
    if real.size != count:
        sub.fail(f"{real.size} values for dimensions {dims}")
    if count * np.dtype(_MX_CLASSES[mclass]).itemsize > MAX_VARIABLE_BYTES:
        sub.fail(f"array of {count} values is too large")
    value = real.astype(_MX_CLASSES[mclass]).reshape(dims, order="F")
    return name, value.astype(bool) if word & _FLAG_LOGICAL else value


class _Unsupported:
    """Placeholder for char/struct/sparse/object variables."""

    def __init__(self, mclass):
        self.mclass = mclass


def _inflate(buf: _Buffer, payload: bytes) -> bytes:
    inflater = zlib.decompressobj()
    try:
        out = inflater.decompress(payload, MAX_VARIABLE_BYTES + 1)
    except zlib.error as exc:
        buf.fail(f"bad compressed element ({exc})")
    if len(out) > MAX_VARIABLE_BYTES:
        buf.fail("compressed element expands beyond the size limit")
    return out


def read_mat_v5(data: bytes, path, names=None) -> dict:
    """{name: ndarray (MATLAB shape; cells as object arrays)} for the wanted variables."""
    if len(data) < 128:
        raise DataError(path, "too short for a MATLAB 5 .mat file (no 128-byte header)")
    marker = data[126:128]
    if marker not in (b"IM", b"MI"):
        raise DataError(path, "not a MATLAB 5/7 .mat file (no endian marker in the header)")
    buf = _Buffer(data, "<" if marker == b"IM" else ">", path)
    buf.pos = 128
    wanted = set(names) if names is not None else None
    out = {}
    while buf.remaining() >= 8:
        mtype, payload = buf.tag()
        if mtype == MI_COMPRESSED:
            inner = _Buffer(_inflate(buf, payload), buf.order, path)
            mtype, payload = inner.tag()
            buf_for = inner
        else:
            buf_for = buf
        if mtype != MI_MATRIX:
            continue  # other top-level elements carry no variables
        name, value = _matrix(buf_for, payload, wanted, 0)
        if value is None:
            continue
        if isinstance(value, _Unsupported):
            if wanted is not None:
                kind = _CLASS_NAMES.get(value.mclass, f"class {value.mclass}")
                raise DataError(path, f"variable {name!r} is a {kind} array, expected numbers")
            continue
        out[name] = value
    return out
