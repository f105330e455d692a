// Run-time choice of instruction set for the library's own kernels, and the wrappers that
// register operator callbacks.
//
// The library is compiled for plain x86-64, so it loads and runs on any x86-64 CPU. Each
// operator source is compiled twice in its own translation unit (isa_passes.h): for plain
// x86-64 into namespace sdu::baseline, and inside `#pragma GCC target(SDU_AVX512_TARGET)`
// into namespace sdu::avx512. The callbacks registered with MXNet (SDU_DISPATCH) choose a
// namespace on every call from active_isa(): AVX-512 when the CPU (and OS) supports every
// feature of SDU_AVX512_TARGET, unless the INSIGHTFACE_ALIGN_OPS_ISA environment variable
// (read once, at the first call) or sdu_ops_set_isa() asks for the baseline.
//
// oneDNN (sdu_wino_conv, the INT8 GEMMs and convolutions, sdu_deconv2x2's sgemm) chooses
// its own kernels at run time (AVX2, AVX-512, VNNI, AMX, ...).
#ifndef SDU_EXT_ISA_H_
#define SDU_EXT_ISA_H_

#if !defined(__GNUC__) || defined(__clang__)
#error "libsdu_ops needs GCC: its run-time dispatch compiles kernels under #pragma GCC target (set CXX=g++)"
#endif
#if !defined(__x86_64__)
#error "libsdu_ops targets x86-64 CPUs"
#endif

#include <immintrin.h>  // declares every intrinsic whatever the -m flags (GCC >= 4.9)

#include <exception>
#include <new>

#include "mxnet/lib_api.h"

// The instruction sets of the AVX-512 pass: x86-64-v4 (AVX-512 F/BW/CD/DQ/VL and what
// every AVX-512 CPU has below it). No arch=: GCC inlines a plain function into a kernel
// only when both have the same arch. isa.cc checks each feature at run time.
#define SDU_AVX512_TARGET "avx512f,avx512bw,avx512cd,avx512dq,avx512vl,avx2,avx,fma,bmi,bmi2,popcnt,sse4.2,sse4.1,ssse3,sse3"

#define SDU_PRAGMA_(x) _Pragma(#x)
#define SDU_PRAGMA(x) SDU_PRAGMA_(x)

namespace sdu {

enum class Isa : int { kBaseline = 0, kAvx512 = 1 };

// The instruction set the kernels run with now (isa.cc).
Isa active_isa();

// fn() with a C++ exception turned into an MXNet error (MX_ERROR_MSG + MX_FAIL, which MXNet
// raises as MXNetError naming the operator): unwinding into MXNet's C caller aborts.
template <typename Fn>
mxnet::ext::MXReturnValue guarded(Fn&& fn) {
  try {
    return fn();
  } catch (const std::bad_alloc&) {
    MX_ERROR_MSG << "libsdu_ops: out of memory (std::bad_alloc)";
  } catch (const std::exception& e) {
    MX_ERROR_MSG << "libsdu_ops: C++ exception: " << e.what();
  } catch (...) {
    MX_ERROR_MSG << "libsdu_ops: unknown C++ exception";
  }
  return mxnet::ext::MX_FAIL;
}

// A registered callback: calls the baseline or the AVX-512 variant of one function, by
// active_isa(), inside guarded().
template <typename Fn, Fn Baseline, Fn Avx512>
struct Dispatch;

template <typename... Args, mxnet::ext::MXReturnValue (*Baseline)(Args...),
          mxnet::ext::MXReturnValue (*Avx512)(Args...)>
struct Dispatch<mxnet::ext::MXReturnValue (*)(Args...), Baseline, Avx512> {
  static mxnet::ext::MXReturnValue call(Args... args) {
    const auto fn = active_isa() == Isa::kAvx512 ? Avx512 : Baseline;
    return guarded([&] { return fn(args...); });
  }
};

}  // namespace sdu

// SDU_DISPATCH(file_ns::fn): the callback sdu::{baseline,avx512}::file_ns::fn by the active
// instruction set. SDU_CALLBACK(file_ns::fn): the baseline one only (attribute parsing and
// type and shape inference, which need no vectors), also exception-safe.
#define SDU_DISPATCH(fn) \
  (&::sdu::Dispatch<decltype(&::sdu::baseline::fn), &::sdu::baseline::fn, &::sdu::avx512::fn>::call)
#define SDU_CALLBACK(fn) \
  (&::sdu::Dispatch<decltype(&::sdu::baseline::fn), &::sdu::baseline::fn, &::sdu::baseline::fn>::call)

#endif  // SDU_EXT_ISA_H_
