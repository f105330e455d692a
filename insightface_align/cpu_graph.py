"""fp32 CPU inference graphs: deformable tap weights frozen, BatchNorm folded, convolutions
on this project's CPU operators (the --winograd graph), and the way back to the
training graph's parameters (thaw_tap_weights).

The passes take and return (symbol, arg_params, aux_params[, count]) and are exact
except fast_cpu_convolutions (Winograd rounds differently). They work on any heatmap
graph: ours, an export, or the original release's.
"""
from __future__ import annotations

import mxnet as mx
import numpy as np

from .graph import SAME_3X3, graph_of, has_attrs, keep_used, output_index, rebuild, use_counts
from .symbols.deform import OFFSET_CHANNELS, OFFSET_COLUMNS, TAPS

# Deconvolutions are not folded: oneDNN's deconvolution with a bias ran ~1.8x slower than
# without one here (4.7 vs 2.6 ms at 256->256, 32->64 px), far more than the BN pass saved.
FOLDABLE = ("Convolution", "_contrib_DeformableConvolution")
WEIGHT_INPUT = {"Convolution": 1, "_contrib_DeformableConvolution": 2}


def freeze_tap_weights(sym, arg: dict, aux: dict, data_shape: tuple = (1, 3, 128, 128)) -> tuple:
    """Replace each deformable tap GEMM's in-graph weight by a stored parameter.

    The fast and portable deformable convolutions compute their FullyConnected weight
    (the conv weights reshaped, plus the offset conv's in a unit) inside the graph, so
    training keeps the release's parameters. For deployment that weight is constant:
    evaluated once here and stored as {fc}_weight, the graph loses the reshaping ops
    and MXNet's quantiser can calibrate and quantise these GEMMs (a third of the
    network's FLOPs). Exact: the stored tensor is the one the graph computed. Some
    graphs take the weight's shape from `data` (through zero-valued ops): it is
    evaluated on two different inputs of data_shape and must not change. In a fast
    unit the offset conv's rows are rescaled by a power of two to the deformable rows'
    magnitude (the operator's offset_exponent undoes it exactly), so INT8's one range
    per weight does not round the small offset weights away.
    Returns (symbol, arg_params, aux_params, number of GEMMs frozen).
    """
    graph = graph_of(sym)
    nodes = graph["nodes"]
    internals = sym.get_internals()
    outputs = internals.list_outputs()
    arg = dict(arg)
    frozen = 0
    for index, node in enumerate(list(nodes)):
        if node["op"] != "FullyConnected" or not node["name"].endswith("_taps"):
            continue
        src, out_index, _ = node["inputs"][1]
        if nodes[src]["op"] == "null":
            continue
        weight = internals[output_index(outputs, nodes[src]["name"], out_index)]
        name = node["name"] + "_weight"
        arg[name] = _constant_value(weight, arg, aux, data_shape, node["name"])
        unit = _deform_unit_reading(nodes, index)
        if unit is not None:
            arg[name] = _balance_offset_rows(arg[name], unit)
        nodes.append({"op": "null", "name": name, "inputs": []})
        node["inputs"][1] = [len(nodes) - 1, 0, 0]
        frozen += 1
    if not frozen:
        return sym, arg, aux, 0
    new_sym = rebuild(graph, {}, set())
    return (new_sym,) + keep_used(new_sym, arg, aux) + (frozen,)


