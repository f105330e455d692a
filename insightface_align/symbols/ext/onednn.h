// The one oneDNN CPU engine the library's oneDNN operators (sdu_wino_conv and the INT8
// operators of qmatmul.h) create their primitives, memories and streams on.
#ifndef SDU_EXT_ONEDNN_H_
#define SDU_EXT_ONEDNN_H_

#include "oneapi/dnnl/dnnl.hpp"

namespace sdu {

inline dnnl::engine& dnnl_cpu() {
  static dnnl::engine eng(dnnl::engine::kind::cpu, 0);
  return eng;
}

}  // namespace sdu

#endif  // SDU_EXT_ONEDNN_H_
