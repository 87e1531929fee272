// The Python type of a fastgan._C object called through vectorcall (an OpCaller, a
// BackendTable): Object is a PyObject_HEAD struct with a `vectorcall` member.
#pragma once

#include <Python.h>

#include <cstddef>

namespace fastgan {

template <class Object>
PyTypeObject vectorcall_type(const char* name, destructor dealloc, const char* doc) {
  PyTypeObject type{PyVarObject_HEAD_INIT(nullptr, 0)};
  type.tp_name = name;
  type.tp_basicsize = sizeof(Object);
  type.tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_VECTORCALL;
  type.tp_vectorcall_offset = offsetof(Object, vectorcall);
  type.tp_call = PyVectorcall_Call;
  type.tp_dealloc = dealloc;
  type.tp_doc = doc;
  return type;
}

}  // namespace fastgan
