"""Parser for the iBUG `.pts` landmark text format (300W, LFPW, Helen, AFW, IBUG, Menpo).

    version: 1
    n_points: 68
    {
    x y          <- n_points lines
    }

Tolerated: CRLF endings, a UTF-8 BOM, surrounding spaces, blank lines and `#` comments.
Values are returned exactly as written (the iBUG files are 1-based; readers convert).
"""
from __future__ import annotations

import math
import os

import numpy as np

from ..errors import DataError


def _clean_lines(text: str):
    """(line number, content) for each non-blank line, comments removed."""
    for number, raw in enumerate(text.splitlines(), start=1):
        content = raw.split("#", 1)[0].strip()
        if content:
            yield number, content


def parse_number(token: str, path, line: int) -> float:
    """A finite float, or a DataError naming the file, the line and the token."""
    try:
        value = float(token)
    except ValueError:
        raise DataError(path, f"expected a number, got {token[:40]!r}", line) from None
    if not math.isfinite(value):
        raise DataError(path, f"expected a finite number, got {token[:40]!r}", line)
    return value


_number = parse_number


def parse_pts(text: str, path="<pts>") -> np.ndarray:
    """Parse .pts text into an (n_points, 2) float64 array of the written values."""
    lines = list(_clean_lines(text))
    n_points = None
    pos = 0
    while pos < len(lines) and lines[pos][1] != "{":
        number, content = lines[pos]
        key, sep, value = content.partition(":")
        if not sep:
            raise DataError(path, f"expected a 'key: value' header line or '{{', got {content[:40]!r}", number)
        key, value = key.strip().lower(), value.strip()
        if key == "version" and value not in ("1", "1.0"):
            raise DataError(path, f"unsupported version {value[:20]!r} (expected 1)", number)
        if key == "n_points":
            try:
                n_points = int(value)
            except ValueError:
                raise DataError(path, f"n_points must be an integer, got {value[:20]!r}", number) from None
            if n_points <= 0:
                raise DataError(path, f"n_points must be positive, got {n_points}", number)
        pos += 1
    if n_points is None:
        raise DataError(path, "missing 'n_points:' header line")
    if pos >= len(lines):
        raise DataError(path, "missing '{' before the points")
    pos += 1
    points = []
    while pos < len(lines) and lines[pos][1] != "}":
        number, content = lines[pos]
        tokens = content.split()
        if len(tokens) != 2:
            raise DataError(path, f"expected 'x y' (2 numbers), got {len(tokens)} fields", number)
        if len(points) == n_points:
            raise DataError(path, f"more than n_points={n_points} point lines", number)
        points.append((_number(tokens[0], path, number), _number(tokens[1], path, number)))
        pos += 1
    if pos >= len(lines):
        raise DataError(path, "missing closing '}'")
    if len(points) != n_points:
        raise DataError(path, f"n_points={n_points} but {len(points)} point lines", lines[pos][0])
    if pos + 1 < len(lines):
        raise DataError(path, "unexpected content after the closing '}'", lines[pos + 1][0])
    return np.array(points, dtype=np.float64).reshape(n_points, 2)


def read_text(path) -> str:
    """Read a small annotation text file; DataError if it cannot be read or decoded."""
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except OSError as exc:
        raise DataError(path, f"cannot read file ({exc.strerror or exc})") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataError(path, f"not UTF-8/ASCII text (byte {exc.start})") from None


def read_pts(path) -> np.ndarray:
    """Parse a .pts file into an (n_points, 2) float64 array of the written values."""
    return parse_pts(read_text(path), os.fspath(path))
