// fastgan._C.backward and fastgan._C.grad_with_graph: a training step's two entries into
// the autograd engine, without torch.autograd's Python wrapper.
//
// loss.backward() and torch.autograd.grad spend 21 and 17 us of Python per call before
// the engine starts (argument normalisation, the implicit gradient, overrides); a small
// GAN step on a GPU is bound by that host time. These call the C++ API with the GIL
// released (the engine runs Python hooks and autograd functions on its own threads).
// They return NotImplemented for what they do not handle (a Tensor subclass, a
// torch-function mode), and fastgan/ops/_caller.py then calls the Python API.
#include <ATen/PythonTorchFunctionTLS.h>
#include <torch/csrc/Exceptions.h>
#include <torch/csrc/autograd/autograd.h>
#include <torch/csrc/autograd/python_variable.h>

#include "backward_call.h"

namespace fastgan {
namespace {

bool plain(PyObject* obj) { return THPVariable_CheckExact(obj) && !at::impl::torch_function_mode_enabled(); }

}  // namespace

PyObject* backward_call(PyObject*, PyObject* loss_obj) {
  HANDLE_TH_ERRORS
  if (!plain(loss_obj)) Py_RETURN_NOTIMPLEMENTED;
  const at::Tensor& loss = THPVariable_Unpack(loss_obj);
  {
    pybind11::gil_scoped_release no_gil;
    torch::autograd::backward({loss});
  }
  Py_RETURN_NONE;
  END_HANDLE_TH_ERRORS
}

PyObject* grad_with_graph_call(PyObject*, PyObject* const* args, Py_ssize_t nargs) {
  HANDLE_TH_ERRORS
  TORCH_CHECK_TYPE(nargs == 2, "grad_with_graph(total, inputs) takes 2 arguments, got ", nargs);
  if (!plain(args[0]) || !plain(args[1])) Py_RETURN_NOTIMPLEMENTED;
  torch::autograd::variable_list grads;
  {
    pybind11::gil_scoped_release no_gil;
    grads = torch::autograd::grad({THPVariable_Unpack(args[0])}, {THPVariable_Unpack(args[1])}, {},
                                  /*retain_graph=*/true, /*create_graph=*/true, /*allow_unused=*/true);
  }
  if (!grads[0].defined()) Py_RETURN_NONE;
  return THPVariable_Wrap(std::move(grads[0]));
  END_HANDLE_TH_ERRORS
}

}  // namespace fastgan
