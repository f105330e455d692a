"""Deploy graphs for downstream pipelines: inference-only, BatchNorm folding, MKLDNN, INT8, ONNX.

A deploy checkpoint is PREFIX-symbol.json + PREFIX-0000.params holding only the graph
from `data` (1, 3, 128, 128) raw RGB 0..255 to `heatmap_output`. By default it uses
stock MXNet operators only, so it loads with plain mx.model.load_checkpoint and needs
nothing from this project. With cpu_ops=True it uses this project's compiled CPU
operators (fast DCN, fused means; symbols/ext): about 1.3x faster on CPU, and the
loader must first call mx.library.load("libsdu_ops.so").
"""
from __future__ import annotations

import json

import mxnet as mx
import numpy as np

from symbols.config import NetConfig
from symbols.network import get_symbol

from .checkpoint import load_params, save_params, atomic_write
from .model import checkpoint_network, load_symbol

FOLDABLE = ("Convolution", "Deconvolution", "_contrib_DeformableConvolution")
WEIGHT_INPUT = {"Convolution": 1, "Deconvolution": 1, "_contrib_DeformableConvolution": 2}


def deploy_graph(prefix: str, epoch: int, dcn_impl: str | None = None, cpu_ops: bool = False) -> tuple:
    """(symbol, arg_params, aux_params) of the inference graph of a checkpoint.

    Our checkpoints carry their NetConfig, so the graph is rebuilt: stock operators
    (dcn_impl default "portable", standard means) or, with cpu_ops, the compiled ones
    (dcn_impl default "fast", fused means). Other checkpoints (the release's) are cut
    at heatmap_output as saved.
    """
    arg, aux = load_params(prefix, epoch)
    net = checkpoint_network(prefix, epoch)
    if net is not None:
        cfg = NetConfig.from_dict(net)
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
    return sym, {k: arg[k] for k in needed_args}, {k: aux[k] for k in needed_aux}


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
    """Fold every BatchNorm that directly follows a conv/deconv/deformable conv into its weights.

    Exact for inference (BN uses running statistics): W' = W * g, b' = (b - mean) * g + beta
    with g = gamma / sqrt(var + eps). BNs after an activation (pre-activation blocks) stay.
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
        if conv["op"] not in FOLDABLE or uses.get(src, 0) != 1:
            continue
        attrs = node.get("attrs", {})
        eps = float(attrs.get("eps", 1e-3))
        name = node["name"]
        gamma = np.ones_like(aux[name + "_moving_var"].asnumpy()) if attrs.get("fix_gamma", "True") == "True" \
            else arg[name + "_gamma"].asnumpy()
        g = gamma / np.sqrt(aux[name + "_moving_var"].asnumpy() + eps)
        w_name = nodes[conv["inputs"][WEIGHT_INPUT[conv["op"]]][0]]["name"]
        w = arg[w_name].asnumpy()
        if conv["op"] == "Deconvolution":  # weight (C_in, C_out / groups, k, k): scale axis 1
            w = w * g.reshape(1, -1, 1, 1)
        else:
            w = w * g.reshape(-1, 1, 1, 1)
        no_bias = conv.get("attrs", {}).get("no_bias", "False") == "True"
        bias_name = conv["name"] + "_bias"
        b = np.zeros_like(g) if no_bias else arg[bias_name].asnumpy()
        arg[w_name] = mx.nd.array(w)
        arg[bias_name] = mx.nd.array((b - aux[name + "_moving_mean"].asnumpy()) * g + arg[name + "_beta"].asnumpy())
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


def _rebuild(graph: dict, redirect: dict, dropped: set):
    """Re-index a symbol JSON without `dropped` nodes, pointing `redirect` keys to their values."""
    nodes = graph["nodes"]

    def target(i):
        while i in redirect:
            i = redirect[i]
        return i

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


def mkldnn_graph(sym):
    """MXNet's MKLDNN subgraph fusion (conv+BN+ReLU etc.) for CPU deployment."""
    return sym.get_backend_symbol("MKLDNN")


def quantize_int8(sym, arg: dict, aux: dict, calib_images: np.ndarray, batch_size: int = 16,
                  exclude_first_conv: bool = True) -> tuple:
    """INT8 graph by MXNet's MKLDNN quantisation, calibrated ('naive' min/max) on calib_images.

    Layers MXNet cannot quantise (deformable convolutions in any form, bilinear sampling,
    this project's compiled operators) stay in fp32.
    """
    from mxnet.contrib.quantization import quantize_model_mkldnn

    n = len(calib_images) - len(calib_images) % batch_size
    it = mx.io.NDArrayIter(data=calib_images[:n].astype(np.float32), batch_size=batch_size, label_name=None)
    excluded = ["conv0"] if exclude_first_conv else []
    # The deformable units' tap-table GEMMs take a weight computed in the graph (a reshaped
    # conv weight), which MXNet's quantiser cannot calibrate: they stay fp32.
    excluded += [node["name"] for node in json.loads(sym.tojson())["nodes"]
                 if node["op"] == "FullyConnected" and node["name"].endswith("_taps")]
    qsym, qarg, qaux = quantize_model_mkldnn(sym=sym, arg_params=arg, aux_params=aux, ctx=mx.cpu(),
                                             excluded_sym_names=excluded, calib_mode="naive", calib_data=it,
                                             num_calib_examples=n, quantized_dtype="auto",
                                             label_names=None, logger=None)
    return qsym, qarg, qaux


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
