// fastgan._C.backend_table: the fast paths' choice of implementation, in one C call.
//
// Every eager fast path picks its family's implementation for the backend that
// fastgan._backend.resolve_backend names for (the backend argument, else the
// process-wide default, else $FASTGAN_BACKEND, else "auto") and the tensors'
// device. In Python that choice costs about 0.4 us per op call (the default and
// environment lookups, a torch.device object, a keyed cache), as much as the
// fused op's own dispatch. A BackendTable makes the same choice from the tensor's
// device type, and asks resolve_backend only the first time it meets a
// (requested name, device type, TRITON_INTERPRET) triple: resolve_backend stays
// the one place that decides, and its answers depend on nothing else. It then
// calls the implementation (an op caller) with the call's arguments, so a fast
// path is one call from Python.
#include <torch/csrc/Device.h>
#include <torch/csrc/Exceptions.h>
#include <torch/csrc/autograd/python_variable.h>

#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "backend_table.h"
#include "vectorcall_type.h"

namespace fastgan {
namespace {

struct Resolved {
  std::string requested;  // the backend name asked for, as given
  c10::DeviceType device_type;
  bool interpret;  // TRITON_INTERPRET=1, for "triton" only
  PyObject* impl;  // owned; Py_None where the table has no entry for the backend
};

struct BackendTable {
  PyObject_HEAD
  vectorcallfunc vectorcall;
  PyObject* impls;      // dict: backend name -> implementation
  PyObject* resolve;    // resolve_backend(backend, device, op)
  PyObject* op;         // the op's name, for resolve_backend
  PyObject* globals;    // fastgan._backend's globals, for the process-wide default
  PyObject* default_key;  // "_default"
  std::vector<Resolved>* cache;
};

// A plain tensor (no subclass) with elements: what a fast path takes.
bool nonempty_tensor(PyObject* obj) { return THPVariable_CheckExact(obj) && THPVariable_Unpack(obj).numel() > 0; }

bool env_is(const char* name, const char* value) {
  const char* set = std::getenv(name);
  return set != nullptr && std::strcmp(set, value) == 0;
}

// The implementation for (requested, the device type), resolved once; nullptr with no
// Python error set when resolve_backend refuses (the caller's checked path says why).
PyObject* lookup(BackendTable* self, const char* requested_name, c10::DeviceType device_type) {
  const bool interpret = std::strcmp(requested_name, "triton") == 0 && env_is("TRITON_INTERPRET", "1");
  for (const Resolved& r : *self->cache)
    if (r.device_type == device_type && r.interpret == interpret && r.requested == requested_name) return r.impl;
  const std::string requested(requested_name);  // resolve_backend may change the default or the environment
  PyObject* device = THPDevice_New(c10::Device(device_type));
  if (device == nullptr) return nullptr;
  PyObject* name = PyObject_CallFunction(self->resolve, "sOO", requested.c_str(), device, self->op);
  Py_DECREF(device);
  if (name == nullptr) {
    PyErr_Clear();
    return nullptr;
  }
  PyObject* impl = PyDict_GetItemWithError(self->impls, name);
  Py_DECREF(name);
  if (impl == nullptr && PyErr_Occurred()) return nullptr;
  impl = impl == nullptr ? Py_None : impl;
  Py_INCREF(impl);
  self->cache->push_back({requested, device_type, interpret, impl});
  return impl;
}

// The tensor whose device picks the implementation: the call's first argument that is
// not None (an absent optional tensor, as vae_loss's recon for the KL alone), or the
// first element of a list or tuple of tensors (clip_'s parameters); nullptr if none.
PyObject* leading_tensor(PyObject* const* args, Py_ssize_t n) {
  Py_ssize_t i = 0;
  while (i < n && args[i] == Py_None) ++i;
  if (i == n) return nullptr;
  PyObject* first = args[i];
  if ((PyList_CheckExact(first) || PyTuple_CheckExact(first)) && PySequence_Fast_GET_SIZE(first) > 0)
    first = PySequence_Fast_ITEMS(first)[0];
  return nonempty_tensor(first) ? first : nullptr;
}

PyObject* call_table(PyObject* self_obj, PyObject* const* args, size_t nargsf, PyObject* kwnames) {
  HANDLE_TH_ERRORS
  auto* self = reinterpret_cast<BackendTable*>(self_obj);
  const Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
  PyObject* lead = kwnames == nullptr && nargs >= 2 ? leading_tensor(args + 1, nargs - 1) : nullptr;
  if (lead == nullptr) Py_RETURN_NOTIMPLEMENTED;
  for (Py_ssize_t i = 2; i < nargs; ++i)  // the call's other tensors: plain, with elements
    if (THPVariable_Check(args[i]) && !nonempty_tensor(args[i])) Py_RETURN_NOTIMPLEMENTED;
  PyObject* backend = args[0];
  if (backend == Py_None) {
    backend = PyDict_GetItemWithError(self->globals, self->default_key);
    if (backend == nullptr && PyErr_Occurred()) return nullptr;
  }
  const char* requested = nullptr;
  if (backend != nullptr && backend != Py_None) {
    if (!PyUnicode_CheckExact(backend)) Py_RETURN_NOTIMPLEMENTED;
    requested = PyUnicode_AsUTF8(backend);
    if (requested == nullptr) return nullptr;
  } else {
    const char* env = backend_env_value();
    requested = env != nullptr ? env : "auto";
  }
  PyObject* impl = lookup(self, requested, THPVariable_Unpack(lead).device().type());
  if (impl == nullptr) {
    if (PyErr_Occurred()) return nullptr;
    Py_RETURN_NOTIMPLEMENTED;
  }
  if (impl == Py_None) Py_RETURN_NOTIMPLEMENTED;
  return PyObject_Vectorcall(impl, args + 1, nargs - 1, nullptr);
  END_HANDLE_TH_ERRORS
}

void dealloc(PyObject* self_obj) {
  auto* self = reinterpret_cast<BackendTable*>(self_obj);
  Py_XDECREF(self->impls);
  Py_XDECREF(self->resolve);
  Py_XDECREF(self->op);
  Py_XDECREF(self->globals);
  Py_XDECREF(self->default_key);
  if (self->cache != nullptr)
    for (Resolved& r : *self->cache) Py_DECREF(r.impl);
  delete self->cache;
  Py_TYPE(self_obj)->tp_free(self_obj);
}

PyTypeObject backend_table_type = vectorcall_type<BackendTable>(
    "fastgan._C.BackendTable", dealloc,
    "table(backend, *args): the family's implementation for the resolved backend called with args, or "
    "NotImplemented.");

}  // namespace

const char* backend_env_value() {
  const char* value = std::getenv("FASTGAN_BACKEND");
  return value != nullptr && *value != '\0' ? value : nullptr;
}

PyObject* make_backend_table(PyObject*, PyObject* args) {
  HANDLE_TH_ERRORS
  PyObject *impls = nullptr, *resolve = nullptr, *op = nullptr, *globals = nullptr;
  if (!PyArg_ParseTuple(args, "O!OUO!", &PyDict_Type, &impls, &resolve, &op, &PyDict_Type, &globals)) return nullptr;
  if (PyType_Ready(&backend_table_type) < 0) return nullptr;
  PyObject* default_key = PyUnicode_InternFromString("_default");
  if (default_key == nullptr) return nullptr;
  auto* self = PyObject_New(BackendTable, &backend_table_type);
  if (self == nullptr) {
    Py_DECREF(default_key);
    return nullptr;
  }
  self->vectorcall = call_table;
  self->impls = PyDict_Copy(impls);
  if (self->impls == nullptr) {
    Py_DECREF(default_key);
    self->resolve = self->op = self->globals = self->default_key = nullptr;
    self->cache = nullptr;
    Py_DECREF(self);
    return nullptr;
  }
  Py_INCREF(resolve);
  Py_INCREF(op);
  Py_INCREF(globals);
  self->resolve = resolve;
  self->op = op;
  self->globals = globals;
  self->default_key = default_key;
  self->cache = new std::vector<Resolved>();
  return reinterpret_cast<PyObject*>(self);
  END_HANDLE_TH_ERRORS
}

}  // namespace fastgan
