// Helpers shared by the project's MXNet operators (lib_api custom-operator callbacks).
#ifndef SDU_EXT_COMMON_H_
#define SDU_EXT_COMMON_H_

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "mxnet/lib_api.h"

namespace sdu {

using Attrs = std::unordered_map<std::string, std::string>;

// An integer attribute, or `fallback` when absent; false when it is not an integer.
inline bool int_attr(const Attrs& attrs, const char* key, int fallback, int* value) {
  auto it = attrs.find(key);
  if (it == attrs.end()) {
    *value = fallback;
    return true;
  }
  try {
    size_t used = 0;
    *value = std::stoi(it->second, &used);
    return used == it->second.size();
  } catch (const std::exception&) {
    return false;
  }
}

// A finite float attribute; false when absent or not a number.
inline bool float_attr(const Attrs& attrs, const char* key, float* value) {
  auto it = attrs.find(key);
  if (it == attrs.end()) return false;
  try {
    size_t used = 0;
    *value = std::stof(it->second, &used);
    return used == it->second.size() && std::isfinite(*value);
  } catch (const std::exception&) {
    return false;
  }
}

// Type inference for operators whose inputs and output all share one float dtype:
// unknown (-1) entries take it from the known ones; mixed or non-float types fail.
inline mxnet::ext::MXReturnValue infer_same_float_type(const char* op, std::vector<int>* in,
                                                       std::vector<int>* out) {
  int t = -1;
  for (int v : *in) {
    if (v < 0) continue;
    if (t >= 0 && v != t) {
      MX_ERROR_MSG << op << ": all inputs must have the same dtype";
      return mxnet::ext::MX_FAIL;
    }
    t = v;
  }
  if (t < 0) t = (*out)[0];
  if (t < 0) return mxnet::ext::MX_SUCCESS;  // nothing known yet
  if (t != mxnet::ext::kFloat32 && t != mxnet::ext::kFloat64) {
    MX_ERROR_MSG << op << " supports float32 and float64 only";
    return mxnet::ext::MX_FAIL;
  }
  for (int& v : *in) v = t;
  (*out)[0] = t;
  return mxnet::ext::MX_SUCCESS;
}

// Calls fn(DType{}) with DType = float or double by the tensor dtype (infer_same_float_type
// admits no other); fn reads the type back with decltype.
template <typename Fn>
inline void by_dtype(int dtype, Fn&& fn) {
  if (dtype == mxnet::ext::kFloat32) {
    fn(float{});
  } else {
    fn(double{});
  }
}

// v saturated to [lo, hi] and rounded to the nearest integer (ties to even), for
// quantising (|v| <= 2^22): the 1.5 * 2^23 trick vectorises, std::nearbyint does not.
inline float round_saturate(float v, float lo, float hi) {
  constexpr float kRound = 12582912.f;
  v = std::min(std::max(v, lo), hi);
  return (v + kRound) - kRound;
}

// A scratch buffer every element of which the caller writes: no zero-fill pass
// (std::vector would clear tens of MB per call in the backward passes).
template <typename T>
inline std::unique_ptr<T[]> scratch(size_t n) {
  return std::unique_ptr<T[]>(new T[n]);
}

// ---- Inference layers (data, weight, bias) -> output, float32: sdu_wino_conv,
// sdu_dw_conv and sdu_deconv2x2 share their attribute, type and parameter-shape rules.

// The act_type attribute: 'relu' or 'none' (the default).
inline mxnet::ext::MXReturnValue relu_attr(const Attrs& attrs, const char* op, bool* relu) {
  auto act = attrs.find("act_type");
  if (act != attrs.end() && act->second != "relu" && act->second != "none") {
    MX_ERROR_MSG << op << ": act_type must be 'relu' or 'none', got '" << act->second << "'";
    return mxnet::ext::MX_FAIL;
  }
  *relu = act != attrs.end() && act->second == "relu";
  return mxnet::ext::MX_SUCCESS;
}

inline mxnet::ext::MXReturnValue infer_float32(const char* op, std::vector<int>* in, std::vector<int>* out) {
  for (int& t : *in) {
    if (t >= 0 && t != mxnet::ext::kFloat32) {
      MX_ERROR_MSG << op << " supports float32 only";
      return mxnet::ext::MX_FAIL;
    }
    t = mxnet::ext::kFloat32;
  }
  (*out)[0] = mxnet::ext::kFloat32;
  return mxnet::ext::MX_SUCCESS;
}

// Checks data (B, C, H, W), then fills unknown weight/bias shapes with the expected ones
// and checks known ones; the forms name the layouts in errors, e.g. "(C, 1, 3, 3)", "(C,)".
inline mxnet::ext::MXReturnValue layer_shapes(const char* op, std::vector<std::vector<unsigned int>>* in,
                                              const std::vector<unsigned int>& weight, const char* weight_form,
                                              unsigned int bias, const char* bias_form) {
  if ((*in)[0].size() != 4) {
    MX_ERROR_MSG << op << ": data must be (B, C, H, W)";
    return mxnet::ext::MX_FAIL;
  }
  auto& w = (*in)[1];
  auto& b = (*in)[2];
  if (w.empty()) w = weight;
  if (b.empty()) b = {bias};
  if (w != weight) {
    MX_ERROR_MSG << op << ": weight must be " << weight_form << " = (" << weight[0] << ", " << weight[1] << ", "
                 << weight[2] << ", " << weight[3] << ")";
    return mxnet::ext::MX_FAIL;
  }
  if (b.size() != 1 || b[0] != bias) {
    MX_ERROR_MSG << op << ": bias must be " << bias_form << " = (" << bias << ",)";
    return mxnet::ext::MX_FAIL;
  }
  return mxnet::ext::MX_SUCCESS;
}

}  // namespace sdu

#endif  // SDU_EXT_COMMON_H_
