// fastgan._C.op_caller: a registered op, called from Python for a fraction of
// torch.ops' host time.
//
// A torch.ops call converts its Python arguments against the schema on every call
// (an isinstance per tensor through Tensor's metaclass), then calls the boxed
// kernel and wraps every output. At a GAN step's tiny sizes that costs more than
// the fused kernel. An OpCaller reads the schema once, when it is made: a call
// converts plain tensors, ints, floats and bools by their fixed kinds, calls the
// dispatcher (autograd, autocast, CUDA graphs and Python dispatch modes all
// happen there, as for torch.ops), and wraps only the outputs the front end
// uses. Its last arguments may be bound when it is made (a family's codes), so a
// call passes only the tensors. Arguments it does not convert (a Tensor subclass, a
// torch-function mode, keywords) go to the op's torch.ops overload, which handles them.
#include <ATen/PythonTorchFunctionTLS.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/csrc/Exceptions.h>
#include <torch/csrc/autograd/python_variable.h>

#include <string>
#include <vector>

#include "op_caller.h"
#include "vectorcall_type.h"

namespace fastgan {
namespace {

enum class ArgKind : uint8_t { kTensor, kOptionalTensor, kTensorList, kInt, kFloat, kBool };

ArgKind kind_of(const c10::Argument& arg, const std::string& op) {
  const auto& type = arg.type();
  switch (type->kind()) {
    case c10::TypeKind::TensorType:
      return ArgKind::kTensor;
    case c10::TypeKind::IntType:
      return ArgKind::kInt;
    case c10::TypeKind::FloatType:
      return ArgKind::kFloat;
    case c10::TypeKind::BoolType:
      return ArgKind::kBool;
    case c10::TypeKind::OptionalType:
      if (type->castRaw<c10::OptionalType>()->getElementType()->kind() == c10::TypeKind::TensorType) {
        return ArgKind::kOptionalTensor;
      }
      break;
    case c10::TypeKind::ListType:
      if (type->castRaw<c10::ListType>()->getElementType()->kind() == c10::TypeKind::TensorType) {
        return ArgKind::kTensorList;
      }
      break;
    default:
      break;
  }
  TORCH_CHECK(false, "op_caller: ", op, "'s argument ", arg.name(), " has type ", type->str(),
              ", which an OpCaller does not convert");
}

struct OpCaller {
  PyObject_HEAD
  vectorcallfunc vectorcall;
  PyObject* overload;  // torch.ops' OpOverload: the call for arguments not converted here
  c10::OperatorHandle* op;
  std::vector<ArgKind>* kinds;
  PyObject* bound;  // a tuple of the last arguments, fixed when the caller was made (codes)
  torch::jit::Stack* bound_values;  // the same, converted
  Py_ssize_t n_outputs;  // outputs returned: 1 -> the first, alone; n -> a tuple of the first n
};

bool plain_tensor(PyObject* obj) { return THPVariable_CheckExact(obj); }

// Appends obj as an IValue of `kind`; false (no Python error set) when it is not the
// plain value this kind converts.
bool push_arg(torch::jit::Stack& stack, PyObject* obj, ArgKind kind) {
  switch (kind) {
    case ArgKind::kTensor:
      if (!plain_tensor(obj)) return false;
      stack.emplace_back(THPVariable_Unpack(obj));
      return true;
    case ArgKind::kOptionalTensor:
      if (obj == Py_None) {
        stack.emplace_back();
        return true;
      }
      if (!plain_tensor(obj)) return false;
      stack.emplace_back(THPVariable_Unpack(obj));
      return true;
    case ArgKind::kTensorList: {
      if (!PyList_CheckExact(obj) && !PyTuple_CheckExact(obj)) return false;
      const Py_ssize_t n = PySequence_Fast_GET_SIZE(obj);
      PyObject** items = PySequence_Fast_ITEMS(obj);
      c10::List<at::Tensor> list;
      list.reserve(n);
      for (Py_ssize_t i = 0; i < n; ++i) {
        if (!plain_tensor(items[i])) return false;
        list.push_back(THPVariable_Unpack(items[i]));
      }
      stack.emplace_back(std::move(list));
      return true;
    }
    case ArgKind::kInt: {
      if (!PyLong_CheckExact(obj)) return false;
      const long long value = PyLong_AsLongLong(obj);
      if (value == -1 && PyErr_Occurred()) {
        PyErr_Clear();
        return false;
      }
      stack.emplace_back(static_cast<int64_t>(value));
      return true;
    }
    case ArgKind::kFloat:
      if (PyFloat_CheckExact(obj)) {
        stack.emplace_back(PyFloat_AS_DOUBLE(obj));
        return true;
      }
      if (!PyLong_CheckExact(obj)) return false;
      stack.emplace_back(PyLong_AsDouble(obj));
      if (PyErr_Occurred()) {
        PyErr_Clear();
        return false;
      }
      return true;
    case ArgKind::kBool:
      if (!PyBool_Check(obj)) return false;
      stack.emplace_back(obj == Py_True);
      return true;
  }
  return false;
}

// torch.ops' result as a converted call returns it: None, the first output, or a tuple
// of the first n_outputs.
PyObject* first_outputs(PyObject* result, Py_ssize_t n_outputs) {
  if (result != nullptr && n_outputs == 0) {
    Py_DECREF(result);
    Py_RETURN_NONE;
  }
  if (result == nullptr || !PyTuple_Check(result)) return result;
  PyObject* out = n_outputs == 1 ? PyTuple_GET_ITEM(result, 0) : PyTuple_GetSlice(result, 0, n_outputs);
  if (n_outputs == 1) Py_INCREF(out);
  Py_DECREF(result);
  return out;
}

PyObject* call_op(PyObject* self_obj, PyObject* const* args, size_t nargsf, PyObject* kwnames) {
  HANDLE_TH_ERRORS
  auto* self = reinterpret_cast<OpCaller*>(self_obj);
  const Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
  const auto& kinds = *self->kinds;
  const auto& bound = *self->bound_values;
  torch::jit::Stack stack;
  bool converted = kwnames == nullptr && nargs + bound.size() == kinds.size() &&
                   !at::impl::torch_function_mode_enabled();
  if (converted) {
    stack.reserve(std::max<size_t>(kinds.size(), self->op->schema().returns().size()));
    for (Py_ssize_t i = 0; i < nargs && converted; ++i) converted = push_arg(stack, args[i], kinds[i]);
    stack.insert(stack.end(), bound.begin(), bound.end());
  }
  if (!converted) {
    if (bound.empty())
      return first_outputs(PyObject_Vectorcall(self->overload, args, nargsf, kwnames), self->n_outputs);
    // torch.ops' call with the bound arguments after the positional ones, keywords last
    const Py_ssize_t n_bound = PyTuple_GET_SIZE(self->bound);
    const Py_ssize_t n_kw = kwnames == nullptr ? 0 : PyTuple_GET_SIZE(kwnames);
    std::vector<PyObject*> all(args, args + nargs);
    for (Py_ssize_t i = 0; i < n_bound; ++i) all.push_back(PyTuple_GET_ITEM(self->bound, i));
    all.insert(all.end(), args + nargs, args + nargs + n_kw);
    return first_outputs(PyObject_Vectorcall(self->overload, all.data(), nargs + n_bound, kwnames),
                         self->n_outputs);
  }
  {
    pybind11::gil_scoped_release no_gil;
    self->op->callBoxed(stack);
  }
  if (self->n_outputs == 0) Py_RETURN_NONE;
  if (self->n_outputs == 1) return THPVariable_Wrap(std::move(stack[0]).toTensor());
  PyObject* tuple = PyTuple_New(self->n_outputs);
  if (tuple == nullptr) return nullptr;
  for (Py_ssize_t i = 0; i < self->n_outputs; ++i) {
    PyObject* item = THPVariable_Wrap(std::move(stack[i]).toTensor());
    if (item == nullptr) {
      Py_DECREF(tuple);
      return nullptr;
    }
    PyTuple_SET_ITEM(tuple, i, item);
  }
  return tuple;
  END_HANDLE_TH_ERRORS
}

void dealloc(PyObject* self_obj) {
  auto* self = reinterpret_cast<OpCaller*>(self_obj);
  Py_XDECREF(self->overload);
  Py_XDECREF(self->bound);
  delete self->op;
  delete self->kinds;
  delete self->bound_values;
  Py_TYPE(self_obj)->tp_free(self_obj);
}

PyObject* repr(PyObject* self_obj) {
  auto* self = reinterpret_cast<OpCaller*>(self_obj);
  return PyUnicode_FromFormat("<fastgan OpCaller of %R>", self->overload);
}

PyTypeObject op_caller_type = [] {
  PyTypeObject type = vectorcall_type<OpCaller>(
      "fastgan._C.OpCaller", dealloc,
      "A registered op's call with torch.ops' semantics and less host time (fastgan._C.op_caller).");
  type.tp_repr = repr;
  return type;
}();

}  // namespace

PyObject* make_op_caller(PyObject*, PyObject* args) {
  HANDLE_TH_ERRORS
  PyObject* overload = nullptr;
  const char* name = nullptr;
  const char* overload_name = nullptr;
  Py_ssize_t n_outputs = 0;
  PyObject* bound = nullptr;
  if (!PyArg_ParseTuple(args, "OssnO!", &overload, &name, &overload_name, &n_outputs, &PyTuple_Type, &bound))
    return nullptr;
  if (PyType_Ready(&op_caller_type) < 0) return nullptr;
  const c10::OperatorHandle op = c10::Dispatcher::singleton().findSchemaOrThrow(name, overload_name);
  const auto& schema = op.schema();
  const auto n_returns = static_cast<Py_ssize_t>(schema.returns().size());
  TORCH_CHECK(0 <= n_outputs && n_outputs <= n_returns, "op_caller: ", name, " has ", n_returns,
              " outputs; cannot return ", n_outputs);
  for (Py_ssize_t i = 0; i < n_outputs; ++i) {
    TORCH_CHECK(schema.returns()[i].type()->kind() == c10::TypeKind::TensorType, "op_caller: ", name,
                "'s output ", i, " is not a Tensor");
  }
  auto kinds = std::make_unique<std::vector<ArgKind>>();
  for (const auto& arg : schema.arguments()) kinds->push_back(kind_of(arg, name));
  const Py_ssize_t n_bound = PyTuple_GET_SIZE(bound), first_bound = kinds->size() - n_bound;
  TORCH_CHECK(n_bound <= static_cast<Py_ssize_t>(kinds->size()), "op_caller: ", name, " has ", kinds->size(),
              " arguments; cannot bind ", n_bound);
  auto bound_values = std::make_unique<torch::jit::Stack>();
  for (Py_ssize_t i = 0; i < n_bound; ++i) {
    const auto kind = (*kinds)[first_bound + i];
    TORCH_CHECK(kind == ArgKind::kInt || kind == ArgKind::kFloat || kind == ArgKind::kBool, "op_caller: ", name,
                "'s argument ", first_bound + i, " cannot be bound (only numbers and bools can)");
    TORCH_CHECK(push_arg(*bound_values, PyTuple_GET_ITEM(bound, i), kind), "op_caller: bound argument ", i,
                " of ", name, " does not convert to its kind");
  }
  auto* self = PyObject_New(OpCaller, &op_caller_type);
  if (self == nullptr) return nullptr;
  self->vectorcall = call_op;
  Py_INCREF(overload);
  self->overload = overload;
  self->op = new c10::OperatorHandle(op);
  self->kinds = kinds.release();
  Py_INCREF(bound);
  self->bound = bound;
  self->bound_values = bound_values.release();
  self->n_outputs = n_outputs;
  return reinterpret_cast<PyObject*>(self);
  END_HANDLE_TH_ERRORS
}

}  // namespace fastgan
