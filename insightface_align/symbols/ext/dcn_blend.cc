// Deformable-convolution tap blend: the one step of the "fast" DCN that MXNet has no
// efficient operator for (see symbols/deform.py for the whole construction).
//
// The graph first computes, with one GEMM, a table T of shape (B, H, W, 9*F) whose row
// for pixel q holds W_k . x(q) for the nine taps k (columns k*F .. k*F+F-1). The
// operator sdu_dcn_blend then produces the deformable convolution
//
//     out[b, f, y, x] = bias[f] + sum_k sum_corners w_corner * T[(b, corner), k*F + f]
//
// where the corners and bilinear weights come from tap k's sampling position
// (y + i - 1 + dy_k, x + j - 1 + dx_k), k = 3i + j, with MXNet's native rules:
//   - offset channel 2k is dy, 2k + 1 is dx;
//   - a sample contributes only when 0 <= pos_y < H and 0 <= pos_x < W;
//   - a position in the last fractional row [H-1, H) reads row H-1 only and carries
//     no offset gradient along that axis (same for columns);
//   - otherwise it is bilinear, and the offset gradient is the derivative of the
//     weights through the fractional parts (a forward difference at integers).
//
// sdu_deform_unit does the same for the whole unit (offset conv + DCN): the table also
// holds the offset conv's taps, so one GEMM serves both convolutions. Its attribute
// offset_exponent = e says those offset columns hold 2^e times the offset conv's taps
// (an INT8 export scales them so they quantise as finely as the deformable ones, since
// MXNet quantises a GEMM weight with one range); scaling by a power of two is exact.
// Inner loops run over F contiguous floats (vectorised); the backward pass splits work
// by (image, tap), whose table-gradient regions are disjoint, so it needs no atomics.
#ifndef SDU_ISA  // first reading: includes, the per-instruction-set passes, registration below
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>
#include <unordered_map>
#include <vector>

#include "common.h"
#include "isa.h"
#include "mxnet/lib_api.h"

#define SDU_PASS_FILE "dcn_blend.cc"
#include "isa_passes.h"  // this file again, once per instruction set

#else  // a pass (isa_passes.h): the kernels and callbacks, in sdu::SDU_ISA::dcn_blend
#include "dcn_table.h"

namespace sdu::SDU_ISA::dcn_blend {
namespace {

using namespace mxnet::ext;

// Pixel-major copy of an NCHW gradient, (B, F, HW) -> (B, HW, F), in cache-sized tiles.
template <typename DType>
void to_pixel_major(const DType* src, int64_t B, int64_t F, int64_t hw, DType* dst) {
  constexpr int64_t T = 32;
#pragma omp parallel for collapse(2) schedule(static)
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t p0 = 0; p0 < hw; p0 += T) {
      const int64_t p1 = std::min(p0 + T, hw);
      for (int64_t f0 = 0; f0 < F; f0 += T) {
        const int64_t f1 = std::min(f0 + T, F);
        for (int64_t f = f0; f < f1; ++f) {
          const DType* s = src + (b * F + f) * hw;
          DType* d = dst + b * hw * F + f;
          for (int64_t p = p0; p < p1; ++p) d[p * F] = s[p];
        }
      }
    }
  }
}

