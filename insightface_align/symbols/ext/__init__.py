"""The project's compiled MXNet operators: one C++ library, `libsdu_ops.so`, with CPU kernels only.

    sdu_dcn_blend, sdu_deform_unit   fast deformable convolution: bilinear tap blend of a GEMM table
    sdu_deform_unit_q                 the deformable unit of INT8 exports (oneDNN INT8 matmul + blend)
    sdu_mean                          one-pass node mean of the CAB and grid nodes
    sdu_wino_conv                     3x3 convolution with oneDNN's Winograd kernels (inference)
    sdu_dw_conv                       depthwise 3x3 convolution on plain NCHW (inference)
    sdu_deconv2x2, sdu_deconv2x2_q    2x2 stride-2 deconvolution as a GEMM, fp32 and INT8 (inference)
    sdu_cab_q                         a whole INT8 Channel Aggregation Block (inference)

MXNet loads it at run time (`mx.library.load`, the lib_api of MXNet >= 1.7), so no MXNet
rebuild is needed; it is compiled against the headers the MXNet wheel ships and the
oneDNN of the pinned onednn wheels. The library runs on any x86-64 CPU: its generic code
is compiled for plain x86-64 and its AVX-512 kernels are chosen at run time from the CPU's
features (isa.h). A JSON build record beside it (fingerprint of the sources, flags, MXNet
and oneDNN) is checked before every load.

    insightface-align build-ops [--check]               # or: python -m insightface_align.symbols.ext
    INSIGHTFACE_ALIGN_OPS_ISA=baseline python ...       # force the plain x86-64 kernels

See docs/compiled-operators.md.
"""
from __future__ import annotations

import concurrent.futures
import ctypes
import datetime
import hashlib
import json
import os
import platform
import re
import shutil
import site
import subprocess
import sys
import tempfile

from insightface_align.errors import AlignError

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCES = ("isa.cc", "cab_q.cc", "dcn_blend.cc", "deform_unit_q.cc", "mean.cc", "wino_conv.cc", "dw_conv.cc",
           "deconv2x2.cc")
HEADERS = ("isa.h", "isa_passes.h", "common.h", "dcn_table.h", "onednn.h", "qmatmul.h", "transpose16.h")
LIBRARY_NAME = "libsdu_ops.so"
RECORD_NAME = "libsdu_ops.json"
LIBRARY = os.path.join(HERE, LIBRARY_NAME)  # the in-package location (checkouts, writable installs)
OPS = ("sdu_dcn_blend", "sdu_deform_unit", "sdu_deform_unit_q", "sdu_mean", "sdu_wino_conv", "sdu_dw_conv",
       "sdu_deconv2x2", "sdu_deconv2x2_q", "sdu_cab_q")
# oneDNN (the `onednn-cpu-gomp` wheel pinned in requirements/common.txt): sdu_wino_conv and the INT8 GEMMs.
ONEDNN_LIBRARY = "libdnnl.so.2"
# Environment: where to build and look for the library; the kernels' instruction set.
ENV_DIR = "INSIGHTFACE_ALIGN_OPS_DIR"
ENV_ISA = "INSIGHTFACE_ALIGN_OPS_ISA"
ISAS = ("baseline", "avx512")
BASELINE_ARCH = "x86-64"
# Compile and link options (sources and their include paths are added per build). Every
# option here is part of the build fingerprint: changing one makes existing builds stale.
CXXFLAGS = ("-std=c++17", "-O3", "-march=" + BASELINE_ARCH, "-mtune=generic", "-fopenmp", "-fPIC",
            # Loops start on 64-byte boundaries: the deformable blend's inner loop straddling one ran
            # ~4% slower here (+2% library size).
            "-falign-loops=64",
            # Hidden inline symbols and -Bsymbolic: the oneDNN C++ wrappers in this library bind to
            # their own copies, never to the same-named ones libmxnet.so carries for its oneDNN.
            "-fvisibility-inlines-hidden")
LDFLAGS = ("-shared", "-fopenmp", "-Wl,-Bsymbolic", "-Wl,-z,noexecstack")
REBUILD = "build it with `insightface-align build-ops` (in a checkout: make install)"
_MARKER = b"sdu-ops-fingerprint:"


