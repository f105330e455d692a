// sdu_deconv2x2: an inference-only 2x2 stride-2 deconvolution (the up-sampling units) on
// plain NCHW tensors, as one GEMM per image (oneDNN's sgemm), with a per-channel bias and
// an optional ReLU fused.
//
// Why: the deconvolution is a plain matrix product on the NCHW layout (channels x pixels),
// but MXNet's oneDNN primitive picks a blocked layout at batch 1 and reorders from and to
// the NCHW node means around it (its neighbours in every up-sampling unit). As a GEMM on
// NCHW there is nothing to reorder, and the BN that follows each deconvolution folds into
// the bias, which oneDNN's deconvolution with a bias made slower.
//
//   weight (C, O, 2, 2) (MXNet's Deconvolution layout), read as the (C x 4O) matrix W:
//   out[o, 2y+i, 2x+j] = act(bias[o] + sum_c w[c, o, i, j] x[c, y, x])
//
// sdu_deconv2x2_q is the same layer for INT8 exports (MXNet 1.9 has no quantised
// deconvolution): it quantises the input over its calibrated range (attributes data_min,
// data_max) and runs the product as oneDNN's INT8 matmul with per-column weight scales
// (qmatmul.h), float32 in and out. Stateful like sdu_wino_conv: the quantised weights are
// kept until MXNet's weight tensor changes.
#ifndef SDU_ISA  // first reading: includes, the per-instruction-set passes, registration below
#include <omp.h>

#include <string>
#include <unordered_map>
#include <vector>

#include "oneapi/dnnl/dnnl.h"

#include "common.h"
#include "isa.h"
#include "mxnet/lib_api.h"

#define SDU_PASS_FILE "deconv2x2.cc"
#include "isa_passes.h"  // this file again, once per instruction set

#else  // a pass (isa_passes.h): the kernels and callbacks, in sdu::SDU_ISA::deconv2x2
#include "qmatmul.h"
#include "transpose16.h"

