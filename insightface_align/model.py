"""Load any heatmap checkpoint (ours, an exported deploy graph, or the original release's).

Like InsightFace's own code, the graph is cut at `heatmap_output`, so training-time
loss heads and labels are never needed at inference.
"""
from __future__ import annotations

import json
import os

import mxnet as mx
import numpy as np

from .checkpoint import load_params
from .errors import DataError

OUTPUT = "heatmap_output"


def contexts_from_string(spec: str) -> list:
    """'cpu' -> [mx.cpu()]; '0,1' or 'gpu:0,1' -> GPUs."""
    spec = (spec or "cpu").strip().lower()
    if spec == "cpu":
        return [mx.cpu()]
    spec = spec[4:] if spec.startswith("gpu:") else spec
    try:
        return [mx.gpu(int(i)) for i in spec.split(",") if i.strip()]
    except ValueError:
        raise DataError("--ctx", f"expected 'cpu' or GPU ids like 0,1; got {spec!r}") from None


def _load_project_ops(path: str) -> None:
    """Graphs using this project's compiled operators (fast DCN, fused means) need the
    library registered before MXNet can parse them."""
    from insightface_align.symbols import ext

    with open(path, "r", encoding="utf-8", errors="replace") as handle:
        uses_ext = ext.used_by(handle.read())
    if uses_ext:
        try:
            ext.load()
        except ext.ExtensionError as exc:
            raise DataError(path, f"uses this project's compiled operators, which cannot be loaded: {exc}") from None


def load_symbol(prefix: str):
    path = "%s-symbol.json" % prefix
    if not os.path.exists(path):
        raise DataError(path, "checkpoint symbol not found")
    _load_project_ops(path)
    try:
        sym = mx.sym.load(path)
    except mx.base.MXNetError as exc:
        raise DataError(path, f"not an MXNet symbol file ({str(exc).splitlines()[0]})") from None
    internals = sym.get_internals()
    if OUTPUT not in internals.list_outputs():
        raise DataError(path, f"the graph has no '{OUTPUT}' (is this a heatmap alignment model?)")
    return internals[OUTPUT]


class HeatmapModel:
    """A bound inference Module: raw RGB 0..255 NCHW in, heatmaps out (numpy)."""

    def __init__(self, sym, arg_params, aux_params, ctx=None, batch_size: int = 1, input_size: int = 128,
                 heatmap_kind: str = "softmax_ce"):
        self.ctx = ctx or [mx.cpu()]
        self.heatmap_kind = heatmap_kind  # the loss the heatmaps were trained with (confidence.py)
        self.batch_size, self.input_size = batch_size, input_size
        self.sym = sym
        self.module = mx.mod.Module(sym, data_names=["data"], label_names=None, context=self.ctx)
        self.module.bind(data_shapes=[("data", (batch_size, 3, input_size, input_size))], for_training=False)
        self.module.set_params(arg_params, aux_params, allow_missing=False, allow_extra=True)
        _, out, _ = sym.infer_shape(data=(1, 3, input_size, input_size))
        self.num_points, self.heatmap_size = out[0][1], out[0][2]
        self.ratio = input_size / self.heatmap_size

    @classmethod
    def load(cls, prefix: str, epoch: int, ctx=None, batch_size: int = 1, input_size: int = 128,
             winograd: bool = False) -> "HeatmapModel":
        """Our checkpoints are rebuilt from their stored NetConfig with the operators that
        suit ctx (compiled CPU ones on CPU, MXNet's on GPU); others load their saved graph.
        winograd=True (CPU only) runs export.fastest_cpu_graph on it: ~1.3x faster, with
        Winograd's different rounding (~1e-6 relative per layer)."""
        net = checkpoint_network(prefix, epoch)
        if net is not None:
            from insightface_align.symbols.config import NetConfig
            from insightface_align.symbols.network import for_context, get_symbol

            sym = get_symbol(for_context(NetConfig.from_dict(net), ctx), ctx=ctx)
        else:
            sym = load_symbol(prefix)
        arg, aux = load_params(prefix, epoch)
        missing = [n for n in sym.list_arguments() if n != "data" and n not in arg]
        if missing:
            raise DataError("%s-%04d.params" % (prefix, epoch), f"missing {len(missing)} parameters, e.g. {missing[:3]}")
        if winograd:
            from insightface_align.symbols import ext

            from .export import fastest_cpu_graph

            if ext.on_gpu(ctx):
                raise DataError("--winograd", "the Winograd, depthwise and deconvolution operators run on the CPU only "
                                              "(on GPUs cuDNN picks its own convolution algorithms)")
            needed = set(sym.list_arguments()) | set(sym.list_auxiliary_states())
            sym, arg, aux = fastest_cpu_graph(sym, {k: v for k, v in arg.items() if k in needed},
                                              {k: v for k, v in aux.items() if k in needed}, input_size)
        return cls(sym, arg, aux, ctx, batch_size, input_size, heatmap_kind=checkpoint_heatmap_kind(prefix, epoch))

    def __call__(self, images: np.ndarray) -> np.ndarray:
        """(N, 3, in, in) float RGB 0..255 -> (N, K, hm, hm); N may differ from batch_size."""
        out = []
        for start in range(0, len(images), self.batch_size):
            chunk = np.asarray(images[start:start + self.batch_size], dtype=np.float32)
            real = len(chunk)
            if real < self.batch_size:
                chunk = np.concatenate([chunk, np.zeros((self.batch_size - real,) + chunk.shape[1:], np.float32)])
            self.module.forward(mx.io.DataBatch([mx.nd.array(chunk)]), is_train=False)
            out.append(self.module.get_outputs()[0].asnumpy()[:real])
        return np.concatenate(out) if out else np.zeros((0, self.num_points, self.heatmap_size, self.heatmap_size))


def checkpoint_heatmap_kind(prefix: str, epoch: int) -> str:
    """The heatmap loss stored beside a checkpoint; the release's spatial softmax otherwise."""
    path = "%s-%04d.json" % (prefix, epoch)
    try:
        kind = json.load(open(path)).get("heatmap_loss", "softmax_ce")
    except (OSError, ValueError, AttributeError):
        return "softmax_ce"
    return kind if kind in ("softmax_ce", "sigmoid_ce", "mse") else "softmax_ce"


def checkpoint_network(prefix: str, epoch: int) -> dict | None:
    """The NetConfig dict our trainer stored beside a checkpoint, if any."""
    path = "%s-%04d.json" % (prefix, epoch)
    if not os.path.exists(path):
        return None
    try:
        return json.load(open(path)).get("network")
    except ValueError:
        return None