class ExtensionError(AlignError):
    """The compiled operator library is missing, stale or failed to build/load."""


# ---- inputs of a build: sources, MXNet, oneDNN

def _mxnet_dir() -> str:
    import mxnet

    return os.path.dirname(os.path.abspath(mxnet.__file__))


def _mxnet_version() -> str:
    import mxnet

    return str(mxnet.__version__)


def _lib_api() -> tuple:
    """(include dir, src/lib_api.cc) of the MXNet wheel: the operator API the library implements."""
    mx_dir = _mxnet_dir()
    lib_api = os.path.join(mx_dir, "src", "lib_api.cc")
    include = os.path.join(mx_dir, "include")
    if not os.path.exists(lib_api) or not os.path.exists(os.path.join(include, "mxnet", "lib_api.h")):
        raise ExtensionError(f"{mx_dir}: this MXNet wheel has no include/mxnet/lib_api.h or src/lib_api.cc "
                             "to build operators against")
    return include, lib_api


def _onednn_prefixes() -> list:
    """Install prefixes where the onednn wheels put include/ and lib/ (a venv's, or --user's)."""
    prefixes = [sys.prefix]
    user = site.getuserbase()
    if user and user not in prefixes:
        prefixes.append(user)
    return prefixes


def _onednn_dirs() -> tuple:
    """(include dir, lib dir) of the oneDNN the `onednn-cpu-gomp`/`onednn-devel-cpu-gomp`
    wheels install (MXNet's own copy is not exported)."""
    prefixes = _onednn_prefixes()
    include = next((os.path.join(p, "include") for p in prefixes
                    if os.path.exists(os.path.join(p, "include", "oneapi", "dnnl", "dnnl.hpp"))), None)
    if include is None:
        raise ExtensionError(f"{os.path.join(prefixes[0], 'include')}: no oneapi/dnnl/dnnl.hpp; install the pinned "
                             "onednn-devel-cpu-gomp (requirements/common.txt, make install)")
    lib = next((os.path.join(p, "lib") for p in prefixes if os.path.exists(os.path.join(p, "lib", ONEDNN_LIBRARY))),
               None)
    if lib is None:
        raise ExtensionError(f"{os.path.join(prefixes[0], 'lib')}: no {ONEDNN_LIBRARY}; install the pinned "
                             "onednn-cpu-gomp (requirements/common.txt, make install)")
    return include, lib


_onednn_handle = None


def _load_onednn() -> str:
    """Loads the environment's libdnnl.so.2, which the library then binds to by its soname
    wherever the library lives, and returns its version, e.g. "2.5.0"."""
    global _onednn_handle
    if _onednn_handle is None:
        path = os.path.join(_onednn_dirs()[1], ONEDNN_LIBRARY)
        try:
            handle = ctypes.CDLL(path)
        except OSError as exc:
            raise ExtensionError(f"{path}: cannot be loaded ({exc})") from exc
        _onednn_handle = handle
    fn = _onednn_handle.dnnl_version
    fn.restype = ctypes.POINTER(ctypes.c_int * 3)  # dnnl_version_t starts with major, minor, patch
    return ".".join(str(v) for v in fn().contents)


def _onednn_header_version(include: str) -> str:
    path = os.path.join(include, "oneapi", "dnnl", "dnnl_version.h")
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except OSError as exc:
        raise ExtensionError(f"{path}: cannot read the oneDNN headers' version ({exc})") from exc
    parts = [re.search(rf"#define DNNL_VERSION_{k}\s+(\d+)", text) for k in ("MAJOR", "MINOR", "PATCH")]
    if not all(parts):
        raise ExtensionError(f"{path}: no DNNL_VERSION_MAJOR/MINOR/PATCH")
    return ".".join(m.group(1) for m in parts)


