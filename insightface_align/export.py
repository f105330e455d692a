"""Deploy graphs for downstream pipelines: inference-only, BatchNorm folding, MKLDNN, INT8, ONNX.

A deploy checkpoint is PREFIX-symbol.json + PREFIX-0000.params holding only the graph
from `data` (1, 3, 128, 128) raw RGB 0..255 to `heatmap_output`. By default it uses
stock MXNet operators only, so it loads with plain mx.model.load_checkpoint and needs
nothing from this project. With cpu_ops=True it uses this project's compiled CPU
operators (fast DCN, fused means; symbols/ext): about 1.8x faster on CPU than the
stock graph, and the loader must first call mx.library.load("libsdu_ops.so"). The
deformable units' GEMM weights, computed in the training graph, are stored as
parameters in every export (freeze_tap_weights), which also lets INT8 quantise them.
"""
from __future__ import annotations

import json

import mxnet as mx
import numpy as np

from insightface_align.symbols import ext
from insightface_align.symbols.config import NetConfig
from insightface_align.symbols.network import get_symbol

from .checkpoint import load_params, save_params, atomic_write
from .model import checkpoint_network, load_symbol

# Deconvolutions are not folded: oneDNN's deconvolution with a bias ran ~1.8x slower than
# without one here (4.7 vs 2.6 ms at 256->256, 32->64 px), far more than the BN pass saved.
FOLDABLE = ("Convolution", "_contrib_DeformableConvolution")
WEIGHT_INPUT = {"Convolution": 1, "_contrib_DeformableConvolution": 2}


def deploy_graph(prefix: str, epoch: int, dcn_impl: str | None = None, cpu_ops: bool = False,
                 freeze_taps: bool = True) -> tuple:
    """(symbol, arg_params, aux_params) of the inference graph of a checkpoint.

    Our checkpoints carry their NetConfig, so the graph is rebuilt: stock operators
    (dcn_impl default "portable", standard means) or, with cpu_ops, the compiled ones
    (dcn_impl default "fast", fused means). Other checkpoints (the release's) are cut
    at heatmap_output as saved. With freeze_taps the fast/portable deformable units'
    GEMM weights are stored as parameters (freeze_tap_weights; exact).
    """
    arg, aux = load_params(prefix, epoch)
    net = checkpoint_network(prefix, epoch)
    input_size = 128
    if net is not None:
        cfg = NetConfig.from_dict(net)
        input_size = cfg.input_size
        stock = "portable" if cfg.dcn_impl in ("auto", "fast") else cfg.dcn_impl
        cfg = cfg.replace(dcn_impl=dcn_impl or ("fast" if cpu_ops else stock),
                          mean_impl="fused" if cpu_ops else "standard")
        sym = get_symbol(cfg)
    else:
        if dcn_impl or cpu_ops:
            raise ValueError("this checkpoint has no stored network config: its graph cannot be rebuilt with "
                             "other operator implementations")
        sym = load_symbol(prefix)
    needed_args = set(sym.list_arguments()) - {"data"}
    needed_aux = set(sym.list_auxiliary_states())
    missing = sorted((needed_args - set(arg)) | (needed_aux - set(aux)))
    if missing:
        raise ValueError(f"{prefix}-{epoch:04d}.params lacks {len(missing)} tensors, e.g. {missing[:3]}")
    arg, aux = {k: arg[k] for k in needed_args}, {k: aux[k] for k in needed_aux}
    if freeze_taps:
        sym, arg, aux, _ = freeze_tap_weights(sym, arg, aux, data_shape=(1, 3, input_size, input_size))
    return sym, arg, aux


def save_deploy(out_prefix: str, sym, arg, aux, epoch: int = 0) -> None:
    atomic_write("%s-symbol.json" % out_prefix, sym.tojson(), "w")
    save_params("%s-%04d.params" % (out_prefix, epoch), arg, aux)


def _consumers(nodes):
    count = {}
    for node in nodes:
        for src in node["inputs"]:
            count[src[0]] = count.get(src[0], 0) + 1
    return count


