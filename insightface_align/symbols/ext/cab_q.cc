// sdu_cab_q: a whole Channel Aggregation Block (CAB, paper Fig. 3d) of an INT8 export in
// one operator, channels-last INT8 from its input to its output.
//
// MXNet's INT8 graph runs a CAB as five quantised convolutions on channels-last uint8
// maps with six float32 NCHW node means between them, so every mean costs a
// dequantise-and-reorder of its inputs and a quantise for the next convolution. Here the
// input is quantised once into pixel-major (NHWC) rows; the three 3x3 and two depthwise
// 3x3 convolutions run as oneDNN INT8 convolutions (per-channel weight scales, the folded
// BatchNorm as bias, the ReLU as the saturation to uint8); and the output is written as
// float32 NCHW in one pass.
//
// The grid (symbols/blocks.py; node (w, h), input (4, 4)): (w, 4) = relu(conv3x3((w+1, 4)))
// with C/2, C/4, C/8 channels; on row 3 off the diagonal x = relu(dw3x3((w+1, 4)))
// ("w2_h3_x", "w1_h3_x"); every other node = (x + concat(y, y)) / 2, x = (w+1, h+1) and
// y = (w, h+1). No convolution reads a mean, so the six means are one linear map of the
// six convolution-side maps; with [c]_n = channel c mod n:
//
//   (1, 1)[c] = 1/8 data[c] + 1/8 w3_h4[c]_C/2 + 1/4 w2_h3_x[c]_C/2 + 1/4 w2_h4[c]_C/4
//             + 1/8 w1_h3_x[c]_C/4 + 1/8 w1_h4[c]_C/8
//
// computed in float from the INT8 maps. No mean is quantised: more accurate than
// requantising each, as exact as MXNet's graph (fp32 means of dequantised maps).
//
// Inputs: data (B, C, H, W) float32, C a multiple of 8, then weight and bias of w3_h4
// (C/2, C, 3, 3), w2_h4 (C/4, C/2, 3, 3), w1_h4 (C/8, C/4, 3, 3), w2_h3_x (C/2, 1, 3, 3)
// and w1_h3_x (C/4, 1, 3, 3); each bias (O,). Attributes: data_min/data_max (the input's
// calibrated range) and NAME_min/NAME_max for each convolution's map NAME (kMaps below),
// calibrated on the fp32 graph; a map is uint8 over [0, max] when its min >= 0, else int8
// over +-max|.| (as MXNet quantises). Output (B, C, H, W) float32, node (1, 1).
// Two neighbours that the graphs put around CABs can run inside, saving a pass over a
// float32 map each: upsample_input=1 takes data at (H/2, W/2) and up-samples it 2x
// (nearest) while quantising; pool_input=1 takes data at (2H, 2W) (or 2H+1, 2W+1) and
// max-pools it 2x2, stride 2, first; pool_output=1 writes the 2x2 stride-2 max-pool of
// node (1, 1), (B, C, H/2, W/2). Poolings floor, as MXNet's "valid" convention.
// Stateful: the quantised weights and the primitives are kept per bound shape and remade
// when one of MXNet's weight tensors changes (MXTensor::isSame, as sdu_wino_conv).
// The graph must declare the parameters' shapes (__shape__, as export does): MXNet 1.9
// overflows its shape buffer for a library operator with many unknown input shapes.
#ifndef SDU_ISA  // first reading: includes, the per-instruction-set passes, registration below
#include <omp.h>

#include <algorithm>
#include <array>
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

#define SDU_PASS_FILE "cab_q.cc"
#include "isa_passes.h"  // this file again, once per instruction set

#else  // a pass (isa_passes.h): the kernels and callbacks, in sdu::SDU_ISA::cab_q
#include "qmatmul.h"
#include "transpose16.h"