def _avx512_target() -> str:
    """The AVX-512 pass's instruction sets, as isa.h defines them (SDU_AVX512_TARGET)."""
    path = os.path.join(HERE, "isa.h")
    with open(path, encoding="utf-8") as handle:
        match = re.search(r'#define SDU_AVX512_TARGET "([^"]+)"', handle.read())
    if not match:
        raise ExtensionError(f"{path}: no #define SDU_AVX512_TARGET \"...\"")
    return match.group(1)


def _options(baseline_only: bool) -> dict:
    """The build options that decide the binary (besides the sources): part of the fingerprint."""
    defines = ["-DSDU_NO_AVX512"] if baseline_only else []
    return {"cxxflags": list(CXXFLAGS) + defines, "ldflags": list(LDFLAGS),
            "isas": ["baseline"] if baseline_only else list(ISAS)}


def source_hash(baseline_only: bool = False) -> str:
    """SHA-256 of every source and header (this folder's and MXNet's lib_api) and the build options."""
    digest = hashlib.sha256()
    include, lib_api = _lib_api()
    files = [os.path.join(HERE, name) for name in SOURCES + HEADERS]
    files += [os.path.join(include, "mxnet", "lib_api.h"), lib_api]
    for path in files:
        digest.update(os.path.basename(path).encode() + b"\0")
        try:
            with open(path, "rb") as handle:
                digest.update(handle.read())
        except OSError as exc:
            raise ExtensionError(f"{path}: cannot read a source of the operator library ({exc})") from exc
    digest.update(json.dumps(_options(baseline_only), sort_keys=True).encode())
    return digest.hexdigest()


def _expected(baseline_only: bool = False) -> dict:
    """What a current build records, from this installation's sources, MXNet and oneDNN."""
    record = {"source_hash": source_hash(baseline_only), "mxnet_version": _mxnet_version(),
              "onednn_version": _load_onednn(), "machine": platform.machine()}
    key = json.dumps(record, sort_keys=True).encode()
    record["fingerprint"] = hashlib.sha256(key).hexdigest()[:16]
    return record


def fingerprint(baseline_only: bool = False) -> str:
    """The fingerprint a current build of this installation has (also names its cache folder)."""
    return _expected(baseline_only)["fingerprint"]


# ---- where the library lives

def record_path(library: str) -> str:
    return os.path.join(os.path.dirname(os.path.abspath(library)), RECORD_NAME)


def cache_dir() -> str:
    """The per-user build folder: $XDG_CACHE_HOME (or ~/.cache)/insightface-align/ops-<fingerprint>."""
    root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(root, "insightface-align", f"ops-{fingerprint()}")


def _writable(folder: str) -> bool:
    return os.path.isdir(folder) and os.access(folder, os.W_OK | os.X_OK)


def build_dir() -> str:
    """Where `build` puts the library: $INSIGHTFACE_ALIGN_OPS_DIR when set, else this package's
    folder when writable (a checkout, a user's install), else the per-user cache folder."""
    override = os.environ.get(ENV_DIR)
    if override:
        return os.path.abspath(os.path.expanduser(override))
    return HERE if _writable(HERE) else cache_dir()


def _candidates() -> list:
    """The folders `find` looks in, in order."""
    override = os.environ.get(ENV_DIR)
    if override:
        return [os.path.abspath(os.path.expanduser(override))]
    return [HERE, cache_dir()]


def find():
    """The first current library among the candidate folders, or None."""
    for folder in _candidates():
        path = os.path.join(folder, LIBRARY_NAME)
        if problem(path) is None:
            return path
    return None


def library_path() -> str:
    """The library `load()` uses: the current one `find` finds, else where `build` would put it."""
    return find() or os.path.join(build_dir(), LIBRARY_NAME)


# ---- the build record

def _embedded_fingerprint(library: str):
    """The fingerprint compiled into the library (isa.cc), read from its bytes: no code runs."""
    try:
        with open(library, "rb") as handle:
            data = handle.read()
    except OSError as exc:
        raise ExtensionError(f"{library}: cannot be read ({exc})") from None
    at = data.find(_MARKER)
    if at < 0:
        return None
    end = data.find(b"\0", at)
    return data[at + len(_MARKER):end].decode("ascii", "replace")


