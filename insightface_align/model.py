"""Load any heatmap checkpoint (ours, an export, or the original release's) for inference.

Like InsightFace's own code, the graph is cut at `heatmap_output`, so training-time
loss heads and labels are never needed at inference. A checkpoint whose json describes
its network (PREFIX-EPOCH.json `network`: the trainer's checkpoints and the plain
deploy exports) is rebuilt with the operators that suit the context
(symbols/backend.py: this project's compiled ones on a CPU that has them, MXNet's
elsewhere); any other runs the graph it saved. docs/checkpoints.md has the details.
"""
from __future__ import annotations

import functools
import json
import logging
import os
from dataclasses import dataclass

import mxnet as mx
import numpy as np

from .checkpoint import load_config, load_params
from .cpu_graph import fastest_cpu_graph, thaw_tap_weights
from .errors import AlignError, DataError, library_reason
from .geometry import CONVENTIONS, DEFAULT_CONVENTION, check_convention
from .release_config import infer_release_config
from .symbols import ext
from .symbols.backend import Backend, choose
from .symbols.config import NetConfig
from .symbols.network import get_symbol

LOG = logging.getLogger(__name__)
OUTPUT = "heatmap_output"
HEATMAP_KINDS = ("softmax_ce", "sigmoid_ce", "mse")
# Export forms that hold every parameter of the network (fp32, BatchNorm not folded), so
# they can be rebuilt from their network config like a training checkpoint.
REBUILDABLE_GRAPHS = ("deploy",)


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


def _symbol_path(prefix: str) -> str:
    path = "%s-symbol.json" % prefix
    if not os.path.exists(path):
        raise DataError(path, "checkpoint symbol not found")
    return path


def _load_project_ops(path: str) -> None:
    """Graphs using this project's compiled operators (fast DCN, fused means, Winograd,
    INT8 blocks) need the library registered before MXNet can parse them."""
    with open(path, "r", encoding="utf-8", errors="replace") as handle:
        uses_ext = ext.used_by(handle.read())
    if uses_ext:
        try:
            ext.load()
        except ext.ExtensionError as exc:
            raise DataError(path, f"uses this project's compiled operators, which cannot be loaded: {exc}") from None


def load_symbol(prefix: str):
    """The saved graph of a checkpoint, cut at heatmap_output."""
    path = _symbol_path(prefix)
    _load_project_ops(path)
    try:
        sym = mx.sym.load(path)
    except mx.base.MXNetError as exc:
        raise DataError(path, f"not an MXNet symbol file ({library_reason(exc)})") from None
    internals = sym.get_internals()
    if OUTPUT not in internals.list_outputs():
        raise DataError(path, f"the graph has no '{OUTPUT}' (is this a heatmap alignment model?)")
    return internals[OUTPUT]


@dataclass(frozen=True)
class ModelInfo:
    """What a checkpoint's json says about its model.

    network: the NetConfig, None for checkpoints without one (the release's);
    heatmap_kind: the loss the heatmaps were trained with (confidence.py);
    graph: None for a training checkpoint, else the form of an export's saved graph
      (deploy, folded, winograd, mkldnn, int8; export.py);
    convention: the crop and target convention it was trained under (geometry.py):
      stored by this project's checkpoints (`centred` when a config predates the key),
      `release` for a checkpoint without any config (the original release's).
    """

    network: NetConfig | None = None
    heatmap_kind: str = "softmax_ce"
    graph: str | None = None
    convention: str = DEFAULT_CONVENTION

    @property
    def rebuildable(self) -> bool:
        """Whether the graph can be built from `network` with any operators."""
        return self.network is not None and (self.graph is None or self.graph in REBUILDABLE_GRAPHS)


def release_network(prefix: str, epoch: int) -> NetConfig | None:
    """The NetConfig of a checkpoint without a config (the release's), inferred from the
    parameter names and shapes of its saved graph (release_config.py; the parameters
    themselves are not read); None when they match no release graph."""
    path = "%s-symbol.json" % prefix
    try:
        key = (os.path.abspath(prefix), os.path.getmtime(path))
    except OSError:
        return None
    return _inferred_network(key)


@functools.lru_cache(maxsize=16)
def _inferred_network(key: tuple) -> NetConfig | None:
    prefix, path = key[0], "%s-symbol.json" % key[0]
    try:
        sym = load_symbol(prefix)
        arg_shapes, _, _ = sym.infer_shape(data=(1, 3, 128, 128))
    except (DataError, mx.base.MXNetError) as exc:
        LOG.info("%s: no network inferred (%s)", path, library_reason(exc))
        return None
    shapes = {n: tuple(s) for n, s in zip(sym.list_arguments(), arg_shapes) if n != "data"}
    try:
        cfg = infer_release_config(shapes, path)
    except DataError as exc:
        LOG.info("%s", exc)
        return None
    LOG.info("%s: no stored config; inferred the release network %s", path,
             {k: cfg[k] for k in ("net_stacks", "net_n", "net_block", "net_sta", "net_dcn", "multiplier")})
    return NetConfig.from_release(cfg)


def model_info(prefix: str, epoch: int) -> ModelInfo:
    """The ModelInfo of PREFIX-EPOCH.json (defaults when there is none). Configs written
    before the operator choice left NetConfig load too (its former fields are ignored).
    A checkpoint with no json at all (the release's) gets its network inferred."""
    values = load_config(prefix, epoch)
    network = values.get("network")
    if isinstance(network, dict):
        try:
            network = NetConfig.from_dict(network)
        except AlignError as exc:
            raise DataError("%s-%04d.json" % (prefix, epoch), f"unusable network config ({exc})") from None
    elif not values:
        network = release_network(prefix, epoch)
    else:
        network = None
    kind = values.get("heatmap_loss", "softmax_ce")
    graph = values.get("graph")
    convention = values.get("convention", DEFAULT_CONVENTION) if values else "release"
    if convention not in CONVENTIONS:
        raise DataError("%s-%04d.json" % (prefix, epoch), f"unknown convention {convention!r}; "
                                                            f"expected one of {', '.join(CONVENTIONS)}")
    return ModelInfo(network, kind if kind in HEATMAP_KINDS else "softmax_ce",
                     graph if isinstance(graph, str) else None, convention)


