// The library as a whole: MXNet's version check (initialize), the run-time instruction
// set of the kernels (isa.h) with its C API for Python, and the build fingerprint.
#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>

#include "isa.h"
#include "mxnet/lib_api.h"

#ifndef SDU_FINGERPRINT
#define SDU_FINGERPRINT "none"  // set by the build (insightface_align/symbols/ext/__init__.py)
#endif

namespace sdu {
namespace {

// Whether the CPU and OS support every feature named in SDU_AVX512_TARGET. A name missing
// from this table counts as unsupported, so the AVX-512 kernels are never chosen on
// an unchecked feature (__builtin_cpu_supports also checks the OS saves the zmm state).
bool cpu_runs_avx512_pass() {
#ifdef SDU_NO_AVX512
  return false;  // a baseline-only build (isa_passes.h)
#endif
  __builtin_cpu_init();
  struct Feature {
    const char* name;
    bool supported;
  };
  const Feature table[] = {
      {"avx512f", __builtin_cpu_supports("avx512f") != 0},   {"avx512bw", __builtin_cpu_supports("avx512bw") != 0},
      {"avx512cd", __builtin_cpu_supports("avx512cd") != 0}, {"avx512dq", __builtin_cpu_supports("avx512dq") != 0},
      {"avx512vl", __builtin_cpu_supports("avx512vl") != 0}, {"avx2", __builtin_cpu_supports("avx2") != 0},
      {"avx", __builtin_cpu_supports("avx") != 0},           {"fma", __builtin_cpu_supports("fma") != 0},
      {"bmi", __builtin_cpu_supports("bmi") != 0},           {"bmi2", __builtin_cpu_supports("bmi2") != 0},
      {"popcnt", __builtin_cpu_supports("popcnt") != 0},     {"sse4.2", __builtin_cpu_supports("sse4.2") != 0},
      {"sse4.1", __builtin_cpu_supports("sse4.1") != 0},     {"ssse3", __builtin_cpu_supports("ssse3") != 0},
      {"sse3", __builtin_cpu_supports("sse3") != 0},
  };
  const char* s = SDU_AVX512_TARGET;
  while (*s) {
    const size_t n = std::strcspn(s, ",");
    bool ok = false;
    for (const Feature& f : table)
      if (std::strlen(f.name) == n && std::strncmp(f.name, s, n) == 0) ok = f.supported;
    if (!ok) return false;
    s += n;
    if (*s == ',') ++s;
  }
  return true;
}

int best_isa() {
  static const int best = cpu_runs_avx512_pass() ? static_cast<int>(Isa::kAvx512) : static_cast<int>(Isa::kBaseline);
  return best;
}

// "baseline" -> 0, "avx512" -> 1, "auto" (or empty) -> the best the CPU runs, else -1.
int parse_isa(const char* name) {
  if (name == nullptr || *name == '\0' || std::strcmp(name, "auto") == 0) return best_isa();
  if (std::strcmp(name, "baseline") == 0) return static_cast<int>(Isa::kBaseline);
  if (std::strcmp(name, "avx512") == 0) return static_cast<int>(Isa::kAvx512);
  return -1;
}

const char* isa_name(int isa) { return isa == static_cast<int>(Isa::kAvx512) ? "avx512" : "baseline"; }

// INSIGHTFACE_ALIGN_OPS_ISA caps the choice; an unknown value means "auto" here (the Python
// loader rejects it with a message before the library is loaded).
std::atomic<int>& current_isa() {
  static std::atomic<int> isa{[] {
    const int wanted = parse_isa(std::getenv("INSIGHTFACE_ALIGN_OPS_ISA"));
    return wanted < 0 ? best_isa() : std::min(wanted, best_isa());
  }()};
  return isa;
}

}  // namespace

Isa active_isa() { return static_cast<Isa>(current_isa().load(std::memory_order_relaxed)); }

}  // namespace sdu

extern "C" {

// The build's fingerprint (libsdu_ops.json beside the library records the same); Python
// finds it in the file's bytes without loading the library.
__attribute__((used, visibility("default"))) extern const char sdu_ops_fingerprint[] =
    "sdu-ops-fingerprint:" SDU_FINGERPRINT;

// The instruction set the kernels run with: "baseline" or "avx512".
__attribute__((visibility("default"))) const char* sdu_ops_isa() {
  return sdu::isa_name(static_cast<int>(sdu::active_isa()));
}

// The instruction sets this CPU runs, best last: "baseline" or "baseline avx512".
__attribute__((visibility("default"))) const char* sdu_ops_cpu_isas() {
  return sdu::best_isa() == static_cast<int>(sdu::Isa::kAvx512) ? "baseline avx512" : "baseline";
}

// Chooses the kernels of operator calls from now on ("baseline", "avx512" or "auto"); states
// of stateful operators made before keep theirs. 0 on success, -1 for an unknown name, -2
// when the CPU lacks the instruction set (nothing changes then).
__attribute__((visibility("default"))) int sdu_ops_set_isa(const char* name) {
  const int isa = sdu::parse_isa(name);
  if (isa < 0) return -1;
  if (isa > sdu::best_isa()) return -2;
  sdu::current_isa().store(isa, std::memory_order_relaxed);
  return 0;
}

}  // extern "C"

mxnet::ext::MXReturnValue initialize(int version) {
  if (version >= 10700) return mxnet::ext::MX_SUCCESS;
  MX_ERROR_MSG << "libsdu_ops needs MXNet >= 1.7 (found " << version << ")";
  return mxnet::ext::MX_FAIL;
}