namespace sdu::SDU_ISA::cab_q {
namespace {

using namespace mxnet::ext;
using sdu::Attrs;

constexpr const char* kOp = "sdu_cab_q";

// The block's INT8 maps, in the order they are computed; kData is the quantised input.
enum Map { kData, kW3H4, kW2H4, kW1H4, kW2H3x, kW1H3x, kNumMaps };
const char* const kMaps[kNumMaps] = {"data", "w3_h4", "w2_h4", "w1_h4", "w2_h3_x", "w1_h3_x"};
// Channels of each map as a divisor of C, and its weight in node (1, 1) (header comment).
constexpr int kWidthDivisor[kNumMaps] = {1, 2, 4, 8, 2, 4};
constexpr float kOutputWeight[kNumMaps] = {0.125f, 0.125f, 0.25f, 0.125f, 0.25f, 0.125f};

// The five convolutions: output map, input map, depthwise.
struct Layer {
  Map out, in;
  bool depthwise;
};
constexpr std::array<Layer, 5> kLayers{{{kW3H4, kData, false},
                                        {kW2H4, kW3H4, false},
                                        {kW1H4, kW2H4, false},
                                        {kW2H3x, kW3H4, true},
                                        {kW1H3x, kW2H4, true}}};

struct Params {
  std::array<InputRange, kNumMaps> range;
  bool upsample_input = false, pool_input = false, pool_output = false;
};

MXReturnValue flag_attr(const Attrs& attrs, const char* key, bool* flag) {
  int v = 0;
  if (!sdu::int_attr(attrs, key, 0, &v) || (v != 0 && v != 1)) {
    MX_ERROR_MSG << kOp << ": " << key << " must be 0 or 1";
    return MX_FAIL;
  }
  *flag = v == 1;
  return MX_SUCCESS;
}

MXReturnValue read_params(const Attrs& attrs, Params* p) {
  if (flag_attr(attrs, "upsample_input", &p->upsample_input) != MX_SUCCESS ||
      flag_attr(attrs, "pool_input", &p->pool_input) != MX_SUCCESS ||
      flag_attr(attrs, "pool_output", &p->pool_output) != MX_SUCCESS)
    return MX_FAIL;
  if (p->upsample_input && p->pool_input) {
    MX_ERROR_MSG << kOp << ": upsample_input and pool_input exclude each other";
    return MX_FAIL;
  }
  for (int m = 0; m < kNumMaps; ++m) {
    if (range_attrs(attrs, kOp, &p->range[m], kMaps[m]) != MX_SUCCESS) return MX_FAIL;
  }
  for (const Layer& l : kLayers) {
    if (!p->range[l.out].is_unsigned()) {
      MX_ERROR_MSG << kOp << ": " << kMaps[l.out] << "_min must be >= 0 (the map is a ReLU output)";
      return MX_FAIL;
    }
  }
  return MX_SUCCESS;
}

MXReturnValue parse_attrs(const Attrs& attrs, int* num_in, int* num_out) {
  Params p;
  if (read_params(attrs, &p) != MX_SUCCESS) return MX_FAIL;
  *num_in = 1 + 2 * static_cast<int>(kLayers.size());
  *num_out = 1;
  return MX_SUCCESS;
}

MXReturnValue infer_type(const Attrs& attrs, std::vector<int>* in, std::vector<int>* out) {
  return sdu::infer_float32(kOp, in, out);
}

MXReturnValue infer_shape(const Attrs& attrs, std::vector<std::vector<unsigned int>>* in,
                          std::vector<std::vector<unsigned int>>* out) {
  Params p;
  if (read_params(attrs, &p) != MX_SUCCESS) return MX_FAIL;
  const auto& x = (*in)[0];
  if (x.size() != 4 || x[1] < 8 || x[1] % 8 != 0) {
    MX_ERROR_MSG << kOp << ": data must be (B, C, H, W) with C a positive multiple of 8";
    return MX_FAIL;
  }
  unsigned int H = x[2], W = x[3];
  if (p.upsample_input) H *= 2, W *= 2;
  if (p.pool_input) H /= 2, W /= 2;
  if (H < 1 || W < 1 || (p.pool_output && (H < 2 || W < 2))) {
    MX_ERROR_MSG << kOp << ": the block's maps would be " << H << "x" << W << " (pool_input halves the input, "
                 << "pool_output needs at least 2x2)";
    return MX_FAIL;
  }
  const unsigned int C = x[1];
  for (size_t k = 0; k < kLayers.size(); ++k) {
    const Layer& l = kLayers[k];
    const unsigned int O = C / kWidthDivisor[l.out], I = l.depthwise ? 1 : C / kWidthDivisor[l.in];
    const std::vector<unsigned int> weight{O, I, 3, 3}, bias{O};
    auto& w = (*in)[1 + 2 * k];
    auto& b = (*in)[2 + 2 * k];
    if (w.empty()) w = weight;
    if (b.empty()) b = bias;
    if (w != weight || b != bias) {
      MX_ERROR_MSG << kOp << ": " << kMaps[l.out] << " must have weight (" << O << ", " << I << ", 3, 3) and bias ("
                   << O << ",) for data with " << C << " channels";
      return MX_FAIL;
    }
  }
  (*out)[0] = p.pool_output ? std::vector<unsigned int>{x[0], C, H / 2, W / 2} : std::vector<unsigned int>{x[0], C, H, W};
  return MX_SUCCESS;
}

// One 3x3 (pad 1) INT8 convolution between channels-last maps, with weights quantised
// per output channel. dst is uint8, so the saturation is the ReLU.
class QConv {
 public:
  void plan(int64_t B, int64_t H, int64_t W, int64_t I, int64_t O, bool depthwise, const InputRange& src,
            const InputRange& dst, const float* weight) {
    using tag = dnnl::memory::format_tag;
    using dt = dnnl::memory::data_type;
    const int64_t per_out = (depthwise ? 1 : I) * 9;
    std::vector<int8_t> wq(O * per_out);
    std::vector<float> scales(O);
    acc_unit_.resize(O);
    for (int64_t o = 0; o < O; ++o) {
      const float w_unit = quantise_channel(weight + o * per_out, per_out, 1, wq.data() + o * per_out, 1);
      acc_unit_[o] = src.unit() * w_unit;
      scales[o] = acc_unit_[o] / dst.unit();
    }
    const dnnl::memory::desc src_md({B, I, H, W}, src.is_unsigned() ? dt::u8 : dt::s8, tag::nhwc);
    const dnnl::memory::desc dst_md({B, O, H, W}, dt::u8, tag::nhwc);
    bias_md_ = dnnl::memory::desc({O}, dt::f32, tag::x);
    const dnnl::memory::dims w_dims = depthwise ? dnnl::memory::dims{O, 1, 1, 3, 3} : dnnl::memory::dims{O, I, 3, 3};
    const dnnl::memory::desc w_any(w_dims, dt::s8, tag::any);
    dnnl::primitive_attr attr;
    attr.set_output_scales(1 << 1, scales);  // per output channel (dst dimension 1)
    dnnl::convolution_forward::primitive_desc pd(
        dnnl::convolution_forward::desc(dnnl::prop_kind::forward_inference, dnnl::algorithm::convolution_direct,
                                        src_md, w_any, bias_md_, dst_md, {1, 1}, {1, 1}, {1, 1}),
        attr, sdu::dnnl_cpu());
    conv_ = dnnl::convolution_forward(pd);
    src_md_ = src_md;
    dst_md_ = dst_md;
    dnnl::memory user_w(dnnl::memory::desc(w_dims, dt::s8, depthwise ? tag::goihw : tag::oihw), sdu::dnnl_cpu(),
                        wq.data());
    wei_ = dnnl::memory(pd.weights_desc(), sdu::dnnl_cpu());
    dnnl::reorder(user_w, wei_).execute(stream_, user_w, wei_);
    stream_.wait();
    bias_.resize(O);
  }

