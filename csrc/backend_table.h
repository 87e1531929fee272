// fastgan._C.backend_table (csrc/backend_table.cpp).
#pragma once

#include <Python.h>

namespace fastgan {

// backend_table(impls, resolve_backend, op, backend_globals) -> BackendTable:
// table(backend, tensor) returns impls[resolve_backend(backend or the default,
// tensor.device, op)], resolved once per (name, device type, TRITON_INTERPRET), or
// None (no entry, not a plain tensor, or resolve_backend refused).
PyObject* make_backend_table(PyObject* module, PyObject* args);

}  // namespace fastgan
