// Fused bias + activation: schemas and CPU kernels.
//   bias_act:        y = gain * f(x + b)
//   bias_act_grad:   dx = gain * f'(z) * dy, f' taken from y or from z = x + b
//   bias_act_grad2:  (gain * f'(z) * ddx, D2(ref) * dy * ddx): both second-order terms in one pass
// Math in bias_act_math.h; layouts and checks in bias_act_host.h.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <c10/util/SmallVector.h>
#include <torch/library.h>

#include <algorithm>

#include "bias_act_host.h"
#include "cpu_multi_tensor.h"
#include "cpu_types.h"
#include "namespaces.h"

namespace fastgan {
namespace bias_act {
namespace {

// How an element span finds its channel (its bias, its share of the bias gradient):
// no channel structure, one channel for the whole span, one per element (consecutive
// channels: inner == 1, e.g. (B, C) or channels-last), or one per run of `inner`
// elements (NCHW's H x W), the bias restarting at each row of `channels` channels, so
// that one call covers many short rows or runs (a call per 4x4 run cost 2.5x eager).
enum BiasMode : int { kNoBias = 0, kSpanBias = 1, kElementBias = 2, kRunBias = 3 };

// fn(begin, length, channel) for each run of `inner` elements in [0, n), the channel
// cycling from 0 through `channels` (the last run may be cut short).
template <typename Fn>
FASTGAN_CPU_INLINE void for_each_run(int64_t n, int64_t channels, int64_t inner, const Fn& fn) {
  for (int64_t r = 0, c = 0; r < n; r += inner, c = c + 1 == channels ? 0 : c + 1) fn(r, std::min(inner, n - r), c);
}

// fn(begin, length) for each row of `channels` consecutive channels in [0, n) (the last
// row may be cut short): element begin + k has channel k.
template <typename Fn>
FASTGAN_CPU_INLINE void for_each_row(int64_t n, int64_t channels, const Fn& fn) {
  for (int64_t r = 0; r < n; r += channels) fn(r, std::min(channels, n - r));
}

// body(j, bias of element j) for j in [0, n): b[j % channels] for kElementBias (a loop
// over rows, each of which vectorises), b[(j / inner) % channels] for kRunBias (a span
// starting at a run; its last run may be cut short), b[0] for kSpanBias, 0 for kNoBias.
template <int BIAS, typename T, typename scalar_t, typename Body>
FASTGAN_CPU_INLINE void for_each_element(int64_t n, int64_t channels, int64_t inner, const scalar_t* __restrict__ b,
                                         const Body& body) {
  if constexpr (BIAS == kElementBias) {
    for_each_row(n, channels, [&](int64_t r, int64_t m) __attribute__((always_inline)) {
      for (int64_t k = 0; k < m; ++k) body(r + k, static_cast<T>(b[k]));
    });
  } else if constexpr (BIAS == kRunBias) {
    for_each_run(n, channels, inner, [&](int64_t r, int64_t m, int64_t c) __attribute__((always_inline)) {
      const T bias = static_cast<T>(b[c]);
      for (int64_t k = 0; k < m; ++k) body(r + k, bias);
    });
  } else {
    const T bias = BIAS == kSpanBias ? static_cast<T>(b[0]) : T(0);
    for (int64_t j = 0; j < n; ++j) body(j, bias);
  }
}

template <int ACT, int BIAS, typename scalar_t>
FASTGAN_CPU_CLONES void forward_span(scalar_t* __restrict__ y, const scalar_t* __restrict__ x,
                                     const scalar_t* __restrict__ b, int64_t n, int64_t channels, int64_t inner,
                                     const Params<acc_t<scalar_t>> p) {
  using T = acc_t<scalar_t>;
  for_each_element<BIAS, T>(n, channels, inner, b, [&](int64_t j, T bias) __attribute__((always_inline)) {
    y[j] = static_cast<scalar_t>(forward_element<ACT>(static_cast<T>(x[j]), bias, p));
  });
}

// dy advances by dy_step: 1, or 0 for a gradient broadcast from one value. The loop
// is unswitched on it by hand: left to GCC, the bfloat16 loops from z stayed scalar
// (11 ns an element).
template <int ACT, bool FROM_Y, int BIAS, typename scalar_t>
FASTGAN_CPU_CLONES void grad_span(scalar_t* __restrict__ dx, const scalar_t* __restrict__ dy, int64_t dy_step,
                                  const scalar_t* __restrict__ ref, const scalar_t* __restrict__ b, int64_t n,
                                  int64_t channels, int64_t inner, const Params<acc_t<scalar_t>> p) {
  using T = acc_t<scalar_t>;
  auto loop = [&](auto dy_at) __attribute__((always_inline)) {
    for_each_element<BIAS, T>(n, channels, inner, b, [&](int64_t j, T bias) __attribute__((always_inline)) {
      const T r = ACT == kLinear ? T(0) : static_cast<T>(ref[j]);
      dx[j] = static_cast<scalar_t>(grad_element<ACT, FROM_Y>(dy_at(j), r, bias, p));
    });
  };
  if (dy_step == 0) {
    const T dy0 = static_cast<T>(dy[0]);
    loop([&](int64_t) __attribute__((always_inline)) { return dy0; });
  } else {
    loop([&](int64_t j) __attribute__((always_inline)) { return static_cast<T>(dy[j]); });
  }
}

template <int ACT, bool FROM_Y, int BIAS, bool NEED_DDY, typename scalar_t>
FASTGAN_CPU_CLONES void grad2_span(scalar_t* __restrict__ d_dy, scalar_t* __restrict__ d_ref,
                                   const scalar_t* __restrict__ ddx, const scalar_t* __restrict__ dy,
                                   const scalar_t* __restrict__ ref, const scalar_t* __restrict__ b, int64_t n,
                                   int64_t channels, int64_t inner, const Params<acc_t<scalar_t>> p) {
  using T = acc_t<scalar_t>;
  for_each_element<BIAS, T>(n, channels, inner, b, [&](int64_t j, T bias) __attribute__((always_inline)) {
    T a, r;
    grad2_element<ACT, FROM_Y>(static_cast<T>(ddx[j]), static_cast<T>(dy[j]), static_cast<T>(ref[j]), bias, p, a,
                               r);
    if (NEED_DDY) d_dy[j] = static_cast<scalar_t>(a);
    d_ref[j] = static_cast<scalar_t>(r);
  });
}

// Sum of dx[0..n) in double, in four lanes.
template <typename scalar_t>
FASTGAN_CPU_INLINE double span_sum(const scalar_t* __restrict__ dx, int64_t n) {
  double s[4] = {0, 0, 0, 0};
  int64_t j = 0;
  for (; j + 4 <= n; j += 4)
    for (int k = 0; k < 4; ++k) s[k] += static_cast<double>(dx[j + k]);
  for (; j < n; ++j) s[0] += static_cast<double>(dx[j]);
  return (s[0] + s[1]) + (s[2] + s[3]);
}

// Adds dx's n elements to the bias gradient's sums, the channels as for_each_element
// finds them: acc[j % channels] += dx[j] (kElementBias), acc[c] += sum of run c's dx
// (kRunBias), acc[0] += sum(dx) (kSpanBias). The sums are of the stored (rounded) dx,
// in double, so db is dx summed whatever the dtype.
template <int MODE, typename scalar_t>
FASTGAN_CPU_CLONES void add_to_bias_grad(double* __restrict__ acc, const scalar_t* __restrict__ dx, int64_t n,
                                         int64_t channels, int64_t inner) {
  if constexpr (MODE == kElementBias) {
    for_each_row(n, channels, [&](int64_t r, int64_t m) __attribute__((always_inline)) {
      for (int64_t k = 0; k < m; ++k) acc[k] += static_cast<double>(dx[r + k]);
    });
  } else if constexpr (MODE == kRunBias) {
    for_each_run(n, channels, inner,
                 [&](int64_t r, int64_t m, int64_t c) __attribute__((always_inline)) { acc[c] += span_sum(dx + r, m); });
  } else {
    acc[0] += span_sum(dx, n);
  }
}

// Runs span(offset, length, channel, BiasMode) over all n elements in blocks of
// `block` elements shared among threads; a span stays inside its block, o / block.
// Without `by_channel` a span is a whole block (kNoBias); with it, a span covers the
// rest of a channel's run (kSpanBias), or consecutive channels from `channel` on
// (kElementBias for inner == 1, kRunBias for runs of inner elements): the rest of a
// row, then the block's whole rows and a part of the next in one span (channel 0),
// which the kernels walk row by row, so no element looks its channel up by division
// and short rows or runs cost no call each.
template <typename Span>
void for_each_span(const FlatLayout& layout, bool by_channel, const Span& span, int64_t block = kCpuChunk) {
  const int64_t inner = layout.inner, channels = layout.channels;
  cpu_for_each_chunk({layout.n}, [&](int64_t, int64_t begin, int64_t end) {
    if (!by_channel) {
      span(begin, end - begin, int64_t{0}, std::integral_constant<int, kNoBias>{});
    } else if (inner == 1) {
      const int64_t c = begin % channels, head = c == 0 ? 0 : std::min(channels - c, end - begin);
      if (head > 0) span(begin, head, c, std::integral_constant<int, kElementBias>{});
      if (begin + head < end)
        span(begin + head, end - begin - head, int64_t{0}, std::integral_constant<int, kElementBias>{});
    } else {
      int64_t o = begin;
      if (o % inner != 0) {  // the rest of a run
        const int64_t len = std::min(inner - o % inner, end - o);
        span(o, len, (o / inner) % channels, std::integral_constant<int, kSpanBias>{});
        o += len;
      }
      const int64_t c = (o / inner) % channels;
      if (o < end && c != 0) {  // the rest of a row
        const int64_t len = std::min((channels - c) * inner, end - o);
        span(o, len, c, std::integral_constant<int, kRunBias>{});
        o += len;
      }
      if (o < end) span(o, end - o, int64_t{0}, std::integral_constant<int, kRunBias>{});
    }
  }, block);
}

// Elements per block of bias_act_grad's pass: kCpuChunk, or more where the per-block
// sums of a wide bias gradient would pass 2^20 values.
int64_t grad_block(int64_t n, int64_t channels, bool need_db) {
  int64_t block = kCpuChunk;
  while (need_db && block < n && ((n + block - 1) / block) * channels > (int64_t{1} << 20)) block *= 2;
  return block;
}

at::Tensor bias_act_cpu(const at::Tensor& x, const c10::optional<at::Tensor>& b, int64_t act, double alpha,
                        double gain, int64_t dim) {
  Launch l = prepare_forward(x, b, act, dim);
  if (l.layout.n == 0) return l.out;
  FASTGAN_CPU_DISPATCH(x.scalar_type(), "bias_act_cpu", [&] {
    const auto p = make_params<acc_t<scalar_t>>(alpha, gain);
    scalar_t* y = cpu_data<scalar_t>(l.out);
    const scalar_t* xp = cpu_data<scalar_t>(l.in0);
    dispatch_act(static_cast<int>(act), [&](auto a) {
      const scalar_t* b = l.bias.defined() ? cpu_data<scalar_t>(l.bias) : nullptr;
      for_each_span(l.layout, b != nullptr, [&](int64_t o, int64_t len, int64_t c, auto mode) {
        forward_span<decltype(a)::value, decltype(mode)::value>(y + o, xp + o, b == nullptr ? b : b + c, len,
                                                                 l.layout.channels, l.layout.inner, p);
      });
    });
  });
  return l.out;
}

std::tuple<at::Tensor, at::Tensor> bias_act_grad_cpu(const at::Tensor& dy, const c10::optional<at::Tensor>& x,
                                                     const c10::optional<at::Tensor>& b,
                                                     const c10::optional<at::Tensor>& y, int64_t act, double alpha,
                                                     double gain, int64_t dim, bool need_db) {
  Launch l = prepare_grad(dy, x, b, y, act, alpha, gain, dim, need_db, /*read_broadcast_dy=*/true);
  const int64_t channels = l.layout.channels, inner = l.layout.inner, block = grad_block(l.layout.n, channels, need_db);
  const int64_t blocks = (l.layout.n + block - 1) / block;
  if (l.layout.n == 0) {
    if (need_db) l.out2.zero_();
    return {l.out, l.out2};
  }
  // Per block, per channel sums of dx: added up in block order, so db does not depend on the thread count.
  c10::SmallVector<double, 512> block_sums(need_db ? blocks * channels : 0, 0.0);
  double* acc = need_db ? block_sums.data() : nullptr;
  FASTGAN_CPU_DISPATCH(dy.scalar_type(), "bias_act_grad_cpu", [&] {
    const auto p = make_params<acc_t<scalar_t>>(alpha, gain);
    scalar_t* dx = cpu_data<scalar_t>(l.out);
    const scalar_t* dy0 = cpu_data<scalar_t>(l.in0);
    const int64_t dy_step = l.in0_broadcast ? 0 : 1;
    const scalar_t* ref = l.in1.defined() ? cpu_data<scalar_t>(l.in1) : nullptr;
    const scalar_t* bias = l.bias.defined() ? cpu_data<scalar_t>(l.bias) : nullptr;
    dispatch_act(static_cast<int>(act), [&](auto a) {
      constexpr int ACT = decltype(a)::value;
      auto pass = [&](auto from_y) {
        constexpr bool FROM_Y = decltype(from_y)::value;
        for_each_span(l.layout, bias != nullptr || need_db, [&](int64_t o, int64_t len, int64_t c, auto mode) {
          constexpr int MODE = decltype(mode)::value;
          const scalar_t* r = ACT == kLinear ? ref : ref + o;
          const scalar_t* dyp = dy0 + o * dy_step;
          if constexpr (FROM_Y || ACT == kLinear) {
            grad_span<ACT, FROM_Y, kNoBias>(dx + o, dyp, dy_step, r, bias, len, channels, inner, p);
          } else if (bias != nullptr) {
            grad_span<ACT, false, MODE>(dx + o, dyp, dy_step, r, bias + c, len, channels, inner, p);
          } else {
            grad_span<ACT, false, kNoBias>(dx + o, dyp, dy_step, r, bias, len, channels, inner, p);
          }
          if constexpr (MODE != kNoBias)
            if (acc != nullptr) add_to_bias_grad<MODE>(acc + (o / block) * channels + c, dx + o, len, channels, inner);
        }, block);
      };
      if constexpr (ACT == kRelu || ACT == kLrelu || ACT == kTanh || ACT == kSigmoid) {
        if (l.ref == Ref::kY) return pass(std::true_type{});
      }
      pass(std::false_type{});
    });
    if (need_db) {  // block k's sums join the totals in block order, read a block's row at a time
      for (int64_t k = 1; k < blocks; ++k)
        for (int64_t c = 0; c < channels; ++c) block_sums[c] += block_sums[k * channels + c];
      scalar_t* db = cpu_data<scalar_t>(l.out2);
      for (int64_t c = 0; c < channels; ++c) db[c] = static_cast<scalar_t>(block_sums[c]);
    }
  });
  return {l.out, l.out2};
}

std::tuple<at::Tensor, at::Tensor> bias_act_grad2_cpu(const at::Tensor& ddx, const at::Tensor& dy,
                                                      const c10::optional<at::Tensor>& x,
                                                      const c10::optional<at::Tensor>& b,
                                                      const c10::optional<at::Tensor>& y, int64_t act, double alpha,
                                                      double gain, int64_t dim, bool need_ddy) {
  Launch l = prepare_grad2(ddx, dy, x, b, y, act, alpha, gain, dim, need_ddy);
  if (l.layout.n == 0) return {l.out, l.out2};
  FASTGAN_CPU_DISPATCH(ddx.scalar_type(), "bias_act_grad2_cpu", [&] {
    const auto p = make_params<acc_t<scalar_t>>(alpha, gain);
    scalar_t* d_dy = need_ddy ? cpu_data<scalar_t>(l.out) : nullptr;
    scalar_t* d_ref = cpu_data<scalar_t>(l.out2);
    const scalar_t* ddxp = cpu_data<scalar_t>(l.in0);
    const scalar_t* dyp = cpu_data<scalar_t>(l.in1);
    const scalar_t* ref = cpu_data<scalar_t>(l.in2);
    dispatch_act(static_cast<int>(act), [&](auto a) {
      constexpr int ACT = decltype(a)::value;
      if constexpr (has_second_order(ACT)) {
        auto run = [&](auto need) {
          constexpr bool NEED = decltype(need)::value;
          if (l.ref == Ref::kY) {
            if constexpr (ACT == kTanh || ACT == kSigmoid) {
              for_each_span(l.layout, false, [&](int64_t o, int64_t len, int64_t, auto) {
                grad2_span<ACT, true, kNoBias, NEED>(NEED ? d_dy + o : nullptr, d_ref + o, ddxp + o, dyp + o,
                                                     ref + o, static_cast<const scalar_t*>(nullptr), len,
                                                     l.layout.channels, l.layout.inner, p);
              });
            }
          } else {
            const scalar_t* b = l.bias.defined() ? cpu_data<scalar_t>(l.bias) : nullptr;
            for_each_span(l.layout, b != nullptr, [&](int64_t o, int64_t len, int64_t c, auto mode) {
              grad2_span<ACT, false, decltype(mode)::value, NEED>(NEED ? d_dy + o : nullptr, d_ref + o, ddxp + o,
                                                                   dyp + o, ref + o, b == nullptr ? b : b + c, len,
                                                                   l.layout.channels, l.layout.inner, p);
            });
          }
        };
        if (need_ddy) run(std::true_type{});
        else run(std::false_type{});
      }
    });
  });
  return {l.out, l.out2};
}

void define_ops(torch::Library& m) {
  // act ids: 0 linear, 1 relu, 2 lrelu, 3 tanh, 4 sigmoid, 5 silu, 6 elu (bias_act_math.h).
  // y = gain * act(x + b), b (optional) indexed along `dim`.
  m.def("bias_act(Tensor x, Tensor? b, int act, float alpha, float gain, int dim) -> Tensor");
  // (dx, db): dx = gain * act'(z) * dy, the derivative taken from y when given, else from
  // z = x + b; db = dx summed over all dims but `dim` when need_db, else empty.
  m.def(
      "bias_act_grad(Tensor dy, Tensor? x, Tensor? b, Tensor? y, int act, float alpha, float gain, int dim, "
      "bool need_db) -> (Tensor, Tensor)");
  // (gain * act'(z) * ddx, d(gain * act')/d(ref) * dy * ddx), ref = y when given, else z = x + b;
  // the first output is empty unless need_ddy.
  m.def(
      "bias_act_grad2(Tensor ddx, Tensor dy, Tensor? x, Tensor? b, Tensor? y, int act, float alpha, float gain, "
      "int dim, bool need_ddy) -> (Tensor, Tensor)");
}

}  // namespace
}  // namespace bias_act

FASTGAN_DEFINE_OPS(bias_act::define_ops)

TORCH_LIBRARY_IMPL(fastgan, CPU, m) {
  m.impl("bias_act", &bias_act::bias_act_cpu);
  m.impl("bias_act_grad", &bias_act::bias_act_grad_cpu);
  m.impl("bias_act_grad2", &bias_act::bias_act_grad2_cpu);
}

}  // namespace fastgan