  // oneDNN applies the output scale to the product plus the bias, so the bias goes in
  // accumulator units.
  void run(const void* src, void* dst, const float* bias) {
    for (size_t o = 0; o < bias_.size(); ++o) bias_[o] = bias[o] / acc_unit_[o];
    dnnl::memory s(src_md_, sdu::dnnl_cpu(), const_cast<void*>(src)), d(dst_md_, sdu::dnnl_cpu(), dst),
        b(bias_md_, sdu::dnnl_cpu(), bias_.data());
    conv_.execute(stream_, {{DNNL_ARG_SRC, s}, {DNNL_ARG_WEIGHTS, wei_}, {DNNL_ARG_BIAS, b}, {DNNL_ARG_DST, d}});
    stream_.wait();
  }

 private:
  dnnl::stream stream_{sdu::dnnl_cpu()};
  dnnl::memory::desc src_md_, dst_md_, bias_md_;
  dnnl::convolution_forward conv_;
  dnnl::memory wei_;
  std::vector<float> acc_unit_, bias_;
};

// The six INT8 maps of a block, pixel-major, and the real value of one step of each
// times its weight in node (1, 1).
struct Leaves {
  const int8_t* data_s8;  // the input when it is int8, else nullptr
  const uint8_t* map[kNumMaps];
  float k[kNumMaps];
  int64_t C;

