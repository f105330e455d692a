"""The compiled operator library: build, build record, locations, run-time kernel choice,
error paths, and the operators' own checks.

Operator tests that take the `kernels` fixture run twice: with the kernels the CPU supports
("auto": AVX-512 on an AVX-512 machine) and with the plain x86-64 ones ("baseline"). One
extra build per session (`baseline_build`) compiles the library without its AVX-512 pass.
(The operators' numerics against MXNet's native deformable convolution are in test_deform.py.)
"""
from __future__ import annotations

import collections
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import mxnet as mx
import numpy as np
import pytest

from insightface_align.symbols import ext
from insightface_align.symbols.deform import deformable_unit

ROOT = Path(__file__).resolve().parent.parent


def _python(code: str, **env) -> subprocess.CompletedProcess:
    """Runs code in a fresh interpreter on this checkout (one thread, NaiveEngine, as the tests)."""
    full_env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", MXNET_ENGINE_TYPE="NaiveEngine", **env)
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=ROOT, env=full_env, capture_output=True,
                          text=True, timeout=600)


_INSTRUCTION = re.compile(r"^\s*[0-9a-f]+:\t((?:[0-9a-f]{2} )+)\s*\t\S")
_FUNCTION = re.compile(r"^[0-9a-f]+ <(.*)>:$")
_LEGACY_PREFIXES = {0x26, 0x2e, 0x36, 0x3e, 0x64, 0x65, 0x66, 0x67, 0xf0, 0xf2, 0xf3}


def _vector_extension_instructions(library: str) -> collections.Counter:
    """{function: count} of VEX- and EVEX-encoded instructions (AVX, AVX2, FMA, AVX-512, mask
    registers), which plain x86-64 lacks. In 64-bit mode an instruction whose first byte after
    legacy prefixes is 0xC4/0xC5 (VEX) or 0x62 (EVEX) is one of them."""
    objdump = shutil.which("objdump")
    if objdump is None:
        pytest.fail("objdump (binutils) is needed to check the library's instructions")
    listing = subprocess.run([objdump, "-d", "-C", "-w", library], capture_output=True, text=True, check=True).stdout
    counts, function = collections.Counter(), "?"
    for line in listing.splitlines():
        match = _FUNCTION.match(line)
        if match:
            function = match.group(1)
            continue
        match = _INSTRUCTION.match(line)
        if not match:
            continue
        code = [int(b, 16) for b in match.group(1).split()]
        i = next((k for k, b in enumerate(code) if b not in _LEGACY_PREFIXES), len(code))
        if i < len(code) and code[i] in (0x62, 0xC4, 0xC5):
            counts[function] += 1
    return counts


@pytest.fixture(scope="session")
def baseline_build(tmp_path_factory) -> str:
    """The library built without its AVX-512 pass (build-ops --baseline-only), in a temporary folder."""
    return ext.build(str(tmp_path_factory.mktemp("baseline-ops") / ext.LIBRARY_NAME), baseline_only=True)


def test_library_is_built_and_registers_its_operators():
    path = ext.find()
    assert path is not None and ext.problem(path) is None, "make install builds symbols/ext/libsdu_ops.so"
    ext.load()
    for op in ext.OPS:
        assert hasattr(mx.sym, op) and hasattr(mx.nd, op), op
    record = ext.read_record(path)
    assert record["isas"] == ["baseline", "avx512"] and record["targets"]["baseline"] == "x86-64"
    assert record["mxnet_version"] == mx.__version__
    assert ext.cpu_isas()[0] == "baseline" and ext.isa() in ext.cpu_isas()


def test_missing_library_is_a_clear_error(tmp_path):
    path = str(tmp_path / "libnothing.so")
    with pytest.raises(ext.ExtensionError, match="libnothing.so is missing"):
        ext.load(path)


def _copy_library(folder: Path) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    source = ext.find()
    shutil.copy(source, folder / ext.LIBRARY_NAME)
    shutil.copy(ext.record_path(source), folder / ext.RECORD_NAME)
    return str(folder / ext.LIBRARY_NAME)


def test_staleness_is_judged_by_content_not_file_times(tmp_path, monkeypatch):
    """A copy of the library with its record is current anywhere (no absolute paths in it);
    touching the sources changes nothing; editing one makes the build stale."""
    library = _copy_library(tmp_path / "lib")
    sources = tmp_path / "src"
    sources.mkdir()
    for name in ext.SOURCES + ext.HEADERS:
        shutil.copy(os.path.join(ext.HERE, name), sources / name)
    monkeypatch.setattr(ext, "HERE", str(sources))
    assert ext.problem(library) is None
    for name in ext.SOURCES + ext.HEADERS:
        os.utime(sources / name, (2e9, 2e9))  # newer than the library
    assert ext.problem(library) is None
    with open(sources / "common.h", "a", encoding="utf-8") as handle:
        handle.write("// an edit\n")
    assert "built from other sources or build options" in ext.problem(library)


