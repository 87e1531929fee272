// Host-side preparation shared by the CPU and CUDA launchers of bias_act,
// bias_act_grad and bias_act_grad2: argument checks (the Python front-end has
// already given users errors naming their argument; these guard memory safety of
// direct op calls) and the flat layout every kernel walks.
//
// Layout: the output is at::empty_like(lead) (dense inputs keep their strides:
// NCHW, channels-last, any permutation; others become contiguous), every other
// input is brought to the output's strides when it differs, and the kernels walk
// the n elements in memory order. Element o then has channel
// (o / inner) % channels, with inner = out.stride(dim): for a dense tensor the
// strides of its dimensions of size > 1 form a mixed radix.
#pragma once

#include <ATen/core/Tensor.h>
#include <ATen/ops/empty_like.h>
#include <c10/util/Exception.h>
#include <c10/util/Optional.h>

#include <algorithm>
#include <initializer_list>

#include "bias_act_math.h"
#include "empty.h"

namespace fastgan {
namespace bias_act {

struct FlatLayout {
  int64_t n = 0;         // elements
  int64_t inner = 1;     // elements sharing a channel consecutively in memory
  int64_t channels = 1;  // bias length (1 without a bias or bias gradient)
  int64_t dim = 0;       // the channel dimension, >= 0 (with a bias or bias gradient)
};

// `t` in the strides of `like` (a dense tensor of the same shape).
inline at::Tensor in_layout_of(const at::Tensor& t, const at::Tensor& like) {
  if (t.strides().equals(like.strides())) return t;
  return at::empty_like(like).copy_(t);
}

inline void check_act(const char* op, int64_t act) {
  TORCH_CHECK(act >= 0 && act < kNumActs, op, ": unknown activation id ", act);
}

inline void check_like(const char* op, const char* name, const at::Tensor& t, const at::Tensor& lead) {
  TORCH_CHECK(t.layout() == c10::kStrided, op, ": ", name, " must be a dense tensor");
  TORCH_CHECK(t.scalar_type() == lead.scalar_type(), op, ": ", name, " has dtype ", t.scalar_type(), ", expected ",
              lead.scalar_type());
  TORCH_CHECK(t.device() == lead.device(), op, ": ", name, " is on ", t.device(), ", expected ", lead.device());
  TORCH_CHECK(t.sizes().equals(lead.sizes()), op, ": ", name, " has shape ", t.sizes(), ", expected ", lead.sizes());
}

// Checks the bias against `lead` and returns the layout of `out` (empty_like(lead)),
// with its channel structure along `dim` when there is a bias or `by_channel` (a bias
// gradient is wanted). One channel spans the whole tensor (inner = n).
inline FlatLayout flat_layout(const char* op, const at::Tensor& lead, const at::Tensor& out,
                              const c10::optional<at::Tensor>& b, int64_t dim, bool by_channel = false) {
  TORCH_CHECK(lead.layout() == c10::kStrided, op, ": sparse tensors are not supported");
  TORCH_CHECK(at::isFloatingType(lead.scalar_type()), op, ": expected a floating-point tensor, got ",
              lead.scalar_type());
  FlatLayout layout;
  layout.n = lead.numel();
  const bool bias = b.has_value() && b->defined();
  if (!bias && !by_channel) return layout;
  const int64_t ndim = lead.dim();
  TORCH_CHECK(dim >= -ndim && dim < ndim && ndim > 0, op, ": dim ", dim, " is out of range for a ", ndim,
              "-D tensor");
  if (dim < 0) dim += ndim;
  if (bias) {
    TORCH_CHECK(b->dim() == 1 && b->size(0) == lead.size(dim), op, ": bias must be 1-D of size ", lead.size(dim),
                " (x.shape[", dim, "]), got shape ", b->sizes());
    TORCH_CHECK(b->scalar_type() == lead.scalar_type(), op, ": bias has dtype ", b->scalar_type(), ", expected ",
                lead.scalar_type());
    TORCH_CHECK(b->device() == lead.device(), op, ": bias is on ", b->device(), ", expected ", lead.device());
  }
  layout.dim = dim;
  layout.channels = lead.size(dim);
  layout.inner = layout.channels > 1 ? out.stride(dim) : std::max<int64_t>(layout.n, 1);
  return layout;
}

inline bool has_bias(const c10::optional<at::Tensor>& b) { return b.has_value() && b->defined(); }

// How bias_act_grad / bias_act_grad2 take their derivative: from y, from z = x + b,
// or from nothing (linear).
enum class Ref { kNone, kY, kZ };

inline Ref choose_ref(const char* op, int64_t act, double alpha, double gain, const c10::optional<at::Tensor>& x,
                      const c10::optional<at::Tensor>& y) {
  if (act == kLinear) return Ref::kNone;
  if (y.has_value() && y->defined()) {
    TORCH_CHECK(can_ref_y(static_cast<int>(act), alpha, gain), op,
                ": the derivative of this activation cannot be taken from y with alpha=", alpha, ", gain=", gain,
                "; pass x (and b) instead");
    return Ref::kY;
  }
  TORCH_CHECK(x.has_value() && x->defined(), op, ": needs x (with b) or y to take the derivative");
  return Ref::kZ;
}

// Tensors of one launch: outputs and inputs share the flat layout.
struct Launch {
  at::Tensor out, out2;    // out2: bias_act_grad's db (empty unless need_db), bias_act_grad2's d_ref
  at::Tensor in0, in1, in2;  // forward: x; grad: dy, ref; grad2: ddx, dy, ref
  at::Tensor bias;         // contiguous 1-D, or undefined (no bias, or ref = y)
  FlatLayout layout;
  Ref ref = Ref::kNone;
  bool in0_broadcast = false;  // in0 is one value broadcast to the whole shape, read in place
};

// Whether `t` is one value broadcast to its whole shape (every stride 0), as the
// gradient of a sum or a mean arrives from autograd.
inline bool is_broadcast_value(const at::Tensor& t) {
  for (const int64_t stride : t.strides())
    if (stride != 0) return false;
  return t.numel() > 0;
}

inline Launch prepare_forward(const at::Tensor& x, const c10::optional<at::Tensor>& b, int64_t act, int64_t dim) {
  constexpr const char* op = "fastgan::bias_act";
  check_act(op, act);
  Launch l;
  l.out = at::empty_like(x);
  l.layout = flat_layout(op, x, l.out, b, dim);
  l.in0 = in_layout_of(x, l.out);
  if (has_bias(b)) l.bias = b->contiguous();
  return l;
}

// The derivative's input: y (ref = y), x with its bias (ref = z), or none.
inline void prepare_ref(const char* op, Launch& l, const at::Tensor& lead, const at::Tensor& like,
                        const c10::optional<at::Tensor>& x,
                        const c10::optional<at::Tensor>& b, const c10::optional<at::Tensor>& y, int64_t act,
                        double alpha, double gain, int64_t dim, at::Tensor& ref_slot, bool by_channel = false) {
  check_act(op, act);
  l.ref = choose_ref(op, act, alpha, gain, x, y);
  if (l.ref == Ref::kZ) {
    check_like(op, "x", *x, lead);
    l.layout = flat_layout(op, lead, like, b, dim, by_channel);
    ref_slot = in_layout_of(*x, like);
    if (has_bias(b)) l.bias = b->contiguous();
  } else {
    l.layout = flat_layout(op, lead, like, c10::nullopt, dim, by_channel);
    if (l.ref == Ref::kY) {
      check_like(op, "y", *y, lead);
      ref_slot = in_layout_of(*y, like);
    }
  }
}

// dx, and with need_db the bias gradient db (dx summed over all dims but `dim`) in
// out2: the CPU kernel sums it in its pass over dx, the CUDA launcher reduces dx.
// With read_broadcast_dy (the CPU kernel) a dy broadcast from one value is read in
// place rather than copied out to every element.
inline Launch prepare_grad(const at::Tensor& dy, const c10::optional<at::Tensor>& x,
                           const c10::optional<at::Tensor>& b, const c10::optional<at::Tensor>& y, int64_t act,
                           double alpha, double gain, int64_t dim, bool need_db, bool read_broadcast_dy = false) {
  constexpr const char* op = "fastgan::bias_act_grad";
  Launch l;
  l.out = at::empty_like(dy);
  prepare_ref(op, l, dy, l.out, x, b, y, act, alpha, gain, dim, l.in1, need_db);
  l.in0_broadcast = read_broadcast_dy && is_broadcast_value(dy);
  l.in0 = l.in0_broadcast ? dy : in_layout_of(dy, l.out);
  l.out2 = new_empty({need_db ? l.layout.channels : 0}, dy.options());
  return l;
}

inline Launch prepare_grad2(const at::Tensor& ddx, const at::Tensor& dy, const c10::optional<at::Tensor>& x,
                            const c10::optional<at::Tensor>& b, const c10::optional<at::Tensor>& y, int64_t act,
                            double alpha, double gain, int64_t dim, bool need_ddy) {
  constexpr const char* op = "fastgan::bias_act_grad2";
  Launch l;
  check_act(op, act);
  TORCH_CHECK(has_second_order(static_cast<int>(act)), op,
              ": only tanh, sigmoid, silu and elu have a second derivative (the others' is 0: use bias_act_grad)");
  l.out2 = at::empty_like(ddx);
  prepare_ref(op, l, ddx, l.out2, x, b, y, act, alpha, gain, dim, l.in2);
  check_like(op, "dy", dy, ddx);
  l.out = need_ddy ? at::empty_like(l.out2) : new_empty({0}, ddx.options());
  l.in0 = in_layout_of(ddx, l.out2);
  l.in1 = in_layout_of(dy, l.out2);
  return l;
}

}  // namespace bias_act
}  // namespace fastgan