def fold_batchnorm(sym, arg: dict, aux: dict) -> tuple:
    """Fold every BatchNorm that directly follows a conv or deformable conv into its weights.

    Exact for inference (BN uses running statistics): W' = W * g, b' = (b - mean) * g + beta
    with g = gamma / sqrt(var + eps). BNs after an activation (pre-activation blocks) stay.
    A fast deformable unit folds when its tap weights are frozen (freeze_tap_weights):
    its output is linear in the tap columns of the table, so their weight rows scale.
    """
    graph = json.loads(sym.tojson())
    nodes = graph["nodes"]
    uses = _consumers(nodes)
    for head in graph["heads"]:
        uses[head[0]] = uses.get(head[0], 0) + 1
    arg = {k: v.copy() for k, v in arg.items()}
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
    new_sym = _rebuild(graph, redirect, dropped)
    aux = {k: v for k, v in aux.items() if k in set(new_sym.list_auxiliary_states())}
    arg = {k: v for k, v in arg.items() if k in set(new_sym.list_arguments())}
    return new_sym, arg, aux, folded


def _follow(redirect: dict, i: int) -> int:
    """The node that uses of node i point to after `redirect` (chains followed)."""
    while i in redirect:
        i = redirect[i]
    return i


def _rebuild(graph: dict, redirect: dict, dropped: set):
    """Re-index a symbol JSON without `dropped` nodes, pointing `redirect` keys to their values."""
    nodes = graph["nodes"]

    def target(i):
        return _follow(redirect, i)

    keep = [i for i in range(len(nodes)) if i not in dropped]
    new_index = {old: new for new, old in enumerate(keep)}
    out_nodes = []
    for old in keep:
        node = dict(nodes[old])
        node["inputs"] = [[new_index[target(s)], o, v] for s, o, v in node["inputs"]]
        out_nodes.append(node)
    heads = [[new_index[target(s)], o, v] for s, o, v in graph["heads"]]
    out = {"nodes": out_nodes, "arg_nodes": [i for i, n in enumerate(out_nodes) if n["op"] == "null"],
           "heads": heads, "attrs": graph.get("attrs", {})}
    out["node_row_ptr"] = list(range(len(out_nodes) + 1))
    return mx.sym.load_json(json.dumps(out))


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
    graph = json.loads(sym.tojson())
    nodes = graph["nodes"]
    internals = sym.get_internals()
    arg = dict(arg)
    frozen = 0
    for index, node in enumerate(list(nodes)):
        if node["op"] != "FullyConnected" or not node["name"].endswith("_taps"):
            continue
        src, out_index, _ = node["inputs"][1]
        if nodes[src]["op"] == "null":
            continue
        weight = internals[_output_index(internals.list_outputs(), nodes[src]["name"], out_index)]
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
    new_sym = _rebuild(graph, {}, set())
    used_args, used_aux = set(new_sym.list_arguments()), set(new_sym.list_auxiliary_states())
    return (new_sym, {k: v for k, v in arg.items() if k in used_args},
            {k: v for k, v in aux.items() if k in used_aux}, frozen)


OFFSET_COLUMNS = 162  # a fast unit's table: 9 taps x 18 offset channels, then 9 x F


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


def _output_index(outputs: list, node_name: str, index: int) -> int:
    """Position in get_internals().list_outputs() of output `index` of node `node_name`
    (single-output nodes are NAME_output, multi-output ones NAME_output0, NAME_output1...,
    variables NAME)."""
    names = [node_name + "_output%d" % index] + ([node_name + "_output", node_name] if index == 0 else [])
    for name in names:
        if name in outputs:
            return outputs.index(name)
    raise ValueError(f"graph has no output {index} of node {node_name!r}")


CONV_DEFAULTS = {"stride": "(1, 1)", "dilate": "(1, 1)", "pad": "(0, 0)", "num_group": "1", "layout": "NCHW",
                 "adj": "(0, 0)", "target_shape": "(0, 0)"}
SAME_3X3 = {"kernel": "(3, 3)", "stride": "(1, 1)", "dilate": "(1, 1)", "pad": "(1, 1)", "layout": "NCHW"}
UP_2X2 = {"kernel": "(2, 2)", "stride": "(2, 2)", "dilate": "(1, 1)", "pad": "(0, 0)", "num_group": "1",
          "layout": "NCHW", "adj": "(0, 0)", "target_shape": "(0, 0)"}
WINOGRAD_CHANNELS = 16  # oneDNN's Winograd kernels work on 16-channel blocks


def _has(attrs: dict, wanted: dict) -> bool:
    return all(attrs.get(k, CONV_DEFAULTS.get(k)) == v for k, v in wanted.items())


