"""Whole Channel Aggregation Blocks of an INT8 export as one `sdu_cab_q` operator each.

MXNet's INT8 graph runs a CAB (paper Fig. 3d) as five quantised convolutions on
channels-last uint8 maps with six float32 NCHW node means between them; converting at
every mean cost more than the means themselves. `sdu_cab_q` (symbols/ext/cab_q.cc)
keeps the whole block channels-last INT8: one quantise in, and one pass that computes
the six means (a linear map of the convolutions' outputs) straight into the float32
NCHW output. This pass finds CABs in a BN-folded fp32 graph with fused means by
structure (names are not relied on), also takes in a 2x2 max-pool or nearest 2x
up-sampling right before or a max-pool right after a block, calibrates each block's
maps on the fp32 graph in one pass, and swaps the blocks for the operator before
MXNet quantises the rest.
"""
from __future__ import annotations

import numpy as np

from .graph import SAME_3X3, calibrated_ranges, consumers, graph_of, has_attrs, heads, output_index, prune

# A CAB's maps as sdu_cab_q names them (node (w, h) of symbols/blocks.py; "_x" is the
# depthwise unit on row 3): the INT8 maps the operator calibrates (the convolutions'
# outputs; "data" is the input), its five convolutions (output map, input map,
# depthwise), and the node means it finds them by (output, x, y; "w1_h1" is the output).
MAPS = ("w3_h4", "w2_h4", "w1_h4", "w2_h3_x", "w1_h3_x")
LAYERS = (("w3_h4", "data", False), ("w2_h4", "w3_h4", False), ("w1_h4", "w2_h4", False),
          ("w2_h3_x", "w3_h4", True), ("w1_h3_x", "w2_h4", True))
MEANS = (("w1_h1", "w2_h2", "w1_h2"), ("w2_h2", "w3_h3", "w2_h3"), ("w1_h2", "w2_h3", "w1_h3"),
         ("w3_h3", "data", "w3_h4"), ("w2_h3", "w2_h3_x", "w2_h4"), ("w1_h3", "w1_h3_x", "w1_h4"))
MIN_RANGE = 1e-6  # a map that stayed 0 on every calibration image still needs a positive step


class _Match:
    """One CAB found in a graph: the entry of each map, its convolutions and its nodes."""

    def __init__(self, nodes: list, output: int):
        self.nodes, self.output = nodes, output
        self.entry = {"w1_h1": [output, 0, 0]}
        self.convs = {}
        self.inside = {output}

    def _node(self, name: str, op: str) -> dict | None:
        i = self.entry[name][0]
        node = self.nodes[i]
        return node if node["op"] == op and self.entry[name][1] == 0 else None

    def find(self) -> bool:
        for out, x, y in MEANS:
            mean = self._node(out, "sdu_mean")
            if mean is None or len(mean["inputs"]) != 2:
                return False
            for name, entry in zip((x, y), mean["inputs"]):
                if name in self.entry and self.entry[name] != entry:
                    return False
                self.entry[name] = entry
            if out != "w1_h1":
                self.inside.add(self.entry[out][0])
        for out, src, depthwise in LAYERS:
            if not self._conv(out, src, depthwise):
                return False
        return True

    def _conv(self, out: str, src: str, depthwise: bool) -> bool:
        relu = self._node(out, "Activation")
        if relu is None or relu.get("attrs", {}).get("act_type") != "relu":
            return False
        conv = self.nodes[relu["inputs"][0][0]]
        attrs = conv.get("attrs", {})
        if (conv["op"] != "Convolution" or not has_attrs(attrs, SAME_3X3) or attrs.get("no_bias", "False") != "False"
                or len(conv["inputs"]) != 3 or conv["inputs"][0] != self.entry[src]):
            return False
        filters = int(attrs["num_filter"])
        if int(attrs.get("num_group", "1")) != (filters if depthwise else 1):
            return False
        self.convs[out] = [conv["inputs"][1][0], conv["inputs"][2][0]]
        self.inside.update((self.entry[out][0], relu["inputs"][0][0]))
        return True

    def sealed(self, consumers: dict, heads: set) -> bool:
        """Whether nothing outside the block reads its inner nodes (so they can go)."""
        inner = self.inside - {self.output}
        return not (inner & heads) and all(set(consumers.get(i, ())) <= self.inside for i in inner)


MAX_POOL_2X2 = {"kernel": "(2, 2)", "stride": "(2, 2)", "pad": "(0, 0)", "pool_type": "max"}
NEAREST_2X = {"scale": "2", "sample_type": "nearest", "num_args": "1"}


