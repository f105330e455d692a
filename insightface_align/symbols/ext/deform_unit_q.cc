// sdu_deform_unit_q: a fast deformable unit of an INT8 export in one operator.
//
//     out = act(unit(table)),  table = int8(quantise(data) x int8(weight))
//
// MXNet's quantiser runs the unit's tap GEMM as transpose -> quantize -> quantised
// FullyConnected (one weight range for all 162 + 9F columns) -> the unit. This operator
// quantises the NCHW input straight into the GEMM's pixel-major rows (no transpose
// node), runs the GEMM with oneDNN's INT8 matmul (u8 or s8 input, per-column s8
// weights, s8 table) and blends that table with the sdu_deform_unit kernels. The
// offset columns get their own calibrated range: offsets quantised on the taps' range
// were off by ~0.1 px, which moves every bilinear sample. The matmul ran 6.0 ms for a
// full-width unit (4096 x 256 x 2466) against 8.1 ms for MXNet's quantised
// FullyConnected in the graph.
//
// Inputs: data (B, C, H, W) float32, weight (162 + 9F, C) float32 (the frozen tap
// GEMM's, offset rows scaled by 2^offset_exponent), offset_bias (18,)[, bias (F,)].
// Attributes: data_min/data_max (the input's calibrated range: uint8 over [0, data_max]
// when data_min >= 0, else int8 over +-max|.|), table_range and offset_range (the
// calibrated max |value| of the table's tap and offset columns), num_filter (F),
// offset_exponent, no_bias, act_type (none/relu). Output (B, F, H, W) float32.
// Stateful: the quantised weights and the matmul are kept per bound shape and remade
// when MXNet's weight tensor changes (MXTensor::isSame, as sdu_wino_conv).
#ifndef SDU_ISA  // first reading: includes, the per-instruction-set passes, registration below
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "common.h"
#include "isa.h"
#include "mxnet/lib_api.h"

#define SDU_PASS_FILE "deform_unit_q.cc"
#include "isa_passes.h"  // this file again, once per instruction set

#else  // a pass (isa_passes.h): the kernels and callbacks, in sdu::SDU_ISA::deform_unit_q
#include "dcn_table.h"
#include "qmatmul.h"

namespace sdu::SDU_ISA::deform_unit_q {
namespace {

using namespace mxnet::ext;
using sdu::Attrs;

constexpr const char* kOp = "sdu_deform_unit_q";

struct Params {
  InputRange data;
  float table_range = 0.f, offset_range = 0.f;
  double offset_scale = 1.0;
  int num_filter = 0;
  bool bias = true, relu = false;
};

MXReturnValue read_params(const Attrs& attrs, Params* p) {
  if (range_attrs(attrs, kOp, &p->data) != MX_SUCCESS) return MX_FAIL;
  if (!sdu::float_attr(attrs, "table_range", &p->table_range) || !(p->table_range > 0.f) ||
      !sdu::float_attr(attrs, "offset_range", &p->offset_range) || !(p->offset_range > 0.f)) {
    MX_ERROR_MSG << kOp << ": table_range and offset_range must be positive numbers (the calibrated max |value| "
                 << "of the table's tap and offset columns)";
    return MX_FAIL;
  }
  if (!sdu::int_attr(attrs, "num_filter", 0, &p->num_filter) || p->num_filter < 1) {
    MX_ERROR_MSG << kOp << ": num_filter (F, the unit's output channels) must be a positive integer";
    return MX_FAIL;
  }
  if (offset_scale(attrs, &p->offset_scale) != MX_SUCCESS) return MX_FAIL;
  if (sdu::relu_attr(attrs, kOp, &p->relu) != MX_SUCCESS) return MX_FAIL;
  p->bias = has_bias(attrs);
  return MX_SUCCESS;
}

MXReturnValue parse_attrs(const Attrs& attrs, int* num_in, int* num_out) {
  Params p;
  if (read_params(attrs, &p) != MX_SUCCESS) return MX_FAIL;
  *num_in = p.bias ? 4 : 3;
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
  if (x.size() != 4) {
    MX_ERROR_MSG << kOp << ": data must be (B, C, H, W)";
    return MX_FAIL;
  }
  const unsigned int F = static_cast<unsigned int>(p.num_filter);
  const std::vector<unsigned int> weight{static_cast<unsigned int>(kOffsetColumns) + 9 * F, x[1]};
  auto& w = (*in)[1];
  if (w.empty()) w = weight;
  if (w != weight) {
    MX_ERROR_MSG << kOp << ": weight must be (162 + 9 num_filter, C) = (" << weight[0] << ", " << weight[1] << ")";
    return MX_FAIL;
  }
  if ((*in)[2].empty()) (*in)[2] = {18};
  if (in->size() > 3 && (*in)[3].empty()) (*in)[3] = {F};
  if (check_bias(*in, 2, 18, "sdu_deform_unit_q: offset_bias") != MX_SUCCESS) return MX_FAIL;
  if (check_bias(*in, 3, F, "sdu_deform_unit_q: bias") != MX_SUCCESS) return MX_FAIL;
  (*out)[0] = {x[0], F, x[2], x[3]};
  return MX_SUCCESS;
}

class DeformUnitQ : public CustomStatefulOp {
 public:
  explicit DeformUnitQ(const Params& p) : p_(p) {}