def _saved_graph(prefix: str) -> dict:
    path = _symbol_path(prefix)
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except ValueError as exc:
        raise DataError(path, f"not an MXNet symbol file ({exc})") from None


def inference_graph(prefix: str, epoch: int, ctx=None, backend: Backend | None = None) -> tuple:
    """(symbol, arg_params, aux_params, ModelInfo) of a checkpoint's inference graph.

    Rebuildable checkpoints (ModelInfo.rebuildable) get their graph built with `backend`
    (None: chosen for ctx); an export's stored tap GEMM weights are turned back into the
    convolution weights every backend reads (cpu_graph.thaw_tap_weights, exact). Others
    run their saved graph; asking them for a backend is a DataError. The parameters are
    reduced to those the graph reads.
    """
    info = model_info(prefix, epoch)
    params = "%s-%04d.params" % (prefix, epoch)
    if not info.rebuildable:
        if backend is not None:
            what = f"its graph is an export's {info.graph!r} form" if info.network else "it has no network config"
            raise DataError(params, f"cannot be rebuilt with other operators: {what}")
        sym = load_symbol(prefix)
    arg, aux = load_params(prefix, epoch)
    if info.rebuildable:
        sym = get_symbol(info.network, ctx=ctx, backend=backend or choose(ctx))
        if any(name.endswith("_taps_weight") for name in arg):
            arg = thaw_tap_weights(_saved_graph(prefix), arg)
    needed_args, needed_aux = set(sym.list_arguments()) - {"data"}, set(sym.list_auxiliary_states())
    missing = sorted((needed_args - set(arg)) | (needed_aux - set(aux)))
    if missing:
        raise DataError(params, f"missing {len(missing)} parameters, e.g. {missing[:3]}")
    arg, aux = {k: arg[k] for k in needed_args}, {k: aux[k] for k in needed_aux}
    check_shapes(sym, arg, aux, params, info.network.input_size if info.network is not None else 128)
    return sym, arg, aux, info


def check_shapes(sym, arg: dict, aux: dict, where: str, input_size: int = 128) -> None:
    """DataError naming `where` and the first tensor whose shape is not the one the graph
    needs (a wrongly shaped tensor would otherwise surface only when the graph is bound)."""
    try:
        arg_shapes, _, aux_shapes = sym.infer_shape(data=(1, 3, input_size, input_size))
    except mx.base.MXNetError as exc:
        raise DataError(where, f"the graph does not accept a {input_size}x{input_size} input "
                               f"({library_reason(exc)})") from None
    wanted = dict(zip(sym.list_arguments(), arg_shapes))
    wanted.update(zip(sym.list_auxiliary_states(), aux_shapes))
    for name, value in sorted(list(arg.items()) + list(aux.items())):
        if name in wanted and tuple(value.shape) != tuple(wanted[name]):
            raise DataError(where, f"tensor {name} has shape {tuple(value.shape)}, the graph needs "
                                   f"{tuple(wanted[name])}")


class HeatmapModel:
    """A bound inference Module: raw RGB 0..255 NCHW in, heatmaps out (numpy)."""

    def __init__(self, sym, arg_params, aux_params, ctx=None, batch_size: int = 1, input_size: int = 128,
                 heatmap_kind: str = "softmax_ce", convention: str = DEFAULT_CONVENTION):
        self.ctx = ctx or [mx.cpu()]
        self.heatmap_kind = heatmap_kind  # the loss the heatmaps were trained with (confidence.py)
        self.convention = check_convention(convention)  # crop and decoding convention (geometry.py)
        self.batch_size, self.input_size = batch_size, input_size
        self.sym = sym
        self.module = mx.mod.Module(sym, data_names=["data"], label_names=None, context=self.ctx)
        self.module.bind(data_shapes=[("data", (batch_size, 3, input_size, input_size))], for_training=False)
        self.module.set_params(arg_params, aux_params, allow_missing=False, allow_extra=True)
        _, out, _ = sym.infer_shape(data=(1, 3, input_size, input_size))
        self.num_points, self.heatmap_size = out[0][1], out[0][2]
        self.ratio = input_size / self.heatmap_size

    @classmethod
    def load(cls, prefix: str, epoch: int, ctx=None, batch_size: int = 1, input_size: int | None = None,
             winograd: bool = False) -> "HeatmapModel":
        """Any checkpoint (inference_graph): ours and plain exports are rebuilt with the
        operators that suit ctx, others run their saved graph. input_size defaults to
        the network config's (128 without one). winograd=True (CPU only) runs
        cpu_graph.fastest_cpu_graph on it: ~1.3x faster, with Winograd's different
        rounding (~1e-6 relative per layer)."""
        if winograd and ext.on_gpu(ctx):
            raise DataError("--winograd", "the Winograd, depthwise and deconvolution operators run on the CPU only "
                                          "(on GPUs cuDNN picks its own convolution algorithms)")
        sym, arg, aux, info = inference_graph(prefix, epoch, ctx)
        if input_size is None:
            input_size = info.network.input_size if info.network is not None else 128
        if winograd:
            sym, arg, aux = fastest_cpu_graph(sym, arg, aux, input_size)
        return cls(sym, arg, aux, ctx, batch_size, input_size, heatmap_kind=info.heatmap_kind,
                   convention=info.convention)

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