// Columns of the table outside [col0, col0 + 9F) are left untouched.
template <typename DType>
void backward_impl(const Dims& d, const DType* gout, const DType* table, const DType* offset, DType* gtable,
                   DType* goffset, DType* gbias) {
  const int64_t B = d.B, H = d.H, W = d.W, F = d.F, hw = H * W, S = d.stride;
  auto g = sdu::scratch<DType>(B * hw * F);  // the inner loops want F contiguous values per pixel
  to_pixel_major(gout, B, F, hw, g.get());
  if (gbias) {
#pragma omp parallel for schedule(static)
    for (int64_t f = 0; f < F; ++f) {
      double s = 0;
      for (int64_t b = 0; b < B; ++b) {
        const DType* src = gout + (b * F + f) * hw;
        for (int64_t p = 0; p < hw; ++p) s += src[p];
      }
      gbias[f] = static_cast<DType>(s);
    }
  }
  // Each (image, tap) task owns table-gradient columns col0 + k*F.. of that image's rows.
#pragma omp parallel for collapse(2) schedule(dynamic, 1)
  for (int64_t b = 0; b < B; ++b) {
    for (int k = 0; k < 9; ++k) {
      const DType* off_b = offset + b * 18 * hw;
      const DType* tab_b = table + b * hw * S + d.col0 + k * F;
      DType* gtab_b = gtable + b * hw * S + d.col0 + k * F;
      DType* goff_b = goffset + b * 18 * hw;
      for (int64_t q = 0; q < hw; ++q) std::memset(gtab_b + q * S, 0, sizeof(DType) * F);
      for (int64_t y = 0; y < H; ++y) {
        for (int64_t x = 0; x < W; ++x) {
          const int64_t p = y * W + x;
          Tap<DType> t;
          tap_geometry(off_b, hw, H, W, y, x, k, &t);
          DType gy = 0, gx = 0;
          if (t.inside) {
            const DType* gp = g.get() + (b * hw + p) * F;
            for (int c = 0; c < 4; ++c) {
              const int64_t row = t.q[c] * S;
              const DType w = t.w[c];
              if (w != DType(0)) {
                DType* dst = gtab_b + row;
#pragma omp simd
                for (int64_t f = 0; f < F; ++f) dst[f] += w * gp[f];
              }
              if (t.dwy[c] != DType(0) || t.dwx[c] != DType(0)) {
                const DType* src = tab_b + row;
                DType dot = 0;
#pragma omp simd reduction(+ : dot)
                for (int64_t f = 0; f < F; ++f) dot += gp[f] * src[f];
                gy += t.dwy[c] * dot;
                gx += t.dwx[c] * dot;
              }
            }
          }
          goff_b[(2 * k) * hw + p] = gy;
          goff_b[(2 * k + 1) * hw + p] = gx;
        }
      }
    }
  }
}

// Transpose of offsets_from_table: fills table columns [0, 162) and the offset bias gradient.
template <typename DType>
void offsets_backward(const Dims& d, const DType* goffset, DType scale, DType* gtable, DType* gobias) {
  const int64_t B = d.B, H = d.H, W = d.W, hw = H * W, S = d.stride;
  const DType inverse = DType(1) / scale;
#pragma omp parallel for collapse(2) schedule(static)
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t qy = 0; qy < H; ++qy) {
      for (int64_t qx = 0; qx < W; ++qx) {
        DType* dst = gtable + (b * hw + qy * W + qx) * S;
        for (int k = 0; k < 9; ++k) {
          const int64_t y = qy - (k / 3 - 1), x = qx - (k % 3 - 1);  // the pixel whose tap k reads q
          const bool in = y >= 0 && y < H && x >= 0 && x < W;
          for (int o = 0; o < 18; ++o)
            dst[k * 18 + o] = in ? goffset[(b * 18 + o) * hw + y * W + x] * inverse : DType(0);
        }
      }
    }
  }
  for (int o = 0; o < 18; ++o) {
    double s = 0;
    for (int64_t b = 0; b < B; ++b)
      for (int64_t p = 0; p < hw; ++p) s += goffset[(b * 18 + o) * hw + p];
    gobias[o] = static_cast<DType>(s);
  }
}

MXReturnValue parse_attrs(const Attrs& attrs, int* num_in, int* num_out) {
  *num_in = has_bias(attrs) ? 3 : 2;
  *num_out = 1;
  return MX_SUCCESS;
}

MXReturnValue infer_type(const Attrs& attrs, std::vector<int>* in, std::vector<int>* out) {
  return sdu::infer_same_float_type("sdu deformable ops", in, out);
}

// ---- sdu_dcn_blend(offset (B, 18, H, W), table (B, H, W, 9F)[, bias (F,)]) -> (B, F, H, W)

