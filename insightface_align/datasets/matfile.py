"""MATLAB .mat loading for both container versions, with MATLAB's array shapes.

v5/v7 files go through our own bounds-checked reader (matv5.py: scipy.io.loadmat can
segfault on corrupt files); v7.3 files are HDF5 and go through h5py.
HDF5 stores MATLAB's column-major arrays with their axes reversed (a 68x2 matrix
arrives as 2x68, an HxWx3 image as 3xWxH), so every dataset is transposed back here;
cell arrays (object references) are dereferenced element by element. Callers then see
the same shapes whichever version the file is. Any failure becomes a DataError.
"""
from __future__ import annotations

import os

import numpy as np

from ..errors import DataError

from .matv5 import MAX_VARIABLE_BYTES, read_mat_v5


def _h5_value(h5file, node):
    import h5py  # optional: only MATLAB v7.3 (HDF5) files need it

    if isinstance(node, h5py.Group):
        raise DataError(h5file.filename, f"variable {node.name!r} is a struct/group, expected an array")
    if node.shape is None:
        raise DataError(h5file.filename, f"variable {node.name!r} has no data")
    nbytes = float(np.prod(node.shape, dtype=np.float64)) * node.dtype.itemsize
    if nbytes > MAX_VARIABLE_BYTES:
        raise DataError(h5file.filename, f"variable {node.name!r} claims {nbytes:.3g} bytes (shape {node.shape})")
    raw = node[()]
    if h5py.check_dtype(ref=node.dtype) is not None:
        raw = np.asarray(raw)
        cell = np.empty(raw.shape[::-1], dtype=object)
        for index in np.ndindex(*raw.shape):
            cell[index[::-1]] = _h5_value(h5file, h5file[raw[index]])
        return cell
    return np.asarray(raw).T


def _load_h5(path, names):
    import h5py  # optional: only MATLAB v7.3 (HDF5) files need it

    out = {}
    with h5py.File(path, "r") as h5file:
        for name in h5file.keys():
            if name.startswith("#") or (names is not None and name not in names):
                continue
            out[name] = _h5_value(h5file, h5file[name])
    return out


def is_hdf5(path) -> bool:
    """True for MATLAB v7.3 files (HDF5 signature at offset 0 or 512)."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(520)
    except OSError:
        return False
    signature = b"\x89HDF\r\n\x1a\n"
    return head[:8] == signature or head[512:520] == signature


def load_mat(path, names=None) -> dict:
    """{variable name: ndarray in MATLAB shape}; `names` limits which variables are read."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise DataError(path, "file not found")
    names = list(names) if names is not None else None
    try:
        if is_hdf5(path):
            return _load_h5(path, names)
        with open(path, "rb") as handle:
            return read_mat_v5(handle.read(), path, names)
    except DataError:
        raise
    except Exception as exc:  # h5py raises many types on corrupt input
        raise DataError(path, f"not a readable MATLAB .mat file ({type(exc).__name__}: {str(exc)[:120]})") from None


def require_var(data: dict, name: str, path, shape=None) -> np.ndarray:
    """A numeric variable from load_mat output, optionally checked against an exact shape."""
    if name not in data:
        raise DataError(path, f"variable {name!r} missing (found: {', '.join(sorted(data)) or 'none'})")
    value = np.asarray(data[name])
    if value.dtype == object or not (np.issubdtype(value.dtype, np.number) or value.dtype == bool):
        raise DataError(path, f"variable {name!r} is not numeric (dtype {value.dtype})")
    if shape is not None and value.shape != tuple(shape):
        raise DataError(path, f"variable {name!r} has shape {value.shape}, expected {tuple(shape)}")
    return value
