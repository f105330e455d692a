// sdu_dw_conv: an inference-only depthwise 3x3 convolution (stride 1, pad 1) on plain
// NCHW tensors, with the bias and an optional ReLU fused.
//
// Why: the CAB's odd rows run ~40 depthwise units per forward. Their arithmetic is
// tiny (9 MACs per output), but between this project's NCHW operators MXNet's oneDNN
// convolution reorders its input to channels-last and its output back, which cost
// several times the convolution itself. A stencil over the plain layout is memory-bound
// and needs no reorder.
//
//     out[b, c] = act(bias[c] + sum_{i,j} w[c, 0, i, j] * x[b, c, h + i - 1, w + j - 1])
#ifndef SDU_ISA  // first reading: includes, the per-instruction-set passes, registration below
#include <omp.h>

#include <string>
#include <unordered_map>
#include <vector>

#include "common.h"
#include "isa.h"
#include "mxnet/lib_api.h"

#define SDU_PASS_FILE "dw_conv.cc"
#include "isa_passes.h"  // this file again, once per instruction set

#else  // a pass (isa_passes.h): the kernels and callbacks, in sdu::SDU_ISA::dw_conv
namespace sdu::SDU_ISA::dw_conv {
namespace {

using namespace mxnet::ext;
using sdu::Attrs;

constexpr const char* kOp = "sdu_dw_conv";

MXReturnValue parse_attrs(const Attrs& attrs, int* num_in, int* num_out) {
  bool relu = false;
  if (sdu::relu_attr(attrs, kOp, &relu) != MX_SUCCESS) return MX_FAIL;
  *num_in = 3;  // data, weight, bias
  *num_out = 1;
  return MX_SUCCESS;
}

MXReturnValue infer_type(const Attrs& attrs, std::vector<int>* in, std::vector<int>* out) {
  return sdu::infer_float32(kOp, in, out);
}

MXReturnValue infer_shape(const Attrs& attrs, std::vector<std::vector<unsigned int>>* in,
                          std::vector<std::vector<unsigned int>>* out) {
  const auto& d = (*in)[0];
  const unsigned int C = d.size() == 4 ? d[1] : 0;
  if (sdu::layer_shapes(kOp, in, {C, 1, 3, 3}, "(C, 1, 3, 3)", C, "(C,)") != MX_SUCCESS) return MX_FAIL;
  (*out)[0] = d;
  return MX_SUCCESS;
}

// Output value at column x from the three input rows r0..r2 (zero rows outside the map),
// with columns outside [0, W) read as zero.
inline float edge_value(const float* r0, const float* r1, const float* r2, const float* k, int64_t x, int64_t W,
                        float bias) {
  float v = bias;
  const float* rows[3] = {r0, r1, r2};
  for (int i = 0; i < 3; ++i) {
    for (int j = 0; j < 3; ++j) {
      const int64_t c = x + j - 1;
      if (c >= 0 && c < W) v += k[3 * i + j] * rows[i][c];
    }
  }
  return v;
}

MXReturnValue forward(const Attrs& attrs, std::vector<MXTensor>* in, std::vector<MXTensor>* out,
                      const OpResource& res) {
  bool relu = false;
  if (sdu::relu_attr(attrs, kOp, &relu) != MX_SUCCESS) return MX_FAIL;
  MXTensor& x = (*in)[0];
  const int64_t B = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3];
  const float* data = x.data<float>();
  const float* weight = (*in)[1].data<float>();
  const float* bias = (*in)[2].data<float>();
  float* dst = (*out)[0].data<float>();
  const std::vector<float> zeros(W, 0.f);  // the padding rows above and below the map
#pragma omp parallel for schedule(static)
  for (int64_t plane = 0; plane < B * C; ++plane) {
    const int64_t c = plane % C;
    const float* src = data + plane * H * W;
    const float* k = weight + c * 9;
    const float k0 = k[0], k1 = k[1], k2 = k[2], k3 = k[3], k4 = k[4], k5 = k[5], k6 = k[6], k7 = k[7], k8 = k[8];
    const float b = bias[c];
    float* o = dst + plane * H * W;
    for (int64_t y = 0; y < H; ++y) {
      const float* r0 = y > 0 ? src + (y - 1) * W : zeros.data();
      const float* r1 = src + y * W;
      const float* r2 = y + 1 < H ? src + (y + 1) * W : zeros.data();
      float* row = o + y * W;
      // All nine taps in one pass over the interior columns; the two border columns apart.
#pragma omp simd
      for (int64_t x0 = 1; x0 < W - 1; ++x0) {
        const float v = b + k0 * r0[x0 - 1] + k1 * r0[x0] + k2 * r0[x0 + 1] + k3 * r1[x0 - 1] + k4 * r1[x0] +
                        k5 * r1[x0 + 1] + k6 * r2[x0 - 1] + k7 * r2[x0] + k8 * r2[x0 + 1];
        row[x0] = relu && v < 0.f ? 0.f : v;
      }
      row[0] = edge_value(r0, r1, r2, k, 0, W, b);
      if (W > 1) row[W - 1] = edge_value(r0, r1, r2, k, W - 1, W, b);
      if (relu) {
        row[0] = row[0] < 0.f ? 0.f : row[0];
        row[W - 1] = row[W - 1] < 0.f ? 0.f : row[W - 1];
      }
    }
  }
  return MX_SUCCESS;
}

}  // namespace
}  // namespace sdu::SDU_ISA::dw_conv
#endif  // SDU_ISA

#ifndef SDU_ISA
REGISTER_OP(sdu_dw_conv)
    .setParseAttrs(SDU_CALLBACK(dw_conv::parse_attrs))
    .setInferType(SDU_CALLBACK(dw_conv::infer_type))
    .setInferShape(SDU_CALLBACK(dw_conv::infer_shape))
    .setForward(SDU_DISPATCH(dw_conv::forward), "cpu");
#endif  // SDU_ISA
