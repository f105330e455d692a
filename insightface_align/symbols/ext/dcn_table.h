// The fast deformable unit's table geometry and kernels, shared by the fp32 operators
// (dcn_blend.cc) and the INT8 unit that runs its own GEMM (deform_unit_q.cc). See
// dcn_blend.cc for the construction: one GEMM writes a table T (B, H, W, [162 +] 9F)
// of every pixel's products with the nine taps' weights, and the blend sums each output
// pixel's bilinear corners of the taps' sampling positions.
//
// Compiled once per instruction set, into sdu::baseline and sdu::avx512 (isa_passes.h).
#ifndef SDU_EXT_DCN_TABLE_H_  // re-armed for each pass (isa_passes.h)
#define SDU_EXT_DCN_TABLE_H_

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <type_traits>
#include <vector>

#include "common.h"
#include "isa.h"
#include "mxnet/lib_api.h"
#include "transpose16.h"

namespace sdu {
namespace SDU_ISA {

using mxnet::ext::MXReturnValue;
using mxnet::ext::MX_FAIL;
using mxnet::ext::MX_SUCCESS;

inline bool has_bias(const Attrs& attrs) {
  auto it = attrs.find("no_bias");
  if (it == attrs.end()) return true;
  const std::string& v = it->second;
  return !(v == "1" || v == "True" || v == "true");
}

// Sampling geometry of one tap at one pixel, in the data type (as the native op).
template <typename DType>
struct Tap {
  bool inside;          // contributes at all
  int64_t q[4];         // table rows of the corners (y0x0, y0x1, y1x0, y1x1), image-relative
  DType w[4];           // bilinear weights
  DType dwy[4];         // d w / d dy (zero when the row is clamped)
  DType dwx[4];         // d w / d dx (zero when the column is clamped)
};

// One axis, pos in [0, size): corners lo/hi, fractional part, and whether the offset
// gets a gradient along it.
template <typename DType>
inline void axis(DType pos, int64_t size, int64_t* lo, int64_t* hi, DType* frac, bool* grad) {
  if (pos < static_cast<DType>(size - 1)) {
    const DType fl = std::floor(pos);
    *lo = static_cast<int64_t>(fl);
    *hi = *lo + 1;
    *frac = pos - fl;
    *grad = true;
  } else {  // [size-1, size): the native op reads the border, without gradient
    *lo = size - 1;
    *hi = size - 1;
    *frac = DType(0);
    *grad = false;
  }
}

template <typename DType>
inline void tap_geometry(const DType* offset, int64_t hw, int64_t H, int64_t W, int64_t y, int64_t x, int k,
                         Tap<DType>* t) {
  const int i = k / 3, j = k % 3;
  const int64_t p = y * W + x;
  const DType py = static_cast<DType>(y + i - 1) + offset[(2 * k) * hw + p];
  const DType px = static_cast<DType>(x + j - 1) + offset[(2 * k + 1) * hw + p];
  t->inside = py >= DType(0) && py < static_cast<DType>(H) && px >= DType(0) && px < static_cast<DType>(W);
  if (!t->inside) return;
  int64_t y0, y1, x0, x1;
  DType fy, fx;
  bool gy, gx;
  axis(py, H, &y0, &y1, &fy, &gy);
  axis(px, W, &x0, &x1, &fx, &gx);
  const DType one(1), sy = gy ? one : DType(0), sx = gx ? one : DType(0);
  t->q[0] = y0 * W + x0;
  t->q[1] = y0 * W + x1;
  t->q[2] = y1 * W + x0;
  t->q[3] = y1 * W + x1;
  t->w[0] = (one - fy) * (one - fx);
  t->w[1] = (one - fy) * fx;
  t->w[2] = fy * (one - fx);
  t->w[3] = fy * fx;
  t->dwy[0] = -(one - fx) * sy;
  t->dwy[1] = -fx * sy;
  t->dwy[2] = (one - fx) * sy;
  t->dwy[3] = fx * sy;
  t->dwx[0] = -(one - fy) * sx;
  t->dwx[1] = (one - fy) * sx;
  t->dwx[2] = -fy * sx;
  t->dwx[3] = fy * sx;
}

// Where the nine tap blocks of F columns sit in the table: row stride and first column.
struct Dims {
  int64_t B, H, W, F;
  int64_t stride;  // columns per table row
  int64_t col0;    // first column of tap 0
};


// One image row of the blend's output: out_row[f * hw + x] = act(acc[x * F + f] * scale +
// bias[f]) (act: ReLU or identity), in 16 x 16 register transposes when W and F allow
// (AVX-512 pass). Always inlined into forward_impl's row loop.
template <typename DType>
__attribute__((always_inline)) inline void write_row(const DType* acc, int64_t W, int64_t F, int64_t hw, DType scale,
                                                     const DType* bias, bool relu, DType* out_row) {
#if SDU_AVX512
  if (std::is_same<DType, float>::value && W % 16 == 0 && F % 16 == 0) {
    const float* a = reinterpret_cast<const float*>(acc);
    float* o = reinterpret_cast<float*>(out_row);
    const __m512 vs = _mm512_set1_ps(static_cast<float>(scale)), zero = _mm512_setzero_ps();
    for (int64_t f0 = 0; f0 < F; f0 += 16) {
      const __m512 vb = bias ? _mm512_loadu_ps(reinterpret_cast<const float*>(bias) + f0) : zero;
      for (int64_t x0 = 0; x0 < W; x0 += 16) {
        __m512 r[16];
        for (int j = 0; j < 16; ++j) {
          r[j] = _mm512_fmadd_ps(_mm512_loadu_ps(a + (x0 + j) * F + f0), vs, vb);
          if (relu) r[j] = _mm512_max_ps(r[j], zero);
        }
        transpose16(r);  // r[k]: column f0 + k, pixels x0..x0+15
        for (int k = 0; k < 16; ++k) _mm512_storeu_ps(o + (f0 + k) * hw + x0, r[k]);
      }
    }
    return;
  }
#endif
  for (int64_t f = 0; f < F; ++f) {
    const DType bf = bias ? bias[f] : DType(0);
    DType* o = out_row + f * hw;
    for (int64_t x = 0; x < W; ++x) {
      const DType v = acc[x * F + f] * scale + bf;
      o[x] = relu ? std::max(v, DType(0)) : v;
    }
  }
}

#if SDU_AVX512
inline __m512 widen16(const int8_t* v) {
  return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(v))));
}