  MXReturnValue Forward(std::vector<MXTensor>* in, std::vector<MXTensor>* out,
                        const OpResource& res) override {
    return sdu::guarded([&] { return run(in, out); });
  }

 private:
  MXReturnValue run(std::vector<MXTensor>* in, std::vector<MXTensor>* out) {
    MXTensor& x = (*in)[0];
    MXTensor& w = (*in)[1];
    const int64_t B = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3], hw = H * W;
    const int64_t N = w.shape[0], M = B * hw;
    const Dims d{B, H, W, (N - kOffsetColumns) / 9, N, kOffsetColumns};
    const float table_unit = p_.table_range / 127.f, offset_unit = p_.offset_range / 127.f;
    try {
      if (M != gemm_.rows() || !w.isSame(weights_seen_)) {
        std::vector<float> dst_units(N, table_unit);
        std::fill(dst_units.begin(), dst_units.begin() + kOffsetColumns, offset_unit);
        gemm_.plan(M, C, N, p_.data, w.data<float>(), 1, C, dst_units, true);  // w is (N, C)
        table_.resize(M * N);
        weights_seen_ = w;
      }
      gemm_.run(x.data<float>(), B, C, hw, table_.data());
    } catch (const dnnl::error& e) {
      MX_ERROR_MSG << kOp << ": oneDNN failed for data (" << B << ", " << C << ", " << H << ", " << W
                   << ") and weight (" << N << ", " << C << "): " << e.what();
      return MX_FAIL;
    }
    auto offset = sdu::scratch<float>(B * 18 * hw);
    offsets_from_table<float, int8_t>(d, table_.data(), (*in)[2].data<float>(), static_cast<float>(p_.offset_scale),
                                      offset.get(), offset_unit);
    float* y = (*out)[0].data<float>();
    forward_impl<float, int8_t>(d, table_.data(), offset.get(), p_.bias ? (*in)[3].data<float>() : nullptr, y,
                                table_unit, p_.relu);
    return MX_SUCCESS;
  }

  Params p_;
  QuantisedMatmul gemm_;
  std::vector<int8_t> table_;
  MXTensor weights_seen_;  // the weight tensor (pointer, shape, version) gemm_ was planned with
};

MXReturnValue create_state(const Attrs& attrs, const MXContext& ctx,
                           const std::vector<std::vector<unsigned int>>& in_shapes,
                           const std::vector<int> in_types, CustomStatefulOp** state) {
  Params p;
  if (read_params(attrs, &p) != MX_SUCCESS) return MX_FAIL;
  *state = CustomStatefulOp::create<DeformUnitQ>(p);
  return MX_SUCCESS;
}

}  // namespace
}  // namespace sdu::SDU_ISA::deform_unit_q
#endif  // SDU_ISA

#ifndef SDU_ISA
REGISTER_OP(sdu_deform_unit_q)
    .setParseAttrs(SDU_CALLBACK(deform_unit_q::parse_attrs))
    .setInferType(SDU_CALLBACK(deform_unit_q::infer_type))
    .setInferShape(SDU_CALLBACK(deform_unit_q::infer_shape))
    .setCreateOpState(SDU_DISPATCH(deform_unit_q::create_state), "cpu");
#endif  // SDU_ISA
