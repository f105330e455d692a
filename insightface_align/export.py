"""Deploy graphs for downstream pipelines: inference-only, BatchNorm folding, MKLDNN, INT8, ONNX.

A deploy export is OUT-symbol.json + OUT-0000.params holding only the graph from
`data` (1, 3, 128, 128) raw RGB 0..255 to `heatmap_output`, and OUT-0000.json: the
source checkpoint's model description (network config, heatmap loss) and `graph`,
the form of the saved graph (deploy, folded, winograd, mkldnn, int8). By default the
graph uses stock MXNet operators only, so it loads with plain
mx.model.load_checkpoint and needs nothing from this project. With cpu_ops=True it
uses this project's compiled CPU operators (fast DCN, fused means; symbols/ext):
about 2x faster on CPU than the stock graph (docs/benchmarks.md), and the loader must first call
mx.library.load("libsdu_ops.so"). The deformable units' GEMM weights, computed in the
training graph, are stored as parameters in every export (freeze_tap_weights), which
also lets INT8 quantise them. HeatmapModel.load rebuilds a `deploy` export from its
config with the operators that suit its context, like a training checkpoint; the
other forms run as saved. docs/checkpoints.md has what loads where.
"""
from __future__ import annotations

import json

import mxnet as mx
import numpy as np
from mxnet.contrib.quantization import quantize_model_mkldnn

from .checkpoint import model_config, save_params
from .cpu_graph import (fast_cpu_convolutions, fastest_cpu_graph, fold_batchnorm, freeze_tap_weights,
                        thaw_tap_weights)
from .fileio import atomic_path, atomic_write
from .graph import calibrated_ranges, consumers, graph_of, heads, named_output, output_index, prune
from .int8_cab import int8_cab_blocks
from .model import inference_graph, model_info
from .symbols import ext
from .symbols.backend import COMPILED, PORTABLE, Backend
from .symbols.deform import OFFSET_COLUMNS, TAPS

# The passes of cpu_graph are part of this module's interface too.
__all__ = ["GRAPH_FORMS", "deploy_graph", "export_onnx", "fast_cpu_convolutions", "fastest_cpu_graph",
           "fold_batchnorm", "freeze_tap_weights", "int8_compiled_ops", "mkldnn_graph", "quantize_int8",
           "save_deploy", "source_config", "thaw_tap_weights"]

GRAPH_FORMS = ("deploy", "folded", "winograd", "mkldnn", "int8")


def deploy_graph(prefix: str, epoch: int, dcn_impl: str | None = None, cpu_ops: bool = False,
                 freeze_taps: bool = True) -> tuple:
    """(symbol, arg_params, aux_params) of the inference graph of a checkpoint.

    Checkpoints that carry their NetConfig (ours, and deploy exports) are rebuilt: with
    stock operators (dcn_impl default "portable", standard means) or, with cpu_ops,
    the compiled ones (dcn_impl default "fast", fused means). Others (the release's,
    and exports in another form) are cut at heatmap_output as saved. With freeze_taps
    the fast/portable deformable units' GEMM weights are stored as parameters
    (freeze_tap_weights; exact).
    """
    info = model_info(prefix, epoch)
    if (dcn_impl or cpu_ops) and not info.rebuildable:
        raise ValueError("this checkpoint has no stored network config (or its graph is an export's "
                         f"{info.graph!r} form): its graph cannot be rebuilt with other operator implementations")
    backend = None
    if info.rebuildable:
        base = COMPILED if cpu_ops else PORTABLE
        backend = Backend(dcn_impl or base.dcn, base.mean)
    sym, arg, aux, _ = inference_graph(prefix, epoch, backend=backend)
    if freeze_taps:
        size = info.network.input_size if info.network is not None else 128
        sym, arg, aux, _ = freeze_tap_weights(sym, arg, aux, data_shape=(1, 3, size, size))
    return sym, arg, aux


def source_config(prefix: str, epoch: int) -> dict:
    """The model description an export of checkpoint PREFIX-EPOCH carries (network config,
    heatmap loss, recipe, convention; not the trainer's state). A release checkpoint's
    network is inferred and its convention is `release`."""
    config = model_config(prefix, epoch)
    info = model_info(prefix, epoch)
    if "network" not in config and info.network is not None:
        config["network"] = info.network.to_dict()
    config["convention"] = info.convention
    return config


