// Autograd of the bias_act ops, in C++ (one kernel for CPU, CUDA and Triton):
// a Python autograd function costs tens of microseconds per call, which a small
// critic on a GPU would spend on the host instead of its kernels.
//
//   bias_act(x, b)            backward: (dx, db) = bias_act_grad(dy, ref), db = dx summed over all but dim
//   bias_act_grad(dy, ref)    backward: d_dy = bias_act_grad(ddx + ddb, ref)     (linear in dy; ddb
//                                       broadcast along dim: db is a sum of dx)
//                                       d_ref = D2(ref) * dy * ddx                 (tanh, sigmoid, silu, elu)
//                                       both from one bias_act_grad2 when d_ref is needed
//   bias_act_grad2            backward: not implemented (third order)
//
// ref (bias_act_math.h): y for relu/lrelu/tanh/sigmoid, z = x + b otherwise, none for
// linear. With ref = y, d_ref is the gradient with respect to y, which autograd
// carries to x and b through the forward op's own backward. The fastgan_triton ops
// get the same kernels (csrc/namespaces.h).
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/library.h>

#include <vector>

#include "autograd_utils.h"
#include "bias_act_math.h"

namespace fastgan {
namespace bias_act {
namespace {

using OptTensor = c10::optional<at::Tensor>;

template <OpNamespace NS>
at::Tensor call_bias_act(const at::Tensor& x, const OptTensor& b, int64_t act, double alpha, double gain,
                         int64_t dim) {
  static auto op = family_op(NS, "bias_act")
                       .typed<at::Tensor(const at::Tensor&, const OptTensor&, int64_t, double, double, int64_t)>();
  return op.call(x, b, act, alpha, gain, dim);
}

template <OpNamespace NS>
std::tuple<at::Tensor, at::Tensor> call_grad(const at::Tensor& dy, const OptTensor& x, const OptTensor& b,
                                             const OptTensor& y, int64_t act, double alpha, double gain, int64_t dim,
                                             bool need_db) {
  static auto op = family_op(NS, "bias_act_grad")
                       .typed<std::tuple<at::Tensor, at::Tensor>(const at::Tensor&, const OptTensor&,
                                                                 const OptTensor&, const OptTensor&, int64_t, double,
                                                                 double, int64_t, bool)>();
  return op.call(dy, x, b, y, act, alpha, gain, dim, need_db);
}

template <OpNamespace NS>
std::tuple<at::Tensor, at::Tensor> call_grad2(const at::Tensor& ddx, const at::Tensor& dy, const OptTensor& x,
                                              const OptTensor& b, const OptTensor& y, int64_t act, double alpha,
                                              double gain, int64_t dim, bool need_ddy) {
  static auto op = family_op(NS, "bias_act_grad2")
                       .typed<std::tuple<at::Tensor, at::Tensor>(const at::Tensor&, const at::Tensor&,
                                                                 const OptTensor&, const OptTensor&, const OptTensor&,
                                                                 int64_t, double, double, int64_t, bool)>();
  return op.call(ddx, dy, x, b, y, act, alpha, gain, dim, need_ddy);
}

// The bias gradient: `t` summed over every dimension but `dim`.
at::Tensor sum_to_bias(const at::Tensor& t, int64_t dim) {
  if (t.dim() == 1) return t.clone();
  if (dim < 0) dim += t.dim();
  std::vector<int64_t> dims;
  for (int64_t d = 0; d < t.dim(); ++d)
    if (d != dim) dims.push_back(d);
  return t.sum(dims);
}

// ddx + ddb spread along `dim` over a tensor of `sizes`: the gradient that reaches dx
// through db = dx summed over every dimension but dim.
at::Tensor add_bias_grad(const at::Tensor& ddx, const at::Tensor& ddb, int64_t dim, const std::vector<int64_t>& sizes) {
  const int64_t ndim = static_cast<int64_t>(sizes.size());
  if (dim < 0) dim += ndim;
  std::vector<int64_t> shape(ndim, 1);
  shape[dim] = sizes[dim];
  const at::Tensor spread = ddb.view(shape);
  return ddx.defined() ? ddx.add(spread) : spread.expand(sizes);
}

OptTensor opt(const at::Tensor& t) { return t.defined() ? OptTensor(t) : c10::nullopt; }

bool defined(const OptTensor& t) { return t.has_value() && t->defined(); }

enum SavedRef : int64_t { kSavedNone = 0, kSavedY = 1, kSavedZ = 2 };

void save_constants(FusedContext* ctx, int64_t act, double alpha, double gain, int64_t dim) {
  ctx->saved_data["act"] = act;
  ctx->saved_data["alpha"] = alpha;
  ctx->saved_data["gain"] = gain;
  ctx->saved_data["dim"] = dim;
}

struct Constants {
  int64_t act;
  double alpha, gain;
  int64_t dim;
};

Constants load_constants(FusedContext* ctx) {
  return {ctx->saved_data["act"].toInt(), ctx->saved_data["alpha"].toDouble(), ctx->saved_data["gain"].toDouble(),
          ctx->saved_data["dim"].toInt()};
}

template <OpNamespace NS>
struct BiasActFunction : public FusedFunction<BiasActFunction<NS>> {
  static at::Tensor forward(FusedContext* ctx, const at::Tensor& x, const OptTensor& b, int64_t act, double alpha,
                            double gain, int64_t dim) {
    at::Tensor y;
    {
      at::AutoDispatchBelowADInplaceOrView guard;
      y = call_bias_act<NS>(x, b, act, alpha, gain, dim);
    }
    save_constants(ctx, act, alpha, gain, dim);
    // An undefined incoming gradient stays undefined: in a penalty's double backward
    // of relu/lrelu nothing flows back into y, and zeros would cost a backward pass
    // through the whole forward graph.
    ctx->set_materialize_grads(false);
    ctx->saved_data["has_bias"] = defined(b);
    if (act == kLinear) {
      ctx->saved_data["ref"] = static_cast<int64_t>(kSavedNone);
    } else if (prefer_ref_y(static_cast<int>(act), alpha, gain)) {
      ctx->saved_data["ref"] = static_cast<int64_t>(kSavedY);
      ctx->save_for_backward({y});  // only y: x need not stay alive
    } else {
      ctx->saved_data["ref"] = static_cast<int64_t>(kSavedZ);
      ctx->save_for_backward({x, defined(b) ? *b : at::Tensor()});
    }
    return y;
  }