  float value(int64_t p, int64_t c) const {  // node (1, 1) at pixel p, channel c
    float v = data_s8 ? k[kData] * data_s8[p * C + c] : k[kData] * map[kData][p * C + c];
    for (int m = 1; m < kNumMaps; ++m) {
      const int64_t n = C / kWidthDivisor[m];
      v += k[m] * map[m][p * n + c % n];
    }
    return v;
  }
};

// Node (1, 1) as float32 NCHW, out (B, C, H, W), or its 2x2 stride-2 max-pool, out
// (B, C, H/2, W/2) (floor); scalar, one output row at a time.
void node_output_scalar(const Leaves& l, float* out, int64_t B, int64_t H, int64_t W, bool pool) {
  const int64_t C = l.C, Ho = pool ? H / 2 : H, Wo = pool ? W / 2 : W;
#pragma omp parallel for collapse(2) schedule(static)
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t oy = 0; oy < Ho; ++oy) {
      for (int64_t c = 0; c < C; ++c) {
        float* o = out + ((b * C + c) * Ho + oy) * Wo;
        for (int64_t ox = 0; ox < Wo; ++ox) {
          if (!pool) {
            o[ox] = l.value((b * H + oy) * W + ox, c);
            continue;
          }
          const int64_t top = (b * H + 2 * oy) * W + 2 * ox;
          o[ox] = std::max(std::max(l.value(top, c), l.value(top + 1, c)),
                           std::max(l.value(top + W, c), l.value(top + W + 1, c)));
        }
      }
    }
  }
}

// Rows (B * h * w, C) -> rows (B * 2h * 2w, C): nearest 2x up-sampling of a pixel-major map.
inline void upsample_rows2(const uint8_t* src, uint8_t* dst, int64_t B, int64_t h, int64_t w, int64_t C) {
#pragma omp parallel for collapse(2) schedule(static)
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t yy = 0; yy < 2 * h; ++yy) {
      const uint8_t* srow = src + ((b * h + yy / 2) * w) * C;
      uint8_t* drow = dst + ((b * 2 * h + yy) * 2 * w) * C;
      for (int64_t xx = 0; xx < w; ++xx) {
        std::copy(srow + xx * C, srow + (xx + 1) * C, drow + 2 * xx * C);
        std::copy(srow + xx * C, srow + (xx + 1) * C, drow + (2 * xx + 1) * C);
      }
    }
  }
}

#if SDU_AVX512
inline __m512 load16(const uint8_t* v) {
  return _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(v))));
}
inline __m512 load16(const int8_t* v) {
  return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(v))));
}