// a[f] += w0 s0[f] + w1 s1[f] + w2 s2[f] + w3 s3[f] for an INT8 table, F a multiple of 16.
inline void blend_int8_corners(float* a, const int8_t* s0, const int8_t* s1, const int8_t* s2, const int8_t* s3,
                               float w0, float w1, float w2, float w3, int64_t F) {
  const __m512 v0 = _mm512_set1_ps(w0), v1 = _mm512_set1_ps(w1), v2 = _mm512_set1_ps(w2), v3 = _mm512_set1_ps(w3);
  for (int64_t f = 0; f < F; f += 16) {
    __m512 sum = _mm512_mul_ps(v0, widen16(s0 + f));
    sum = _mm512_fmadd_ps(v1, widen16(s1 + f), sum);
    sum = _mm512_fmadd_ps(v2, widen16(s2 + f), sum);
    sum = _mm512_fmadd_ps(v3, widen16(s3 + f), sum);
    _mm512_storeu_ps(a + f, _mm512_add_ps(_mm512_loadu_ps(a + f), sum));
  }
}
#endif

// TableT is DType, or int8_t for an INT8 table whose value is table_scale * entry (for a
// DType table table_scale is 1, and multiplying by it changes no bit). relu applies a
// ReLU to the output (the INT8 unit's fused activation).
template <typename DType, typename TableT = DType>
void forward_impl(const Dims& d, const TableT* table, const DType* offset, const DType* bias, DType* out,
                  DType table_scale = DType(1), bool relu = false) {
  const int64_t B = d.B, H = d.H, W = d.W, F = d.F, hw = H * W, S = d.stride;
  // One row accumulator per thread, allocated here (an exception must not leave a parallel
  // region), each starting a cache line (with write_row inlined: ~5% faster than malloc's
  // 16-byte alignment in the AVX-512 pass).
  constexpr size_t kAlign = 64 / sizeof(DType);
  const size_t stride = (static_cast<size_t>(W * F) + kAlign - 1) / kAlign * kAlign;
  const int threads = omp_get_max_threads();
  std::vector<DType> accs(stride * threads + kAlign);
  const size_t misaligned = reinterpret_cast<uintptr_t>(accs.data()) / sizeof(DType) % kAlign;
  DType* const accs0 = accs.data() + (kAlign - misaligned) % kAlign;
#pragma omp parallel num_threads(threads)
  {
    DType* const acc_row = accs0 + stride * omp_get_thread_num();
#pragma omp for collapse(2) schedule(static)
    for (int64_t b = 0; b < B; ++b) {
      for (int64_t y = 0; y < H; ++y) {
        std::fill(acc_row, acc_row + W * F, DType(0));
        const DType* off_b = offset + b * 18 * hw;
        const TableT* tab_b = table + b * hw * S + d.col0;
        // Tap-major: one tap's F columns of the rows it samples stay in cache across the
        // row (its rows x F bytes), where all nine taps' ~(rows x 9F) spilled the L2.
        for (int k = 0; k < 9; ++k) {
          for (int64_t x = 0; x < W; ++x) {
            DType* a = acc_row + x * F;
            Tap<DType> t;
            tap_geometry(off_b, hw, H, W, y, x, k, &t);
            if (!t.inside) continue;
            // The four corners in one pass over F (one read-modify-write of the accumulator).
            const TableT* s0 = tab_b + t.q[0] * S + k * F;
            const TableT* s1 = tab_b + t.q[1] * S + k * F;
            const TableT* s2 = tab_b + t.q[2] * S + k * F;
            const TableT* s3 = tab_b + t.q[3] * S + k * F;
            const DType w0 = t.w[0], w1 = t.w[1], w2 = t.w[2], w3 = t.w[3];
#if SDU_AVX512
            if constexpr (std::is_same<DType, float>::value && std::is_same<TableT, int8_t>::value) {
              if (F % 16 == 0) {  // widen each 16 int8 straight from memory (the compiler's 64-byte
                                  // loads needed a chain of shuffles to widen)
                blend_int8_corners(a, s0, s1, s2, s3, w0, w1, w2, w3, F);
                continue;
              }
            }
#endif
#pragma omp simd
            for (int64_t f = 0; f < F; ++f)
              a[f] += w0 * static_cast<DType>(s0[f]) + w1 * static_cast<DType>(s1[f]) +
                      w2 * static_cast<DType>(s2[f]) + w3 * static_cast<DType>(s3[f]);
          }
        }
        write_row(acc_row, W, F, hw, table_scale, bias, relu, out + b * F * hw + y * W);
      }
    }
  }
}

