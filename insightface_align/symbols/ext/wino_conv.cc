// sdu_wino_conv: an inference-only 3x3 convolution (stride 1, pad 1) computed with
// oneDNN's Winograd F(4x4, 3x3) kernels, with the bias and an optional ReLU fused.
//
// Why: the sdu-2d graph spends half its CPU time in 3x3 convolutions that MXNet 1.9
// runs with oneDNN's direct algorithm (it hard-codes convolution_direct), already at
// this class of CPU's fp32 peak. Winograd needs 4x fewer multiplications and ran the
// network's shapes 2-3x faster (256->128 ch at 64x64: 5.4 vs 10.6 ms). MXNet's own
// oneDNN is hidden inside libmxnet.so, so this operator links the oneDNN library that
// the pinned `onednn-cpu-gomp` wheel installs (same OpenMP runtime as MXNet).
//
// The operator is stateful (one per graph node): it keeps the oneDNN primitives for
// the bound input shape and the weights in Winograd layout, and re-transforms them only
// when the weight tensor changes: MXNet bumps an NDArray's version on every write and
// passes it to the operator (MXTensor::verID, compared by isSame with pointer and shape).
// Shapes Winograd does not support (channels not a multiple of 16, say) fall back to
// oneDNN's direct algorithm, so every input the shape check admits is computed.
//
//
// oneDNN chooses its kernels for the CPU at run time, so this file has no per-instruction-set
// pass (isa_passes.h): it is compiled once, for the baseline.
//
//     out = act(conv3x3(data, weight) + bias),  act = identity or ReLU
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "oneapi/dnnl/dnnl.hpp"

#include "common.h"
#include "isa.h"
#include "mxnet/lib_api.h"
#include "onednn.h"

namespace sdu::baseline::wino_conv {
namespace {

using namespace mxnet::ext;

using sdu::Attrs;

constexpr const char* kOp = "sdu_wino_conv";

struct Params {
  int num_filter = 0;
  bool relu = false;
  bool winograd = true;
};

MXReturnValue read_params(const Attrs& attrs, Params* p) {
  if (!sdu::int_attr(attrs, "num_filter", 0, &p->num_filter) || p->num_filter < 1) {
    MX_ERROR_MSG << kOp << ": num_filter must be a positive integer";
    return MX_FAIL;
  }
  if (sdu::relu_attr(attrs, kOp, &p->relu) != MX_SUCCESS) return MX_FAIL;
  auto alg = attrs.find("algorithm");
  if (alg != attrs.end() && alg->second != "winograd" && alg->second != "direct") {
    MX_ERROR_MSG << kOp << ": algorithm must be 'winograd' or 'direct', got '" << alg->second << "'";
    return MX_FAIL;
  }
  p->winograd = alg == attrs.end() || alg->second == "winograd";
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
  if (sdu::layer_shapes(kOp, in, {O, C, 3, 3}, "(num_filter, C, 3, 3)", O, "(num_filter,)") != MX_SUCCESS)
    return MX_FAIL;
  (*out)[0] = {d[0], O, d[2], d[3]};
  return MX_SUCCESS;
}

// The primitives for one input shape, and the weights in the primitive's layout.
class WinoConv : public CustomStatefulOp {
 public:
  explicit WinoConv(const Params& p) : p_(p), stream_(sdu::dnnl_cpu()) {}

  MXReturnValue Forward(std::vector<MXTensor>* in, std::vector<MXTensor>* out,
                        const OpResource& res) override {
    return sdu::guarded([&] { return run(in, out); });
  }

 private:
  MXReturnValue run(std::vector<MXTensor>* in, std::vector<MXTensor>* out) {
    MXTensor& x = (*in)[0];
    MXTensor& w = (*in)[1];
    MXTensor& b = (*in)[2];
    MXTensor& y = (*out)[0];
    const dnnl::memory::dims src_dims{x.shape[0], x.shape[1], x.shape[2], x.shape[3]};
    try {
      if (!conv_ || src_dims != src_dims_) plan(src_dims);
      if (!weights_ready_ || !w.isSame(transformed_)) {
        dnnl::memory user_w(plain_w_, sdu::dnnl_cpu(), w.data<float>());
        dnnl::reorder(user_w, wei_).execute(stream_, user_w, wei_);
        transformed_ = w;
        weights_ready_ = true;
      }
      dnnl::memory user_x(plain_x_, sdu::dnnl_cpu(), x.data<float>());
      dnnl::memory user_y(plain_y_, sdu::dnnl_cpu(), y.data<float>());
      dnnl::memory bias(bias_md_, sdu::dnnl_cpu(), b.data<float>());
      dnnl::memory src = user_x, dst = user_y;
      if (src_blocked_) {
        src_reorder_.execute(stream_, user_x, src_mem_);
        src = src_mem_;
      }
      if (dst_blocked_) dst = dst_mem_;
      conv_.execute(stream_, {{DNNL_ARG_SRC, src}, {DNNL_ARG_WEIGHTS, wei_},
                              {DNNL_ARG_BIAS, bias}, {DNNL_ARG_DST, dst}});
      if (dst_blocked_) dst_reorder_.execute(stream_, dst_mem_, user_y);
      stream_.wait();
    } catch (const dnnl::error& e) {
      MX_ERROR_MSG << kOp << ": oneDNN failed for input (" << src_dims[0] << ", " << src_dims[1] << ", "
                   << src_dims[2] << ", " << src_dims[3] << "): " << e.what();
      return MX_FAIL;
    }
    return MX_SUCCESS;
  }