// node_output_scalar in 16 x 16 blocks (output pixels x channels): node (1, 1) of 16
// pixels, vectorised along channels, then transposed in registers. Needs C/8 and the
// output's pixel count to be multiples of 16 (node_output checks).
void node_output_blocks(const Leaves& l, float* out, int64_t B, int64_t H, int64_t W, bool pool) {
  const int64_t C = l.C, Wo = pool ? W / 2 : W, P = pool ? (H / 2) * Wo : H * W;
  __m512 k[kNumMaps];
  for (int m = 0; m < kNumMaps; ++m) k[m] = _mm512_set1_ps(l.k[m]);
#pragma omp parallel for collapse(2) schedule(static)
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t p0 = 0; p0 < P; p0 += 16) {
      for (int64_t c0 = 0; c0 < C; c0 += 16) {
        auto value = [&](int64_t pixel) {  // pixel index within image b
          const int64_t p = b * H * W + pixel;
          __m512 v = _mm512_mul_ps(k[kData], l.data_s8 ? load16(l.data_s8 + p * C + c0) : load16(l.map[kData] + p * C + c0));
          for (int m = 1; m < kNumMaps; ++m) {
            const int64_t n = C / kWidthDivisor[m];
            v = _mm512_fmadd_ps(k[m], load16(l.map[m] + p * n + c0 % n), v);
          }
          return v;
        };
        __m512 r[16];
        for (int j = 0; j < 16; ++j) {
          const int64_t po = p0 + j;
          if (pool) {
            const int64_t top = (2 * (po / Wo)) * W + 2 * (po % Wo);
            r[j] = _mm512_max_ps(_mm512_max_ps(value(top), value(top + 1)), _mm512_max_ps(value(top + W), value(top + W + 1)));
          } else {
            r[j] = value(po);
          }
        }
        transpose16(r);  // r[k]: channel c0 + k, output pixels p0..p0+15
        for (int j = 0; j < 16; ++j) _mm512_storeu_ps(out + (b * C + c0 + j) * P + p0, r[j]);
      }
    }
  }
}
#endif

void node_output(const Leaves& l, float* out, int64_t B, int64_t H, int64_t W, bool pool) {
#if SDU_AVX512
  const int64_t P = pool ? (H / 2) * (W / 2) : H * W;
  if ((l.C / 8) % 16 == 0 && P % 16 == 0) return node_output_blocks(l, out, B, H, W, pool);
#endif
  node_output_scalar(l, out, B, H, W, pool);
}

// (B, C, 2H', 2W') float -> its 2x2 stride-2 max-pool (B, C, H, W) (floor).
inline void max_pool2(const float* x, float* out, int64_t BC, int64_t Hi, int64_t Wi) {
  const int64_t H = Hi / 2, W = Wi / 2;
#pragma omp parallel for collapse(2) schedule(static)
  for (int64_t bc = 0; bc < BC; ++bc) {
    for (int64_t oy = 0; oy < H; ++oy) {
      const float* r0 = x + (bc * Hi + 2 * oy) * Wi;
      const float* r1 = r0 + Wi;
      float* o = out + (bc * H + oy) * W;
      for (int64_t ox = 0; ox < W; ++ox)
        o[ox] = std::max(std::max(r0[2 * ox], r0[2 * ox + 1]), std::max(r1[2 * ox], r1[2 * ox + 1]));
    }
  }
}

// Calls fn(T{}) with T = uint8_t for an unsigned range, else int8_t.
template <typename Fn>
void by_sign(const InputRange& r, Fn&& fn) {
  if (r.is_unsigned()) {
    fn(uint8_t{});
  } else {
    fn(int8_t{});
  }
}

class CabQ : public CustomStatefulOp {
 public:
  explicit CabQ(const Params& p) : p_(p) {}

  MXReturnValue Forward(std::vector<MXTensor>* in, std::vector<MXTensor>* out,
                        const OpResource& res) override {
    return sdu::guarded([&] { return run(in, out); });
  }

