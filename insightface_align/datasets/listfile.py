"""Plain list-file reader, the fallback for any other dataset.

One face per line: an image path (relative to the list file's folder, may contain
spaces) followed by 136 numbers x1 y1 ... x68 y68 in 0-based pixel-centre
coordinates, separated by spaces or tabs. Blank lines, `#` comments, CRLF endings and
trailing spaces are ignored.
"""
from __future__ import annotations

import os

import numpy as np

from ..errors import DataError
from .base import NUM_POINTS, Reader, checked_points
from .pts import parse_number, read_text
from .sample import FaceSample

N_VALUES = 2 * NUM_POINTS


def parse_list_line(content: str, path, line: int) -> tuple:
    """(relative image path, (68, 2) float32 points) from one non-blank line."""
    tokens = content.split()
    if len(tokens) < N_VALUES + 1:
        raise DataError(path, f"expected an image path and {N_VALUES} numbers, got {len(tokens)} fields", line)
    values = []
    for token in tokens[-N_VALUES:]:
        values.append(parse_number(token, path, line))
    image = " ".join(tokens[:-N_VALUES])
    points = checked_points(np.array(values).reshape(NUM_POINTS, 2), path, line)
    return image, points


def parse_list(text: str, path="<list>") -> list:
    """Every line as (line number, relative image, points); raises DataError on the first bad line."""
    out = []
    for number, raw in enumerate(text.splitlines(), start=1):
        content = raw.split("#", 1)[0].strip()
        if content:
            out.append((number,) + parse_list_line(content, path, number))
    return out


class ListReader(Reader):
    """Items are the list's lines; a malformed line fails only its own item."""

    fmt = "list"

    def __init__(self, list_path):
        super().__init__()
        self.path = os.fspath(list_path)
        self.root = os.path.dirname(os.path.abspath(self.path))

    def image_root(self) -> str:
        return self.root

    def items(self) -> list:
        items = []
        for number, raw in enumerate(read_text(self.path).splitlines(), start=1):
            content = raw.split("#", 1)[0].strip()
            if content:
                items.append((number, content))
        return items

    def describe(self, item) -> str:
        return f"{self.path}:{item[0]}"

    def load(self, item) -> FaceSample:
        number, content = item
        rel, points = parse_list_line(content, self.path, number)
        image = os.path.join(self.root, rel)
        if not os.path.isfile(image):
            raise DataError(self.path, f"image not found: {image}", number)
        return FaceSample(image_path=image, points=points, source=f"{os.path.basename(self.path)}:{number}")