// Gradients of the table's tap columns and of the offsets (and bias) from gout (B, F, H, W).

// The offset convolution from its own 162 table columns (tap k, offset channel o at
// column k*18 + o): offset[b, o, y, x] = obias[o] + sum_k T[(b, y+i-1, x+j-1), k*18 + o],
// zero padded -- a plain 3x3 convolution whose channel mixing the table GEMM did. With
// columns scaled by `scale` (a power of two) the sum runs scaled and is scaled back:
// every rounding scales with it, so the offsets are bit-identical.
template <typename DType, typename TableT = DType>
void offsets_from_table(const Dims& d, const TableT* table, const DType* obias, DType scale, DType* offset,
                        DType table_scale = DType(1)) {
  const int64_t B = d.B, H = d.H, W = d.W, hw = H * W, S = d.stride;
  const DType inverse = DType(1) / scale;
#pragma omp parallel for collapse(2) schedule(static)
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t y = 0; y < H; ++y) {
      DType acc[18];
      for (int64_t x = 0; x < W; ++x) {
        // The table has just been written and mostly left the cache (its loads stalled 90%
        // of this loop): fetch the offset columns of the row this pixel's lower-right tap
        // reaches 8 pixels ahead (1.3 -> 0.8 ms for a full-width unit).
        if (y + 1 < H && x + 8 < W) {
          const char* ahead = reinterpret_cast<const char*>(table + (b * hw + (y + 1) * W + x + 8) * S);
          for (int64_t line = 0; line < 18 * 9 * static_cast<int64_t>(sizeof(TableT)); line += 64)
            __builtin_prefetch(ahead + line);
        }
        for (int o = 0; o < 18; ++o) acc[o] = obias[o] * scale;
        for (int k = 0; k < 9; ++k) {
          const int64_t sy = y + k / 3 - 1, sx = x + k % 3 - 1;
          if (sy < 0 || sy >= H || sx < 0 || sx >= W) continue;
          const TableT* src = table + (b * hw + sy * W + sx) * S + k * 18;
          for (int o = 0; o < 18; ++o) acc[o] += table_scale * static_cast<DType>(src[o]);
        }
        for (int o = 0; o < 18; ++o) offset[(b * 18 + o) * hw + y * W + x] = acc[o] * inverse;
      }
    }
  }
}