 private:
  MXReturnValue run(std::vector<MXTensor>* in, std::vector<MXTensor>* out) {
    MXTensor& x = (*in)[0];
    const int64_t B = x.shape[0], C = x.shape[1];
    const int64_t H = p_.upsample_input ? 2 * x.shape[2] : p_.pool_input ? x.shape[2] / 2 : x.shape[2];
    const int64_t W = p_.upsample_input ? 2 * x.shape[3] : p_.pool_input ? x.shape[3] / 2 : x.shape[3], hw = H * W;
    const auto& r = p_.range;
    try {
      if (B != B_ || C != C_ || H != H_ || W != W_ || !weights_unchanged(*in)) plan(*in, B, C, H, W);
      const float steps = 1.f / r[kData].unit();
      uint8_t* rows = p_.upsample_input ? small_input_.data() : maps_[kData].data();
      const float* src = x.data<float>();
      if (p_.pool_input) {
        max_pool2(src, pooled_input_.data(), B * C, x.shape[2], x.shape[3]);
        src = pooled_input_.data();
      }
      by_sign(r[kData], [&](auto t) {
        using T = decltype(t);
        const float lo = r[kData].is_unsigned() ? 0.f : -127.f, hi = r[kData].is_unsigned() ? 255.f : 127.f;
        const int64_t pixels = p_.upsample_input ? hw / 4 : hw;
        quantise_pixel_major(src, B, C, pixels, steps, lo, hi, reinterpret_cast<T*>(rows));
      });
      if (p_.upsample_input) upsample_rows2(rows, maps_[kData].data(), B, H / 2, W / 2, C);
      for (size_t k = 0; k < kLayers.size(); ++k)
        convs_[k].run(maps_[kLayers[k].in].data(), maps_[kLayers[k].out].data(), (*in)[2 + 2 * k].data<float>());
    } catch (const dnnl::error& e) {
      MX_ERROR_MSG << kOp << ": oneDNN failed for data (" << B << ", " << C << ", " << H << ", " << W
                   << "): " << e.what();
      return MX_FAIL;
    }
    Leaves leaves;
    leaves.C = C;
    leaves.data_s8 = r[kData].is_unsigned() ? nullptr : reinterpret_cast<const int8_t*>(maps_[kData].data());
    for (int m = 0; m < kNumMaps; ++m) {
      leaves.map[m] = maps_[m].data();
      leaves.k[m] = kOutputWeight[m] * r[m].unit();
    }
    node_output(leaves, (*out)[0].data<float>(), B, H, W, p_.pool_output);
    return MX_SUCCESS;
  }

  bool weights_unchanged(std::vector<MXTensor>& in) {
    for (size_t k = 0; k < kLayers.size(); ++k)
      if (!in[1 + 2 * k].isSame(weights_seen_[k])) return false;
    return true;
  }

  void plan(std::vector<MXTensor>& in, int64_t B, int64_t C, int64_t H, int64_t W) {
    for (int m = 0; m < kNumMaps; ++m) maps_[m].resize(B * H * W * C / kWidthDivisor[m]);
    if (p_.upsample_input) small_input_.resize(B * (H / 2) * (W / 2) * C);
    if (p_.pool_input) pooled_input_.resize(B * C * H * W);
    for (size_t k = 0; k < kLayers.size(); ++k) {
      const Layer& l = kLayers[k];
      convs_[k].plan(B, H, W, C / kWidthDivisor[l.in], C / kWidthDivisor[l.out], l.depthwise, p_.range[l.in],
                     p_.range[l.out], in[1 + 2 * k].data<float>());
      weights_seen_[k] = in[1 + 2 * k];
    }
    B_ = B;
    C_ = C;
    H_ = H;
    W_ = W;
  }

  Params p_;
  std::array<QConv, kLayers.size()> convs_;
  std::array<std::vector<uint8_t>, kNumMaps> maps_;  // channels-last uint8 (or int8 bytes) maps
  std::vector<uint8_t> small_input_;                  // the quantised input before up-sampling
  std::vector<float> pooled_input_;                   // the max-pooled input before quantising
  std::array<MXTensor, kLayers.size()> weights_seen_;
  int64_t B_ = -1, C_ = -1, H_ = -1, W_ = -1;
};

MXReturnValue create_state(const Attrs& attrs, const MXContext& ctx,
                           const std::vector<std::vector<unsigned int>>& in_shapes,
                           const std::vector<int> in_types, CustomStatefulOp** state) {
  Params p;
  if (read_params(attrs, &p) != MX_SUCCESS) return MX_FAIL;
  *state = CustomStatefulOp::create<CabQ>(p);
  return MX_SUCCESS;
}

}  // namespace
}  // namespace sdu::SDU_ISA::cab_q
#endif  // SDU_ISA

#ifndef SDU_ISA
REGISTER_OP(sdu_cab_q)
    .setParseAttrs(SDU_CALLBACK(cab_q::parse_attrs))
    .setInferType(SDU_CALLBACK(cab_q::infer_type))
    .setInferShape(SDU_CALLBACK(cab_q::infer_shape))
    .setCreateOpState(SDU_DISPATCH(cab_q::create_state), "cpu");
#endif  // SDU_ISA