def read_record(library: str) -> dict:
    """The JSON build record beside the library (ExtensionError when missing or unreadable)."""
    path = record_path(library)
    try:
        with open(path, encoding="utf-8") as handle:
            record = json.load(handle)
    except FileNotFoundError:
        raise ExtensionError(f"{library} has no build record {path}") from None
    except (OSError, ValueError) as exc:
        raise ExtensionError(f"{path}: unreadable build record ({exc})") from None
    if not isinstance(record, dict):
        raise ExtensionError(f"{path}: unreadable build record (not a JSON object)")
    return record


def problem(library: str = None):
    """Why the library cannot be loaded as it is (a sentence naming the file), or None when it
    is current: built from these sources with these options, for this MXNet, oneDNN and machine."""
    library = os.path.abspath(library or library_path())
    if not os.path.exists(library):
        return f"{library} is missing"
    try:
        record = read_record(library)
        embedded = _embedded_fingerprint(library)
        if embedded is None or embedded != record.get("fingerprint"):
            return (f"{library} does not match its build record {record_path(library)} (fingerprint "
                    f"{embedded or 'none'} in the library, {record.get('fingerprint')} in the record)")
        expected = _expected(record.get("isas") == ["baseline"])
    except ExtensionError as exc:
        return str(exc)
    if record.get("source_hash") != expected["source_hash"]:
        return (f"{library} was built from other sources or build options than {HERE} holds now "
                f"(source hash {str(record.get('source_hash'))[:12]}, now {expected['source_hash'][:12]})")
    for key, what in (("mxnet_version", "MXNet"), ("onednn_version", "oneDNN"), ("machine", "machine")):
        if record.get(key) != expected[key]:
            return f"{library} was built for {what} {record.get(key)}, this is {what} {expected[key]}"
    if record.get("fingerprint") != expected["fingerprint"]:
        return (f"{library}: build record {record_path(library)} has fingerprint {record.get('fingerprint')}, "
                f"expected {expected['fingerprint']}")
    return None


def is_stale(library: str = None) -> bool:
    """True when the library is missing or not current (see `problem`)."""
    return problem(library) is not None


# ---- building

def runpath(folder: str) -> str:
    """The library's RUNPATH when it lives in folder: the oneDNN lib dir relative to it ($ORIGIN),
    so a plain `mx.library.load(path)` finds libdnnl.so.2 while the library and the environment
    keep their places. `load()` does not rely on it: it loads the environment's oneDNN first."""
    return "$ORIGIN/" + os.path.relpath(_onednn_dirs()[1], os.path.abspath(folder))


def compile_commands(library: str, objects_dir: str, baseline_only: bool = False, fingerprint_: str = "none",
                     folder: str = None) -> tuple:
    """([per-source compile commands], link command) building `library` via objects in objects_dir,
    for a library that will live in folder (default: library's own)."""
    include, lib_api = _lib_api()
    dnnl_include, dnnl_lib = _onednn_dirs()
    compiler = os.environ.get("CXX", "g++")
    options = _options(baseline_only)
    common = [compiler, *options["cxxflags"], "-I" + HERE, "-I" + dnnl_include, "-I" + include]
    compiles, objects = [], []
    for source in [os.path.join(HERE, s) for s in SOURCES] + [lib_api]:
        obj = os.path.join(objects_dir, os.path.basename(source) + ".o")
        extra = [f'-DSDU_FINGERPRINT="{fingerprint_}"'] if source.endswith("isa.cc") else []
        compiles.append([*common, *extra, "-c", source, "-o", obj])
        objects.append(obj)
    # RUNPATH relative to the library, and outside the fingerprint: it depends on where the library lives.
    link = [compiler, *options["ldflags"], *objects, "-L" + dnnl_lib, "-l:" + ONEDNN_LIBRARY,
            "-Wl,-rpath," + runpath(folder or os.path.dirname(library)), "-o", library]
    return compiles, link


