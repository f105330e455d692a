"""The standard folder layouts `tools/pack_rec.py --auto` recognises, one .rec per set.

2D (`--auto 2d`), below DATA (folder names matched case-insensitively):

    lfpw/trainset  helen/trainset  afw   [menpo_train]  -> train.rec
    ibug                                                  -> ibug.rec
    300W            (01_Indoor, 02_Outdoor: 300-W test)   -> 300W.rec
    lfpw/testset  helen/testset  (300W common subset)     -> common.rec
    COFW            (COFW_test_color.mat + N_points.mat)  -> cofw_testset.rec
    menpo_test                                            -> menpo_test.rec

3D (`--auto 3d`): 300W_LP (with landmarks/) -> train.rec; AFLW2000 -> AFLW2000-3D.rec.
Sets whose folders are all missing are left out; train needs every folder it lists
except the [optional] ones.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

from ..errors import DataError
from .aflw2000 import Aflw2000Reader
from .cofw import CofwReader
from .concat import ConcatReader
from .listfile import ListReader
from .w300 import MenpoReader, W300Reader
from .w300lp import W300LPReader


@dataclass(frozen=True)
class SetSpec:
    """One output set: name, reader format, required and optional folders (relative)."""

    name: str
    fmt: str
    folders: tuple
    optional: tuple = ()


SETS = {
    "2d": (
        SetSpec("train", "300w", ("lfpw/trainset", "helen/trainset", "afw"), ("menpo_train",)),
        SetSpec("ibug", "300w", ("ibug",)),
        SetSpec("300W", "300w", ("300W",)),
        SetSpec("common", "300w", ("lfpw/testset", "helen/testset")),
        SetSpec("cofw_testset", "cofw", ("COFW",)),
        SetSpec("menpo_test", "menpo", ("menpo_test",)),
    ),
    "3d": (
        SetSpec("train", "300wlp", ("300W_LP",)),
        SetSpec("AFLW2000-3D", "aflw2000", ("AFLW2000",)),
    ),
}


def find_folder(root, rel: str):
    """root/rel with each component matched case-insensitively, or None."""
    current = os.fspath(root)
    for part in rel.split("/"):
        try:
            names = sorted(os.listdir(current))
        except OSError:
            return None
        match = [n for n in names if n.lower() == part.lower() and os.path.isdir(os.path.join(current, n))]
        if not match:
            return None
        current = os.path.join(current, match[0])
    return current


def make_reader(fmt: str, paths, cache_dir=None):
    """A reader of format fmt over one or more input paths."""
    paths = [os.fspath(p) for p in paths]
    if fmt == "300w":
        return W300Reader(paths)
    if fmt == "menpo":
        return MenpoReader(paths)
    if len(paths) != 1:
        raise ValueError(f"format {fmt} takes one input path, got {len(paths)}")
    path = paths[0]
    if fmt == "cofw":
        if cache_dir is None:
            raise ValueError("the cofw reader needs a cache folder for the extracted images")
        return CofwReader.from_folder(path, cache_dir)
    if fmt == "aflw2000":
        return Aflw2000Reader(path)
    if fmt == "300wlp":
        return W300LPReader(path)
    if fmt == "list":
        return ListReader(path)
    raise ValueError(f"unknown format {fmt!r}")


def detect_sets(root, dims: str, cache_root) -> list:
    """[(set name, reader)] for every standard set found below root; DataError if none."""
    if dims not in SETS:
        raise ValueError(f"dims must be one of {sorted(SETS)}, got {dims!r}")
    if not os.path.isdir(root):
        raise DataError(root, "data folder not found")
    found = []
    for spec in SETS[dims]:
        present = {rel: find_folder(root, rel) for rel in spec.folders}
        if not any(present.values()):
            continue
        missing = [rel for rel, path in present.items() if path is None]
        if missing:
            raise DataError(root, f"set {spec.name!r} is incomplete: missing folder(s) {', '.join(missing)}")
        paths = list(present.values())
        reader = make_reader(spec.fmt, paths, os.path.join(cache_root, spec.name))
        extra = [p for p in (find_folder(root, rel) for rel in spec.optional) if p]
        if extra:
            reader = ConcatReader([reader, MenpoReader(extra)])
        found.append((spec.name, reader))
    if not found:
        wanted = "; ".join(f"{s.name}: {', '.join(s.folders)}" for s in SETS[dims])
        raise DataError(root, f"no standard {dims} dataset folders found (expected {wanted})")
    return found
