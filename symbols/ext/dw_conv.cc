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
#include <omp.h>

#include <string>
#include <unordered_map>
#include <vector>

#include "common.h"
#include "mxnet/lib_api.h"

using namespace mxnet::ext;

namespace {

using sdu::Attrs;

constexpr const char* kOp = "sdu_dw_conv";

MXReturnValue read_relu(const Attrs& attrs, bool* relu) {
  auto act = attrs.find("act_type");
  if (act != attrs.end() && act->second != "relu" && act->second != "none") {
    MX_ERROR_MSG << kOp << ": act_type must be 'relu' or 'none', got '" << act->second << "'";
    return MX_FAIL;
  }
  *relu = act != attrs.end() && act->second == "relu";
  return MX_SUCCESS;
}

MXReturnValue parse_attrs(const Attrs& attrs, int* num_in, int* num_out) {
  bool relu = false;
  if (read_relu(attrs, &relu) != MX_SUCCESS) return MX_FAIL;
  *num_in = 3;  // data, weight, bias
  *num_out = 1;
  return MX_SUCCESS;
}

MXReturnValue infer_type(const Attrs& attrs, std::vector<int>* in, std::vector<int>* out) {
  for (int& t : *in) {
    if (t >= 0 && t != kFloat32) {
      MX_ERROR_MSG << kOp << " supports float32 only";
      return MX_FAIL;
    }
    t = kFloat32;
  }
  (*out)[0] = kFloat32;
  return MX_SUCCESS;
}

MXReturnValue infer_shape(const Attrs& attrs, std::vector<std::vector<unsigned int>>* in,
                          std::vector<std::vector<unsigned int>>* out) {
  const auto& d = (*in)[0];
  if (d.size() != 4) {
    MX_ERROR_MSG << kOp << ": data must be (B, C, H, W)";
    return MX_FAIL;
  }
  auto& w = (*in)[1];
  auto& b = (*in)[2];
  if (w.empty()) w = {d[1], 1, 3, 3};
  if (b.empty()) b = {d[1]};
  if (w.size() != 4 || w[0] != d[1] || w[1] != 1 || w[2] != 3 || w[3] != 3) {
    MX_ERROR_MSG << kOp << ": weight must be (C, 1, 3, 3) = (" << d[1] << ", 1, 3, 3)";
    return MX_FAIL;
  }
  if (b.size() != 1 || b[0] != d[1]) {
    MX_ERROR_MSG << kOp << ": bias must be (C,) = (" << d[1] << ",)";
    return MX_FAIL;
  }
  (*out)[0] = d;
  return MX_SUCCESS;
}

// One output row: o[x] = bias + sum over the three kernel taps of row r of in (zero outside).
inline void add_row(float* o, const float* in, const float* k, int64_t W) {
  if (W == 1) {
    o[0] += k[1] * in[0];
    return;
  }
  o[0] += k[1] * in[0] + k[2] * in[1];
#pragma omp simd
  for (int64_t x = 1; x < W - 1; ++x) o[x] += k[0] * in[x - 1] + k[1] * in[x] + k[2] * in[x + 1];
  o[W - 1] += k[0] * in[W - 2] + k[1] * in[W - 1];
}

MXReturnValue forward(const Attrs& attrs, std::vector<MXTensor>* in, std::vector<MXTensor>* out,
                      const OpResource& res) {
  bool relu = false;
  if (read_relu(attrs, &relu) != MX_SUCCESS) return MX_FAIL;
  MXTensor& x = (*in)[0];
  const int64_t B = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3];
  const float* data = x.data<float>();
  const float* weight = (*in)[1].data<float>();
  const float* bias = (*in)[2].data<float>();
  float* dst = (*out)[0].data<float>();
#pragma omp parallel for schedule(static)
  for (int64_t plane = 0; plane < B * C; ++plane) {
    const int64_t c = plane % C;
    const float* src = data + plane * H * W;
    const float* k = weight + c * 9;
    float* o = dst + plane * H * W;
    for (int64_t y = 0; y < H; ++y) {
      float* row = o + y * W;
      for (int64_t x0 = 0; x0 < W; ++x0) row[x0] = bias[c];
      for (int i = 0; i < 3; ++i) {
        const int64_t r = y + i - 1;
        if (r >= 0 && r < H) add_row(row, src + r * W, k + 3 * i, W);
      }
      if (relu) {
#pragma omp simd
        for (int64_t x0 = 0; x0 < W; ++x0) row[x0] = row[x0] > 0.f ? row[x0] : 0.f;
      }
    }
  }
  return MX_SUCCESS;
}

}  // namespace

REGISTER_OP(sdu_dw_conv)
    .setParseAttrs(parse_attrs)
    .setInferType(infer_type)
    .setInferShape(infer_shape)
    .setForward(forward, "cpu");
