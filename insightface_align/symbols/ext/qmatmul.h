// INT8 GEMMs of the project's quantised inference operators (sdu_deform_unit_q,
// sdu_deconv2x2_q): quantise an NCHW float map into pixel-major rows, and multiply
// those rows by weights quantised per column, with oneDNN's INT8 matmul.
//
// Pixel-major rows because oneDNN's fast INT8 matmul (brgemm) wants a row-major source:
// given the NCHW map as a transposed source it fell back to a slower kernel
// (4096 x 256 x 2466: 8.3 vs 6.1 ms here).
//
// Compiled once per instruction set, into sdu::baseline and sdu::avx512 (isa_passes.h).
#ifndef SDU_EXT_QMATMUL_H_  // re-armed for each pass (isa_passes.h)
#define SDU_EXT_QMATMUL_H_

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <type_traits>
#include <unordered_map>
#include <vector>

#include "oneapi/dnnl/dnnl.hpp"

#include "common.h"
#include "isa.h"
#include "mxnet/lib_api.h"
#include "onednn.h"
#include "transpose16.h"

namespace sdu {
namespace SDU_ISA {

// A calibrated input range, quantised as MXNet does: uint8 over [0, max] when min >= 0,
// else int8 over [-m, m], m = max(|min|, |max|).
struct InputRange {
  float min = 0.f, max = 0.f;
  bool is_unsigned() const { return min >= 0.f; }
  float absmax() const { return std::max(std::fabs(min), std::fabs(max)); }
  float unit() const { return absmax() / (is_unsigned() ? 255.f : 127.f); }  // real value per step
};

// The NAME_min / NAME_max attributes (a map's calibrated range; NAME "data" for the
// operator's input) of operator `op`.
inline mxnet::ext::MXReturnValue range_attrs(const Attrs& attrs, const char* op, InputRange* r,
                                             const std::string& name = "data") {
  if (!float_attr(attrs, (name + "_min").c_str(), &r->min) || !float_attr(attrs, (name + "_max").c_str(), &r->max) ||
      !(r->absmax() > 0.f)) {
    MX_ERROR_MSG << op << ": " << name << "_min and " << name << "_max must be numbers, not both zero (the "
                 << (name == "data" ? std::string("input") : name) << "'s calibrated range)";
    return mxnet::ext::MX_FAIL;
  }
  return mxnet::ext::MX_SUCCESS;
}

// One output channel's weights w[i * stride], i < count, as int8 steps q[i * q_stride]
// over its own max |w| (symmetric, as MXNet quantises weights); returns the real value
// of one step.
inline float quantise_channel(const float* w, int64_t count, int64_t stride, int8_t* q, int64_t q_stride) {
  float m = 0.f;
  for (int64_t i = 0; i < count; ++i) m = std::max(m, std::fabs(w[i * stride]));
  const float unit = m > 0.f ? m / 127.f : 1.f;
  for (int64_t i = 0; i < count; ++i)
    q[i * q_stride] = static_cast<int8_t>(static_cast<int32_t>(round_saturate(w[i * stride] / unit, -127.f, 127.f)));
  return unit;
}

// (B, C, hw) float -> (B * hw, C) rows of Q (uint8 or int8), value = round(x * steps_per_unit)
// saturated to [lo, hi]. In the AVX-512 pass, with C and hw multiples of 16: 16 x 16 blocks
// transposed in registers, in tiles of 64 pixels so each plane is read in whole cache lines.
template <typename Q>
void quantise_pixel_major(const float* x, int64_t B, int64_t C, int64_t hw, float steps_per_unit, float lo,
                          float hi, Q* q) {
#if SDU_AVX512
  if (C % 16 == 0 && hw % 16 == 0) {
    const int64_t tile = hw % 64 == 0 ? 64 : 16;
    const __m512 steps = _mm512_set1_ps(steps_per_unit), vlo = _mm512_set1_ps(lo), vhi = _mm512_set1_ps(hi);
#pragma omp parallel for collapse(2) schedule(static)
    for (int64_t b = 0; b < B; ++b) {
      for (int64_t t0 = 0; t0 < hw; t0 += tile) {
        for (int64_t c0 = 0; c0 < C; c0 += 16) {
          for (int64_t p0 = t0; p0 < t0 + tile; p0 += 16) {
            __m512 r[16];
            for (int k = 0; k < 16; ++k) r[k] = _mm512_loadu_ps(x + (b * C + c0 + k) * hw + p0);
            transpose16(r);  // r[j]: pixel p0 + j, channels c0..c0+15
            Q* rows = q + (b * hw + p0) * C + c0;
            for (int j = 0; j < 16; ++j) {
              const __m512i v = _mm512_cvtps_epi32(_mm512_min_ps(_mm512_max_ps(_mm512_mul_ps(r[j], steps), vlo), vhi));
              const __m128i bytes = std::is_same<Q, uint8_t>::value ? _mm512_cvtusepi32_epi8(v) : _mm512_cvtsepi32_epi8(v);
              _mm_storeu_si128(reinterpret_cast<__m128i*>(rows + j * C), bytes);
            }
          }
        }
      }
    }
    return;
  }
#endif
  constexpr int64_t kTile = 64;  // pixels per tile: one tile's strided writes stay in cache
#pragma omp parallel for collapse(2) schedule(static)
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t p0 = 0; p0 < hw; p0 += kTile) {
      const int64_t p1 = std::min(p0 + kTile, hw);
      Q* rows = q + b * hw * C;
      for (int64_t c = 0; c < C; ++c) {
        const float* src = x + (b * C + c) * hw;
        for (int64_t p = p0; p < p1; ++p)
          rows[p * C + c] = static_cast<Q>(static_cast<int32_t>(round_saturate(src[p] * steps_per_unit, lo, hi)));
      }
    }
  }
}

