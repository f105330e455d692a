"""Atomic file writes: nothing half-written is ever left behind."""
from __future__ import annotations

import os
import tempfile


def atomic_write(path, data, mode: str = "wb") -> None:
    """Write `data` to a temporary file in the same folder, then rename it over `path`."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=os.path.basename(path)[-32:], dir=directory)
    try:
        with os.fdopen(fd, mode) as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
