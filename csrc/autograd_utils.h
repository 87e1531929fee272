// The one autograd pattern of the families' C++ ops (csrc/*_autograd.cpp).
//
// FusedFunction<T> has the interface of torch::autograd::Function<T> that the
// families use (T::forward(ctx, args...), T::backward(ctx, grads), a context with
// save_for_backward, saved_data, needs_input_grad, set_materialize_grads,
// mark_non_differentiable) and the cost of a generated ATen autograd node: no node
// when no input needs a gradient, saved values in a small array rather than a
// string-keyed hash map, no per-input VariableInfo, no std::function per call. At
// small batch sizes a GAN step is bound by this host time (issue 11).
//
// Outputs never alias inputs (every fastgan kernel writes fresh tensors); an
// output that is not a differentiable floating-point tensor, or is marked
// non-differentiable, gets no gradient edge. Forward-mode AD and functorch
// transforms are refused, as torch::autograd::Function refuses them.
#pragma once

#include <ATen/FuncTorchTLS.h>
#include <ATen/core/Tensor.h>
#include <ATen/core/grad_mode.h>
#include <ATen/core/ivalue.h>
#include <ATen/core/LegacyTypeDispatch.h>
#include <c10/core/impl/LocalDispatchKeySet.h>
#include <c10/util/SmallVector.h>
#include <c10/util/Type.h>
#include <torch/csrc/autograd/function.h>
#include <torch/csrc/autograd/functions/utils.h>
#include <torch/csrc/autograd/saved_variable.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <mutex>
#include <optional>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "namespaces.h"

namespace fastgan {

using torch::autograd::variable_list;

// Runs `call` (a call of a differentiable fastgan op inside a backward formula) below
// the Autograd key when no graph is being built, i.e. in a first-order backward: the
// op's own autograd would record nothing and only cost host time. With
// create_graph=True (a double backward) the call goes through autograd as usual.
template <typename Call>
auto call_in_backward(const Call& call) {
  if (at::GradMode::is_enabled()) return call();
  at::AutoDispatchBelowADInplaceOrView guard;
  return call();
}

// Non-tensor values a forward keeps for its backward, by literal name.
class SavedValues {
 public:
  c10::IValue& operator[](const char* key) {
    for (auto& item : items_)  // keys are literals: mostly the same pointer, or a different first letter
      if (item.first == key || (item.first[0] == key[0] && std::strcmp(item.first, key) == 0)) return item.second;
    items_.emplace_back(key, c10::IValue());
    return items_.back().second;
  }

 private:
  c10::SmallVector<std::pair<const char*, c10::IValue>, 6> items_;
};

template <class T>
struct FusedNode;

class FusedContext {
 public:
  SavedValues saved_data;

  void save_for_backward(variable_list to_save) { to_save_ = std::move(to_save); }
  void mark_non_differentiable(const variable_list& outputs) {
    for (const auto& t : outputs) non_differentiable_.push_back(t.unsafeGetTensorImpl());
  }
  // Whether backward receives zeros (true, the default) or undefined tensors for
  // outputs that got no gradient.
  void set_materialize_grads(bool value) { materialize_grads_ = value; }
  // The saved tensors, checked against in-place modification since forward. A
  // first-order backward (no graph is built) reads a saved output's data as saved,
  // without the new autograd wrapper SavedVariable::unpack makes for it; any other
  // case (a double backward, saved-tensor hooks, a modified or released tensor)
  // goes through unpack, with its errors.
  variable_list get_saved_variables() const {
    variable_list out;
    out.reserve(saved_.size());
    const bool first_order = !at::GradMode::is_enabled();
    for (size_t i = 0; i < saved_.size(); ++i) {
      if (first_order) {
        std::optional<at::Tensor> data = saved_[i].get_raw_data();
        if (data.has_value() && data->defined() && data->_version() == saved_versions_[i]) {
          out.push_back(*std::move(data));
          continue;
        }
      }
      out.push_back(saved_[i].unpack(node_->getptr()));
    }
    return out;
  }
  // Whether the gradient of the i-th tensor input (counting present tensors only) is needed.
  bool needs_input_grad(size_t i) const { return node_->task_should_compute_output(i); }

 private:
  template <class T>
  friend struct FusedFunction;
  template <class T>
  friend struct FusedNode;

  bool is_non_differentiable(const at::Tensor& t) const {
    for (const auto* impl : non_differentiable_)
      if (impl == t.unsafeGetTensorImpl()) return true;
    return false;
  }

  variable_list to_save_;
  std::vector<torch::autograd::SavedVariable> saved_;
  c10::SmallVector<uint32_t, 4> saved_versions_;  // of each saved tensor when saved
  c10::SmallVector<const at::TensorImpl*, 2> non_differentiable_;
  bool materialize_grads_ = true;
  torch::autograd::Node* node_ = nullptr;
};

template <class T>
struct FusedNode final : torch::autograd::Node {
  FusedContext ctx;
  uint64_t tensor_args = 0;  // bit i: forward argument i was a present tensor (has an edge)
  size_t num_args = 0;