MXReturnValue blend_shape(const Attrs& attrs, std::vector<std::vector<unsigned int>>* in,
                          std::vector<std::vector<unsigned int>>* out) {
  const auto& offset = (*in)[0];
  Dims d;
  if (table_dims(to64((*in)[1]), false, &d) != MX_SUCCESS) return MX_FAIL;
  if (offset.size() != 4 || offset[0] != d.B || offset[1] != 18 || offset[2] != d.H || offset[3] != d.W) {
    MX_ERROR_MSG << "sdu_dcn_blend: expected offset (B, 18, H, W) matching table (B, H, W, 9F)";
    return MX_FAIL;
  }
  if (check_bias(*in, 2, d.F, "sdu_dcn_blend: bias") != MX_SUCCESS) return MX_FAIL;
  (*out)[0] = {offset[0], static_cast<unsigned int>(d.F), offset[2], offset[3]};
  return MX_SUCCESS;
}

MXReturnValue blend_forward(const Attrs& attrs, std::vector<MXTensor>* in, std::vector<MXTensor>* out,
                            const OpResource& res) {
  Dims d;
  if (table_dims((*in)[1].shape, false, &d) != MX_SUCCESS) return MX_FAIL;
  const bool bias = in->size() == 3;
  sdu::by_dtype((*in)[0].dtype, [&](auto tag) {
    using DType = decltype(tag);
    forward_impl<DType>(d, (*in)[1].data<DType>(), (*in)[0].data<DType>(), bias ? (*in)[2].data<DType>() : nullptr,
                        (*out)[0].data<DType>());
  });
  return MX_SUCCESS;
}

// Backward inputs: the output gradient, the forward inputs (offset, table[, bias]), the
// forward output; outputs: gradients of offset, table[, bias].
template <typename DType>
void blend_backward_typed(const Dims& d, std::vector<MXTensor>* in, std::vector<MXTensor>* out) {
  const bool bias = out->size() == 3;
  backward_impl<DType>(d, (*in)[0].data<DType>(), (*in)[2].data<DType>(), (*in)[1].data<DType>(),
                       (*out)[1].data<DType>(), (*out)[0].data<DType>(), bias ? (*out)[2].data<DType>() : nullptr);
}

MXReturnValue blend_backward(const Attrs& attrs, std::vector<MXTensor>* in, std::vector<MXTensor>* out,
                             const OpResource& res) {
  Dims d;
  if (table_dims((*in)[2].shape, false, &d) != MX_SUCCESS) return MX_FAIL;
  sdu::by_dtype((*in)[0].dtype, [&](auto tag) { blend_backward_typed<decltype(tag)>(d, in, out); });
  return MX_SUCCESS;
}

// ---- sdu_deform_unit(table (B, H, W, 162 + 9F), offset_bias (18,)[, bias (F,)]) -> (B, F, H, W)
// The whole deformable unit (offset conv + deformable conv) after one GEMM: table columns
// [0, 162) hold the offset conv's taps, [162, 162 + 9F) the deformable conv's.

MXReturnValue unit_shape(const Attrs& attrs, std::vector<std::vector<unsigned int>>* in,
                         std::vector<std::vector<unsigned int>>* out) {
  double scale;
  if (offset_scale(attrs, &scale) != MX_SUCCESS) return MX_FAIL;
  Dims d;
  if (table_dims(to64((*in)[0]), true, &d) != MX_SUCCESS) return MX_FAIL;
  if (check_bias(*in, 1, 18, "sdu_deform_unit: offset_bias") != MX_SUCCESS) return MX_FAIL;
  if (check_bias(*in, 2, d.F, "sdu_deform_unit: bias") != MX_SUCCESS) return MX_FAIL;
  (*out)[0] = {(*in)[0][0], static_cast<unsigned int>(d.F), (*in)[0][1], (*in)[0][2]};
  return MX_SUCCESS;
}

