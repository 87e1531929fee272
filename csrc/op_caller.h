// fastgan._C.op_caller (csrc/op_caller.cpp).
#pragma once

#include <Python.h>

namespace fastgan {

// op_caller(overload, name, overload_name, n_outputs, bound) -> OpCaller: calls the
// registered op `name`.`overload_name` (torch.ops' `overload` for what it does not
// convert) with its positional arguments followed by the tuple `bound` (numbers and
// bools), and returns its first n_outputs outputs (one: the tensor alone; none: None).
PyObject* make_op_caller(PyObject* module, PyObject* args);

}  // namespace fastgan
