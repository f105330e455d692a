"""Which operators a graph is built with: the execution backend, never part of a NetConfig.

The same network (NetConfig) and the same parameters run on three sets of operators:
- the release's stock ones (MXNet's DeformableConvolution, Concat + add_n + divide for
  the node means): RELEASE, what every training checkpoint's -symbol.json holds, so it
  loads in plain MXNet and in the release's scripts, on CPUs and GPUs;
- stock operators that are faster on a CPU (the "portable" deformable convolution:
  FullyConnected + take + batch_dot): PORTABLE, the default of exports;
- this project's compiled CPU operators (symbols/ext: fast deformable units, fused
  means): COMPILED, about 2x faster on a CPU (docs/benchmarks.md), CPU only.

`choose` picks one when a graph is built: explicit arguments win; otherwise a GPU
context gets RELEASE, a CPU gets COMPILED when the compiled library loads and
PORTABLE when it does not. Each choice is logged once per process.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

from insightface_align.errors import ConfigError

from . import ext

LOG = logging.getLogger(__name__)
DCN_IMPLS = ("native", "fast", "portable")
MEAN_IMPLS = ("standard", "fused")
AUTO = "auto"  # what the command lines accept for "choose from the context"
DCN_CHOICES = (AUTO,) + DCN_IMPLS
MEAN_CHOICES = (AUTO,) + MEAN_IMPLS


@dataclass(frozen=True)
class Backend:
    """dcn: native (MXNet's op), fast (compiled, CPU), portable (stock ops, CPU-friendly);
    mean: standard (the release's Concat + add_n + divide) or fused (compiled `sdu_mean`, CPU)."""

    dcn: str = "native"
    mean: str = "standard"

    def __post_init__(self):
        if self.dcn not in DCN_IMPLS:
            raise ConfigError("dcn_impl", f"unknown implementation {self.dcn!r}; choose one of "
                                          f"{', '.join(DCN_CHOICES)}")
        if self.mean not in MEAN_IMPLS:
            raise ConfigError("mean_impl", f"unknown implementation {self.mean!r}; choose one of "
                                           f"{', '.join(MEAN_CHOICES)}")

    @property
    def compiled(self) -> bool:
        """Whether graphs built with it use this project's compiled (CPU-only) operators."""
        return self.dcn == "fast" or self.mean == "fused"

    def check(self, ctx=None) -> None:
        """ConfigError when ctx (a Context, a list of them or None for the CPU) has a GPU and
        this backend needs the CPU-only compiled operators."""
        if not ext.on_gpu(ctx):
            return
        if self.dcn == "fast":
            raise ConfigError("dcn_impl", "'fast' is a CPU-only compiled operator; use native (or auto) on GPUs")
        if self.mean == "fused":
            raise ConfigError("mean_impl", "'fused' is a CPU-only compiled operator; use standard (or auto) on GPUs")


RELEASE = Backend("native", "standard")
PORTABLE = Backend("portable", "standard")
COMPILED = Backend("fast", "fused")

_logged: set = set()


def _compiled_library_problem() -> str | None:
    """None when the compiled library is loaded (or loads now), else why it cannot be."""
    try:
        ext.load()
    except ext.ExtensionError as exc:
        return str(exc)
    return None


def choose(ctx=None, dcn: str | None = None, mean: str | None = None) -> Backend:
    """The backend for a graph run on ctx (an mx.Context, a list of them, or None for the
    CPU). dcn / mean (None or "auto": chosen) override the choice one operator family at
    a time; asking for a compiled operator on a GPU is a ConfigError."""
    dcn = None if dcn == AUTO else dcn
    mean = None if mean == AUTO else mean
    if dcn is not None and mean is not None:
        default, reason = RELEASE, "as asked"
    elif ext.on_gpu(ctx):
        default, reason = RELEASE, "GPU context"
    else:
        problem = _compiled_library_problem()
        default, reason = ((COMPILED, "CPU context, compiled operators loaded") if problem is None else
                           (PORTABLE, f"CPU context, compiled operators unavailable: {problem}"))
    backend = Backend(dcn or default.dcn, mean or default.mean)
    backend.check(ctx)
    if (backend, reason) not in _logged:
        _logged.add((backend, reason))
        LOG.info("operators: %s deformable convolution, %s node means (%s)", backend.dcn, backend.mean, reason)
    return backend
