// The fastgan._C extension module: operator schemas and build information.
//
// Importing fastgan._C runs the static registrars of every kernel file; the
// Python module itself is empty (no pybind11), as in pytorch/extension-cpp.
#include <Python.h>
#include <torch/library.h>

#include <string>

#ifndef FASTGAN_SOURCE_HASH
#define FASTGAN_SOURCE_HASH "unknown"
#endif
#ifndef FASTGAN_TORCH_VERSION
#define FASTGAN_TORCH_VERSION "unknown"
#endif

extern "C" {
PyObject* PyInit__C(void) {
  static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
  return PyModule_Create(&module_def);
}
}

namespace fastgan {

std::string build_info() {
  std::string info = std::string("source_hash=") + FASTGAN_SOURCE_HASH + ";torch=" + FASTGAN_TORCH_VERSION;
#ifdef FASTGAN_WITH_CUDA
  info += ";cuda=1";
#else
  info += ";cuda=0";
#endif
  return info;
}

TORCH_LIBRARY(fastgan, m) {
  m.def("build_info() -> str", &build_info);
  // Weight clipping (THEORY.md section 3): clamp every tensor into [-c, c] in place.
  m.def("clip_(Tensor(a!)[] tensors, float clip_value) -> ()");
  // torch.optim.RMSprop's step followed by clip_, in one pass. grad_avgs is used
  // when centered, momentum_buffers when momentum > 0 (else pass empty lists).
  m.def(
      "rmsprop_clip_(Tensor(a!)[] params, Tensor[] grads, Tensor(b!)[] square_avgs, Tensor(c!)[] grad_avgs, "
      "Tensor(d!)[] momentum_buffers, float lr, float alpha, float eps, float weight_decay, float momentum, "
      "bool centered, bool maximize, float clip_value) -> ()");
}

}  // namespace fastgan
