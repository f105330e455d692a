"""Several readers seen as one (e.g. train = LFPW + Helen + AFW [+ Menpo2D-train])."""
from __future__ import annotations

import os

from .base import Reader


class ConcatReader(Reader):
    """Items are (reader position, inner item), in the readers' order then each one's order."""

    def __init__(self, readers):
        super().__init__()
        self.readers = list(readers)
        self.fmt = "+".join(r.fmt for r in self.readers)

    def items(self) -> list:
        return [(k, item) for k, reader in enumerate(self.readers) for item in reader.items()]

    def load(self, item):
        k, inner = item
        return self.readers[k].load(inner)

    def describe(self, item) -> str:
        k, inner = item
        return self.readers[k].describe(inner)

    def image_root(self) -> str:
        roots = [os.path.abspath(r.image_root()) for r in self.readers]
        return os.path.commonpath(roots) if roots else os.getcwd()
