"""Graph statistics: parameter counts, size as the paper reports it, and FLOPs.

Size (MB) = (trainable parameters + BatchNorm running statistics) x 4 bytes / 1e6,
the rule that reproduces the paper's Table 1 from the release's graphs. FLOPs count
one multiply-add as two operations (so GFLOPs = 2 x GMACs) for Convolution,
Deconvolution, FullyConnected and deformable convolution (plus its bilinear
sampling, 4 taps x 2 x C per output sample); element-wise ops are ignored.
"""
from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class GraphStats:
    params: int
    aux: int
    flops: float

    @property
    def size_mb(self) -> float:
        return (self.params + self.aux) * 4 / 1e6


def param_shapes(sym, data_shape):
    """(arguments, auxiliary states) as ordered lists of (name, shape), inputs excluded."""
    arg_shapes, _, aux_shapes = sym.infer_shape(data=data_shape)
    args = [(n, tuple(s)) for n, s in zip(sym.list_arguments(), arg_shapes) if n not in _inputs(sym)]
    aux = [(n, tuple(s)) for n, s in zip(sym.list_auxiliary_states(), aux_shapes)]
    return args, aux


def _inputs(sym):
    names = set(sym.list_inputs()) - set(sym.list_auxiliary_states())
    return {n for n in names if n == "data" or n.endswith("_label")}


def count_flops(sym, data_shape) -> float:
    """Forward FLOPs of the multiply-add heavy operators at the given input shape."""
    internals = sym.get_internals()
    _, out_shapes, _ = internals.infer_shape(data=data_shape)
    shape_of = dict(zip(internals.list_outputs(), out_shapes))
    arg_shapes, _, _ = sym.infer_shape(data=data_shape)
    shape_of.update(zip(sym.list_arguments(), arg_shapes))
    graph = json.loads(sym.tojson())
    nodes = graph["nodes"]

    def out_shape(node_id, index=0):
        node = nodes[node_id]
        key = node["name"] if node["op"] == "null" else "%s_output" % node["name"]
        if key not in shape_of:
            key = "%s_output%d" % (node["name"], index)
        return shape_of.get(key)

    total = 0.0
    for node in nodes:
        op = node["op"]
        if op not in ("Convolution", "Deconvolution", "FullyConnected", "_contrib_DeformableConvolution"):
            continue
        out = shape_of.get("%s_output" % node["name"])
        weight = out_shape(node["inputs"][1][0]) if op != "_contrib_DeformableConvolution" else out_shape(
            node["inputs"][2][0])
        if out is None or weight is None:
            continue
        if op == "Deconvolution":
            data = out_shape(node["inputs"][0][0])
            macs = np.prod(data) * np.prod(weight[1:])  # every input value meets (C_out x k x k) weights
        elif op == "FullyConnected":
            macs = np.prod(out) * weight[1]  # every output value is a K-long dot product (flatten or not)
        else:
            macs = np.prod(out) * np.prod(weight[1:])
            if op == "_contrib_DeformableConvolution":
                data = out_shape(node["inputs"][0][0])
                macs += out[0] * out[2] * out[3] * int(np.prod(weight[2:])) * data[1] * 4
        total += 2.0 * float(macs)
    return total


def graph_stats(sym, data_shape) -> GraphStats:
    args, aux = param_shapes(sym, data_shape)
    return GraphStats(params=sum(int(np.prod(s)) for _, s in args), aux=sum(int(np.prod(s)) for _, s in aux),
                      flops=count_flops(sym, data_shape))
