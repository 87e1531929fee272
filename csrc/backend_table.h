// fastgan._C.backend_table (csrc/backend_table.cpp).
#pragma once

#include <Python.h>

namespace fastgan {

// backend_table(impls, resolve_backend, op, backend_globals) -> BackendTable:
// table(backend, tensor, *others) returns impls[resolve_backend(backend or the
// default, tensor.device, op)], resolved once per (name, device type,
// TRITON_INTERPRET), or None: no entry, resolve_backend refused, or tensor (and each
// of others that is not None) is not a plain tensor with elements (a fast path's
// call; the checked path takes the rest).
PyObject* make_backend_table(PyObject* module, PyObject* args);

}  // namespace fastgan
