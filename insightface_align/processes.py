"""Worker processes that never outlive the process that started them.

Pool workers started through a forkserver are children of the forkserver, not of the
process that asked for them, so a parent killed with SIGKILL leaves them (and through
their open pipes the forkserver and MXNet's resource tracker) running. Each worker
therefore watches its parent's pid itself.
"""
from __future__ import annotations

import os
import threading
import time


def process_alive(pid: int) -> bool:
    """Whether process `pid` still runs. A killed parent stays a zombie until reaped, and
    signal 0 still reaches a zombie, so its /proc state is read too."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
        return state not in ("Z", "X")
    except (OSError, IndexError):
        return True


def exit_with_parent(parent_pid: int, interval: float = 0.5) -> None:
    """Start a daemon thread that ends this process (os._exit) once `parent_pid` is gone."""

    def watch():
        while process_alive(parent_pid):
            time.sleep(interval)
        os._exit(1)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()
