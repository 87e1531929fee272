// Schemas and CPU kernels of the GAN-loss family (THEORY.md sections 2-3).
//
// gan_loss reads the logits of one or two sides once and writes the reduced
// loss and the logits-gradient scaled for the reduction; its backward,
// gan_loss_backward, only multiplies the saved gradients by the loss's
// gradient. A linear term (+-l) saves nothing: its forward only reads, and its
// backward writes the constant grad * scale * (+-1). reduction="none" uses
// gan_loss_pointwise (t, t' or t'' times a gradient), which also serves every
// double backward.
//
// Sums are deterministic whatever the thread count: each side is cut into fixed
// chunks of kLossChunk elements, each chunk summed in 16 lanes, and the chunk
// partials added pairwise in a fixed order.
//
// The element loops vectorise only if GCC may if-convert the selects of the stable
// softplus (gan_loss_math.h), i.e. compute both arms of `c ? a : b` although one
// might raise a floating-point flag. No code here reads those flags, so this file
// is compiled without -ftrapping-math; results are unchanged (clang's default).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("no-trapping-math")
#endif

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <c10/util/SmallVector.h>
#include <torch/library.h>

#include <algorithm>
#include <array>

#include "cpu_multi_tensor.h"
#include "cpu_types.h"
#include "gan_loss_host.h"
#include "gan_loss_math.h"
#include "namespaces.h"