@pytest.mark.parametrize("field, value, message", [
    ("mxnet_version", "1.6.0", "was built for MXNet 1.6.0, this is MXNet " + mx.__version__),
    ("onednn_version", "1.0.0", "was built for oneDNN 1.0.0, this is oneDNN"),
    ("machine", "aarch64", "was built for machine aarch64"),
    ("source_hash", "0" * 64, "was built from other sources or build options"),
    ("fingerprint", "0123456789abcdef", "does not match its build record"),
    (None, None, "has no build record"),
], ids=["mxnet", "onednn", "machine", "sources", "other-build", "no-record"])
def test_a_build_record_mismatch_is_a_clear_error(tmp_path, field, value, message):
    library = _copy_library(tmp_path)
    record_file = ext.record_path(library)
    if field is None:
        os.unlink(record_file)
    else:
        record = ext.read_record(library)
        record[field] = value
        with open(record_file, "w", encoding="utf-8") as handle:
            json.dump(record, handle)
    assert not ext.available(library)
    with pytest.raises(ext.ExtensionError, match=re.escape(message) + ".*insightface-align build-ops"):
        ext.load(library)


def test_build_goes_to_the_package_folder_or_a_per_user_cache(tmp_path, monkeypatch):
    """A pip install into a read-only site-packages builds into the user's cache folder,
    named after the fingerprint; INSIGHTFACE_ALIGN_OPS_DIR overrides both."""
    monkeypatch.delenv(ext.ENV_DIR, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert ext.build_dir() == ext.HERE  # a checkout is writable
    monkeypatch.setattr(ext, "_writable", lambda folder: False)
    cache = tmp_path / "cache" / "insightface-align" / f"ops-{ext.fingerprint()}"
    assert ext.build_dir() == str(cache) == ext.cache_dir()
    assert re.fullmatch(r"[0-9a-f]{16}", ext.fingerprint())
    assert ext.find() == os.path.join(ext.HERE, ext.LIBRARY_NAME)  # a current library in the package wins
    monkeypatch.setenv(ext.ENV_DIR, str(tmp_path / "ops"))
    assert ext.build_dir() == str(tmp_path / "ops") and ext.find() is None
    assert ext.library_path() == str(tmp_path / "ops" / ext.LIBRARY_NAME)


def test_library_runpath_is_relative_and_avx512_only_in_its_avx512_kernels():
    """RUNPATH: the oneDNN lib dir relative to the library ($ORIGIN), no absolute path. The
    generic code is plain x86-64: every AVX/AVX-512 instruction sits in a function of namespace
    sdu::avx512, which runs only when the CPU has AVX-512 (isa.h)."""
    library = ext.find()
    counts = _vector_extension_instructions(library)  # fails when objdump is missing
    dynamic = subprocess.run(["objdump", "-p", library], capture_output=True, text=True, check=True).stdout
    paths = re.findall(r"^\s*(?:RUNPATH|RPATH)\s+(\S+)$", dynamic, re.M)
    assert len(paths) == 1 and all(p.startswith("$ORIGIN/") for p in paths[0].split(":")), paths
    resolved = paths[0].replace("$ORIGIN", os.path.dirname(library))
    assert os.path.exists(os.path.join(resolved, ext.ONEDNN_LIBRARY)), resolved
    outside = {f: n for f, n in counts.items() if "sdu::avx512::" not in f}
    assert not outside, f"AVX instructions outside sdu::avx512: {sorted(outside.items())[:5]}"
    kernels = {f for f in counts if "sdu::avx512::" in f}
    assert any("forward_impl<float, float>" in f for f in kernels) and sum(counts.values()) > 1000


def test_baseline_only_build_has_no_avx_instruction_at_all(baseline_build):
    record = ext.read_record(baseline_build)
    assert record["isas"] == ["baseline"] and list(record["targets"]) == ["baseline"]
    assert ext.problem(baseline_build) is None
    assert not _vector_extension_instructions(baseline_build)


def _reference_outputs() -> dict:
    """Outputs of the kernel-bearing operators on fixed inputs, at shapes that take the AVX-512
    paths (W, F, C multiples of 16) and the scalar ones. Shared by the parity tests."""
    rng = np.random.RandomState(21)
    nd = lambda *shape, scale=1.0: mx.nd.array(rng.randn(*shape) * scale)  # noqa: E731
    out = {}
    for f, w in ((16, 16), (5, 7)):
        table = nd(2, 4, w, 162 + 9 * f)
        table[:, :, :, :162] *= 0.05
        table.attach_grad()
        with mx.autograd.record():
            unit = mx.nd.sdu_deform_unit(table, nd(18, scale=0.3), nd(f))
        unit.backward(nd(*unit.shape))
        out[f"unit{f}"], out[f"unit{f}_grad"] = unit.asnumpy(), table.grad.asnumpy()
        out[f"blend{f}_f64"] = mx.nd.sdu_dcn_blend(nd(2, 18, 4, w, scale=0.3).astype("float64"),
                                                   nd(2, 4, w, 9 * f).astype("float64"), no_bias=True).asnumpy()
        x = mx.nd.array(rng.uniform(0, 2, (2, 16, 4, w)))
        out[f"unit_q{f}"] = mx.nd.sdu_deform_unit_q(x, nd(162 + 9 * f, 16, scale=0.1), nd(18), nd(f), num_filter=f,
                                                    data_min=0.0, data_max=2.0, table_range=4.0, offset_range=0.5,
                                                    act_type="relu").asnumpy()
    out["mean"] = mx.nd.sdu_mean(nd(2, 32, 5, 16), nd(2, 16, 5, 16), nd(2, 32, 5, 16), num_args=3).asnumpy()
    out["dw"] = mx.nd.sdu_dw_conv(nd(2, 8, 9, 16), nd(8, 1, 3, 3), nd(8), act_type="relu").asnumpy()
    for w, o in ((8, 4), (7, 5)):
        x = mx.nd.array(rng.uniform(-1, 1, (2, 16, 3, w)))
        out[f"deconv{w}"] = mx.nd.sdu_deconv2x2(x, nd(16, o, 2, 2), nd(o), num_filter=o).asnumpy()
        out[f"deconv_q{w}"] = mx.nd.sdu_deconv2x2_q(x, nd(16, o, 2, 2), nd(o), num_filter=o, data_min=-1.0,
                                                    data_max=1.0).asnumpy()
    c = 128
    cab = [mx.nd.array(rng.uniform(0, 2, (1, c, 8, 8)))]
    for o, i in ((c // 2, c), (c // 4, c // 2), (c // 8, c // 4), (c // 2, 1), (c // 4, 1)):
        cab += [nd(o, i, 3, 3, scale=0.05), nd(o, scale=0.1)]
    maps = ("w3_h4", "w2_h4", "w1_h4", "w2_h3_x", "w1_h3_x")
    ranges = dict(data_min=0.0, data_max=2.0, **{f"{m}_{e}": v for m in maps for e, v in (("min", 0.0), ("max", 4.0))})
    out["cab_q"] = mx.nd.sdu_cab_q(*cab, **ranges).asnumpy()
    out["cab_q_pool"] = mx.nd.sdu_cab_q(*cab, pool_output=1, **ranges).asnumpy()
    return out


def _assert_same_outputs(got: dict, want: dict, what: str) -> None:
    assert got.keys() == want.keys()
    for name, value in want.items():
        assert np.abs(value).max() > 0, name
        # The AVX-512 kernels contract a * b + c into FMAs: last-bit differences only.
        np.testing.assert_allclose(got[name], value, rtol=1e-5, atol=1e-5 * np.abs(value).max(),
                                   err_msg=f"{what}: {name}")


def test_baseline_kernels_compute_what_the_avx512_kernels_do():
    ext.load()
    before = ext.isa()
    try:
        ext.set_isa("auto")
        fast = _reference_outputs()
        ext.set_isa("baseline")
        assert ext.isa() == "baseline"
        _assert_same_outputs(_reference_outputs(), fast, "baseline kernels")
    finally:
        ext.set_isa(before)


def test_baseline_only_build_computes_what_the_full_build_does(baseline_build, tmp_path):
    """The library without any AVX code, loaded in a fresh process from INSIGHTFACE_ALIGN_OPS_DIR."""
    saved = tmp_path / "baseline.npz"
    proc = _python(f"""
        import numpy as np
        from insightface_align.symbols import ext
        ext.load()
        assert ext.find() == {baseline_build!r}, ext.find()
        assert ext.isa() == "baseline" and ext.cpu_isas() == ["baseline"], (ext.isa(), ext.cpu_isas())
        import tests.test_ext as t
        np.savez({str(saved)!r}, **t._reference_outputs())
        """, INSIGHTFACE_ALIGN_OPS_DIR=os.path.dirname(baseline_build))
    assert proc.returncode == 0, proc.stderr[-3000:]
    ext.load()
    with np.load(saved) as baseline:
        _assert_same_outputs(dict(baseline), _reference_outputs(), "baseline-only build")


def test_set_isa_switches_kernels_and_rejects_unknown_names(monkeypatch, tmp_path):
    ext.load()
    before = ext.isa()
    try:
        ext.set_isa("baseline")
        assert ext.isa() == "baseline"
        ext.set_isa("auto")
        assert ext.isa() == ext.cpu_isas()[-1]
    finally:
        ext.set_isa(before)
    with pytest.raises(ext.ExtensionError, match="unknown instruction set 'sse9'"):
        ext.set_isa("sse9")
    monkeypatch.setenv(ext.ENV_ISA, "avx9000")
    with pytest.raises(ext.ExtensionError, match="INSIGHTFACE_ALIGN_OPS_ISA='avx9000': expected baseline, avx512"):
        ext.load(str(tmp_path / "other.so"))


def test_an_exception_in_a_kernel_is_an_mxnet_error_not_an_abort():
    """std::bad_alloc for the blend's row accumulators (address space limited to just above
    what MXNet needs for the output) surfaces as MXNetError naming the operator. The library
    is registered as a plain MXNet loader does (its RUNPATH finds oneDNN)."""
    proc = _python(f"""
        import resource
        import mxnet as mx
        mx.library.load({ext.find()!r}, False)
        f, w = 1024, 8192  # one image row: the accumulators (w * f floats) are as large as the output
        table, obias, bias = mx.nd.zeros((1, 1, w, 162 + 9 * f)), mx.nd.zeros(18), mx.nd.zeros(f)
        mx.nd.waitall()
        used = int(next(l for l in open("/proc/self/status") if l.startswith("VmSize")).split()[1]) * 1024
        resource.setrlimit(resource.RLIMIT_AS, (used + (56 << 20), resource.RLIM_INFINITY))
        try:
            mx.nd.sdu_deform_unit(table, obias, bias).wait_to_read()
            print("no error")
        except mx.base.MXNetError as exc:
            print("MXNetError:", exc)
        """)
    assert proc.returncode == 0, f"exit {proc.returncode}:\n{proc.stderr[-2000:]}"
    assert "MXNetError:" in proc.stdout and "custom operator 'sdu_deform_unit'" in proc.stdout, proc.stdout[-2000:]
    assert "libsdu_ops: out of memory (std::bad_alloc)" in proc.stdout, proc.stdout[-2000:]


def test_wino_conv_runs_onednn_winograd():
    """oneDNN's verbose log names the primitive each sdu_wino_conv call ran: Winograd by
    default (on CPUs where oneDNN has it: AVX-512), direct when asked. With baseline kernels:
    oneDNN chooses its own."""
    proc = _python("""
        import mxnet as mx
        from insightface_align.symbols import ext
        ext.load()
        print("kernels", ext.isa())
        x, w, b = mx.nd.ones((1, 32, 12, 12)), mx.nd.ones((16, 32, 3, 3)), mx.nd.zeros(16)
        print("--- winograd")
        mx.nd.sdu_wino_conv(x, w, b, num_filter=16).wait_to_read()
        print("--- direct")
        mx.nd.sdu_wino_conv(x, w, b, num_filter=16, algorithm="direct").wait_to_read()
        """, ONEDNN_VERBOSE="1", INSIGHTFACE_ALIGN_OPS_ISA="baseline")
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = proc.stdout
    assert "kernels baseline" in out
    onednn_isa = next(line for line in out.splitlines() if line.startswith("onednn_verbose,info,cpu,isa:"))
    convs = {}
    for part in out.split("--- ")[1:]:
        name, _, log = part.partition("\n")
        lines = [line.split(",") for line in log.splitlines()
                 if line.startswith("onednn_verbose,exec,cpu,convolution,")]
        assert len(lines) == 1, log
        convs[name] = (lines[0][4], next(f for f in lines[0] if f.startswith("alg:")))
    if "AVX-512" in onednn_isa:
        assert "wino" in convs["winograd"][0] and convs["winograd"][1] == "alg:convolution_winograd", convs
    else:
        assert convs["winograd"][1] == "alg:convolution_direct", convs  # oneDNN's Winograd needs AVX-512
    assert "wino" not in convs["direct"][0] and convs["direct"][1] == "alg:convolution_direct", convs


def test_build_ops_command_reports_the_library_and_its_kernels(capsys):
    from insightface_align.cli import main

    assert main(["build-ops", "--check"]) == 0
    out = capsys.readouterr().out
    assert f"up to date: {ext.find()}" in out and "operators: sdu_dcn_blend" in out
    assert f"kernels: {ext.isa()}" in out


def test_failed_build_names_the_library_and_leaves_nothing_behind(tmp_path, monkeypatch):
    monkeypatch.setenv("CXX", "false")   # a "compiler" that always fails
    target = tmp_path / "libsdu_ops.so"
    with pytest.raises(ext.ExtensionError, match="building .*libsdu_ops.so failed"):
        ext.build(str(target), force=True)
    assert os.listdir(tmp_path) == []


def test_missing_compiler_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("CXX", "no-such-compiler-xyz")
    with pytest.raises(ext.ExtensionError, match="no C\\+\\+ compiler 'no-such-compiler-xyz'"):
        ext.build(str(tmp_path / "lib.so"), force=True)


def test_blend_rejects_inconsistent_shapes_with_its_own_message():
    ext.load()
    offset = mx.nd.zeros((1, 18, 4, 4))
    with pytest.raises(mx.base.MXNetError, match="sdu_dcn_blend: expected offset"):
        mx.nd.sdu_dcn_blend(offset, mx.nd.zeros((1, 4, 5, 9 * 2)), no_bias=True).wait_to_read()
    with pytest.raises(mx.base.MXNetError, match="sdu_dcn_blend: expected table"):
        mx.nd.sdu_dcn_blend(offset, mx.nd.zeros((1, 4, 4, 10)), no_bias=True).wait_to_read()
    with pytest.raises(mx.base.MXNetError, match="sdu_dcn_blend: bias must have shape"):
        mx.nd.sdu_dcn_blend(offset, mx.nd.zeros((1, 4, 4, 18)), mx.nd.zeros(3)).wait_to_read()
    with pytest.raises(mx.base.MXNetError, match="sdu_deform_unit: expected table"):
        mx.nd.sdu_deform_unit(mx.nd.zeros((1, 4, 4, 162)), mx.nd.zeros(18), no_bias=True).wait_to_read()


def test_blend_with_zero_offsets_sums_the_nine_shifted_taps(kernels):
    """The operator alone, against a direct loop: out[b, f, y, x] = bias + sum_k T[(y+i-1, x+j-1), k, f]."""
    ext.load()
    rng = np.random.RandomState(0)
    b, h, w, f = 2, 4, 5, 3
    table = rng.randn(b, h, w, 9 * f).astype(np.float32)
    bias = rng.randn(f).astype(np.float32)
    out = mx.nd.sdu_dcn_blend(mx.nd.zeros((b, 18, h, w)), mx.nd.array(table), mx.nd.array(bias)).asnumpy()
    taps = table.reshape(b, h, w, 9, f)
    # The fused unit with an all-zero offset-tap block and offset bias is the same blend.
    unit_table = np.concatenate([np.zeros((b, h, w, 162), np.float32), table], axis=3)
    unit = mx.nd.sdu_deform_unit(mx.nd.array(unit_table), mx.nd.zeros(18), mx.nd.array(bias)).asnumpy()
    np.testing.assert_allclose(unit, out, rtol=1e-6, atol=1e-6)
    expected = np.broadcast_to(bias[None, :, None, None], (b, f, h, w)).copy()
    for k in range(9):
        i, j = divmod(k, 3)
        for y in range(h):
            for x in range(w):
                if 0 <= y + i - 1 < h and 0 <= x + j - 1 < w:
                    expected[:, :, y, x] += taps[:, y + i - 1, x + j - 1, k, :]
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("exponent", [7, -5])
def test_unit_offset_exponent_undoes_scaled_offset_columns_exactly(exponent, kernels):
    """Offset columns holding 2^e x the taps, with offset_exponent=e: the same output and
    table gradient (scaled likewise) to the bit, what an INT8 export relies on."""
    ext.load()
    rng = np.random.RandomState(3)
    b, h, w, f = 2, 5, 6, 4
    table = rng.randn(b, h, w, 162 + 9 * f).astype(np.float32)
    table[..., :162] *= 0.05
    scaled = table.copy()
    scaled[..., :162] *= 2.0 ** exponent
    obias, bias = mx.nd.array(rng.uniform(-1, 1, 18)), mx.nd.array(rng.randn(f))
    gout = mx.nd.array(rng.randn(b, f, h, w))
    results = []
    for tab, attrs in ((table, {}), (scaled, {"offset_exponent": exponent})):
        t = mx.nd.array(tab)
        t.attach_grad()
        with mx.autograd.record():
            out = mx.nd.sdu_deform_unit(t, obias, bias, **attrs)
        out.backward(gout)
        results.append((out.asnumpy(), t.grad.asnumpy()))
    (out0, grad0), (out1, grad1) = results
    np.testing.assert_array_equal(out1, out0)
    np.testing.assert_array_equal(grad1[..., 162:], grad0[..., 162:])
    np.testing.assert_array_equal(grad1[..., :162], grad0[..., :162] * np.float32(2.0 ** -exponent))
    with pytest.raises(mx.base.MXNetError, match="offset_exponent must be an integer"):
        mx.nd.sdu_deform_unit(mx.nd.array(table), obias, bias, offset_exponent="1.5").wait_to_read()


def test_fast_unit_trains_identically_on_two_cpu_contexts(kernels):
    """The GPU data-parallel path, exercised on mx.cpu(0) + mx.cpu(1): same gradients as one device."""
    rng = np.random.RandomState(1)
    sym = deformable_unit(mx.sym.Variable("data"), 4, "dc", "dc_offset", impl="fast")
    loss = mx.sym.MakeLoss(mx.sym.mean(mx.sym.square(sym)))
    data = mx.nd.array(rng.randn(4, 3, 6, 6))
    arg_shapes, _, _ = sym.infer_shape(data=data.shape)
    params = {name: mx.nd.array(rng.randn(*shape) * (0.1 if "offset" in name else 0.5))
              for name, shape in zip(sym.list_arguments(), arg_shapes) if name != "data"}
    grads = []
    for contexts in ([mx.cpu(0)], [mx.cpu(0), mx.cpu(1)]):
        mod = mx.mod.Module(loss, data_names=["data"], label_names=None, context=contexts)
        mod.bind(data_shapes=[("data", data.shape)])
        mod.init_params(arg_params=params, aux_params={})
        mod.forward_backward(mx.io.DataBatch([data]))
        group = mod._exec_group
        grads.append({name: sum(g.asnumpy() for g in per_device)
                      for name, per_device in zip(group.param_names, group.grad_arrays)})
    one, two = grads
    assert np.abs(one["dc_offset_weight"]).max() > 0
    for name in one:
        # Each device's loss is a mean over its half: two devices sum to twice the one-device gradient.
        np.testing.assert_allclose(two[name], 2 * one[name], rtol=1e-4, atol=1e-6, err_msg=name)


def test_mean_repeats_narrow_inputs_and_matches_standard_operators_bit_for_bit(kernels):
    ext.load()
    rng = np.random.RandomState(2)
    x = rng.randn(2, 8, 3, 5).astype(np.float32)
    y = rng.randn(2, 4, 3, 5).astype(np.float32)
    z = rng.randn(2, 8, 3, 5).astype(np.float32)
    fused = mx.nd.sdu_mean(mx.nd.array(x), mx.nd.array(y), num_args=2).asnumpy()
    standard = (mx.nd.add_n(mx.nd.array(x), mx.nd.concat(mx.nd.array(y), mx.nd.array(y), dim=1)) / 2).asnumpy()
    assert np.array_equal(fused, standard)
    three = mx.nd.sdu_mean(mx.nd.array(x), mx.nd.array(z), mx.nd.array(x), num_args=3).asnumpy()
    assert np.array_equal(three, (mx.nd.add_n(*[mx.nd.array(a) for a in (x, z, x)]) / 3).asnumpy())


def test_mean_gradients_sum_over_the_repeated_channels(kernels):
    ext.load()
    rng = np.random.RandomState(3)
    x, y = mx.nd.array(rng.randn(1, 6, 2, 2)), mx.nd.array(rng.randn(1, 2, 2, 2))
    g = rng.randn(1, 6, 2, 2)
    x.attach_grad()
    y.attach_grad()
    with mx.autograd.record():
        out = mx.nd.sdu_mean(x, y, num_args=2)
    out.backward(mx.nd.array(g))
    np.testing.assert_allclose(x.grad.asnumpy(), g / 2, rtol=1e-6)
    np.testing.assert_allclose(y.grad.asnumpy(), (g[:, 0:2] + g[:, 2:4] + g[:, 4:6]) / 2, rtol=1e-6)


def test_mean_rejects_channel_counts_that_do_not_divide():
    ext.load()
    with pytest.raises(mx.base.MXNetError, match="sdu_mean: inputs need equal B, H, W"):
        mx.nd.sdu_mean(mx.nd.zeros((1, 6, 2, 2)), mx.nd.zeros((1, 4, 2, 2)), num_args=2).wait_to_read()
    with pytest.raises(mx.base.MXNetError, match="sdu_mean: inputs need equal B, H, W"):
        mx.nd.sdu_mean(mx.nd.zeros((1, 4, 2, 2)), mx.nd.zeros((1, 4, 3, 2)), num_args=2).wait_to_read()


@pytest.mark.parametrize("block,topology", [("cab", "sat3"), ("cab", "hourglass"), ("resnet", "sat1"),
                                            ("hpm", "dla")])
def test_fused_means_compute_the_standard_network_exactly(block, topology, kernels):
    """Same parameters, fused vs standard means: the same heatmaps and gradients (float64,
    so training-mode BatchNorm cannot amplify summation-order rounding)."""
    from insightface_align.symbols.backend import Backend
    from insightface_align.symbols.config import NetConfig
    from insightface_align.symbols.network import build_heatmaps

    base = NetConfig(block=block, topology=topology, depth=2, stacks=1, multiplier=0.5, input_size=64,
                     heatmap_size=16)
    results = {}
    for mean in ("standard", "fused"):
        heat = build_heatmaps(base, backend=Backend("native", mean))[-1]
        ops = {n["op"] for n in json.loads(heat.tojson())["nodes"]}
        assert ("sdu_mean" in ops) == (mean == "fused" and (block == "cab" or topology != "hourglass")), ops
        ex = heat.simple_bind(mx.cpu(), data=(2, 3, 64, 64), type_dict={n: "float64" for n in heat.list_arguments()})
        rng = np.random.RandomState(4)
        for name, arr in sorted(ex.arg_dict.items()):
            arr[:] = rng.uniform(0, 255, arr.shape) if name == "data" else rng.randn(*arr.shape) * 0.1
        for name, arr in sorted(ex.aux_dict.items()):
            arr[:] = 1.0 if name.endswith("var") else 0.0
        out = ex.forward(is_train=True)[0].asnumpy()
        ex.backward(mx.nd.array(np.random.RandomState(5).randn(*out.shape), dtype="float64"))
        results[mean] = (out, {k: v.asnumpy() for k, v in ex.grad_dict.items()})
    np.testing.assert_allclose(results["fused"][0], results["standard"][0], rtol=1e-12, atol=1e-12)
    for name, grad in results["standard"][1].items():
        assert np.abs(grad).max() > 0, name
        np.testing.assert_allclose(results["fused"][1][name], grad, rtol=1e-9, atol=1e-9 * np.abs(grad).max(),
                                   err_msg=name)


def test_graphs_for_a_gpu_use_stock_operators_and_refuse_compiled_ones():
    """The same config builds with the compiled operators for a CPU and with MXNet's own
    for GPUs (building needs no GPU); asking a GPU graph for a compiled one is an error."""
    from insightface_align.errors import ConfigError
    from insightface_align.symbols.backend import COMPILED
    from insightface_align.symbols.config import NetConfig
    from insightface_align.symbols.network import get_symbol

    cfg = NetConfig(block="cab", topology="sat3", depth=3, dcn=3, multiplier=0.125)
    cpu, gpu = get_symbol(cfg, ctx=mx.cpu()), get_symbol(cfg, ctx=[mx.gpu(0), mx.gpu(1)])
    assert ext.used_by(cpu.tojson()) and not ext.used_by(gpu.tojson())
    assert "_contrib_DeformableConvolution" in gpu.tojson()
    assert cpu.list_arguments() == gpu.list_arguments()
    with pytest.raises(ConfigError, match="dcn_impl.*CPU-only"):
        get_symbol(cfg, ctx=mx.gpu(0), backend=COMPILED)


def test_mean_rejects_a_malformed_num_args():
    ext.load()
    with pytest.raises(mx.base.MXNetError, match="num_args must be an integer in 1..16"):
        mx.nd.sdu_mean(mx.nd.zeros((1, 4, 2, 2)), num_args="x2").wait_to_read()


def _conv_reference(x, w, b, relu):
    out = mx.nd.Convolution(x, w, b, kernel=(3, 3), pad=(1, 1), num_filter=w.shape[0])
    return mx.nd.relu(out) if relu else out


@pytest.mark.parametrize("channels, algorithm", [((32, 16), "winograd"), ((48, 32), "winograd"),
                                                 ((5, 7), "winograd"), ((32, 16), "direct")],
                         ids=["wino-4x3", "wino-48", "fallback-direct", "direct"])
@pytest.mark.parametrize("relu", [False, True], ids=["linear", "relu"])
def test_wino_conv_matches_convolution(channels, algorithm, relu):
    """Winograd (or oneDNN direct: channels not in 16-blocks, or asked for) equals MXNet's conv."""
    ext.load()
    rng = np.random.RandomState(1)
    cin, cout = channels
    x = mx.nd.array(rng.randn(2, cin, 13, 11))
    w = mx.nd.array(rng.randn(cout, cin, 3, 3) * 0.1)
    b = mx.nd.array(rng.randn(cout))
    got = mx.nd.sdu_wino_conv(x, w, b, num_filter=cout, act_type="relu" if relu else "none", algorithm=algorithm)
    want = _conv_reference(x, w, b, relu).asnumpy()
    assert got.shape == want.shape
    np.testing.assert_allclose(got.asnumpy(), want, rtol=1e-4, atol=1e-4 * np.abs(want).max())
    if relu:
        assert (got.asnumpy() >= 0).all() and (want == 0).any()


def test_wino_conv_sees_new_weights_and_new_batch_sizes():
    """The node keeps weights in Winograd layout between calls: changed weights (set_params)
    and a rebound batch size must still give the right answer."""
    ext.load()
    rng = np.random.RandomState(2)
    sym = mx.sym.sdu_wino_conv(mx.sym.var("data"), mx.sym.var("w"), mx.sym.var("b"), num_filter=16)
    x = rng.randn(1, 16, 8, 8).astype(np.float32)
    for batch in (1, 3):
        mod = mx.mod.Module(sym, data_names=["data"], label_names=None)
        mod.bind(data_shapes=[("data", (batch, 16, 8, 8))], for_training=False)
        for trial in range(2):
            w, b = rng.randn(16, 16, 3, 3).astype(np.float32), rng.randn(16).astype(np.float32)
            mod.set_params({"w": mx.nd.array(w), "b": mx.nd.array(b)}, {})
            xb = np.repeat(x, batch, axis=0) + trial
            mod.forward(mx.io.DataBatch([mx.nd.array(xb)]), is_train=False)
            want = _conv_reference(mx.nd.array(xb), mx.nd.array(w), mx.nd.array(b), False).asnumpy()
            np.testing.assert_allclose(mod.get_outputs()[0].asnumpy(), want, rtol=1e-4, atol=1e-4)


def test_wino_conv_rejects_bad_attributes_and_shapes():
    ext.load()
    x, w, b = mx.nd.zeros((1, 16, 4, 4)), mx.nd.zeros((16, 16, 3, 3)), mx.nd.zeros(16)
    with pytest.raises(mx.base.MXNetError, match="act_type must be 'relu' or 'none'"):
        mx.nd.sdu_wino_conv(x, w, b, num_filter=16, act_type="tanh").wait_to_read()
    with pytest.raises(mx.base.MXNetError, match="num_filter must be a positive integer"):
        mx.nd.sdu_wino_conv(x, w, b, num_filter=0).wait_to_read()
    with pytest.raises(mx.base.MXNetError, match="algorithm must be 'winograd' or 'direct'"):
        mx.nd.sdu_wino_conv(x, w, b, num_filter=16, algorithm="fft").wait_to_read()
    with pytest.raises(mx.base.MXNetError, match=r"weight must be \(num_filter, C, 3, 3\)"):
        mx.nd.sdu_wino_conv(x, mx.nd.zeros((16, 16, 5, 5)), b, num_filter=16).wait_to_read()
    with pytest.raises(mx.base.MXNetError, match="supports float32 only"):
        mx.nd.sdu_wino_conv(x.astype("float64"), w.astype("float64"), b.astype("float64"),
                            num_filter=16).wait_to_read()


def test_build_without_onednn_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setattr(ext.sys, "prefix", str(tmp_path))
    with pytest.raises(ext.ExtensionError, match="no oneapi/dnnl/dnnl.hpp; install the pinned onednn-devel"):
        ext.build(str(tmp_path / "lib.so"), force=True)


@pytest.mark.parametrize("size", [(9, 13), (1, 5), (4, 1)], ids=["9x13", "one-row", "one-column"])
@pytest.mark.parametrize("relu", [False, True], ids=["linear", "relu"])
def test_dw_conv_matches_grouped_convolution(size, relu, kernels):
    """The plain-layout depthwise stencil equals MXNet's grouped conv, borders included."""
    ext.load()
    rng = np.random.RandomState(4)
    c = 6
    x = mx.nd.array(rng.randn(2, c, *size))
    w = mx.nd.array(rng.randn(c, 1, 3, 3))
    b = mx.nd.array(rng.randn(c))
    want = mx.nd.Convolution(x, w, b, kernel=(3, 3), pad=(1, 1), num_filter=c, num_group=c)
    want = (mx.nd.relu(want) if relu else want).asnumpy()
    got = mx.nd.sdu_dw_conv(x, w, b, act_type="relu" if relu else "none").asnumpy()
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_dw_conv_rejects_bad_attributes_and_shapes():
    ext.load()
    x, b = mx.nd.zeros((1, 4, 5, 5)), mx.nd.zeros(4)
    with pytest.raises(mx.base.MXNetError, match="sdu_dw_conv: act_type must be 'relu' or 'none'"):
        mx.nd.sdu_dw_conv(x, mx.nd.zeros((4, 1, 3, 3)), b, act_type="sigmoid").wait_to_read()
    with pytest.raises(mx.base.MXNetError, match=r"weight must be \(C, 1, 3, 3\)"):
        mx.nd.sdu_dw_conv(x, mx.nd.zeros((4, 4, 3, 3)), b).wait_to_read()
    with pytest.raises(mx.base.MXNetError, match=r"bias must be \(C,\)"):
        mx.nd.sdu_dw_conv(x, mx.nd.zeros((4, 1, 3, 3)), mx.nd.zeros(3)).wait_to_read()
    with pytest.raises(mx.base.MXNetError, match="supports float32 only"):
        mx.nd.sdu_dw_conv(x.astype("float64"), mx.nd.zeros((4, 1, 3, 3), dtype="float64"),
                          b.astype("float64")).wait_to_read()


@pytest.mark.parametrize("relu", [False, True], ids=["linear", "relu"])
def test_deconv2x2_matches_mxnet_deconvolution(relu, kernels):
    """One GEMM per image plus the stride-2 scatter equals MXNet's 2x2 stride-2 deconvolution."""
    ext.load()
    rng = np.random.RandomState(7)
    x = mx.nd.array(rng.randn(2, 24, 5, 7))
    w = mx.nd.array(rng.randn(24, 10, 2, 2))
    b = mx.nd.array(rng.randn(10))
    want = mx.nd.Deconvolution(x, w, kernel=(2, 2), stride=(2, 2), num_filter=10, no_bias=True)
    want = want + b.reshape((1, 10, 1, 1))
    want = (mx.nd.relu(want) if relu else want).asnumpy()
    got = mx.nd.sdu_deconv2x2(x, w, b, num_filter=10, act_type="relu" if relu else "none").asnumpy()
    assert got.shape == (2, 10, 10, 14)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_deconv2x2_rejects_bad_attributes_and_shapes():
    ext.load()
    x, b = mx.nd.zeros((1, 4, 3, 3)), mx.nd.zeros(6)
    with pytest.raises(mx.base.MXNetError, match="sdu_deconv2x2: num_filter must be a positive integer"):
        mx.nd.sdu_deconv2x2(x, mx.nd.zeros((4, 6, 2, 2)), b).wait_to_read()
    with pytest.raises(mx.base.MXNetError, match=r"weight must be \(C, num_filter, 2, 2\) = \(4, 6, 2, 2\)"):
        mx.nd.sdu_deconv2x2(x, mx.nd.zeros((6, 4, 2, 2)), b, num_filter=6).wait_to_read()
    with pytest.raises(mx.base.MXNetError, match="act_type must be 'relu' or 'none'"):
        mx.nd.sdu_deconv2x2(x, mx.nd.zeros((4, 6, 2, 2)), b, num_filter=6, act_type="elu").wait_to_read()