constexpr int64_t kOffsetColumns = 162;  // 9 taps x 18 offset channels

// Shapes of both operators' table (B, H, W, N): N = 9F for the blend, 162 + 9F for the unit.
inline MXReturnValue table_dims(const std::vector<int64_t>& table, bool unit, Dims* d) {
  const int64_t extra = unit ? kOffsetColumns : 0;
  if (table.size() != 4 || table[3] <= extra || (table[3] - extra) % 9 != 0) {
    MX_ERROR_MSG << (unit ? "sdu_deform_unit: expected table (B, H, W, 162 + 9F)"
                          : "sdu_dcn_blend: expected table (B, H, W, 9F)");
    return MX_FAIL;
  }
  d->B = table[0];
  d->H = table[1];
  d->W = table[2];
  d->F = (table[3] - extra) / 9;
  d->stride = table[3];
  d->col0 = extra;
  return MX_SUCCESS;
}

// The unit's offset_exponent attribute (default 0): its offset columns are 2^e x the taps.
inline MXReturnValue offset_scale(const Attrs& attrs, double* scale) {
  int e = 0;
  if (!sdu::int_attr(attrs, "offset_exponent", 0, &e) || e < -60 || e > 60) {
    MX_ERROR_MSG << "sdu_deform_unit: offset_exponent must be an integer in -60..60";
    return MX_FAIL;
  }
  *scale = std::ldexp(1.0, e);
  return MX_SUCCESS;
}

inline std::vector<int64_t> to64(const std::vector<unsigned int>& v) { return std::vector<int64_t>(v.begin(), v.end()); }

inline MXReturnValue check_bias(const std::vector<std::vector<unsigned int>>& in, size_t index, unsigned int size,
                         const char* what) {
  if (in.size() > index && (in[index].size() != 1 || in[index][0] != size)) {
    MX_ERROR_MSG << what << " must have shape (" << size << ",)";
    return MX_FAIL;
  }
  return MX_SUCCESS;
}

}  // namespace SDU_ISA
}  // namespace sdu

#endif  // SDU_EXT_DCN_TABLE_H_
