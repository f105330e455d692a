"""The project's own exceptions: every user-facing failure names the file and the problem."""
from __future__ import annotations

from dataclasses import fields


class AlignError(Exception):
    """Base class for errors this project raises on purpose."""


class ConfigError(AlignError, ValueError):
    """A network/recipe configuration is invalid; the message names the field."""

    def __init__(self, field: str, message: str):
        self.field = field
        super().__init__(f"config field '{field}': {message}")


class DataError(AlignError, ValueError):
    """A user file is malformed; the message names the file (and line when known)."""

    def __init__(self, path, message: str, line: int | None = None):
        self.path = str(path)
        self.line = line
        where = f"{self.path}:{line}" if line is not None else self.path
        super().__init__(f"{where}: {message}")


def reject_unknown_fields(cls, values: dict, section: str = "") -> None:
    """ConfigError naming the first key of `values` that is not a field of dataclass `cls`."""
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        where = f"{section}.{unknown[0]}" if section else unknown[0]
        label = f"{section} " if section else ""
        raise ConfigError(where, f"unknown {label}field; known fields: {', '.join(sorted(known))}")


def library_reason(exc: BaseException) -> str:
    """The meaningful line of a library error (MXNet's messages start with a C++ stack
    trace and end with the reason): its last line that is not part of a trace."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    for line in reversed(lines):
        if not line.startswith(("Traceback", "File ", "[bt]", "Stack trace")) and not line[:1].isdigit():
            return line.split("MXNetError: ", 1)[-1]
    return type(exc).__name__
