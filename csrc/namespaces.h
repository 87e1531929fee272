// The two namespaces of every family's ops: fastgan:: (the C++ CPU and CUDA kernels)
// and fastgan_triton:: (the Triton kernels, whose bodies fastgan/ops/_triton.py
// registers from Python). Both are defined here, in C++, from one schema each, and one
// C++ autograd serves both (csrc/autograd_utils.h): a family's Function<NS> calls its
// forward and backward ops in the namespace NS whose autograd kernel it is.
#pragma once

#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/library.h>

#include <string>

namespace fastgan {

enum class OpNamespace { kNative, kTriton };

inline const char* namespace_name(OpNamespace ns) { return ns == OpNamespace::kNative ? "fastgan" : "fastgan_triton"; }

// The op `name` of namespace `ns` (a call site keeps the handle in a static).
inline c10::OperatorHandle family_op(OpNamespace ns, const char* name) {
  return c10::Dispatcher::singleton().findSchemaOrThrow((std::string(namespace_name(ns)) + "::" + name).c_str(), "");
}

}  // namespace fastgan

// A family's schemas in both namespaces: define(torch::Library&) holds its m.def calls.
#define FASTGAN_DEFINE_OPS(define)                  \
  TORCH_LIBRARY_FRAGMENT(fastgan, m) { define(m); } \
  TORCH_LIBRARY_FRAGMENT(fastgan_triton, m) { define(m); }

// A family's autograd kernels in both namespaces: template <OpNamespace NS>
// reg(torch::Library&) holds its m.impl calls.
#define FASTGAN_AUTOGRAD_KERNELS(reg)                                                     \
  TORCH_LIBRARY_IMPL(fastgan, Autograd, m) { reg<::fastgan::OpNamespace::kNative>(m); } \
  TORCH_LIBRARY_IMPL(fastgan_triton, Autograd, m) { reg<::fastgan::OpNamespace::kTriton>(m); }

// A family's autocast kernels (csrc/autocast.h) in both namespaces, for CPU and CUDA tensors.
#define FASTGAN_AUTOCAST_KERNELS(reg)                                                                 \
  TORCH_LIBRARY_IMPL(fastgan, AutocastCPU, m) { reg<::fastgan::OpNamespace::kNative>(m); }          \
  TORCH_LIBRARY_IMPL(fastgan, AutocastCUDA, m) { reg<::fastgan::OpNamespace::kNative>(m); }         \
  TORCH_LIBRARY_IMPL(fastgan_triton, AutocastCPU, m) { reg<::fastgan::OpNamespace::kTriton>(m); }   \
  TORCH_LIBRARY_IMPL(fastgan_triton, AutocastCUDA, m) { reg<::fastgan::OpNamespace::kTriton>(m); }
