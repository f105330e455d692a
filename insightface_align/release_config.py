"""The network config of a release checkpoint, read off its parameter names and shapes.

The release's `.params` carry no config, so the project cannot rebuild their graph on
its fast CPU operators or export them with --cpu-ops / --winograd / --int8 without
knowing it. The names fix the stack count, whether SAT(III) is used and the width; the
block, the depth, the deformable-convolution placement and the class count are found by
building each candidate graph and keeping the one whose every parameter name and shape
equals the checkpoint's. Exactly one candidate must match.
"""
from __future__ import annotations

import functools
import re
from collections import Counter

from .errors import DataError
from .symbols.config import NetConfig
from .symbols.network import get_symbol

BLOCKS = ("cab", "resnet", "hpm", "inception")
DEPTHS = (3, 4, 2, 5)
STEM_CHANNELS = 64  # conv0's output channels at width 1.0


def _release_cfg(stacks, depth, block, sta, dcn, classes, multiplier) -> dict:
    return {"net_stacks": stacks, "net_n": depth, "net_block": block, "net_sta": sta, "net_dcn": dcn,
            "num_classes": classes, "multiplier": multiplier, "input_img_size": 128, "output_label_size": 64}


def _shapes(cfg: dict) -> dict:
    return dict(_cached_shapes(tuple(sorted(cfg.items()))))


@functools.lru_cache(maxsize=256)
def _cached_shapes(cfg_items: tuple) -> tuple:
    """A candidate graph's (name, shape) pairs; cached, as probing repeats candidates."""
    sym = get_symbol(NetConfig.from_release(dict(cfg_items)))
    arg_shapes, _, _ = sym.infer_shape(data=(1, 3, 128, 128))
    return tuple((n, tuple(s)) for n, s in zip(sym.list_arguments(), arg_shapes) if n != "data")


def infer_release_config(arg_shapes: dict, source: str = "<params>") -> dict:
    """The release config (net_stacks, net_n, net_block, net_sta, net_dcn, num_classes,
    multiplier, ...) whose graph has exactly these arg params {name: shape}.

    DataError naming `source` when no candidate (or more than one) matches."""
    shapes = {str(k): tuple(int(d) for d in v) for k, v in arg_shapes.items() if k != "data"}
    stem = shapes.get("conv0_weight")
    if stem is None or len(stem) != 4:
        raise DataError(source, "no conv0_weight: not a checkpoint of the release's network")
    stacks = 1 + max((int(m.group(1)) for m in map(re.compile(r"stack(\d+)_").match, shapes) if m), default=-1)
    if stacks < 1:
        raise DataError(source, "no stackN_ parameters: not a checkpoint of the release's network")
    sta = 1 if any(name.startswith("sta") and not name.startswith("stack") for name in shapes) else 0
    dcns = (1, 2, 3) if any("offset" in name for name in shapes) else (0,)
    head_shapes = [shape for name, shape in shapes.items()
                   if name.startswith("heatmap") and name.endswith("_weight") and "offset" not in name]
    classes = [c for c, _ in Counter(s[0] for s in head_shapes).most_common()] or [68]
    # Width: the heads read n = 256 x multiplier channels; the stem has max(64 x multiplier, 32).
    multipliers = sorted({s[1] / 256 for s in head_shapes if len(s) == 4} | {stem[0] / STEM_CHANNELS})
    multipliers = [m for m in multipliers if 0 < m <= 4 and max(int(STEM_CHANNELS * m), 32) == stem[0]]
    matches = []
    for multiplier in multipliers:
        for block in BLOCKS:
            for depth in DEPTHS:
                for dcn in dcns:
                    for n_classes in classes[:2]:
                        cfg = _release_cfg(stacks, depth, block, sta, dcn, n_classes, multiplier)
                        try:
                            candidate = _shapes(cfg)
                        except Exception:  # a combination the builder refuses (e.g. depth too deep)
                            continue
                        if candidate == shapes:
                            matches.append(cfg)
    if len(matches) != 1:
        what = "no release configuration" if not matches else f"{len(matches)} release configurations"
        raise DataError(source, f"{what} match these {len(shapes)} parameters (stacks {stacks}, "
                                f"SAT {bool(sta)}, stem {stem[0]} channels)")
    return matches[0]
