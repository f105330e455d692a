// A 16 x 16 float transpose in AVX-512 registers: the core of the INT8 operators' moves
// between NCHW float maps and pixel-major (NHWC) INT8 rows. Strided scalar moves cost
// ~1 ns per value here (as much as MXNet's own reorders); whole 16 x 16 blocks move at
// register speed. Callers keep a scalar path for shapes that are not multiples of 16 and
// for builds without AVX-512 (kTranspose16 false).
#ifndef SDU_EXT_TRANSPOSE16_H_
#define SDU_EXT_TRANSPOSE16_H_

#ifdef __AVX512F__
#include <immintrin.h>
#endif

namespace sdu {

#ifdef __AVX512F__
constexpr bool kTranspose16 = true;

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
#else
constexpr bool kTranspose16 = false;
#endif

}  // namespace sdu

#endif  // SDU_EXT_TRANSPOSE16_H_