// dst (M, N) = act(out_scale[n] * (x_q (M, K) . w_q (K, N)) [+ bias[n]]), x_q the quantised
// input rows, w_q the weights quantised per column n over max_k |w(k, n)|. dst is int8
// (saturated) or float32; act is identity or ReLU. The primitive and the weights in its
// layout are made by plan() and kept.
class QuantisedMatmul {
 public:
  // w(k, n) = weight[k * k_stride + n * n_stride]; real_per_dst_step[n] is the real value
  // of one step of dst column n (1 for a float32 dst that holds real values).
  void plan(int64_t M, int64_t K, int64_t N, const InputRange& range, const float* weight, int64_t k_stride,
            int64_t n_stride, const std::vector<float>& real_per_dst_step, bool int8_dst, bool with_bias = false,
            bool relu = false) {
    using tag = dnnl::memory::format_tag;
    using dt = dnnl::memory::data_type;
    std::vector<int8_t> wq(K * N);  // (K, N) row-major
    std::vector<float> scales(N);
    for (int64_t n = 0; n < N; ++n) {
      const float w_unit = quantise_channel(weight + n * n_stride, K, k_stride, wq.data() + n, N);
      scales[n] = range.unit() * w_unit / real_per_dst_step[n];
    }
    scales_ = scales;
    src_md_ = dnnl::memory::desc({M, K}, range.is_unsigned() ? dt::u8 : dt::s8, tag::ab);
    dst_md_ = dnnl::memory::desc({M, N}, int8_dst ? dt::s8 : dt::f32, tag::ab);
    bias_md_ = with_bias ? dnnl::memory::desc({1, N}, dt::f32, tag::ab) : dnnl::memory::desc();
    dnnl::primitive_attr attr;
    attr.set_output_scales(1 << 1, scales);  // one scale per column (dimension 1)
    if (relu) {
      dnnl::post_ops ops;
      ops.append_eltwise(1.f, dnnl::algorithm::eltwise_relu, 0.f, 0.f);
      attr.set_post_ops(ops);
    }
    const dnnl::memory::desc w_md({K, N}, dt::s8, tag::any);
    dnnl::matmul::primitive_desc pd(with_bias ? dnnl::matmul::desc(src_md_, w_md, bias_md_, dst_md_)
                                              : dnnl::matmul::desc(src_md_, w_md, dst_md_),
                                    attr, dnnl_cpu());
    matmul_ = dnnl::matmul(pd);
    dnnl::memory user_w(dnnl::memory::desc({K, N}, dt::s8, tag::ab), dnnl_cpu(), wq.data());
    wei_ = dnnl::memory(pd.weights_desc(), dnnl_cpu());
    dnnl::reorder(user_w, wei_).execute(stream_, user_w, wei_);
    stream_.wait();
    range_ = range;
    rows_.resize(M * K);
    M_ = M;
  }

  int64_t rows() const { return M_; }
  // The output scale of column n; oneDNN applies it to the product plus the bias, so a
  // bias b[n] is passed as b[n] / scale(n).
  float scale(int64_t n) const { return scales_[n]; }

  // Quantises x (B, K, hw), B * hw = M, into the source rows and runs the matmul into dst
  // (bias: N floats when planned with_bias).
  void run(const float* x, int64_t B, int64_t K, int64_t hw, void* dst, const float* bias = nullptr) {
    const float steps = 1.f / range_.unit();
    if (range_.is_unsigned()) {
      quantise_pixel_major(x, B, K, hw, steps, 0.f, 255.f, rows_.data());
    } else {
      quantise_pixel_major(x, B, K, hw, steps, -127.f, 127.f, reinterpret_cast<int8_t*>(rows_.data()));
    }
    dnnl::memory src(src_md_, dnnl_cpu(), rows_.data()), out(dst_md_, dnnl_cpu(), dst);
    std::unordered_map<int, dnnl::memory> args{{DNNL_ARG_SRC, src}, {DNNL_ARG_WEIGHTS, wei_}, {DNNL_ARG_DST, out}};
    if (bias) args.emplace(DNNL_ARG_BIAS, dnnl::memory(bias_md_, dnnl_cpu(), const_cast<float*>(bias)));
    matmul_.execute(stream_, args);
    stream_.wait();
  }

 private:
  dnnl::stream stream_{dnnl_cpu()};
  dnnl::memory::desc src_md_, dst_md_, bias_md_;
  dnnl::matmul matmul_;
  dnnl::memory wei_;
  InputRange range_;
  std::vector<float> scales_;
  std::vector<uint8_t> rows_;  // the quantised source rows (uint8, or int8 bytes)
  int64_t M_ = -1;
};

}  // namespace SDU_ISA
}  // namespace sdu

#endif  // SDU_EXT_QMATMUL_H_