  static variable_list backward(FusedContext* ctx, variable_list grads) {
    if (!grads[0].defined()) return variable_list(6);
    const Constants k = load_constants(ctx);
    const bool has_bias = ctx->saved_data["has_bias"].toBool();
    const int64_t ref = ctx->saved_data["ref"].toInt();
    const variable_list saved = ctx->get_saved_variables();
    OptTensor x, b, y;
    if (ref == kSavedY) y = saved[0];
    if (ref == kSavedZ) x = saved[0], b = opt(saved[1]);
    const bool need_x = ctx->needs_input_grad(0);
    const bool need_b = has_bias && ctx->needs_input_grad(1);
    if (!need_x && !need_b) return variable_list(6);
    auto [dx, db] =
        call_in_backward([&] { return call_grad<NS>(grads[0], x, b, y, k.act, k.alpha, k.gain, k.dim, need_b); });
    return {need_x ? dx : at::Tensor(), need_b ? db : at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor(),
            at::Tensor()};
  }
};

template <OpNamespace NS>
struct BiasActGradFunction : public FusedFunction<BiasActGradFunction<NS>> {
  static variable_list forward(FusedContext* ctx, const at::Tensor& dy, const OptTensor& x, const OptTensor& b,
                               const OptTensor& y, int64_t act, double alpha, double gain, int64_t dim, bool need_db) {
    at::Tensor dx, db;
    {
      at::AutoDispatchBelowADInplaceOrView guard;
      std::tie(dx, db) = call_grad<NS>(dy, x, b, y, act, alpha, gain, dim, need_db);
    }
    save_constants(ctx, act, alpha, gain, dim);
    ctx->set_materialize_grads(false);
    if (need_db) {
      ctx->saved_data["sizes"] = dx.sizes().vec();
    } else {
      ctx->mark_non_differentiable({db});
    }
    // Edge indices of the tensor inputs that are present (absent optionals have none).
    int64_t edge = 1;
    ctx->saved_data["x_edge"] = defined(x) ? edge++ : int64_t(-1);
    ctx->saved_data["b_edge"] = defined(b) ? edge++ : int64_t(-1);
    ctx->saved_data["y_edge"] = defined(y) ? edge++ : int64_t(-1);
    // dy is needed only by the second-order term D2 * dy * ddx.
    const bool second = has_second_order(static_cast<int>(act));
    ctx->save_for_backward({second ? dy : at::Tensor(), defined(x) ? *x : at::Tensor(),
                            defined(b) ? *b : at::Tensor(), defined(y) ? *y : at::Tensor()});
    return {dx, db};
  }