def save_deploy(out_prefix: str, sym, arg, aux, epoch: int = 0, config: dict | None = None,
                graph: str = "deploy") -> None:
    """Write OUT-symbol.json, OUT-EPOCH.params and OUT-EPOCH.json (config, e.g.
    source_config(...), plus graph: the form of this graph, one of GRAPH_FORMS)."""
    if graph not in GRAPH_FORMS:
        raise ValueError(f"unknown graph form {graph!r}; one of {', '.join(GRAPH_FORMS)}")
    atomic_write("%s-symbol.json" % out_prefix, sym.tojson(), "w")
    save_params("%s-%04d.params" % (out_prefix, epoch), arg, aux)
    atomic_write("%s-%04d.json" % (out_prefix, epoch), json.dumps(dict(config or {}, graph=graph), indent=1), "w")


def mkldnn_graph(sym):
    """MXNet's MKLDNN subgraph fusion (conv+BN+ReLU etc.) for CPU deployment; the output
    keeps the name of sym's."""
    return named_output(sym.get_backend_symbol("MKLDNN"), _output_node(sym))


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
    project's INT8 operators. With
    int8_compiled and int8_cabs, each CAB of such a graph first becomes one sdu_cab_q
    (int8_cab.int8_cab_blocks: channels-last INT8 inside, its means in one float pass);
    the grid's node means stay fp32. The output keeps sym's name (heatmap_output).
    docs/benchmarks.md has the measured speeds.
    """
    sym, arg, aux, _ = freeze_tap_weights(sym, arg, aux, data_shape=(1,) + tuple(calib_images.shape[1:]))
    if plain_deconvs and ext.used_by(sym.tojson()):
        sym, arg, aux, _ = fast_cpu_convolutions(sym, arg, aux, only=("sdu_deconv2x2",))
    n = len(calib_images) - len(calib_images) % batch_size
    it = mx.io.NDArrayIter(data=calib_images[:n].astype(np.float32), batch_size=batch_size, label_name=None)
    excluded = ["conv0"] if exclude_first_conv else []
    if not quantize_taps:
        excluded += [node["name"] for node in graph_of(sym)["nodes"]
                     if node["op"] == "FullyConnected" and node["name"].endswith("_taps")]
    fp32_sym = sym
    if int8_compiled and int8_cabs and ext.used_by(sym.tojson()):
        sym, _ = int8_cab_blocks(sym, arg, aux, calib_images[:n], batch_size)
    qsym, qarg, qaux = quantize_model_mkldnn(sym=sym, arg_params=arg, aux_params=aux, ctx=mx.cpu(),
                                             excluded_sym_names=excluded, calib_mode="naive", calib_data=it,
                                             num_calib_examples=n, quantized_dtype="auto",
                                             label_names=None, logger=None)
    if int8_compiled:
        qsym, qarg, _ = int8_compiled_ops(qsym, qarg, fp32_sym, arg, aux, calib_images[:n], batch_size)
    return named_output(qsym, _output_node(fp32_sym)), qarg, qaux


def _output_node(sym) -> str:
    """The name of the node whose output is sym's (heatmap for heatmap_output)."""
    name = sym.list_outputs()[0]
    return name[:-len("_output")] if name.endswith("_output") else name


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
    graph = graph_of(qsym)
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
    fp32_nodes = graph_of(sym)["nodes"]
    first_input = {n["name"]: n["inputs"][0] for n in fp32_nodes if n["op"] in ("sdu_deform_unit", "sdu_deconv2x2")}

    def fp32_input(i: int):
        src, index, _ = first_input[nodes[i]["name"]]
        return internals[output_index(outputs, fp32_nodes[src]["name"], index)]

    entries = {}
    for i, _, _, _ in units:
        entries[(i, "offsets")] = mx.sym.slice_axis(fp32_input(i), axis=3, begin=0, end=OFFSET_COLUMNS)
        entries[(i, "taps")] = mx.sym.slice_axis(fp32_input(i), axis=3, begin=OFFSET_COLUMNS, end=None)
    for i in deconvs:
        entries[(i, "data")] = fp32_input(i)
    ranges = calibrated_ranges(arg, aux, images, batch_size, entries)

    def absmax(key) -> str:
        return repr(max(max(map(abs, ranges[key])), 1e-6))

    qarg = dict(qarg)
    readers, head_nodes = consumers(graph), heads(graph)
    redirect = {}
    for i, tr, qv2, weight in units:
        node = nodes[i]
        node["op"] = "sdu_deform_unit_q"
        after = readers.get(i, [])
        if (i not in head_nodes and len(after) == 1 and nodes[after[0]]["op"] == "Activation"
                and nodes[after[0]].get("attrs", {}).get("act_type") == "relu"):
            node.setdefault("attrs", {})["act_type"] = "relu"  # a ReLU that only this unit feeds runs inside it
            redirect[after[0]] = i
        node["attrs"] = dict(node.get("attrs", {}), num_filter=str((arg[weight].shape[0] - OFFSET_COLUMNS) // TAPS),
                             data_min=qv2["attrs"]["min_calib_range"], data_max=qv2["attrs"]["max_calib_range"],
                             table_range=absmax((i, "taps")), offset_range=absmax((i, "offsets")))
        nodes.append({"op": "null", "name": weight, "inputs": []})
        qarg[weight] = arg[weight]
        node["inputs"] = [tr["inputs"][0], [len(nodes) - 1, 0, 0]] + node["inputs"][1:]
    for i in deconvs:
        lo, hi = ranges[(i, "data")]
        nodes[i]["op"] = "sdu_deconv2x2_q"
        nodes[i]["attrs"] = dict(nodes[i]["attrs"], data_min=repr(float(lo)), data_max=repr(float(hi)))
    new_sym = prune(graph, redirect)
    used = set(new_sym.list_arguments())
    return new_sym, {k: v for k, v in qarg.items() if k in used}, counts


def export_onnx(sym, arg: dict, aux: dict, path: str, input_size: int = 128) -> str:
    """ONNX via mx.onnx, for graphs without deformable convolutions.

    Neither form of the deformable convolution converts: mx.onnx has no converter for
    MXNet's DeformableConvolution, and the fast form's reshapes/gathers are outside what
    mx.onnx supports (ONNX's own DeformConv exists only from opset 19). The parameters
    are the graph's initializers only, not also graph inputs (which mx.onnx writes and
    onnxruntime warns about, once per parameter): the one input is `data`.
    """
    ops = {n["op"] for n in graph_of(sym)["nodes"]}
    has_dcn = any(a.endswith("_offset_weight") for a in sym.list_arguments()) or \
        "_contrib_DeformableConvolution" in ops
    if has_dcn or ops & {"BilinearSampler", "GridGenerator"}:
        raise ValueError("ONNX export is not possible for this graph: it has deformable convolutions or an STN "
                         "(no mx.onnx converter); export a model without them, e.g. the sdu-nodcn recipe")
    params = dict(arg)
    params.update(aux)
    try:
        with atomic_path(path, suffix=".onnx") as tmp:
            mx.onnx.export_model(sym, params, in_shapes=[(1, 3, input_size, input_size)], in_types=[np.float32],
                                 onnx_file_path=tmp, dynamic=True,
                                 dynamic_input_shapes=[(None, 3, input_size, input_size)])
            _initializers_are_not_inputs(tmp)
    except (AttributeError, NotImplementedError, ValueError) as exc:
        raise ValueError(f"mx.onnx could not convert this graph: {exc}") from None
    return path


def _initializers_are_not_inputs(path: str) -> None:
    """Rewrite an ONNX file so its graph inputs are only the real inputs (IR >= 4 allows
    initializers that are not inputs; listed as inputs they could be overridden at run time)."""
    import onnx  # optional (mx.onnx needs it): only the ONNX export imports it

    model = onnx.load(path)
    stored = {init.name for init in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in stored]
    del model.graph.input[:]
    model.graph.input.extend(inputs)
    model.ir_version = max(model.ir_version, 4)
    onnx.save(model, path)
