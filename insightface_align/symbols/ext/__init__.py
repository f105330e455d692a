"""The project's compiled MXNet operators (one small C++ library, `libsdu_ops.so`).

It holds `sdu_dcn_blend` and `sdu_deform_unit`, the bilinear tap blend of the fast
deformable convolution (symbols/deform.py), and `sdu_mean`, the one-pass node mean of
the CAB and grid nodes (symbols/layers.py). All have CPU kernels only. MXNet 1.9 loads
such libraries at run time (`mx.library.load`, the lib_api of MXNet >= 1.7), so no
MXNet rebuild is needed; the library is compiled against the headers the MXNet wheel
ships (`mxnet/include`, `mxnet/src/lib_api.cc`).

    python -m insightface_align.symbols.ext            # build (the Makefile's install step runs this)
    python -m insightface_align.symbols.ext --check    # build if needed, then load it into MXNet

The build targets the machine it runs on (-march=native): build where you run.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile

from insightface_align.errors import AlignError

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCES = ("cab_q.cc", "dcn_blend.cc", "deform_unit_q.cc", "mean.cc", "wino_conv.cc", "dw_conv.cc", "deconv2x2.cc")
HEADERS = ("common.h", "dcn_table.h", "onednn.h", "qmatmul.h", "transpose16.h")
LIBRARY = os.path.join(HERE, "libsdu_ops.so")
OPS = ("sdu_dcn_blend", "sdu_deform_unit", "sdu_deform_unit_q", "sdu_mean", "sdu_wino_conv", "sdu_dw_conv", "sdu_deconv2x2", "sdu_deconv2x2_q", "sdu_cab_q")
# oneDNN (the `onednn-cpu-gomp` wheel pinned in requirements/common.txt) for sdu_wino_conv.
ONEDNN_LIBRARY = "libdnnl.so.2"


class ExtensionError(AlignError):
    """The compiled operator library is missing, stale or failed to build/load."""


def _mxnet_dir() -> str:
    import mxnet

    return os.path.dirname(os.path.abspath(mxnet.__file__))


def _sources() -> list:
    return [os.path.join(HERE, s) for s in SOURCES]


def is_stale(library: str = LIBRARY) -> bool:
    """True when the library is missing or older than one of its sources or headers."""
    if not os.path.exists(library):
        return True
    built = os.path.getmtime(library)
    return any(os.path.getmtime(os.path.join(HERE, f)) > built for f in SOURCES + HEADERS)


def _onednn_dirs() -> tuple:
    """(include dir, lib dir) of the oneDNN the `onednn-cpu-gomp`/`onednn-devel-cpu-gomp`
    wheels install under the environment's prefix (MXNet's own copy is not exported)."""
    include = os.path.join(sys.prefix, "include")
    lib = os.path.join(sys.prefix, "lib")
    if not os.path.exists(os.path.join(include, "oneapi", "dnnl", "dnnl.hpp")):
        raise ExtensionError(f"{include}: no oneapi/dnnl/dnnl.hpp; install the pinned onednn-devel-cpu-gomp "
                             "(requirements/common.txt, make install)")
    if not os.path.exists(os.path.join(lib, ONEDNN_LIBRARY)):
        raise ExtensionError(f"{lib}: no {ONEDNN_LIBRARY}; install the pinned onednn-cpu-gomp "
                             "(requirements/common.txt, make install)")
    return include, lib


def compile_command(output: str) -> list:
    mx_dir = _mxnet_dir()
    lib_api = os.path.join(mx_dir, "src", "lib_api.cc")
    include = os.path.join(mx_dir, "include")
    if not os.path.exists(lib_api) or not os.path.isdir(include):
        raise ExtensionError(f"{mx_dir}: this MXNet wheel has no include/ or src/lib_api.cc to build operators against")
    compiler = os.environ.get("CXX", "g++")
    dnnl_include, dnnl_lib = _onednn_dirs()
    # -Bsymbolic and hidden inline symbols: the oneDNN C++ wrappers in this library bind to
    # their own copies, never to the same-named ones libmxnet.so carries for its oneDNN.
    return [compiler, "-std=c++17", "-O3", "-march=native", "-fopenmp", "-shared", "-fPIC",
            "-fvisibility-inlines-hidden", "-I" + dnnl_include, "-I" + include, *_sources(), lib_api,
            "-L" + dnnl_lib, "-l:" + ONEDNN_LIBRARY, "-Wl,-rpath," + dnnl_lib, "-Wl,-Bsymbolic", "-o", output]


def build(library: str = LIBRARY, force: bool = False) -> str:
    """Compile the library (atomically: temp file, then rename). Returns its path."""
    if not force and not is_stale(library):
        return library
    cmd = compile_command("")
    if shutil.which(cmd[0]) is None:
        raise ExtensionError(f"no C++ compiler {cmd[0]!r} on PATH; install g++ (or set CXX) to build {library}")
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=os.path.dirname(library))
    os.close(fd)
    try:
        cmd[-1] = tmp
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            raise ExtensionError(f"building {library} failed:\n{' '.join(cmd)}\n{proc.stderr.strip()}")
        os.replace(tmp, library)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return library


_loaded: set = set()


def available(library: str = LIBRARY) -> bool:
    """Whether the library is built and current (so `load` will not need a compiler)."""
    return os.path.abspath(library) in _loaded or not is_stale(library)


def used_by(symbol_json: str) -> bool:
    """Whether a symbol's JSON (sym.tojson() or a -symbol.json file's text) calls this
    library's operators, so it needs the library loaded to parse and run."""
    return '"op": "sdu_' in symbol_json


def on_gpu(ctx) -> bool:
    """Whether ctx (an mx.Context, a list of them, or None for the CPU) includes a GPU."""
    contexts = ctx if isinstance(ctx, (list, tuple)) else [ctx]
    return any(c is not None and getattr(c, "device_type", "cpu") == "gpu" for c in contexts)


def usable_on(ctx) -> bool:
    """Whether graphs for ctx can use this library's operators: CPU only, library built."""
    return not on_gpu(ctx) and available()


def load(library: str = LIBRARY) -> None:
    """Register the library's operators with MXNet once per process (mx.sym / mx.nd).

    Raises ExtensionError naming the file when it is missing or stale: run
    `python -m insightface_align.symbols.ext` (or `make install`) to build it.
    """
    path = os.path.abspath(library)
    if path in _loaded:
        return
    if is_stale(path):
        state = "missing" if not os.path.exists(path) else "older than its sources"
        raise ExtensionError(f"{path} is {state}; build it with `python -m insightface_align.symbols.ext` (make install does)")
    import mxnet as mx

    try:
        mx.library.load(path, False)
    except Exception as exc:  # MXNetError or OSError from dlopen
        raise ExtensionError(f"{path}: MXNet could not load it ({exc}); rebuild with `python -m insightface_align.symbols.ext --force`") from exc
    _loaded.add(path)


def main(argv=None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m insightface_align.symbols.ext", description=__doc__.split("\n\n")[0])
    parser.add_argument("--force", action="store_true", help="rebuild even when the library is current")
    parser.add_argument("--check", action="store_true", help="also load the library and list its operators")
    args = parser.parse_args(argv)
    try:
        stale = args.force or is_stale()
        path = build(force=args.force)
        print("built" if stale else "up to date:", path)
        if args.check:
            load(path)
            import mxnet as mx

            missing = [op for op in OPS if not hasattr(mx.sym, op)]
            if missing:
                raise ExtensionError(f"{path} loaded but does not register {', '.join(missing)}")
            print("operators:", ", ".join(OPS))
    except ExtensionError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0
