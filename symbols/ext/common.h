// Helpers shared by the project's MXNet operators (lib_api custom-operator callbacks).
#ifndef SDU_EXT_COMMON_H_
#define SDU_EXT_COMMON_H_

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

// A scratch buffer every element of which the caller writes: no zero-fill pass
// (std::vector would clear tens of MB per call in the backward passes).
template <typename T>
inline std::unique_ptr<T[]> scratch(size_t n) {
  return std::unique_ptr<T[]>(new T[n]);
}

}  // namespace sdu

#endif  // SDU_EXT_COMMON_H_
