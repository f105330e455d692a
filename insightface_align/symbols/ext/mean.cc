// sdu_mean: the mean of n feature maps, narrower ones repeated along channels.
//
// The CAB and SAT(III) nodes of the network average their inputs: (x + concat(y, y)) / 2
// and (x + y) / 2. As standard operators that is Concat + add_n + _div_scalar: three
// passes over memory (plus layout reorders around each), which on CPU cost about a
// quarter of the network's inference time. This operator does it in one pass:
//
//     out[b, c, :] = (sum_i x_i[b, c mod C_i, :]) / n,   C = max C_i, every C_i divides C
//
// which equals the standard-operator graph exactly (same additions, same division).
#ifndef SDU_ISA  // first reading: includes, the per-instruction-set passes, registration below
#include <omp.h>

#include <string>
#include <unordered_map>
#include <vector>

#include "common.h"
#include "isa.h"
#include "mxnet/lib_api.h"

#define SDU_PASS_FILE "mean.cc"
#include "isa_passes.h"  // this file again, once per instruction set

#else  // a pass (isa_passes.h): the kernels and callbacks, in sdu::SDU_ISA::mean
namespace sdu::SDU_ISA::mean {
namespace {

using namespace mxnet::ext;
using sdu::Attrs;

MXReturnValue parse_attrs(const Attrs& attrs, int* num_in, int* num_out) {
  int n = 0;
  if (!sdu::int_attr(attrs, "num_args", 2, &n) || n < 1 || n > 16) {
    MX_ERROR_MSG << "sdu_mean: num_args must be an integer in 1..16";
    return MX_FAIL;
  }
  *num_in = n;
  *num_out = 1;
  return MX_SUCCESS;
}

MXReturnValue infer_type(const Attrs& attrs, std::vector<int>* in, std::vector<int>* out) {
  return sdu::infer_same_float_type("sdu_mean", in, out);
}

MXReturnValue infer_shape(const Attrs& attrs, std::vector<std::vector<unsigned int>>* in,
                          std::vector<std::vector<unsigned int>>* out) {
  unsigned int channels = 0;
  for (const auto& s : *in) {
    if (s.size() != 4) {
      MX_ERROR_MSG << "sdu_mean: inputs must be (B, C, H, W)";
      return MX_FAIL;
    }
    channels = std::max(channels, s[1]);
  }
  const auto& first = (*in)[0];
  for (const auto& s : *in) {
    if (s[0] != first[0] || s[2] != first[2] || s[3] != first[3] || s[1] == 0 || channels % s[1] != 0) {
      MX_ERROR_MSG << "sdu_mean: inputs need equal B, H, W and channel counts dividing the largest";
      return MX_FAIL;
    }
  }
  (*out)[0] = {first[0], channels, first[2], first[3]};
  return MX_SUCCESS;
}

template <typename DType>
void mean_forward(std::vector<MXTensor>& in, MXTensor* out) {
  const int n = static_cast<int>(in.size());
  const int64_t B = out->shape[0], C = out->shape[1], hw = out->shape[2] * out->shape[3];
  std::vector<const DType*> src(n);
  std::vector<int64_t> ch(n);
  for (int i = 0; i < n; ++i) {
    src[i] = in[i].data<DType>();
    ch[i] = in[i].shape[1];
  }
  DType* dst = out->data<DType>();
  const DType count = static_cast<DType>(n);
#pragma omp parallel for collapse(2) schedule(static)
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t c = 0; c < C; ++c) {
      DType* o = dst + (b * C + c) * hw;
      const DType* a = src[0] + (b * ch[0] + c % ch[0]) * hw;
      if (n == 2) {
        const DType* s1 = src[1] + (b * ch[1] + c % ch[1]) * hw;
#pragma omp simd
        for (int64_t p = 0; p < hw; ++p) o[p] = (a[p] + s1[p]) / count;
        continue;
      }
      for (int64_t p = 0; p < hw; ++p) o[p] = a[p];
      for (int i = 1; i < n; ++i) {
        const DType* s = src[i] + (b * ch[i] + c % ch[i]) * hw;
#pragma omp simd
        for (int64_t p = 0; p < hw; ++p) o[p] += s[p];
      }
#pragma omp simd
      for (int64_t p = 0; p < hw; ++p) o[p] /= count;
    }
  }
}

// Backward inputs: gout, the n inputs, the output; outputs: the n input gradients.
template <typename DType>
void mean_backward(std::vector<MXTensor>& in, std::vector<MXTensor>* out) {
  const int n = static_cast<int>(out->size());
  MXTensor& gout = in[0];
  const int64_t B = gout.shape[0], C = gout.shape[1], hw = gout.shape[2] * gout.shape[3];
  const DType* g = gout.data<DType>();
  const DType count = static_cast<DType>(n);
  for (int i = 0; i < n; ++i) {
    const int64_t ci = (*out)[i].shape[1];
    DType* dst = (*out)[i].data<DType>();
#pragma omp parallel for collapse(2) schedule(static)
    for (int64_t b = 0; b < B; ++b) {
      for (int64_t c = 0; c < ci; ++c) {
        DType* o = dst + (b * ci + c) * hw;
        const DType* s = g + (b * C + c) * hw;
#pragma omp simd
        for (int64_t p = 0; p < hw; ++p) o[p] = s[p] / count;
        for (int64_t r = c + ci; r < C; r += ci) {
          const DType* s2 = g + (b * C + r) * hw;
#pragma omp simd
          for (int64_t p = 0; p < hw; ++p) o[p] += s2[p] / count;
        }
      }
    }
  }
}

MXReturnValue forward(const Attrs& attrs, std::vector<MXTensor>* in, std::vector<MXTensor>* out,
                      const OpResource& res) {
  sdu::by_dtype((*in)[0].dtype, [&](auto tag) { mean_forward<decltype(tag)>(*in, &(*out)[0]); });
  return MX_SUCCESS;
}

MXReturnValue backward(const Attrs& attrs, std::vector<MXTensor>* in, std::vector<MXTensor>* out,
                       const OpResource& res) {
  sdu::by_dtype((*in)[0].dtype, [&](auto tag) { mean_backward<decltype(tag)>(*in, out); });
  return MX_SUCCESS;
}

}  // namespace
}  // namespace sdu::SDU_ISA::mean
#endif  // SDU_ISA

#ifndef SDU_ISA
REGISTER_OP(sdu_mean)
    .setParseAttrs(SDU_CALLBACK(mean::parse_attrs))
    .setInferType(SDU_CALLBACK(mean::infer_type))
    .setInferShape(SDU_CALLBACK(mean::infer_shape))
    .setForward(SDU_DISPATCH(mean::forward), "cpu")
    .setBackward(SDU_DISPATCH(mean::backward), "cpu");
#endif  // SDU_ISA