  static variable_list backward(FusedContext* ctx, variable_list grads) {
    const Constants k = load_constants(ctx);
    const at::Tensor ddx =
        grads[1].defined() ? add_bias_grad(grads[0], grads[1], k.dim, ctx->saved_data["sizes"].toIntVector())
                           : grads[0];
    if (!ddx.defined()) return variable_list(9);
    const variable_list saved = ctx->get_saved_variables();
    const at::Tensor& dy = saved[0];
    const OptTensor x = opt(saved[1]), b = opt(saved[2]), y = opt(saved[3]);
    auto needs = [&](const char* key) {
      const int64_t e = ctx->saved_data[key].toInt();
      return e >= 0 && ctx->needs_input_grad(static_cast<size_t>(e));
    };
    const bool need_dy = ctx->needs_input_grad(0);
    const bool need_x = needs("x_edge"), need_b = needs("b_edge"), need_y = needs("y_edge");
    at::Tensor d_dy, d_x, d_b, d_y;
    // f'' = 0 for linear, relu and lrelu: dx depends on x, b, y only through a constant mask.
    const bool need_ref =
        has_second_order(static_cast<int>(k.act)) && (defined(y) ? need_y : (need_x || need_b));
    if (need_ref) {
      auto [a, r] = call_grad2<NS>(ddx, dy, x, b, y, k.act, k.alpha, k.gain, k.dim, need_dy);
      if (need_dy) d_dy = a;
      if (defined(y)) {
        d_y = r;
      } else {
        if (need_x) d_x = r;
        if (need_b) d_b = sum_to_bias(r, k.dim);
      }
    } else if (need_dy) {
      d_dy = std::get<0>(call_grad<NS>(ddx, x, b, y, k.act, k.alpha, k.gain, k.dim, false));
    }
    return {d_dy, d_x, d_b, d_y, at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

template <OpNamespace NS>
struct BiasActGrad2Function : public FusedFunction<BiasActGrad2Function<NS>> {
  static variable_list forward(FusedContext* ctx, const at::Tensor& ddx, const at::Tensor& dy, const OptTensor& x,
                               const OptTensor& b, const OptTensor& y, int64_t act, double alpha, double gain,
                               int64_t dim, bool need_ddy) {
    at::AutoDispatchBelowADInplaceOrView guard;
    auto [a, r] = call_grad2<NS>(ddx, dy, x, b, y, act, alpha, gain, dim, need_ddy);
    return {a, r};
  }

  static variable_list backward(FusedContext* ctx, variable_list grads) {
    TORCH_CHECK(false,
                "fastgan bias_act: third-order derivatives are not implemented (first and second order are; "
                "use backend='reference' for higher orders)");
    return {};
  }
};

template <OpNamespace NS>
at::Tensor bias_act_autograd(const at::Tensor& x, const OptTensor& b, int64_t act, double alpha, double gain,
                             int64_t dim) {
  return BiasActFunction<NS>::apply(x, b, act, alpha, gain, dim);
}

template <OpNamespace NS>
std::tuple<at::Tensor, at::Tensor> bias_act_grad_autograd(const at::Tensor& dy, const OptTensor& x,
                                                          const OptTensor& b, const OptTensor& y, int64_t act,
                                                          double alpha, double gain, int64_t dim, bool need_db) {
  auto out = BiasActGradFunction<NS>::apply(dy, x, b, y, act, alpha, gain, dim, need_db);
  return {std::move(out[0]), std::move(out[1])};
}

template <OpNamespace NS>
std::tuple<at::Tensor, at::Tensor> bias_act_grad2_autograd(const at::Tensor& ddx, const at::Tensor& dy,
                                                           const OptTensor& x, const OptTensor& b,
                                                           const OptTensor& y, int64_t act, double alpha,
                                                           double gain, int64_t dim, bool need_ddy) {
  auto out = BiasActGrad2Function<NS>::apply(ddx, dy, x, b, y, act, alpha, gain, dim, need_ddy);
  return {std::move(out[0]), std::move(out[1])};
}

template <OpNamespace NS>
void register_kernels(torch::Library& m) {
  m.impl("bias_act", &bias_act_autograd<NS>);
  m.impl("bias_act_grad", &bias_act_grad_autograd<NS>);
  m.impl("bias_act_grad2", &bias_act_grad2_autograd<NS>);
}

}  // namespace
}  // namespace bias_act

FASTGAN_AUTOGRAD_KERNELS(bias_act::register_kernels)

}  // namespace fastgan
