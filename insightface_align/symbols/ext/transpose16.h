// 16 x 16 float and 8 x 8 64-bit transposes in AVX-512 registers: the core of the INT8
// operators' moves between NCHW float maps and pixel-major (NHWC) rows. Strided scalar moves cost
// ~1 ns per value here (as much as MXNet's own reorders); whole 16 x 16 blocks move at
// register speed. Callers keep a scalar path for shapes that are not multiples of 16 and
// for the baseline pass: the helpers exist only in the AVX-512 pass (isa_passes.h).
#ifndef SDU_EXT_TRANSPOSE16_H_  // re-armed for each pass (isa_passes.h)
#define SDU_EXT_TRANSPOSE16_H_

#include "isa.h"

namespace sdu {
namespace SDU_ISA {

#if SDU_AVX512
// r[i] holds row i of a 16 x 16 block; afterwards r[j] holds column j.
inline void transpose16(__m512 r[16]) {
  __m512 t[16], u[16];
  for (int i = 0; i < 16; i += 2) {  // per 128-bit lane: (r_i[0], r_i+1[0], r_i[1], r_i+1[1]) and [2], [3]
    t[i] = _mm512_unpacklo_ps(r[i], r[i + 1]);
    t[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);
  }
  for (int g = 0; g < 16; g += 4) {  // u[g + k], lane l: rows g..g+3 of column 4l + k
    const __m512d a = _mm512_castps_pd(t[g]), b = _mm512_castps_pd(t[g + 1]);
    const __m512d c = _mm512_castps_pd(t[g + 2]), d = _mm512_castps_pd(t[g + 3]);
    u[g] = _mm512_castpd_ps(_mm512_unpacklo_pd(a, c));
    u[g + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(a, c));
    u[g + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(b, d));
    u[g + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(b, d));
  }
  for (int k = 0; k < 4; ++k) {  // column 4l + k = lane l of u[k], u[4 + k], u[8 + k], u[12 + k]
    const __m512 v0 = _mm512_shuffle_f32x4(u[k], u[4 + k], 0x88), v1 = _mm512_shuffle_f32x4(u[k], u[4 + k], 0xdd);
    const __m512 v2 = _mm512_shuffle_f32x4(u[8 + k], u[12 + k], 0x88);
    const __m512 v3 = _mm512_shuffle_f32x4(u[8 + k], u[12 + k], 0xdd);
    r[k] = _mm512_shuffle_f32x4(v0, v2, 0x88);
    r[8 + k] = _mm512_shuffle_f32x4(v0, v2, 0xdd);
    r[4 + k] = _mm512_shuffle_f32x4(v1, v3, 0x88);
    r[12 + k] = _mm512_shuffle_f32x4(v1, v3, 0xdd);
  }
}

// r[i] holds row i of an 8 x 8 block of 64-bit values; afterwards r[j] holds column j.
inline void transpose8(__m512d r[8]) {
  __m512d t[8], u[8];
  for (int i = 0; i < 8; i += 2) {  // per 128-bit lane l: (r_i[2l], r_i+1[2l]) and (r_i[2l+1], r_i+1[2l+1])
    t[i] = _mm512_unpacklo_pd(r[i], r[i + 1]);
    t[i + 1] = _mm512_unpackhi_pd(r[i], r[i + 1]);
  }
  for (int g = 0; g < 8; g += 4) {  // u[g]: columns 0 and 4, u[g+1]: 2, 6, u[g+2]: 1, 5, u[g+3]: 3, 7
    u[g] = _mm512_shuffle_f64x2(t[g], t[g + 2], 0x88);
    u[g + 1] = _mm512_shuffle_f64x2(t[g], t[g + 2], 0xdd);
    u[g + 2] = _mm512_shuffle_f64x2(t[g + 1], t[g + 3], 0x88);
    u[g + 3] = _mm512_shuffle_f64x2(t[g + 1], t[g + 3], 0xdd);
  }
  const int first[4] = {0, 2, 1, 3};  // the lower column held by u[k] (the other is 4 more)
  for (int k = 0; k < 4; ++k) {
    r[first[k]] = _mm512_shuffle_f64x2(u[k], u[4 + k], 0x88);
    r[first[k] + 4] = _mm512_shuffle_f64x2(u[k], u[4 + k], 0xdd);
  }
}
#endif

}  // namespace SDU_ISA
}  // namespace sdu

#endif  // SDU_EXT_TRANSPOSE16_H_