namespace fastgan {
namespace {

constexpr int64_t kLossChunk = 2048;
constexpr int kLanes = 16;
constexpr int64_t kGrainChunks = 16;  // below 16 chunks (32K elements) one thread does it all

// Sum of t(x[j]) over [0, n), writing g[j] = scale * t'(x[j]) unless TERM is linear.
template <int TERM, typename scalar_t>
FASTGAN_CPU_CLONES acc_t<scalar_t> term_sum_span(const scalar_t* __restrict__ x, scalar_t* __restrict__ g,
                                                 int64_t n, acc_t<scalar_t> scale) {
  using T = acc_t<scalar_t>;
  constexpr bool kSave = !gan_term_is_linear(TERM);
  T lanes[kLanes] = {};
  int64_t j = 0;
  for (; j + kLanes <= n; j += kLanes) {
    for (int k = 0; k < kLanes; ++k) {
      T t, dt;
      gan_term_and_derivative<TERM>(static_cast<T>(x[j + k]), t, dt);
      lanes[k] += t;
      if constexpr (kSave) g[j + k] = static_cast<scalar_t>(scale * dt);
    }
  }
  for (int k = 0; j < n; ++j, ++k) {
    T t, dt;
    gan_term_and_derivative<TERM>(static_cast<T>(x[j]), t, dt);
    lanes[k] += t;
    if constexpr (kSave) g[j] = static_cast<scalar_t>(scale * dt);
  }
  for (int width = kLanes / 2; width > 0; width /= 2)
    for (int k = 0; k < width; ++k) lanes[k] += lanes[k + width];
  return lanes[0];
}

// Pairwise sum of v[0..n) in a fixed order (v is overwritten).
template <typename T>
T pairwise_sum(T* v, int64_t n) {
  if (n == 0) return T(0);
  for (int64_t width = 1; width < n; width *= 2)
    for (int64_t i = 0; i + width < n; i += 2 * width) v[i] += v[i + width];
  return v[0];
}

int64_t chunks_of(int64_t n) { return (n + kLossChunk - 1) / kLossChunk; }

// Sums over fixed chunks of x (chunk 0, 1, ...) then of y, deterministic whatever the
// thread count: span(is_x, begin, n) returns a chunk's K sums, and each side's chunk
// sums are added pairwise in a fixed order. Returns {x's K sums, y's K sums}.
template <int K, typename T, typename Span>
std::array<T, 2 * K> chunked_side_sums(int64_t nx, int64_t ny, const Span& span) {
  const int64_t cx = chunks_of(nx), cy = chunks_of(ny), chunks = cx + cy;
  c10::SmallVector<T, 16> partial(K * chunks);  // partial[k * chunks + c]
  auto run_chunks = [&](int64_t first, int64_t last) {
    for (int64_t c = first; c < last; ++c) {
      const bool is_x = c < cx;
      const int64_t begin = (is_x ? c : c - cx) * kLossChunk;
      const std::array<T, K> sums = span(is_x, begin, std::min(kLossChunk, (is_x ? nx : ny) - begin));
      for (int k = 0; k < K; ++k) partial[k * chunks + c] = sums[k];
    }
  };
  if (chunks <= kGrainChunks) {
    run_chunks(0, chunks);  // waking the thread pool would cost more than it saves
  } else {
    at::parallel_for(0, chunks, kGrainChunks, run_chunks);
  }
  std::array<T, 2 * K> out;
  for (int k = 0; k < K; ++k) {
    out[k] = pairwise_sum(partial.data() + k * chunks, cx);
    out[K + k] = pairwise_sum(partial.data() + k * chunks + cx, cy);
  }
  return out;
}

template <typename scalar_t>
void gan_loss_cpu_typed(GanLossProblem& p) {
  using T = acc_t<scalar_t>;
  const scalar_t* x = cpu_data<scalar_t>(p.x);
  const scalar_t* y = cpu_data<scalar_t>(p.y);
  scalar_t* xg = cpu_data<scalar_t>(p.x_grad);
  scalar_t* yg = cpu_data<scalar_t>(p.y_grad);
  const T sx = static_cast<T>(p.x_scale), sy = static_cast<T>(p.y_scale);
  const std::array<T, 2> sums =
      chunked_side_sums<1, T>(p.x.numel(), p.y.numel(), [&](bool is_x, int64_t begin, int64_t n) {
        return std::array<T, 1>{dispatch_gan_term(is_x ? p.x_term : p.y_term, [&](auto term) {
          return is_x ? term_sum_span<decltype(term)::value>(x + begin, xg + begin, n, sx)
                      : term_sum_span<decltype(term)::value>(y + begin, yg + begin, n, sy);
        })};
      });
  *cpu_data<scalar_t>(p.loss) = static_cast<scalar_t>(sx * sums[0] + sy * sums[1]);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> gan_loss_cpu(const at::Tensor& x, const std::optional<at::Tensor>& y,
                                                            int64_t x_term, int64_t y_term, int64_t reduction) {
  GanLossProblem p = prepare_gan_loss(x, y, x_term, y_term, reduction);
  FASTGAN_CPU_DISPATCH(p.x.scalar_type(), "gan_loss_cpu", [&] { gan_loss_cpu_typed<scalar_t>(p); });
  return {p.loss, p.x_grad, p.y_grad};
}

template <typename scalar_t>
FASTGAN_CPU_CLONES void scale_span(const scalar_t* __restrict__ in, scalar_t* __restrict__ out, int64_t n,
                                   acc_t<scalar_t> g) {
  using T = acc_t<scalar_t>;
  for (int64_t j = 0; j < n; ++j) out[j] = static_cast<scalar_t>(g * static_cast<T>(in[j]));
}

std::tuple<at::Tensor, at::Tensor> gan_loss_backward_cpu(const at::Tensor& grad, const at::Tensor& x_grad,
                                                         const at::Tensor& y_grad, const at::Tensor& x,
                                                         const std::optional<at::Tensor>& y, int64_t x_term,
                                                         int64_t y_term, int64_t reduction) {
  GanLossBackwardProblem p = prepare_gan_loss_backward(grad, x_grad, y_grad, x, y, x_term, y_term, reduction);
  FASTGAN_CPU_DISPATCH(p.x_out.scalar_type(), "gan_loss_backward_cpu", [&] {
    using T = acc_t<scalar_t>;
    const auto g = static_cast<T>(*cpu_data<scalar_t>(p.grad));
    const scalar_t* in[2] = {cpu_data<scalar_t>(p.x_grad), cpu_data<scalar_t>(p.y_grad)};
    scalar_t* out[2] = {cpu_data<scalar_t>(p.x_out), cpu_data<scalar_t>(p.y_out)};
    const bool linear[2] = {p.x_linear, p.y_linear};
    const scalar_t constant[2] = {static_cast<scalar_t>(g * static_cast<T>(p.x_const)),
                                  static_cast<scalar_t>(g * static_cast<T>(p.y_const))};
    cpu_for_each_chunk({p.x_out.numel(), p.y_out.numel()}, [&](int64_t t, int64_t begin, int64_t end) {
      if (linear[t]) std::fill(out[t] + begin, out[t] + end, constant[t]);
      else scale_span(in[t] + begin, out[t] + begin, end - begin, g);
    });
  });
  return {p.x_out, p.y_out};
}

template <int TERM, int ORDER, bool HAS_GRAD, typename scalar_t>
inline __attribute__((always_inline)) void pointwise_loop(const scalar_t* __restrict__ x,
                                                          const scalar_t* __restrict__ grad,
                                                          scalar_t* __restrict__ out, int64_t n) {
  using T = acc_t<scalar_t>;
  for (int64_t j = 0; j < n; ++j) {
    const T v = gan_term_order<TERM, ORDER>(static_cast<T>(x[j]));
    out[j] = static_cast<scalar_t>(HAS_GRAD ? static_cast<T>(grad[j]) * v : v);
  }
}

// One loop per order, chosen outside it: a select on `order` inside would keep the
// loop from vectorising.
template <int TERM, bool HAS_GRAD, typename scalar_t>
FASTGAN_CPU_CLONES void pointwise_span(const scalar_t* __restrict__ x, const scalar_t* __restrict__ grad,
                                       scalar_t* __restrict__ out, int64_t n, int order) {
  if (order == 0) pointwise_loop<TERM, 0, HAS_GRAD>(x, grad, out, n);
  else if (order == 1) pointwise_loop<TERM, 1, HAS_GRAD>(x, grad, out, n);
  else pointwise_loop<TERM, 2, HAS_GRAD>(x, grad, out, n);
}

at::Tensor gan_loss_pointwise_cpu(const at::Tensor& logits, const std::optional<at::Tensor>& grad, int64_t term,
                                  int64_t order) {
  GanPointwiseProblem p = prepare_gan_pointwise(logits, grad, term, order);
  FASTGAN_CPU_DISPATCH(p.logits.scalar_type(), "gan_loss_pointwise_cpu", [&] {
    const scalar_t* x = cpu_data<scalar_t>(p.logits);
    const scalar_t* g = p.grad.defined() ? cpu_data<scalar_t>(p.grad) : nullptr;
    scalar_t* out = cpu_data<scalar_t>(p.out);
    dispatch_gan_term(p.term, [&](auto t) {
      constexpr int TERM = decltype(t)::value;
      cpu_for_each_chunk({p.logits.numel()}, [&](int64_t, int64_t begin, int64_t end) {
        if (g != nullptr) pointwise_span<TERM, true>(x + begin, g + begin, out + begin, end - begin, p.order);
        else pointwise_span<TERM, false>(x + begin, g, out + begin, end - begin, p.order);
      });
    });
  });
  return p.out;
}

// ---- relativistic_loss ----

// body(j, k) for j in [0, n), k = j's lane (j mod kLanes), in kLanes-wide rows the
// compiler vectorises (as term_sum_span's loops).
template <typename Body>
inline __attribute__((always_inline)) void for_each_lane(int64_t n, const Body& body) {
  int64_t j = 0;
  for (; j + kLanes <= n; j += kLanes)
    for (int k = 0; k < kLanes; ++k) body(j + k, k);
  for (int k = 0; j < n; ++j, ++k) body(j, k);
}

// The lanes' sum, in a fixed order.
template <typename T>
inline T lane_total(T* lanes) {
  for (int width = kLanes / 2; width > 0; width /= 2)
    for (int k = 0; k < width; ++k) lanes[k] += lanes[k + width];
  return lanes[0];
}

// RpGAN over pairs [0, n): returns sum softplus(y - x), writes xg = -scale sig, yg = scale sig.
template <typename scalar_t>
FASTGAN_CPU_CLONES acc_t<scalar_t> pair_span(const scalar_t* __restrict__ x, const scalar_t* __restrict__ y,
                                             scalar_t* __restrict__ xg, scalar_t* __restrict__ yg, int64_t n,
                                             acc_t<scalar_t> scale) {
  using T = acc_t<scalar_t>;
  T lanes[kLanes] = {};
  for_each_lane(n, [&](int64_t j, int k) {
    T t, sig;
    relativistic_term(static_cast<T>(y[j]) - static_cast<T>(x[j]), t, sig);
    lanes[k] += t;
    xg[j] = static_cast<scalar_t>(-scale * sig);
    yg[j] = static_cast<scalar_t>(scale * sig);
  });
  return lane_total(lanes);
}

// RaGAN's first pass: sum of the logits over [0, n).
template <typename scalar_t>
FASTGAN_CPU_CLONES acc_t<scalar_t> value_span(const scalar_t* __restrict__ l, int64_t n) {
  using T = acc_t<scalar_t>;
  T lanes[kLanes] = {};
  for_each_lane(n, [&](int64_t j, int k) { lanes[k] += static_cast<T>(l[j]); });
  return lane_total(lanes);
}

// The difference z of a RaGAN side: mean(y) - x_i (SIGN -1) or y_j - mean(x) (SIGN +1).
template <int SIGN, typename T>
inline __attribute__((always_inline)) T average_difference(T l, T shift) {
  return SIGN > 0 ? l - shift : shift - l;
}

// RaGAN's second pass over one side: {sum softplus(z), sum sigmoid(z)}.
template <int SIGN, typename scalar_t>
FASTGAN_CPU_CLONES std::array<acc_t<scalar_t>, 2> average_span(const scalar_t* __restrict__ l, int64_t n,
                                                               acc_t<scalar_t> shift) {
  using T = acc_t<scalar_t>;
  T terms[kLanes] = {}, sigmoids[kLanes] = {};
  for_each_lane(n, [&](int64_t j, int k) {
    T t, sig;
    relativistic_term(average_difference<SIGN>(static_cast<T>(l[j]), shift), t, sig);
    terms[k] += t;
    sigmoids[k] += sig;
  });
  return {lane_total(terms), lane_total(sigmoids)};
}

// RaGAN's third pass over one side: g = SIGN * scale * sigmoid(z) + cross (the gradient
// through the other side's difference, which holds this side's mean).
template <int SIGN, typename scalar_t>
FASTGAN_CPU_CLONES void average_grad_span(const scalar_t* __restrict__ l, scalar_t* __restrict__ g, int64_t n,
                                          acc_t<scalar_t> shift, acc_t<scalar_t> scale, acc_t<scalar_t> cross) {
  using T = acc_t<scalar_t>;
  for (int64_t j = 0; j < n; ++j) {
    T t, sig;
    relativistic_term(average_difference<SIGN>(static_cast<T>(l[j]), shift), t, sig);
    g[j] = static_cast<scalar_t>(SIGN * scale * sig + cross);
  }
}

template <typename scalar_t>
void relativistic_loss_cpu_typed(RelativisticLossProblem& p) {
  using T = acc_t<scalar_t>;
  const scalar_t* x = cpu_data<scalar_t>(p.x);
  const scalar_t* y = cpu_data<scalar_t>(p.y);
  scalar_t* xg = cpu_data<scalar_t>(p.x_grad);
  scalar_t* yg = cpu_data<scalar_t>(p.y_grad);
  const int64_t nx = p.x.numel(), ny = p.y.numel();
  const T sx = static_cast<T>(p.x_scale), sy = static_cast<T>(p.y_scale);
  T loss;
  if (p.kind == kRelativisticPair) {  // one pass
    const std::array<T, 2> sums = chunked_side_sums<1, T>(nx, 0, [&](bool, int64_t begin, int64_t n) {
      return std::array<T, 1>{pair_span(x + begin, y + begin, xg + begin, yg + begin, n, sx)};
    });
    loss = sx * sums[0];
  } else {  // three passes: the means, the sums, the gradients
    const std::array<T, 2> totals = chunked_side_sums<1, T>(nx, ny, [&](bool is_x, int64_t begin, int64_t n) {
      return std::array<T, 1>{is_x ? value_span(x + begin, n) : value_span(y + begin, n)};
    });
    const T mean_x = totals[0] / static_cast<T>(nx), mean_y = totals[1] / static_cast<T>(ny);
    // {sum t_x, sum sig_x, sum t_y, sum sig_y}
    const std::array<T, 4> sums = chunked_side_sums<2, T>(nx, ny, [&](bool is_x, int64_t begin, int64_t n) {
      return is_x ? average_span<-1>(x + begin, n, mean_y) : average_span<1>(y + begin, n, mean_x);
    });
    loss = sx * sums[0] + sy * sums[2];
    // x's mean is in every z_y = y_j - mean(x): d/dx_i adds -(1/nx) s_y sum sig_y; likewise for y.
    const T cross_x = -sy * sums[3] / static_cast<T>(nx), cross_y = sx * sums[1] / static_cast<T>(ny);
    cpu_for_each_chunk({nx, ny}, [&](int64_t side, int64_t begin, int64_t end) {
      if (side == 0) average_grad_span<-1>(x + begin, xg + begin, end - begin, mean_y, sx, cross_x);
      else average_grad_span<1>(y + begin, yg + begin, end - begin, mean_x, sy, cross_y);
    });
  }
  *cpu_data<scalar_t>(p.loss) = static_cast<scalar_t>(loss);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> relativistic_loss_cpu(const at::Tensor& x, const at::Tensor& y,
                                                                     int64_t kind, int64_t reduction) {
  RelativisticLossProblem p = prepare_relativistic_loss(x, y, kind, reduction);
  FASTGAN_CPU_DISPATCH(p.x.scalar_type(), "relativistic_loss_cpu", [&] { relativistic_loss_cpu_typed<scalar_t>(p); });
  return {p.loss, p.x_grad, p.y_grad};
}

void define_ops(torch::Library& m) {
  // The fused loss of THEORY.md sections 2-3 over one or two sides of logits:
  //   loss   = s_x * sum_i t_x(x_i) + s_y * sum_j t_y(y_j),  s = 1/numel (reduction 1, mean) or 1 (2, sum)
  //   x_grad = s_x * t_x'(x),  y_grad = s_y * t_y'(y)      (empty when y is absent)
  // except that a linear term (+-l: t' = +-1) saves nothing: its x_grad (y_grad) has
  // shape (0,). Terms are the GanTerm codes of csrc/gan_loss_math.h. Autograd
  // (csrc/gan_loss_autograd.cpp): d loss / dx = grad * x_grad, via gan_loss_backward;
  // x_grad and y_grad are not differentiable outputs. With create_graph the backward
  // is grad * s_x * t_x'(x) from gan_loss_pointwise, whose own autograd gives the
  // double backward.
  m.def(
      "gan_loss(Tensor x, Tensor? y, int x_term, int y_term, int reduction) -> "
      "(Tensor loss, Tensor x_grad, Tensor y_grad)");
  // The whole backward of gan_loss, grad a one-element tensor, from gan_loss's inputs
  // and saved gradients: grad * x_grad, or grad * s_x * t_x' shaped like x for a
  // linear term (x's values are not read); likewise for y (empty when y is absent).
  m.def(
      "gan_loss_backward(Tensor grad, Tensor x_grad, Tensor y_grad, Tensor x, Tensor? y, int x_term, "
      "int y_term, int reduction) -> (Tensor, Tensor)");
  // grad * t^(order)(logits) elementwise, order 0 (the term), 1 or 2; grad = 1 when absent.
  m.def("gan_loss_pointwise(Tensor logits, Tensor? grad, int term, int order) -> Tensor");
  // The relativistic losses (RelativisticKind in csrc/gan_loss_math.h), x the side that
  // should score higher, y the other, s = 1/numel (reduction 1) or 1 (2):
  //   kind 0 (pair, one shape): loss = s sum_i softplus(y_i - x_i)
  //   kind 1 (average):         loss = s_x sum_i softplus(mean(y) - x_i) + s_y sum_j softplus(y_j - mean(x))
  // x_grad, y_grad: the complete d loss / dx, d loss / dy. Autograd
  // (csrc/gan_loss_autograd.cpp): the backward is gan_loss_backward's scaling of them
  // (with a non-linear term code, so it reads them); double backward uses
  // gan_loss_pointwise's softplus'' on the differences.
  m.def(
      "relativistic_loss(Tensor x, Tensor y, int kind, int reduction) -> "
      "(Tensor loss, Tensor x_grad, Tensor y_grad)");
}

}  // namespace

FASTGAN_DEFINE_OPS(define_ops)

TORCH_LIBRARY_IMPL(fastgan, CPU, m) {
  m.impl("gan_loss", &gan_loss_cpu);
  m.impl("gan_loss_backward", &gan_loss_backward_cpu);
  m.impl("gan_loss_pointwise", &gan_loss_pointwise_cpu);
  m.impl("relativistic_loss", &relativistic_loss_cpu);
}

}  // namespace fastgan