def _cpu_conv_op(op: str, attrs: dict, weight) -> tuple | None:
    """(operator, extra attributes) that runs this (de)convolution in fast_cpu_convolutions, if any."""
    if weight is None:
        return None
    if op == "Deconvolution":
        return ("sdu_deconv2x2", {"num_filter": str(weight.shape[1])}) if _has(attrs, UP_2X2) else None
    if not _has(attrs, SAME_3X3):
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
    graph = json.loads(sym.tojson())
    nodes = graph["nodes"]
    uses = _consumers(nodes)
    for head in graph["heads"]:
        uses[head[0]] = uses.get(head[0], 0) + 1
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
    new_sym = _rebuild(graph, redirect, dropped)
    used_args, used_aux = set(new_sym.list_arguments()), set(new_sym.list_auxiliary_states())
    return (new_sym, {k: v for k, v in arg.items() if k in used_args},
            {k: v for k, v in aux.items() if k in used_aux}, counts)


def _frozen_tap_weight(nodes: list, unit: dict, uses: dict, arg: dict) -> str | None:
    """The frozen tap GEMM weight (162 + 9F, C) of fast unit `unit`, if the GEMM feeds only it."""
    fc_index = unit["inputs"][0][0]
    fc = nodes[fc_index]
    if fc["op"] != "FullyConnected" or uses.get(fc_index, 0) != 1:
        return None
    name = nodes[fc["inputs"][1][0]]["name"]
    return name if name in arg else None


def _fold_bn_into(bn: dict, arg: dict, aux: dict, w_name: str, bias_name: str, out_axis: int,
                  tap_rows: bool = False) -> None:
    """Fold inference BatchNorm `bn` into the weight (output channels on out_axis) and bias.
    tap_rows: the weight is a fast unit's tap GEMM (162 + 9F, C), output channel f in rows
    162 + kF + f (the 162 offset rows stay)."""
    attrs = bn.get("attrs", {})
    name = bn["name"]
    var = aux[name + "_moving_var"].asnumpy()
    gamma = np.ones_like(var) if attrs.get("fix_gamma", "True") == "True" else arg[name + "_gamma"].asnumpy()
    g = gamma / np.sqrt(var + float(attrs.get("eps", 1e-3)))
    w = arg[w_name].asnumpy()
    if tap_rows:
        w = np.concatenate([w[:OFFSET_COLUMNS], w[OFFSET_COLUMNS:] * np.tile(g, 9)[:, None]])
    else:
        shape = [1] * w.ndim
        shape[out_axis] = -1
        w = w * g.reshape(shape)
    arg[w_name] = mx.nd.array(w)
    b = arg[bias_name].asnumpy()
    arg[bias_name] = mx.nd.array((b - aux[name + "_moving_mean"].asnumpy()) * g + arg[name + "_beta"].asnumpy())


def fastest_cpu_graph(sym, arg: dict, aux: dict, input_size: int = 128) -> tuple:
    """The fastest fp32 CPU inference graph of any heatmap graph: deformable tap weights
    frozen, BatchNorms folded, convolutions on the Winograd/depthwise/deconvolution operators
    (what `tools/export.py --winograd` writes). Returns (symbol, arg_params, aux_params)."""
    sym, arg, aux, _ = freeze_tap_weights(sym, arg, aux, data_shape=(1, 3, input_size, input_size))
    sym, arg, aux, _ = fold_batchnorm(sym, dict(arg), dict(aux))
    return fast_cpu_convolutions(sym, arg, aux)[:3]


def mkldnn_graph(sym):
    """MXNet's MKLDNN subgraph fusion (conv+BN+ReLU etc.) for CPU deployment."""
    return sym.get_backend_symbol("MKLDNN")


