"""Atomic file writes: nothing half-written is ever left behind, and the result has the
mode a plain open() would have given it (0666 minus the umask).

`tempfile.mkstemp` creates its file with mode 0600 whatever the umask; renamed into
place as is, a checkpoint or an export would be unreadable to a service running as
another user. Every atomic write goes through `atomic_path`, which gives the file the
umask's mode before the rename.
"""
from __future__ import annotations

import os
import tempfile
import threading
from contextlib import contextmanager

_UMASK_LOCK = threading.Lock()


def current_umask() -> int:
    """The process umask, read without changing it where the system allows (Linux)."""
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    with _UMASK_LOCK:  # os.umask can only be read by setting it: set it straight back
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def file_mode() -> int:
    """Mode of a new regular file: what open(path, "w") would create."""
    return 0o666 & ~current_umask()


def directory_mode() -> int:
    """Mode of a new directory: what os.mkdir would create."""
    return 0o777 & ~current_umask()


@contextmanager
def atomic_path(path, suffix: str | None = None):
    """Yield a temporary path beside `path` for a writer that wants a file name; when
    the block ends without error the file gets `file_mode()` and replaces `path`,
    otherwise it is removed. `suffix` (default: the end of path's name) lets writers
    that pick a format from the extension (matplotlib, ONNX) see the right one."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    if suffix is None:
        suffix = os.path.basename(path)[-32:]
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=suffix, dir=directory)
    os.close(fd)
    try:
        yield tmp
        os.chmod(tmp, file_mode())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write(path, data, mode: str = "wb") -> None:
    """Write `data` (bytes with "wb", text with "w") to `path` atomically."""
    with atomic_path(path) as tmp:
        with open(tmp, mode) as f:
            f.write(data)


def output_folder_problem(folder, option: str = "--out") -> str:
    """Why files cannot be written into `folder` (created if needed), '' when they can:
    checked before a tool starts its work, so a bad output path fails at once."""
    folder = os.fspath(folder) or "."
    if os.path.exists(folder) and not os.path.isdir(folder):
        return f"{folder}: {option} exists and is not a folder"
    parent = os.path.abspath(folder)
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        return f"{folder}: {option} lies under {parent}, which is a file"
    if not os.access(parent, os.W_OK | os.X_OK):
        return f"{folder}: {option} cannot be written ({parent} is not a writable folder)"
    return ""