  void plan(const dnnl::memory::dims& src_dims) {
    using tag = dnnl::memory::format_tag;
    using dt = dnnl::memory::data_type;
    const dnnl::memory::dim O = p_.num_filter;
    const dnnl::memory::dims w_dims{O, src_dims[1], 3, 3}, dst_dims{src_dims[0], O, src_dims[2], src_dims[3]};
    plain_x_ = dnnl::memory::desc(src_dims, dt::f32, tag::nchw);
    plain_y_ = dnnl::memory::desc(dst_dims, dt::f32, tag::nchw);
    plain_w_ = dnnl::memory::desc(w_dims, dt::f32, tag::oihw);
    bias_md_ = dnnl::memory::desc({O}, dt::f32, tag::a);
    dnnl::primitive_attr attr;
    if (p_.relu) {
      dnnl::post_ops ops;
      ops.append_eltwise(1.f, dnnl::algorithm::eltwise_relu, 0.f, 0.f);
      attr.set_post_ops(ops);
    }
    auto make = [&](dnnl::algorithm alg) {
      dnnl::convolution_forward::desc desc(
          dnnl::prop_kind::forward_inference, alg, dnnl::memory::desc(src_dims, dt::f32, tag::any),
          dnnl::memory::desc(w_dims, dt::f32, tag::any), bias_md_, dnnl::memory::desc(dst_dims, dt::f32, tag::any),
          {1, 1}, {1, 1}, {1, 1});
      return dnnl::convolution_forward::primitive_desc(desc, attr, sdu::dnnl_cpu());
    };
    dnnl::convolution_forward::primitive_desc pd;
    bool made = false;
    if (p_.winograd) {
      try {
        pd = make(dnnl::algorithm::convolution_winograd);
        made = true;
      } catch (const dnnl::error&) {
        // Not supported for this shape/CPU: the direct algorithm computes the same thing.
      }
    }
    if (!made) pd = make(dnnl::algorithm::convolution_direct);
    conv_ = dnnl::convolution_forward(pd);
    wei_ = dnnl::memory(pd.weights_desc(), sdu::dnnl_cpu());
    weights_ready_ = false;  // forces the weight transform for the new primitive
    src_blocked_ = pd.src_desc() != plain_x_;
    dst_blocked_ = pd.dst_desc() != plain_y_;
    if (src_blocked_) {
      src_mem_ = dnnl::memory(pd.src_desc(), sdu::dnnl_cpu());
      src_reorder_ = dnnl::reorder(
          dnnl::reorder::primitive_desc(sdu::dnnl_cpu(), plain_x_, sdu::dnnl_cpu(), pd.src_desc()));
    }
    if (dst_blocked_) {
      dst_mem_ = dnnl::memory(pd.dst_desc(), sdu::dnnl_cpu());
      dst_reorder_ = dnnl::reorder(
          dnnl::reorder::primitive_desc(sdu::dnnl_cpu(), pd.dst_desc(), sdu::dnnl_cpu(), plain_y_));
    }
    src_dims_ = src_dims;
  }

  Params p_;
  dnnl::stream stream_;
  dnnl::memory::dims src_dims_;
  dnnl::memory::desc plain_x_, plain_y_, plain_w_, bias_md_;
  dnnl::convolution_forward conv_;
  dnnl::memory wei_, src_mem_, dst_mem_;
  dnnl::reorder src_reorder_, dst_reorder_;
  bool src_blocked_ = false, dst_blocked_ = false;
  MXTensor transformed_;  // the weight tensor (pointer, shape, version) wei_ was made from
  bool weights_ready_ = false;
};

MXReturnValue create_state(const Attrs& attrs, const MXContext& ctx,
                           const std::vector<std::vector<unsigned int>>& in_shapes,
                           const std::vector<int> in_types, CustomStatefulOp** state) {
  Params p;
  if (read_params(attrs, &p) != MX_SUCCESS) return MX_FAIL;
  *state = CustomStatefulOp::create<WinoConv>(p);
  return MX_SUCCESS;
}

}  // namespace
}  // namespace sdu::baseline::wino_conv

REGISTER_OP(sdu_wino_conv)
    .setParseAttrs(SDU_CALLBACK(wino_conv::parse_attrs))
    .setInferType(SDU_CALLBACK(wino_conv::infer_type))
    .setInferShape(SDU_CALLBACK(wino_conv::infer_shape))
    .setCreateOpState(SDU_CALLBACK(wino_conv::create_state), "cpu");