def _compiler_version(compiler: str) -> str:
    try:
        out = subprocess.run([compiler, "--version"], capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.splitlines()[0].strip() if out.strip() else "unknown"


def _run(cmd: list, library: str) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise ExtensionError(f"building {library} failed:\n{' '.join(cmd)}\n{proc.stderr.strip()}")


def build(library: str = None, force: bool = False, baseline_only: bool = False, jobs: int = None) -> str:
    """Compile the library and write its build record, unless it is current (or force).

    library: the .so to write (default: `build_dir()`/libsdu_ops.so). baseline_only: leave the
    AVX-512 pass out (plain x86-64 code only). Atomic: objects and both outputs are written in a
    temporary folder beside the library, then renamed over it, so an interrupted build leaves
    the previous files. Returns the library's path.
    """
    library = os.path.abspath(library or os.path.join(build_dir(), LIBRARY_NAME))
    if not force and problem(library) is None and read_record(library).get("isas") == _options(baseline_only)["isas"]:
        return library
    compiler = os.environ.get("CXX", "g++")
    if shutil.which(compiler) is None:
        raise ExtensionError(f"no C++ compiler {compiler!r} on PATH; install g++ (or set CXX) to build {library}")
    include, _ = _onednn_dirs()
    expected = _expected(baseline_only)
    header_version = _onednn_header_version(include)
    if header_version != expected["onednn_version"]:
        raise ExtensionError(f"{include}: oneDNN headers {header_version} but {ONEDNN_LIBRARY} "
                             f"{expected['onednn_version']}; install matching onednn-devel-cpu-gomp and "
                             "onednn-cpu-gomp (requirements/common.txt)")
    folder = os.path.dirname(library)
    try:
        os.makedirs(folder, exist_ok=True)
        work = tempfile.mkdtemp(prefix=".build-", dir=folder)
    except OSError as exc:
        raise ExtensionError(f"{folder}: cannot build {LIBRARY_NAME} here ({exc}); set {ENV_DIR} to a writable "
                             "folder") from exc
    try:
        tmp_library = os.path.join(work, LIBRARY_NAME)
        compiles, link = compile_commands(tmp_library, work, baseline_only, expected["fingerprint"], folder)
        with concurrent.futures.ThreadPoolExecutor(max_workers=jobs or os.cpu_count() or 1) as pool:
            for future in [pool.submit(_run, cmd, library) for cmd in compiles]:
                future.result()
        _run(link, library)
        options = _options(baseline_only)
        record = {
            "library": LIBRARY_NAME,
            "fingerprint": expected["fingerprint"],
            "source_hash": expected["source_hash"],
            "compiler": {"command": compiler, "version": _compiler_version(compiler)},
            "cxxflags": options["cxxflags"],
            "ldflags": options["ldflags"],
            "runpath": runpath(folder),
            "isas": options["isas"],
            "targets": {"baseline": BASELINE_ARCH, **({} if baseline_only else {"avx512": _avx512_target()})},
            "mxnet_version": expected["mxnet_version"],
            "onednn_version": expected["onednn_version"],
            "machine": expected["machine"],
            "built": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        }
        tmp_record = os.path.join(work, RECORD_NAME)
        with open(tmp_record, "w", encoding="utf-8") as handle:
            json.dump(record, handle, indent=2)
            handle.write("\n")
        os.chmod(tmp_library, 0o755)
        os.replace(tmp_library, library)
        os.replace(tmp_record, record_path(library))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return library


# ---- loading

_loaded: dict = {}  # path -> ctypes handle of a library registered with MXNet in this process


def available(library: str = None) -> bool:
    """Whether a current library is there (so `load` will not need a compiler). Never raises:
    callers fall back to MXNet's stock operators when False."""
    if library is None and _loaded:
        return True
    if library is not None and os.path.abspath(library) in _loaded:
        return True
    try:
        return find() is not None if library is None else problem(library) is None
    except Exception:  # noqa: BLE001 (no MXNet, unreadable sources...: not available)
        return False


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


def _check_isa_env() -> None:
    value = os.environ.get(ENV_ISA, "")
    if value not in ("", "auto", *ISAS):
        raise ExtensionError(f"{ENV_ISA}={value!r}: expected baseline, avx512 or auto")


def load(library: str = None) -> None:
    """Register the library's operators with MXNet once per process (mx.sym / mx.nd).

    Raises ExtensionError naming the file when it is missing or not current (its build record
    disagrees with the sources, MXNet or oneDNN): build it with `insightface-align build-ops`.
    """
    if library is None and _loaded:
        return
    path = os.path.abspath(library or library_path())
    if path in _loaded:
        return
    _check_isa_env()
    reason = problem(path)
    if reason is not None:
        raise ExtensionError(f"{reason}; {REBUILD}")
    if _loaded:
        raise ExtensionError(f"{path}: this process already registered the operators from {next(iter(_loaded))}")
    import mxnet as mx

    _load_onednn()
    try:
        mx.library.load(path, False)
        handle = ctypes.CDLL(path)
    except Exception as exc:  # MXNetError or OSError from dlopen
        raise ExtensionError(f"{path}: MXNet could not load it ({exc}); rebuild it with "
                             "`insightface-align build-ops --force`") from exc
    _loaded[path] = handle


def _handle():
    if not _loaded:
        raise ExtensionError("the operator library is not loaded (call insightface_align.symbols.ext.load())")
    return next(iter(_loaded.values()))


def isa() -> str:
    """The instruction set the loaded library's kernels run with: "baseline" or "avx512"."""
    fn = _handle().sdu_ops_isa
    fn.restype = ctypes.c_char_p
    return fn().decode()


def cpu_isas() -> list:
    """The instruction sets the loaded library can run on this CPU, best last."""
    fn = _handle().sdu_ops_cpu_isas
    fn.restype = ctypes.c_char_p
    return fn().decode().split()


def set_isa(name: str) -> None:
    """Choose the kernels for operator calls from now on: "baseline", "avx512" or "auto".
    States of stateful operators (bound graphs) made before keep theirs."""
    status = _handle().sdu_ops_set_isa(str(name).encode())
    if status == -1:
        raise ExtensionError(f"unknown instruction set {name!r}: expected baseline, avx512 or auto")
    if status == -2:
        raise ExtensionError(f"this CPU cannot run the {name} kernels (it runs: {', '.join(cpu_isas())})")


def main(argv=None) -> int:
    import argparse

    prog = os.path.basename(sys.argv[0]) if os.path.basename(sys.argv[0]).startswith("insightface-align") \
        else "python -m insightface_align.symbols.ext"
    parser = argparse.ArgumentParser(prog=prog, description="Build (if needed) the compiled CPU operator library "
                                     "libsdu_ops.so; see docs/compiled-operators.md.",
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--force", action="store_true", help="rebuild even when the library is current")
    parser.add_argument("--check", action="store_true", help="also load the library and list its operators")
    parser.add_argument("--baseline-only", action="store_true",
                        help="leave the AVX-512 kernels out (plain x86-64 code only; default: both, chosen at "
                        "run time)")
    parser.add_argument("--output", metavar="DIR", help=f"build into DIR (default: ${ENV_DIR}, else the package "
                        "folder when writable, else ~/.cache/insightface-align/ops-<fingerprint>)")
    args = parser.parse_args(argv)
    try:
        target = os.path.join(os.path.abspath(args.output) if args.output else build_dir(), LIBRARY_NAME)
        reason = problem(target)
        if reason is None and read_record(target).get("isas") != _options(args.baseline_only)["isas"]:
            reason = f"{target} was built for instruction sets {read_record(target).get('isas')}"
        if not args.force and reason is None:
            print("up to date:", target)
        else:
            if reason and os.path.exists(target):
                print("rebuilding:", reason)
            print(f"building {target} (a minute or two)...", flush=True)
            path = build(target, force=True, baseline_only=args.baseline_only)
            print("built", path)
        if args.check:
            load(target)
            import mxnet as mx

            missing = [op for op in OPS if not hasattr(mx.sym, op)]
            if missing:
                raise ExtensionError(f"{target} loaded but does not register {', '.join(missing)}")
            print("operators:", ", ".join(OPS))
            print("kernels:", isa(), f"(this CPU runs: {', '.join(cpu_isas())})")
    except ExtensionError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0
