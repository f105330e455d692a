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
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>
#include <unordered_map>
#include <vector>

#include "common.h"
#include "mxnet/lib_api.h"

using namespace mxnet::ext;

namespace {

using sdu::Attrs;

bool has_bias(const Attrs& attrs) {
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

// TableT is DType, or int8_t for an INT8 table whose value is table_scale * entry (for a
// DType table table_scale is 1, and multiplying by it changes no bit).
template <typename DType, typename TableT = DType>
void forward_impl(const Dims& d, const TableT* table, const DType* offset, const DType* bias, DType* out,
                  DType table_scale = DType(1)) {
  const int64_t B = d.B, H = d.H, W = d.W, F = d.F, hw = H * W, S = d.stride;
#pragma omp parallel
  {
    std::vector<DType> acc(W * F);
#pragma omp for collapse(2) schedule(static)
    for (int64_t b = 0; b < B; ++b) {
      for (int64_t y = 0; y < H; ++y) {
        std::fill(acc.begin(), acc.end(), DType(0));
        const DType* off_b = offset + b * 18 * hw;
        const TableT* tab_b = table + b * hw * S + d.col0;
        for (int64_t x = 0; x < W; ++x) {
          DType* a = acc.data() + x * F;
          for (int k = 0; k < 9; ++k) {
            Tap<DType> t;
            tap_geometry(off_b, hw, H, W, y, x, k, &t);
            if (!t.inside) continue;
            // The four corners in one pass over F (one read-modify-write of the accumulator).
            const TableT* s0 = tab_b + t.q[0] * S + k * F;
            const TableT* s1 = tab_b + t.q[1] * S + k * F;
            const TableT* s2 = tab_b + t.q[2] * S + k * F;
            const TableT* s3 = tab_b + t.q[3] * S + k * F;
            const DType w0 = t.w[0], w1 = t.w[1], w2 = t.w[2], w3 = t.w[3];
#pragma omp simd
            for (int64_t f = 0; f < F; ++f)
              a[f] += w0 * static_cast<DType>(s0[f]) + w1 * static_cast<DType>(s1[f]) +
                      w2 * static_cast<DType>(s2[f]) + w3 * static_cast<DType>(s3[f]);
          }
        }
        DType* out_row = out + b * F * hw + y * W;
        for (int64_t f = 0; f < F; ++f) {
          const DType bf = bias ? bias[f] : DType(0);
          DType* o = out_row + f * hw;
          for (int64_t x = 0; x < W; ++x) o[x] = acc[x * F + f] * table_scale + bf;
        }
      }
    }
  }
}

// Gradients of the table's tap columns and of the offsets (and bias) from gout (B, F, H, W).
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

constexpr int64_t kOffsetColumns = 162;  // 9 taps x 18 offset channels

// Shapes of both operators' table (B, H, W, N): N = 9F for the blend, 162 + 9F for the unit.
MXReturnValue table_dims(const std::vector<int64_t>& table, bool unit, Dims* d) {
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
MXReturnValue offset_scale(const Attrs& attrs, double* scale) {
  int e = 0;
  if (!sdu::int_attr(attrs, "offset_exponent", 0, &e) || e < -60 || e > 60) {
    MX_ERROR_MSG << "sdu_deform_unit: offset_exponent must be an integer in -60..60";
    return MX_FAIL;
  }
  *scale = std::ldexp(1.0, e);
  return MX_SUCCESS;
}

std::vector<int64_t> to64(const std::vector<unsigned int>& v) { return std::vector<int64_t>(v.begin(), v.end()); }

MXReturnValue parse_attrs(const Attrs& attrs, int* num_in, int* num_out) {
  *num_in = has_bias(attrs) ? 3 : 2;
  *num_out = 1;
  return MX_SUCCESS;
}

MXReturnValue infer_type(const Attrs& attrs, std::vector<int>* in, std::vector<int>* out) {
  return sdu::infer_same_float_type("sdu deformable ops", in, out);
}

MXReturnValue check_bias(const std::vector<std::vector<unsigned int>>& in, size_t index, unsigned int size,
                         const char* what) {
  if (in.size() > index && (in[index].size() != 1 || in[index][0] != size)) {
    MX_ERROR_MSG << what << " must have shape (" << size << ",)";
    return MX_FAIL;
  }
  return MX_SUCCESS;
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

// ---- sdu_deform_unit_int8(table int8 (B, H, W, 162 + 9F), table_min (1,), table_max (1,),
//      offset_bias (18,)[, bias (F,)]) -> float32 (B, F, H, W); inference only.
// The unit reading the INT8 table that MXNet's quantised GEMM writes (with its output range
// calibrated): entry q means q * max(|table_min|, |table_max|) / 127, MXNet's int8 convention.
// A quarter of the fp32 table's bytes, so a full-width unit's table (10 MB) stays in cache.

MXReturnValue int8_parse_attrs(const Attrs& attrs, int* num_in, int* num_out) {
  *num_in = has_bias(attrs) ? 5 : 4;
  *num_out = 1;
  return MX_SUCCESS;
}

MXReturnValue int8_type(const Attrs& attrs, std::vector<int>* in, std::vector<int>* out) {
  if ((*in)[0] >= 0 && (*in)[0] != kInt8) {
    MX_ERROR_MSG << "sdu_deform_unit_int8: the table must be int8";
    return MX_FAIL;
  }
  (*in)[0] = kInt8;
  for (size_t i = 1; i < in->size(); ++i) {
    if ((*in)[i] >= 0 && (*in)[i] != kFloat32) {
      MX_ERROR_MSG << "sdu_deform_unit_int8: table_min, table_max and the biases must be float32";
      return MX_FAIL;
    }
    (*in)[i] = kFloat32;
  }
  (*out)[0] = kFloat32;
  return MX_SUCCESS;
}

MXReturnValue int8_shape(const Attrs& attrs, std::vector<std::vector<unsigned int>>* in,
                         std::vector<std::vector<unsigned int>>* out) {
  double scale;
  if (offset_scale(attrs, &scale) != MX_SUCCESS) return MX_FAIL;
  Dims d;
  if (table_dims(to64((*in)[0]), true, &d) != MX_SUCCESS) return MX_FAIL;
  if (check_bias(*in, 1, 1, "sdu_deform_unit_int8: table_min") != MX_SUCCESS) return MX_FAIL;
  if (check_bias(*in, 2, 1, "sdu_deform_unit_int8: table_max") != MX_SUCCESS) return MX_FAIL;
  if (check_bias(*in, 3, 18, "sdu_deform_unit_int8: offset_bias") != MX_SUCCESS) return MX_FAIL;
  if (check_bias(*in, 4, d.F, "sdu_deform_unit_int8: bias") != MX_SUCCESS) return MX_FAIL;
  (*out)[0] = {(*in)[0][0], static_cast<unsigned int>(d.F), (*in)[0][1], (*in)[0][2]};
  return MX_SUCCESS;
}

MXReturnValue int8_forward(const Attrs& attrs, std::vector<MXTensor>* in, std::vector<MXTensor>* out,
                           const OpResource& res) {
  Dims d;
  double scale;
  if (unit_setup(attrs, (*in)[0].shape, &d, &scale) != MX_SUCCESS) return MX_FAIL;
  const float lo = *(*in)[1].data<float>(), hi = *(*in)[2].data<float>();
  const float table_scale = std::max(std::fabs(lo), std::fabs(hi)) / 127.f;
  const int8_t* table = (*in)[0].data<int8_t>();
  auto offset = sdu::scratch<float>(d.B * 18 * d.H * d.W);
  offsets_from_table<float, int8_t>(d, table, (*in)[3].data<float>(), static_cast<float>(scale), offset.get(),
                                    table_scale);
  forward_impl<float, int8_t>(d, table, offset.get(), in->size() == 5 ? (*in)[4].data<float>() : nullptr,
                              (*out)[0].data<float>(), table_scale);
  return MX_SUCCESS;
}

}  // namespace

REGISTER_OP(sdu_deform_unit_int8)
    .setParseAttrs(int8_parse_attrs)
    .setInferType(int8_type)
    .setInferShape(int8_shape)
    .setForward(int8_forward, "cpu");

REGISTER_OP(sdu_dcn_blend)
    .setParseAttrs(parse_attrs)
    .setInferType(infer_type)
    .setInferShape(blend_shape)
    .setForward(blend_forward, "cpu")
    .setBackward(blend_backward, "cpu");

REGISTER_OP(sdu_deform_unit)
    .setParseAttrs(parse_attrs)
    .setInferType(infer_type)
    .setInferShape(unit_shape)
    .setForward(unit_forward, "cpu")
    .setBackward(unit_backward, "cpu");

MXReturnValue initialize(int version) {
  if (version >= 10700) return MX_SUCCESS;
  MX_ERROR_MSG << "sdu ops need MXNet >= 1.7 (found " << version << ")";
  return MX_FAIL;
}