def thaw_tap_weights(graph: dict, arg: dict) -> dict:
    """freeze_tap_weights undone: arg with each stored tap GEMM weight ({name}_taps_weight)
    turned back into the convolution weights it was computed from ({name}_weight and, in
    a fast unit, {offset}_weight), the parameters every deformable implementation reads.
    Exact: the GEMM weight is those weights reshaped, a unit's offset rows scaled by the
    power of two its offset_exponent records. graph: the JSON of the graph the weights
    belong to. Weights already present are kept."""
    nodes = graph["nodes"]
    arg = dict(arg)
    for index, node in enumerate(nodes):
        key = node["name"] + "_weight"
        if node["op"] != "FullyConnected" or not node["name"].endswith("_taps") or key not in arg:
            continue
        if nodes[node["inputs"][1][0]]["name"] != key:
            continue
        name = node["name"][:-len("_taps")]
        rows = arg.pop(key).asnumpy()
        unit = _deform_unit_reading(nodes, index)
        if unit is not None:
            exponent = int(unit.get("attrs", {}).get("offset_exponent", 0))
            offset = _unit_offset_name(nodes, unit, name)
            offsets = rows[:OFFSET_COLUMNS] * np.float32(2.0 ** -exponent)
            arg.setdefault(offset + "_weight", mx.nd.array(_conv_weight(offsets, OFFSET_CHANNELS), dtype=rows.dtype))
            rows = rows[OFFSET_COLUMNS:]
        arg.setdefault(name + "_weight", mx.nd.array(_conv_weight(rows, rows.shape[0] // TAPS), dtype=rows.dtype))
    return arg


def _conv_weight(rows: np.ndarray, num_filter: int) -> np.ndarray:
    """(9F, C) tap GEMM rows (row k*F + f = W[f, :, i, j], k = 3i + j) -> W (F, C, 3, 3)."""
    return np.ascontiguousarray(rows.reshape(3, 3, num_filter, rows.shape[1]).transpose(2, 3, 0, 1))


def _unit_offset_name(nodes: list, unit: dict, name: str) -> str:
    """The offset conv's name of a fast unit: its offset bias input is {offset}_bias
    (network.py names it {name}_offset)."""
    src = nodes[unit["inputs"][1][0]]
    if src["op"] == "null" and src["name"].endswith("_bias"):
        return src["name"][:-len("_bias")]
    return name + "_offset"


def _deform_unit_reading(nodes: list, index: int):
    """The sdu_deform_unit node whose table is node `index`'s output, if any."""
    for node in nodes:
        if node["op"] == "sdu_deform_unit" and node["inputs"][0][0] == index:
            return node
    return None


def _balance_offset_rows(weight, unit: dict):
    """Scale the offset rows by 2^e, e the log2 ratio of the two row groups' peaks, and
    record e in the unit's offset_exponent (which divides it out; powers of two are exact)."""
    w = weight.asnumpy()
    exponent = int(unit.get("attrs", {}).get("offset_exponent", 0))
    offsets, taps = np.abs(w[:OFFSET_COLUMNS]).max(), np.abs(w[OFFSET_COLUMNS:]).max()
    if offsets > 0 and taps > 0:
        step = int(np.clip(np.round(np.log2(taps / offsets)), -60 - exponent, 60 - exponent))
        w[:OFFSET_COLUMNS] *= 2.0 ** step
        exponent += step
    unit.setdefault("attrs", {})["offset_exponent"] = str(exponent)
    return mx.nd.array(w, dtype=w.dtype)


def _constant_value(part, arg: dict, aux: dict, data_shape: tuple, what: str):
    """Value of a sub-graph of parameters; if it reads `data`, the same for two inputs."""
    values = {k: arg[k] for k in part.list_arguments() if k != "data"}
    aux_states = {k: aux[k] for k in part.list_auxiliary_states()}
    if "data" not in part.list_arguments():
        return part.bind(mx.cpu(), values, aux_states=aux_states).forward()[0].copy()
    outs = []
    for fill in (0.0, 127.0):
        feed = dict(values, data=mx.nd.full(data_shape, fill))
        outs.append(part.bind(mx.cpu(), feed, aux_states=aux_states).forward()[0].copy())
    if not np.array_equal(outs[0].asnumpy(), outs[1].asnumpy()):
        raise ValueError(f"{what}: its weight depends on the input's values, it cannot be frozen")
    return outs[0]


def fold_batchnorm(sym, arg: dict, aux: dict) -> tuple:
    """Fold every BatchNorm that directly follows a conv or deformable conv into its weights.

    Exact for inference (BN uses running statistics): W' = W * g, b' = (b - mean) * g + beta
    with g = gamma / sqrt(var + eps). BNs after an activation (pre-activation blocks) stay.
    A fast deformable unit folds when its tap weights are frozen (freeze_tap_weights):
    its output is linear in the tap columns of the table, so their weight rows scale.
    """
    graph = graph_of(sym)
    nodes = graph["nodes"]
    uses = use_counts(graph)
    arg, aux = {k: v.copy() for k, v in arg.items()}, dict(aux)
    redirect, dropped, folded = {}, set(), 0
    for i, node in enumerate(nodes):
        if node["op"] != "BatchNorm":
            continue
        src = node["inputs"][0][0]
        conv = nodes[src]
        if uses.get(src, 0) != 1:
            continue
        if conv["op"] in FOLDABLE:
            w_name = nodes[conv["inputs"][WEIGHT_INPUT[conv["op"]]][0]]["name"]
        elif conv["op"] == "sdu_deform_unit":
            w_name = _frozen_tap_weight(nodes, conv, uses, arg)
            if w_name is None:
                continue
        else:
            continue
        name = node["name"]
        no_bias = conv.get("attrs", {}).get("no_bias", "False") == "True"
        bias_name = conv["name"] + "_bias"
        if no_bias:
            arg[bias_name] = mx.nd.zeros(aux[name + "_moving_var"].shape)
        _fold_bn_into(node, arg, aux, w_name, bias_name, out_axis=0, tap_rows=conv["op"] == "sdu_deform_unit")
        if no_bias:
            nodes.append({"op": "null", "name": bias_name, "inputs": []})
            conv["inputs"].append([len(nodes) - 1, 0, 0])
            conv.setdefault("attrs", {})["no_bias"] = "False"
        for suffix in ("_gamma", "_beta"):
            arg.pop(name + suffix, None)
        for suffix in ("_moving_mean", "_moving_var"):
            aux.pop(name + suffix, None)
        dropped.update(src_id for src_id, _, _ in node["inputs"][1:])
        dropped.add(i)
        redirect[i] = src
        folded += 1
    new_sym = rebuild(graph, redirect, dropped)
    return (new_sym,) + keep_used(new_sym, arg, aux) + (folded,)


def _frozen_tap_weight(nodes: list, unit: dict, uses: dict, arg: dict) -> str | None:
    """The frozen tap GEMM weight (OFFSET_COLUMNS + 9F, C) of fast unit `unit`, if the GEMM feeds only it."""
    fc_index = unit["inputs"][0][0]
    fc = nodes[fc_index]
    if fc["op"] != "FullyConnected" or uses.get(fc_index, 0) != 1:
        return None
    name = nodes[fc["inputs"][1][0]]["name"]
    return name if name in arg else None


def _fold_bn_into(bn: dict, arg: dict, aux: dict, w_name: str, bias_name: str, out_axis: int,
                  tap_rows: bool = False) -> None:
    """Fold inference BatchNorm `bn` into the weight (output channels on out_axis) and bias.
    tap_rows: the weight is a fast unit's tap GEMM (OFFSET_COLUMNS + 9F, C), output channel
    f in rows OFFSET_COLUMNS + kF + f (the offset rows stay)."""
    attrs = bn.get("attrs", {})
    name = bn["name"]
    var = aux[name + "_moving_var"].asnumpy()
    gamma = np.ones_like(var) if attrs.get("fix_gamma", "True") == "True" else arg[name + "_gamma"].asnumpy()
    g = gamma / np.sqrt(var + float(attrs.get("eps", 1e-3)))
    w = arg[w_name].asnumpy()
    if tap_rows:
        w = np.concatenate([w[:OFFSET_COLUMNS], w[OFFSET_COLUMNS:] * np.tile(g, TAPS)[:, None]])
    else:
        shape = [1] * w.ndim
        shape[out_axis] = -1
        w = w * g.reshape(shape)
    arg[w_name] = mx.nd.array(w)
    b = arg[bias_name].asnumpy()
    arg[bias_name] = mx.nd.array((b - aux[name + "_moving_mean"].asnumpy()) * g + arg[name + "_beta"].asnumpy())


UP_2X2 = {"kernel": "(2, 2)", "stride": "(2, 2)", "dilate": "(1, 1)", "pad": "(0, 0)", "num_group": "1",
          "layout": "NCHW", "adj": "(0, 0)", "target_shape": "(0, 0)"}

WINOGRAD_CHANNELS = 16  # oneDNN's Winograd kernels work on 16-channel blocks


def _cpu_conv_op(op: str, attrs: dict, weight) -> tuple | None:
    """(operator, extra attributes) that runs this (de)convolution in fast_cpu_convolutions, if any."""
    if weight is None:
        return None
    if op == "Deconvolution":
        return ("sdu_deconv2x2", {"num_filter": str(weight.shape[1])}) if has_attrs(attrs, UP_2X2) else None
    if not has_attrs(attrs, SAME_3X3):
        return None
    groups = int(attrs.get("num_group", "1"))
    if groups == 1 and weight.shape[0] % WINOGRAD_CHANNELS == 0 and weight.shape[1] % WINOGRAD_CHANNELS == 0:
        return "sdu_wino_conv", {"num_filter": str(weight.shape[0])}
    if groups == weight.shape[0] and weight.shape[1] == 1:
        return "sdu_dw_conv", {}
    return None


def fast_cpu_convolutions(sym, arg: dict, aux: dict, only: tuple | None = None) -> tuple:
    """Run the convolutions with this project's CPU operators (symbols/ext), fp32.

    - Dense 3x3, stride 1, pad 1, channels in multiples of 16 -> sdu_wino_conv
      (oneDNN's Winograd F(4x4,3x3): 4x fewer multiplications).
    - Depthwise 3x3, stride 1, pad 1 -> sdu_dw_conv (a stencil on the plain layout,
      which spares MXNet's layout reorders around a tiny convolution).
    - 2x2 stride-2 deconvolutions -> sdu_deconv2x2 (one GEMM per image on the plain
      layout, again without reorders); a BatchNorm that is a deconvolution's only
      consumer is folded into it (exact, as fold_batchnorm).
    Others (the RGB stem, 1x1s) stay MXNet's: as a GEMM on the plain layout the 1x1s
    made the next oneDNN operators slower (a 128x128 pooling went from 0.3 to 13 ms).
    A ReLU that is the layer's (or its folded BN's) only consumer is fused into it; a
    missing bias becomes a zero parameter. Not bit-identical (Winograd rounds
    differently, ~1e-6 relative per layer; the export's NME check measures the end result).
    Inference only: the operators have no backward.
    Run it after fold_batchnorm. `only` limits it to some of the three operators.
    Returns (symbol, arg_params, aux_params, {operator: count}).
    """
    graph = graph_of(sym)
    nodes = graph["nodes"]
    uses = use_counts(graph)
    consumer = {n["inputs"][0][0]: i for i, n in enumerate(nodes) if n["inputs"]}
    arg, aux = dict(arg), dict(aux)
    redirect, dropped = {}, set()
    counts = {"sdu_wino_conv": 0, "sdu_dw_conv": 0, "sdu_deconv2x2": 0}

    def sole_consumer(i: int, op: str, **attrs):
        j = consumer.get(i)
        if j is None or uses.get(i, 0) != 1 or nodes[j]["op"] != op:
            return None
        return j if all(nodes[j].get("attrs", {}).get(k) == v for k, v in attrs.items()) else None

    for i, node in enumerate(list(nodes)):
        if node["op"] not in ("Convolution", "Deconvolution"):
            continue
        attrs = node.get("attrs", {})
        w_name = nodes[node["inputs"][1][0]]["name"]
        choice = _cpu_conv_op(node["op"], attrs, arg.get(w_name))
        if choice is None or (only is not None and choice[0] not in only):
            continue
        op, new_attrs = choice
        out_channels = int(new_attrs.get("num_filter", arg[w_name].shape[0]))
        if attrs.get("no_bias", "False") == "True":
            bias_name = node["name"] + "_bias"
            arg[bias_name] = mx.nd.zeros((out_channels,), dtype=arg[w_name].dtype)
            nodes.append({"op": "null", "name": bias_name, "inputs": []})
            node["inputs"] = node["inputs"][:2] + [[len(nodes) - 1, 0, 0]]
        last = i  # the node whose output the replacement produces
        bn = sole_consumer(i, "BatchNorm") if node["op"] == "Deconvolution" else None
        if bn is not None:
            _fold_bn_into(nodes[bn], arg, aux, w_name, node["name"] + "_bias", out_axis=1)
            dropped.update(src for src, _, _ in nodes[bn]["inputs"][1:])
            dropped.add(bn)
            redirect[bn] = i
            last = bn
        relu = sole_consumer(last, "Activation", act_type="relu")
        new_attrs["act_type"] = "none"
        if relu is not None:
            new_attrs["act_type"] = "relu"
            redirect[relu] = i
            dropped.add(relu)
        node["op"], node["attrs"] = op, new_attrs
        counts[op] += 1
    if not sum(counts.values()):
        return sym, arg, aux, counts
    new_sym = rebuild(graph, redirect, dropped)
    return (new_sym,) + keep_used(new_sym, arg, aux) + (counts,)


def fastest_cpu_graph(sym, arg: dict, aux: dict, input_size: int = 128) -> tuple:
    """The fastest fp32 CPU inference graph of any heatmap graph: deformable tap weights
    frozen, BatchNorms folded, convolutions on the Winograd/depthwise/deconvolution operators
    (what `tools/export.py --winograd` writes). Returns (symbol, arg_params, aux_params)."""
    sym, arg, aux, _ = freeze_tap_weights(sym, arg, aux, data_shape=(1, 3, input_size, input_size))
    sym, arg, aux, _ = fold_batchnorm(sym, dict(arg), dict(aux))
    return fast_cpu_convolutions(sym, arg, aux)[:3]