// A unit call's table dimensions and offset scale (from its offset_exponent attribute).
MXReturnValue unit_setup(const Attrs& attrs, const std::vector<int64_t>& table, Dims* d, double* scale) {
  if (table_dims(table, true, d) != MX_SUCCESS) return MX_FAIL;
  return offset_scale(attrs, scale);
}

template <typename DType>
void unit_forward_typed(const Dims& d, double scale, std::vector<MXTensor>* in, std::vector<MXTensor>* out) {
  const DType* table = (*in)[0].data<DType>();
  auto offset = sdu::scratch<DType>(d.B * 18 * d.H * d.W);
  offsets_from_table(d, table, (*in)[1].data<DType>(), static_cast<DType>(scale), offset.get());
  forward_impl<DType>(d, table, offset.get(), in->size() == 3 ? (*in)[2].data<DType>() : nullptr,
                      (*out)[0].data<DType>());
}

MXReturnValue unit_forward(const Attrs& attrs, std::vector<MXTensor>* in, std::vector<MXTensor>* out,
                           const OpResource& res) {
  Dims d;
  double scale;
  if (unit_setup(attrs, (*in)[0].shape, &d, &scale) != MX_SUCCESS) return MX_FAIL;
  sdu::by_dtype((*in)[0].dtype, [&](auto tag) { unit_forward_typed<decltype(tag)>(d, scale, in, out); });
  return MX_SUCCESS;
}

// Backward inputs: gout, table, offset_bias[, bias], output; outputs: gradients of
// table, offset_bias[, bias]. The offsets are recomputed (cheap) rather than stored.
template <typename DType>
void unit_backward_typed(const Dims& d, double scale, std::vector<MXTensor>* in, std::vector<MXTensor>* out) {
  const DType* table = (*in)[1].data<DType>();
  const size_t n = d.B * 18 * d.H * d.W;
  auto offset = sdu::scratch<DType>(n), goffset = sdu::scratch<DType>(n);
  offsets_from_table(d, table, (*in)[2].data<DType>(), static_cast<DType>(scale), offset.get());
  DType* gtable = (*out)[0].data<DType>();
  backward_impl<DType>(d, (*in)[0].data<DType>(), table, offset.get(), gtable, goffset.get(),
                       out->size() == 3 ? (*out)[2].data<DType>() : nullptr);
  offsets_backward(d, goffset.get(), static_cast<DType>(scale), gtable, (*out)[1].data<DType>());
}

MXReturnValue unit_backward(const Attrs& attrs, std::vector<MXTensor>* in, std::vector<MXTensor>* out,
                            const OpResource& res) {
  Dims d;
  double scale;
  if (unit_setup(attrs, (*in)[1].shape, &d, &scale) != MX_SUCCESS) return MX_FAIL;
  sdu::by_dtype((*in)[0].dtype, [&](auto tag) { unit_backward_typed<decltype(tag)>(d, scale, in, out); });
  return MX_SUCCESS;
}

}  // namespace
}  // namespace sdu::SDU_ISA::dcn_blend
#endif  // SDU_ISA

#ifndef SDU_ISA
REGISTER_OP(sdu_dcn_blend)
    .setParseAttrs(SDU_CALLBACK(dcn_blend::parse_attrs))
    .setInferType(SDU_CALLBACK(dcn_blend::infer_type))
    .setInferShape(SDU_CALLBACK(dcn_blend::blend_shape))
    .setForward(SDU_DISPATCH(dcn_blend::blend_forward), "cpu")
    .setBackward(SDU_DISPATCH(dcn_blend::blend_backward), "cpu");

REGISTER_OP(sdu_deform_unit)
    .setParseAttrs(SDU_CALLBACK(dcn_blend::parse_attrs))
    .setInferType(SDU_CALLBACK(dcn_blend::infer_type))
    .setInferShape(SDU_CALLBACK(dcn_blend::unit_shape))
    .setForward(SDU_DISPATCH(dcn_blend::unit_forward), "cpu")
    .setBackward(SDU_DISPATCH(dcn_blend::unit_backward), "cpu");
#endif  // SDU_ISA
