// fastgan._C.backend_table (csrc/backend_table.cpp).
#pragma once

#include <Python.h>

namespace fastgan {

// backend_table(impls, resolve_backend, op, backend_globals) -> BackendTable:
// table(backend, *args) returns impl(*args) for impl = impls[resolve_backend(backend or
// the default, device, op)], resolved once per (name, device type, TRITON_INTERPRET),
// with the device of the first of args that is not None (a tensor, or a list's first
// tensor). NotImplemented when it declines: no entry, resolve_backend refused, or a
// tensor of the call that is not a plain tensor with elements (a fast path's call; the
// checked path takes the rest).
PyObject* make_backend_table(PyObject* module, PyObject* args);

// $FASTGAN_BACKEND through getenv(3), which sees os.environ's changes; nullptr when
// unset or empty.
const char* backend_env_value();

}  // namespace fastgan
