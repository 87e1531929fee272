// fastgan._C.backward and fastgan._C.grad_with_graph (csrc/backward_call.cpp).
#pragma once

#include <Python.h>

namespace fastgan {

// backward(loss) -> None: loss.backward() for a plain scalar tensor; NotImplemented otherwise.
PyObject* backward_call(PyObject* module, PyObject* loss);

// grad_with_graph(total, inputs) -> Tensor | None: torch.autograd.grad(total, inputs,
// create_graph=True, allow_unused=True)[0] for plain tensors; NotImplemented otherwise.
PyObject* grad_with_graph_call(PyObject* module, PyObject* const* args, Py_ssize_t nargs);

}  // namespace fastgan