def quantize_int8(sym, arg: dict, aux: dict, calib_images: np.ndarray, batch_size: int = 16,
                  exclude_first_conv: bool = True, quantize_taps: bool = True, int8_compiled: bool = True,
                  plain_deconvs: bool = True, int8_cabs: bool = True) -> tuple:
    """INT8 graph by MXNet's MKLDNN quantisation, calibrated ('naive' min/max) on calib_images.

    The deformable units' tap GEMMs are frozen first (freeze_tap_weights) so they
    quantise like the convolutions (quantize_taps=False keeps them fp32, at ~1.4x the
    INT8 latency). MXNet cannot quantise the native deformable convolution, bilinear
    sampling, this project's compiled operators or deconvolutions. With plain_deconvs,
    graphs that already use the compiled operators get the up-sampling deconvolutions
    as sdu_deconv2x2 (BN folded; stock graphs stay stock), and with int8_compiled
    (int8_compiled_ops) the fast units and those deconvolutions then run as this
    project's INT8 operators (0.150 -> 0.127 s per face measured side by side). With
    int8_compiled and int8_cabs, each CAB of such a graph first becomes one sdu_cab_q
    (int8_cab.int8_cab_blocks: channels-last INT8 inside, its means in one float pass);
    the grid's node means stay fp32. README "INT8" has the measured speeds.
    """
    from mxnet.contrib.quantization import quantize_model_mkldnn

    sym, arg, aux, _ = freeze_tap_weights(sym, arg, aux, data_shape=(1,) + tuple(calib_images.shape[1:]))
    if plain_deconvs and ext.used_by(sym.tojson()):
        sym, arg, aux, _ = fast_cpu_convolutions(sym, arg, aux, only=("sdu_deconv2x2",))
    n = len(calib_images) - len(calib_images) % batch_size
    it = mx.io.NDArrayIter(data=calib_images[:n].astype(np.float32), batch_size=batch_size, label_name=None)
    excluded = ["conv0"] if exclude_first_conv else []
    if not quantize_taps:
        excluded += [node["name"] for node in json.loads(sym.tojson())["nodes"]
                     if node["op"] == "FullyConnected" and node["name"].endswith("_taps")]
    fp32_sym = sym
    if int8_compiled and int8_cabs and ext.used_by(sym.tojson()):
        from .int8_cab import int8_cab_blocks

        sym, _ = int8_cab_blocks(sym, arg, aux, calib_images[:n], batch_size)
    qsym, qarg, qaux = quantize_model_mkldnn(sym=sym, arg_params=arg, aux_params=aux, ctx=mx.cpu(),
                                             excluded_sym_names=excluded, calib_mode="naive", calib_data=it,
                                             num_calib_examples=n, quantized_dtype="auto",
                                             label_names=None, logger=None)
    if int8_compiled:
        qsym, qarg, _ = int8_compiled_ops(qsym, qarg, fp32_sym, arg, aux, calib_images[:n], batch_size)
    return qsym, qarg, qaux


def _calibrated_ranges(arg: dict, aux: dict, images: np.ndarray, batch_size: int, entries: dict) -> dict:
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


