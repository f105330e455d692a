// Compiles the source named by SDU_PASS_FILE once per instruction set (isa.h): for plain
// x86-64 into namespace sdu::baseline, then for AVX-512 into sdu::avx512 under
// `#pragma GCC target(SDU_AVX512_TARGET)`. No include guard: each source includes it once,
// after its other includes, and the source skips its own includes and registration while
// SDU_ISA is defined.
//
// The re-read source sees SDU_ISA (the namespace) and SDU_AVX512 (0 or 1; GCC's C++
// front end does not define __AVX512F__ under the pragma). transpose16.h, dcn_table.h and
// qmatmul.h hold per-pass code: their guards are re-armed between the passes. All other
// headers (system, oneDNN, MXNet, common.h) are included before the first pass, so their
// inline code is compiled once, for the baseline: nothing outside sdu::avx512 contains an
// AVX-512 instruction (tests/test_ext.py disassembles the library to check). With
// SDU_NO_AVX512 defined there is no AVX-512 pass.
#ifndef SDU_PASS_FILE
#error "define SDU_PASS_FILE (the source to compile per instruction set) before including isa_passes.h"
#endif

#define SDU_ISA baseline
#define SDU_AVX512 0
#include SDU_PASS_FILE
#undef SDU_ISA
#undef SDU_AVX512
#undef SDU_EXT_TRANSPOSE16_H_
#undef SDU_EXT_DCN_TABLE_H_
#undef SDU_EXT_QMATMUL_H_

#ifndef SDU_NO_AVX512
#pragma GCC push_options
SDU_PRAGMA(GCC target(SDU_AVX512_TARGET))
#define SDU_ISA avx512
#define SDU_AVX512 1
#include SDU_PASS_FILE
#undef SDU_ISA
#undef SDU_AVX512
#undef SDU_EXT_TRANSPOSE16_H_
#undef SDU_EXT_DCN_TABLE_H_
#undef SDU_EXT_QMATMUL_H_
#pragma GCC pop_options
#else  // a baseline-only build (build-ops --baseline-only): SDU_DISPATCH's AVX-512 choice is the baseline
namespace sdu {
namespace avx512 = baseline;
}  // namespace sdu
#endif

#undef SDU_PASS_FILE