namespace sdu::SDU_ISA::deconv2x2 {
namespace {

using namespace mxnet::ext;
using sdu::Attrs;

constexpr const char* kOp = "sdu_deconv2x2";
constexpr const char* kOpQ = "sdu_deconv2x2_q";

struct Params {
  bool relu = false;
  int num_filter = 0;
};

MXReturnValue read_params(const Attrs& attrs, Params* p) {
  if (sdu::relu_attr(attrs, kOp, &p->relu) != MX_SUCCESS) return MX_FAIL;
  if (!sdu::int_attr(attrs, "num_filter", 0, &p->num_filter) || p->num_filter < 1) {
    MX_ERROR_MSG << kOp << ": num_filter must be a positive integer";
    return MX_FAIL;
  }
  return MX_SUCCESS;
}

MXReturnValue parse_attrs(const Attrs& attrs, int* num_in, int* num_out) {
  Params p;
  if (read_params(attrs, &p) != MX_SUCCESS) return MX_FAIL;
  *num_in = 3;  // data, weight, bias
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
  const auto& d = (*in)[0];
  const unsigned int O = static_cast<unsigned int>(p.num_filter), C = d.size() == 4 ? d[1] : 0;
  if (sdu::layer_shapes(kOp, in, {C, O, 2, 2}, "(C, num_filter, 2, 2)", O, "(num_filter,)") != MX_SUCCESS)
    return MX_FAIL;
  (*out)[0] = {d[0], O, d[2] * 2, d[3] * 2};
  return MX_SUCCESS;
}

inline float activate(float v, bool relu) { return relu && v < 0.f ? 0.f : v; }

MXReturnValue forward(const Attrs& attrs, std::vector<MXTensor>* in, std::vector<MXTensor>* out,
                      const OpResource& res) {
  Params p;
  if (read_params(attrs, &p) != MX_SUCCESS) return MX_FAIL;
  MXTensor& x = (*in)[0];
  const int64_t B = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3], hw = H * W;
  const int64_t O = p.num_filter, rows = 4 * O;
  const float* weight = (*in)[1].data<float>();
  const float* bias = (*in)[2].data<float>();
  float* dst = (*out)[0].data<float>();
  auto product = sdu::scratch<float>(rows * hw);  // row (o, i, j): output pixels (2y+i, 2x+j)
  for (int64_t b = 0; b < B; ++b) {
    const float* src = x.data<float>() + b * C * hw;
    // Y (4O x hw) = W^T . X (C x hw), W being the (C x 4O) row-major weight.
    const dnnl_status_t status = dnnl_sgemm('T', 'N', rows, hw, C, 1.f, weight, rows, src, hw, 0.f,
                                            product.get(), hw);
    if (status != dnnl_success) {
      MX_ERROR_MSG << kOp << ": oneDNN sgemm failed (status " << static_cast<int>(status) << ")";
      return MX_FAIL;
    }
    const float* y = product.get();
    float* out_b = dst + b * O * hw * 4;
    const int64_t W2 = 2 * W;
#pragma omp parallel for collapse(2) schedule(static)
    for (int64_t o = 0; o < O; ++o) {
      for (int64_t yy = 0; yy < H; ++yy) {
        const float bo = bias[o];
        for (int i = 0; i < 2; ++i) {
          const float* r0 = y + (o * 4 + i * 2) * hw + yy * W;  // (o, i, j = 0)
          const float* r1 = r0 + hw;                            // (o, i, j = 1)
          float* orow = out_b + o * hw * 4 + (2 * yy + i) * W2;
#pragma omp simd
          for (int64_t xx = 0; xx < W; ++xx) {
            orow[2 * xx] = activate(r0[xx] + bo, p.relu);
            orow[2 * xx + 1] = activate(r1[xx] + bo, p.relu);
          }
        }
      }
    }
  }
  return MX_SUCCESS;
}

// ---- sdu_deconv2x2_q (INT8 GEMM, float32 in and out)

MXReturnValue q_parse_attrs(const Attrs& attrs, int* num_in, int* num_out) {
  InputRange r;
  if (range_attrs(attrs, kOpQ, &r) != MX_SUCCESS) return MX_FAIL;
  return parse_attrs(attrs, num_in, num_out);
}

class Deconv2x2Q : public CustomStatefulOp {
 public:
  Deconv2x2Q(const Params& p, const InputRange& r) : p_(p), range_(r), bias4_(4 * p.num_filter) {}

  MXReturnValue Forward(std::vector<MXTensor>* in, std::vector<MXTensor>* out,
                        const OpResource& res) override {
    return sdu::guarded([&] { return run(in, out); });
  }

