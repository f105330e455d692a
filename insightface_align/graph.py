"""Symbol JSON helpers shared by every graph rewriting pass (cpu_graph, export, int8_cab).

A pass reads a symbol's JSON (`graph_of`), edits its node list in place (nodes are
dicts with op, name, attrs and inputs [[node, output, version], ...]), then turns it
back into a symbol with `rebuild` (drop nodes, point uses elsewhere) or `prune` (also
drop what no longer feeds an output). `to_symbol` registers this project's compiled
operators first when the graph uses them, so a pass may introduce them in any graph.
"""
from __future__ import annotations

import json

import mxnet as mx
import numpy as np

from .symbols import ext

# MXNet's defaults of the (de)convolution attributes a pass compares (absent = default).
CONV_DEFAULTS = {"stride": "(1, 1)", "dilate": "(1, 1)", "pad": "(0, 0)", "num_group": "1", "layout": "NCHW",
                 "adj": "(0, 0)", "target_shape": "(0, 0)"}
SAME_3X3 = {"kernel": "(3, 3)", "stride": "(1, 1)", "dilate": "(1, 1)", "pad": "(1, 1)", "layout": "NCHW"}


def graph_of(sym) -> dict:
    """The symbol's JSON as a dict (a fresh copy the caller may edit)."""
    return json.loads(sym.tojson())


def to_symbol(graph: dict):
    """The symbol of a JSON dict; this project's library is loaded first when it is used."""
    text = json.dumps(graph)
    if ext.used_by(text):
        ext.load()
    return mx.sym.load_json(text)


def heads(graph: dict) -> set:
    """Indices of the nodes whose outputs are the graph's outputs."""
    return {h[0] for h in graph["heads"]}


def use_counts(graph: dict) -> dict:
    """node index -> how many inputs (and graph outputs) read it."""
    count = {}
    for node in graph["nodes"]:
        for src in node["inputs"]:
            count[src[0]] = count.get(src[0], 0) + 1
    for head in graph["heads"]:
        count[head[0]] = count.get(head[0], 0) + 1
    return count


def consumers(graph: dict) -> dict:
    """node index -> indices of the nodes that read it (once per input that does)."""
    out = {}
    for k, node in enumerate(graph["nodes"]):
        for src, _, _ in node["inputs"]:
            out.setdefault(src, []).append(k)
    return out


def has_attrs(attrs: dict, wanted: dict) -> bool:
    """Whether a (de)convolution's attributes equal `wanted` (absent ones at MXNet's defaults)."""
    return all(attrs.get(k, CONV_DEFAULTS.get(k)) == v for k, v in wanted.items())


def output_index(outputs: list, node_name: str, index: int) -> int:
    """Position in get_internals().list_outputs() of output `index` of node `node_name`
    (single-output nodes are NAME_output, multi-output ones NAME_output0, NAME_output1...,
    variables NAME)."""
    names = [node_name + "_output%d" % index] + ([node_name + "_output", node_name] if index == 0 else [])
    for name in names:
        if name in outputs:
            return outputs.index(name)
    raise ValueError(f"graph has no output {index} of node {node_name!r}")


def follow(redirect: dict, i: int) -> int:
    """The node that uses of node i point to after `redirect` (chains followed)."""
    while i in redirect:
        i = redirect[i]
    return i


def rebuild(graph: dict, redirect: dict, dropped: set):
    """Re-index a symbol JSON without `dropped` nodes, pointing `redirect` keys to their values."""
    nodes = graph["nodes"]
    keep = [i for i in range(len(nodes)) if i not in dropped]
    new_index = {old: new for new, old in enumerate(keep)}
    out_nodes = []
    for old in keep:
        node = dict(nodes[old])
        node["inputs"] = [[new_index[follow(redirect, s)], o, v] for s, o, v in node["inputs"]]
        out_nodes.append(node)
    out_heads = [[new_index[follow(redirect, s)], o, v] for s, o, v in graph["heads"]]
    out = {"nodes": out_nodes, "arg_nodes": [i for i, n in enumerate(out_nodes) if n["op"] == "null"],
           "heads": out_heads, "attrs": graph.get("attrs", {})}
    out["node_row_ptr"] = list(range(len(out_nodes) + 1))
    return to_symbol(out)


def prune(graph: dict, redirect: dict | None = None):
    """The symbol of `graph`, uses of `redirect` keys pointed to their values, without the
    nodes that then no longer feed its outputs."""
    nodes = graph["nodes"]
    redirect = redirect or {}
    live, stack = set(), [follow(redirect, h[0]) for h in graph["heads"]]
    while stack:
        i = stack.pop()
        if i not in live:
            live.add(i)
            stack.extend(follow(redirect, s) for s, _, _ in nodes[i]["inputs"])
    return rebuild(graph, redirect, {i for i in range(len(nodes)) if i not in live})


def named_output(sym, node_name: str):
    """sym with its one output named NODE_NAME_output, where loaders look for it (MXNet's
    quantisation and subgraph fusion rename the last node): that node renamed, or an
    identity of that name appended when the name is taken."""
    if sym.list_outputs() == [node_name + "_output"]:
        return sym
    graph = graph_of(sym)
    nodes = graph["nodes"]
    if len(graph["heads"]) == 1 and not any(n["name"] == node_name for n in nodes):
        nodes[graph["heads"][0][0]]["name"] = node_name
        renamed = to_symbol(graph)
        if renamed.list_outputs() == [node_name + "_output"]:
            return renamed
    return mx.sym.identity(sym, name=node_name)


def keep_used(sym, arg: dict, aux: dict) -> tuple:
    """(arg, aux) reduced to the parameters and auxiliary states `sym` reads."""
    used_args, used_aux = set(sym.list_arguments()), set(sym.list_auxiliary_states())
    return {k: v for k, v in arg.items() if k in used_args}, {k: v for k, v in aux.items() if k in used_aux}


def calibrated_ranges(arg: dict, aux: dict, images: np.ndarray, batch_size: int, entries: dict) -> dict:
    """key -> (min, max) over images of each symbol in entries {key: symbol on an fp32 graph's
    internals}: the 'naive' calibration of what MXNet's quantiser cannot see."""
    if not entries:
        return {}
    keys = list(entries)
    group = mx.sym.Group([entries[k] for k in keys])
    mod = mx.mod.Module(group, data_names=["data"], label_names=None)
    mod.bind(data_shapes=[("data", (batch_size,) + tuple(images.shape[1:]))], for_training=False)
    mod.set_params(arg, aux, allow_missing=False, allow_extra=True)
    lo, hi = np.full(len(keys), np.inf), np.full(len(keys), -np.inf)
    for start in range(0, len(images) - batch_size + 1, batch_size):
        mod.forward(mx.io.DataBatch([mx.nd.array(images[start:start + batch_size])]), is_train=False)
        for i, out in enumerate(mod.get_outputs()):
            lo[i] = min(lo[i], float(out.min().asscalar()))
            hi[i] = max(hi[i], float(out.max().asscalar()))
    return {k: (lo[i], hi[i]) for i, k in enumerate(keys)}