def _fusable_neighbours(nodes: list, cab: _Match, consumers: dict, heads: set) -> None:
    """Set cab.pool (the node of a 2x2 max-pool that alone reads the block's output) and
    cab.before (the node of a nearest 2x up-sampling or a 2x2 max-pool that only the block
    reads), the neighbours sdu_cab_q runs inside."""
    after = consumers.get(cab.output, [])
    cab.pool = after[0] if cab.output not in heads and len(after) == 1 and _is_max_pool2(nodes[after[0]]) else None
    src = cab.entry["data"][0]
    cab.before = None
    if src not in heads and cab.entry["data"][1] == 0 and set(consumers.get(src, ())) <= cab.inside:
        node = nodes[src]
        if node["op"] == "UpSampling" and all(node.get("attrs", {}).get(k) == v for k, v in NEAREST_2X.items()):
            cab.before = ("upsample_input", src)
        elif _is_max_pool2(node):
            cab.before = ("pool_input", src)


def _is_max_pool2(node: dict) -> bool:
    attrs = dict({"pad": "(0, 0)"}, **node.get("attrs", {}))  # MXNet's default padding is none
    return (node["op"] == "Pooling" and all(attrs.get(k) == v for k, v in MAX_POOL_2X2.items())
            and attrs.get("global_pool", "False") == "False" and attrs.get("pooling_convention", "valid") == "valid")


def find_cabs(graph: dict) -> list:
    """The CABs of a symbol JSON whose structure sdu_cab_q computes, as _Match objects."""
    nodes = graph["nodes"]
    readers, head_nodes = consumers(graph), heads(graph)
    found, taken = [], set()
    for i in reversed(range(len(nodes))):  # outputs first: a block's inner means are never matched alone
        if nodes[i]["op"] != "sdu_mean" or i in taken:
            continue
        match = _Match(nodes, i)
        if match.find() and match.sealed(readers, head_nodes) and not (match.inside & taken):
            _fusable_neighbours(nodes, match, readers, head_nodes)
            found.append(match)
            taken |= match.inside
    pooled_outputs = {cab.pool for cab in found}
    for cab in found:  # a pooling between two blocks runs in the first (its output is 4x smaller)
        if cab.before is not None and cab.before[1] in pooled_outputs:
            cab.before = None
    return found


def int8_cab_blocks(sym, arg: dict, aux: dict, images: np.ndarray, batch_size: int) -> tuple:
    """sym with every CAB as one sdu_cab_q, its maps' ranges calibrated on `sym` over images
    (min/max, as MXNet's 'naive' calibration). Returns (symbol, number of blocks)."""
    graph = graph_of(sym)
    cabs = find_cabs(graph)
    if not cabs:
        return sym, 0
    nodes = graph["nodes"]
    internals = sym.get_internals()
    outputs = internals.list_outputs()
    entries = {}
    for k, cab in enumerate(cabs):
        for name in ("data",) + MAPS:
            src, index, _ = cab.entry[name]
            entries[(k, name)] = internals[output_index(outputs, nodes[src]["name"], index)]
    ranges = calibrated_ranges(arg, aux, images, batch_size, entries)
    for k, cab in enumerate(cabs):
        attrs = {}
        for name in ("data",) + MAPS:
            lo, hi = ranges[(k, name)]
            if max(abs(lo), abs(hi)) < MIN_RANGE:
                hi = MIN_RANGE
            attrs[name + "_min"], attrs[name + "_max"] = repr(float(lo)), repr(float(hi))
        data = cab.entry["data"]
        if cab.before is not None:
            attrs[cab.before[0]] = "1"
            data = nodes[cab.before[1]]["inputs"][0]
        if cab.pool is not None:
            attrs["pool_output"] = "1"
        # The block's node takes the place of the pooling it runs, if any, with the name of
        # the block's last mean.
        node = nodes[cab.output if cab.pool is None else cab.pool]
        node["name"] = nodes[cab.output]["name"]
        node["op"] = "sdu_cab_q"
        node["attrs"] = attrs
        node["inputs"] = [data] + [[i, 0, 0] for out, _, _ in LAYERS for i in cab.convs[out]]
        # MXNet 1.9 sizes the shape buffer it hands a library operator as the sum of the
        # inputs' ndim, -1 for each unknown shape: ten unknown parameters overflow it
        # (bad_alloc, heap corruption). Declared in the graph, none is unknown.
        for out, _, _ in LAYERS:
            for i in cab.convs[out]:
                nodes[i]["attrs"] = dict(nodes[i].get("attrs", {}), __shape__=str(tuple(arg[nodes[i]["name"]].shape)))
    return prune(graph), len(cabs)
