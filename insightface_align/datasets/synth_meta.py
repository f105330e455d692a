"""The occlusion flags of rendered faces: `synth_meta.jsonl` beside their `.pts` files.

The generator (synthetic/dataset.py) writes one JSON object per image with its `name`
(the file stem) and `occluded`, 68 0/1 flags for the points an occluder hides. The 300-W
reader attaches them to its samples, so the packer stores them in the records.
"""
from __future__ import annotations

import json
import os

import numpy as np

from ..errors import DataError
from .base import NUM_POINTS

META_NAME = "synth_meta.jsonl"


def read_occlusion(path: str) -> dict:
    """{file stem: (68,) bool} from a synth_meta.jsonl; DataError naming the file and line."""
    flags = {}
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(path, f"cannot read ({exc})") from None
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except ValueError as exc:
            raise DataError(path, f"not a JSON line ({exc.msg})", line=number) from None
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            raise DataError(path, "expected an object with a string 'name'", line=number)
        values = entry.get("occluded")
        if (not isinstance(values, list) or len(values) != NUM_POINTS
                or not all(v in (0, 1) and not isinstance(v, float) for v in values)):
            raise DataError(path, f"'occluded' must be {NUM_POINTS} flags 0 or 1", line=number)
        flags[entry["name"]] = np.asarray(values, dtype=bool)
    return flags


class OcclusionIndex:
    """Per-folder cache of read_occlusion, for readers that visit many files of a folder."""

    def __init__(self):
        self._folders = {}

    def lookup(self, pts_path: str):
        """The flags of the image whose .pts is `pts_path`, or None when its folder has no meta."""
        folder = os.path.dirname(os.path.abspath(pts_path))
        if folder not in self._folders:
            meta = os.path.join(folder, META_NAME)
            self._folders[folder] = read_occlusion(meta) if os.path.exists(meta) else {}
        return self._folders[folder].get(os.path.splitext(os.path.basename(pts_path))[0])