def int8_compiled_ops(qsym, qarg: dict, sym, arg: dict, aux: dict, images: np.ndarray, batch_size: int) -> tuple:
    """Give the compiled operators of an INT8 graph their INT8 forms (MXNet cannot quantise them).

    - Each fast deformable unit whose tap GEMM MXNet quantised (transpose -> quantize ->
      quantised FullyConnected with one weight range -> sdu_deform_unit) becomes one
      sdu_deform_unit_q: it quantises the NCHW input over the range MXNet calibrated
      for it, runs oneDNN's INT8 matmul with per-column weight scales, writes an INT8
      table (tap and offset columns each over their own range) and blends it.
    - Each sdu_deconv2x2 becomes sdu_deconv2x2_q (its input quantised, an INT8 GEMM).
    The new ranges are calibrated here on the fp32 graph `sym` over images. Units whose
    GEMM stayed fp32 (quantize_taps=False) are left alone.
    Returns (symbol, arg_params, {operator: count}).
    """
    graph = json.loads(qsym.tojson())
    nodes = graph["nodes"]

    def producer(node: dict, op: str, index: int = 0):
        src = nodes[node["inputs"][index][0]]
        return src if src["op"] == op else None

    units, deconvs = [], [i for i, n in enumerate(nodes) if n["op"] == "sdu_deconv2x2"]
    for i, node in enumerate(nodes):
        if node["op"] != "sdu_deform_unit":
            continue
        fc = producer(node, "_sg_mkldnn_fully_connected")
        qv2 = fc and producer(fc, "_contrib_quantize_v2")
        tr = qv2 and producer(qv2, "transpose")
        if tr is None or tr.get("attrs", {}).get("axes") != "(0, 2, 3, 1)":
            continue
        weight = next((nodes[s]["name"][:-len("_quantize")] for s, _, _ in fc["inputs"]
                       if nodes[s]["op"] == "null" and nodes[s]["name"].endswith("_weight_quantize")), None)
        if weight in arg:
            units.append((i, tr, qv2, weight))
    counts = {"sdu_deform_unit_q": len(units), "sdu_deconv2x2_q": len(deconvs)}
    if not units and not deconvs:
        return qsym, qarg, counts
    # What to calibrate, on the fp32 graph (nodes keep their names through quantisation).
    internals = sym.get_internals()
    outputs = internals.list_outputs()
    fp32_nodes = json.loads(sym.tojson())["nodes"]
    first_input = {n["name"]: n["inputs"][0] for n in fp32_nodes if n["op"] in ("sdu_deform_unit", "sdu_deconv2x2")}

    def fp32_input(i: int):
        src, index, _ = first_input[nodes[i]["name"]]
        return internals[_output_index(outputs, fp32_nodes[src]["name"], index)]

    entries = {}
    for i, _, _, _ in units:
        entries[(i, "offsets")] = mx.sym.slice_axis(fp32_input(i), axis=3, begin=0, end=OFFSET_COLUMNS)
        entries[(i, "taps")] = mx.sym.slice_axis(fp32_input(i), axis=3, begin=OFFSET_COLUMNS, end=None)
    for i in deconvs:
        entries[(i, "data")] = fp32_input(i)
    ranges = _calibrated_ranges(arg, aux, images, batch_size, entries)

    def absmax(key) -> str:
        return repr(max(max(map(abs, ranges[key])), 1e-6))

    qarg = dict(qarg)
    consumers = {}
    for k, n in enumerate(nodes):
        for src, _, _ in n["inputs"]:
            consumers.setdefault(src, []).append(k)
    heads = {h[0] for h in graph["heads"]}
    redirect = {}
    for i, tr, qv2, weight in units:
        node = nodes[i]
        node["op"] = "sdu_deform_unit_q"
        after = consumers.get(i, [])
        if (i not in heads and len(after) == 1 and nodes[after[0]]["op"] == "Activation"
                and nodes[after[0]].get("attrs", {}).get("act_type") == "relu"):
            node.setdefault("attrs", {})["act_type"] = "relu"  # a ReLU that only this unit feeds runs inside it
            redirect[after[0]] = i
        node["attrs"] = dict(node.get("attrs", {}), num_filter=str((arg[weight].shape[0] - OFFSET_COLUMNS) // 9),
                             data_min=qv2["attrs"]["min_calib_range"], data_max=qv2["attrs"]["max_calib_range"],
                             table_range=absmax((i, "taps")), offset_range=absmax((i, "offsets")))
        nodes.append({"op": "null", "name": weight, "inputs": []})
        qarg[weight] = arg[weight]
        node["inputs"] = [tr["inputs"][0], [len(nodes) - 1, 0, 0]] + node["inputs"][1:]
    for i in deconvs:
        lo, hi = ranges[(i, "data")]
        nodes[i]["op"] = "sdu_deconv2x2_q"
        nodes[i]["attrs"] = dict(nodes[i]["attrs"], data_min=repr(float(lo)), data_max=repr(float(hi)))
    new_sym = _prune(graph, redirect)
    used = set(new_sym.list_arguments())
    return new_sym, {k: v for k, v in qarg.items() if k in used}, counts


def _prune(graph: dict, redirect: dict | None = None):
    """The symbol of `graph`, uses of `redirect` keys pointed to their values, without the
    nodes that then no longer feed its outputs."""
    nodes = graph["nodes"]
    redirect = redirect or {}
    live, stack = set(), [_follow(redirect, h[0]) for h in graph["heads"]]
    while stack:
        i = stack.pop()
        if i not in live:
            live.add(i)
            stack.extend(_follow(redirect, s) for s, _, _ in nodes[i]["inputs"])
    return _rebuild(graph, redirect, {i for i in range(len(nodes)) if i not in live})


def export_onnx(sym, arg: dict, aux: dict, path: str, input_size: int = 128) -> str:
    """ONNX via mx.onnx, for graphs without deformable convolutions.

    Neither form of the deformable convolution converts: mx.onnx has no converter for
    MXNet's DeformableConvolution, and the fast form's reshapes/gathers are outside what
    mx.onnx supports (ONNX's own DeformConv exists only from opset 19).
    """
    import os

    ops = {n["op"] for n in json.loads(sym.tojson())["nodes"]}
    has_dcn = any(a.endswith("_offset_weight") for a in sym.list_arguments()) or \
        "_contrib_DeformableConvolution" in ops
    if has_dcn or ops & {"BilinearSampler", "GridGenerator"}:
        raise ValueError("ONNX export is not possible for this graph: it has deformable convolutions or an STN "
                         "(no mx.onnx converter); export a model without them, e.g. the sdu-nodcn recipe")
    params = dict(arg)
    params.update(aux)
    tmp = path + ".tmp.onnx"
    try:
        mx.onnx.export_model(sym, params, in_shapes=[(1, 3, input_size, input_size)], in_types=[np.float32],
                             onnx_file_path=tmp, dynamic=True,
                             dynamic_input_shapes=[(None, 3, input_size, input_size)])
        os.replace(tmp, path)
    except (AttributeError, NotImplementedError, ValueError) as exc:
        raise ValueError(f"mx.onnx could not convert this graph: {exc}") from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path