  variable_list apply(variable_list&& grads) override {
    std::lock_guard<std::mutex> lock(mutex_);
    if (ctx.materialize_grads_)
      for (size_t i = 0; i < grads.size(); ++i)
        if (!grads[i].defined() && !input_metadata(i).was_default_constructed())
          grads[i] = input_metadata(i).zeros_like();
    variable_list per_arg = T::backward(&ctx, std::move(grads));
    TORCH_CHECK(per_arg.size() >= num_args, name(), " returned ", per_arg.size(), " gradients for ", num_args,
                " arguments");
    size_t edge = 0;  // the gradients of present tensor arguments, moved to the front in order
    for (size_t i = 0; i < num_args; ++i)
      if ((tensor_args >> i) & 1) {
        if (edge != i) per_arg[edge] = std::move(per_arg[i]);
        ++edge;
      }
    per_arg.resize(edge);
    return per_arg;
  }

  void release_variables() override {
    std::lock_guard<std::mutex> lock(mutex_);
    for (auto& s : ctx.saved_) s.reset_data();
  }

  // The Function's name without its namespace argument (the same node for both namespaces).
  std::string name() const override {
    std::string type = c10::demangle_type<T>();
    return type.substr(0, type.find('<'));
  }
};

template <class T>
struct FusedFunction {
  template <class... Args>
  static auto apply(Args&&... args) {
    static_assert(sizeof...(Args) <= 64, "FusedFunction: at most 64 arguments");
    if (const auto& functorch_tls = at::functorch::functorchTLSAccessor())
      functorch_tls->checkSupportsCppAutogradFunction();
    Inputs inputs;  // the present tensor arguments, borrowed
    uint64_t tensor_args = 0;
    size_t index = 0;
    (collect(inputs, tensor_args, index++, args), ...);
    bool requires_grad = false;
    for (const at::Tensor* t : inputs) {
      TORCH_CHECK(!torch::autograd::isFwGradDefined(*t), c10::demangle_type<T>(),
                  ": forward-mode AD is not implemented for fastgan ops");
      requires_grad = requires_grad || (t->defined() && t->requires_grad());
    }

    FusedContext no_graph;
    FusedContext* ctx = &no_graph;
    decltype(make_node()) node;
    if (requires_grad && at::GradMode::is_enabled()) {
      node = make_node();
      torch::autograd::edge_list edges;
      edges.reserve(inputs.size());
      for (const at::Tensor* t : inputs)
        edges.push_back(t->defined() ? torch::autograd::impl::gradient_edge(*t) : torch::autograd::Edge());
      node->set_next_edges(std::move(edges));
      node->tensor_args = tensor_args;
      node->num_args = sizeof...(Args);
      ctx = &node->ctx;
      ctx->node_ = node.get();
    }
    auto outputs = [&] {
      at::AutoGradMode no_grad(false);
      return T::forward(ctx, std::forward<Args>(args)...);
    }();
    if (node) {
      Attached attached;  // the outputs given this node as their grad_fn
      if constexpr (std::is_same_v<std::decay_t<decltype(outputs)>, at::Tensor>) {
        attach(*node, inputs, outputs, attached);
      } else {
        for (auto& out : outputs) attach(*node, inputs, out, attached);
      }
      auto& saved = node->ctx.saved_;
      saved.reserve(node->ctx.to_save_.size());
      for (const auto& t : node->ctx.to_save_) {
        const bool is_output = t.defined() && std::find(attached.begin(), attached.end(),
                                                        t.unsafeGetTensorImpl()) != attached.end();
        saved.emplace_back(t, is_output);
        node->ctx.saved_versions_.push_back(t.defined() ? t._version() : 0);
      }
      node->ctx.to_save_.clear();
    }
    return outputs;
  }

 private:
  static auto make_node() {
    using Ptr = decltype(std::declval<torch::autograd::Node&>().getptr());
    if constexpr (std::is_same_v<Ptr, std::shared_ptr<torch::autograd::Node>>) {
      return std::make_shared<FusedNode<T>>();
    } else {
      return c10::make_intrusive<FusedNode<T>>();
    }
  }

  using Inputs = c10::SmallVector<const at::Tensor*, 8>;
  using Attached = c10::SmallVector<const at::TensorImpl*, 4>;

  static void collect(Inputs& inputs, uint64_t& mask, size_t index, const at::Tensor& t) {
    mask |= uint64_t{1} << index;
    inputs.push_back(&t);
  }
  static void collect(Inputs& inputs, uint64_t& mask, size_t index, const std::optional<at::Tensor>& t) {
    if (!t.has_value() || !t->defined()) return;
    mask |= uint64_t{1} << index;
    inputs.push_back(&*t);
  }
  template <class Other>
  static void collect(Inputs&, uint64_t&, size_t, const Other&) {}

  static void attach(FusedNode<T>& node, const Inputs& inputs, at::Tensor& out, Attached& attached) {
    if (!out.defined() || node.ctx.is_non_differentiable(out) ||
        !torch::autograd::isDifferentiableType(out.scalar_type())) {
      node.add_input_metadata(torch::autograd::Node::undefined_input());
      return;
    }
    for (const at::Tensor* t : inputs)
      TORCH_INTERNAL_ASSERT(!t->is_same(out), c10::demangle_type<T>(),
                            ": an output aliases an input");
    torch::autograd::set_history(out, node.getptr());
    attached.push_back(out.unsafeGetTensorImpl());
  }
};

}  // namespace fastgan