 private:
  MXReturnValue run(std::vector<MXTensor>* in, std::vector<MXTensor>* out) {
    MXTensor& x = (*in)[0];
    MXTensor& w = (*in)[1];
    const int64_t B = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3], hw = H * W;
    const int64_t O = p_.num_filter, N = 4 * O;
    // The product's rows are the pixels (b, y, x) and its columns (o, i, j), bias and ReLU
    // applied by the matmul; the copy below moves each value to out[b, o, 2y+i, 2x+j].
    const float* bias = (*in)[2].data<float>();
    try {
      if (B * hw != gemm_.rows() || !w.isSame(weights_seen_)) {
        gemm_.plan(B * hw, C, N, range_, w.data<float>(), N, 1, std::vector<float>(N, 1.f), false, true, p_.relu);
        product_.resize(B * hw * N);
        weights_seen_ = w;
      }
      for (int64_t n = 0; n < N; ++n) bias4_[n] = bias[n / 4] / gemm_.scale(n);
      gemm_.run(x.data<float>(), B, C, hw, product_.data(), bias4_.data());
    } catch (const dnnl::error& e) {
      MX_ERROR_MSG << kOpQ << ": oneDNN failed for data (" << B << ", " << C << ", " << H << ", " << W
                   << "): " << e.what();
      return MX_FAIL;
    }
    // One image row y at a time: its W product rows (W * 4O floats) stay in cache while
    // every output plane's rows 2y and 2y+1 are written in order.
    float* dst = (*out)[0].data<float>();
    const int64_t W2 = 2 * W;
#if SDU_AVX512
    if (W % 8 == 0 && O % 4 == 0) {
      // Each product row is 2O (j = 0, j = 1) float pairs, column c = 2o + i; output row
      // (o, 2y + i) is column c over the W pixels. So 8 x 8 blocks of pairs, as 64-bit
      // values, transpose in registers straight into the output rows.
#pragma omp parallel for collapse(2) schedule(static)
      for (int64_t b = 0; b < B; ++b) {
        for (int64_t yy = 0; yy < H; ++yy) {
          const double* pairs = reinterpret_cast<const double*>(product_.data() + (b * hw + yy * W) * N);
          for (int64_t c0 = 0; c0 < 2 * O; c0 += 8) {
            for (int64_t x0 = 0; x0 < W; x0 += 8) {
              __m512d r[8];
              for (int k = 0; k < 8; ++k) r[k] = _mm512_loadu_pd(pairs + (x0 + k) * 2 * O + c0);
              transpose8(r);  // r[m]: pair column c0 + m at pixels x0..x0+7
              for (int m = 0; m < 8; ++m) {
                const int64_t o = (c0 + m) / 2, i = (c0 + m) % 2;
                _mm512_storeu_pd(reinterpret_cast<double*>(dst + ((b * O + o) * 2 * H + 2 * yy + i) * W2 + 2 * x0),
                                 r[m]);
              }
            }
          }
        }
      }
      return MX_SUCCESS;
    }
#endif
#pragma omp parallel for collapse(2) schedule(static)
    for (int64_t b = 0; b < B; ++b) {
      for (int64_t yy = 0; yy < H; ++yy) {
        const float* rows = product_.data() + (b * hw + yy * W) * N;
        for (int64_t o = 0; o < O; ++o) {
          for (int i = 0; i < 2; ++i) {
            const float* src = rows + 4 * o + 2 * i;
            float* orow = dst + ((b * O + o) * 2 * H + 2 * yy + i) * W2;
            for (int64_t xx = 0; xx < W; ++xx) {
              orow[2 * xx] = src[xx * N];
              orow[2 * xx + 1] = src[xx * N + 1];
            }
          }
        }
      }
    }
    return MX_SUCCESS;
  }

  Params p_;
  InputRange range_;
  QuantisedMatmul gemm_;
  std::vector<float> product_, bias4_;
  MXTensor weights_seen_;  // the weight tensor (pointer, shape, version) gemm_ was planned with
};

MXReturnValue q_create_state(const Attrs& attrs, const MXContext& ctx,
                             const std::vector<std::vector<unsigned int>>& in_shapes,
                             const std::vector<int> in_types, CustomStatefulOp** state) {
  Params p;
  InputRange r;
  if (read_params(attrs, &p) != MX_SUCCESS || range_attrs(attrs, kOpQ, &r) != MX_SUCCESS) return MX_FAIL;
  *state = CustomStatefulOp::create<Deconv2x2Q>(p, r);
  return MX_SUCCESS;
}

}  // namespace
}  // namespace sdu::SDU_ISA::deconv2x2
#endif  // SDU_ISA

#ifndef SDU_ISA
REGISTER_OP(sdu_deconv2x2)
    .setParseAttrs(SDU_CALLBACK(deconv2x2::parse_attrs))
    .setInferType(SDU_CALLBACK(deconv2x2::infer_type))
    .setInferShape(SDU_CALLBACK(deconv2x2::infer_shape))
    .setForward(SDU_DISPATCH(deconv2x2::forward), "cpu");

REGISTER_OP(sdu_deconv2x2_q)
    .setParseAttrs(SDU_CALLBACK(deconv2x2::q_parse_attrs))
    .setInferType(SDU_CALLBACK(deconv2x2::infer_type))
    .setInferShape(SDU_CALLBACK(deconv2x2::infer_shape))
    .setCreateOpState(SDU_DISPATCH(deconv2x2::q_create_state), "cpu");
#endif  // SDU_ISA
