// The element types of the CPU kernels, and the one dtype dispatch that picks them.
//
// float16 is stored as CpuHalf rather than c10::Half. c10::Half converts to and from
// float with F16C instructions only where the compiler targets F16C, which a portable
// build does not; otherwise through out-of-line functions, which keep every element
// loop scalar (float16 ran 15-40x slower than float32). CpuHalf's conversions are the
// same exact bit arithmetic (binary16 <-> binary32, round to nearest even), inlined and
// branch-free, so the loops vectorise in every ISA clone. Same layout as c10::Half.
#pragma once

#include <ATen/Dispatch.h>
#include <ATen/core/TensorBase.h>
#include <c10/util/Half.h>

#include <cmath>
#include <cstdint>

#include "cpu_multi_tensor.h"

namespace fastgan {

FASTGAN_CPU_INLINE float float_of_bits(uint32_t bits) { return __builtin_bit_cast(float, bits); }
FASTGAN_CPU_INLINE uint32_t bits_of_float(float value) { return __builtin_bit_cast(uint32_t, value); }

// m ? a : b for a mask m of all ones or all zeros, as bit operations (a branch would
// keep GCC from vectorising).
FASTGAN_CPU_INLINE uint32_t select_bits(uint32_t m, uint32_t a, uint32_t b) { return (m & a) | (~m & b); }

// binary16 -> binary32, exact. Normal halves: the exponent and mantissa shifted into
// place and rebiased by a multiply with 2^-112 (inf and NaN overflow to inf/NaN);
// subnormal halves and zero: the mantissa as the low bits of 0.5's, minus 0.5.
FASTGAN_CPU_INLINE float half_bits_to_float(uint16_t half) {
  const uint32_t word = uint32_t{half} << 16, sign = word & 0x80000000u, magnitude = word << 1;
  const float normal = float_of_bits((magnitude >> 4) + (0xE0u << 23)) * float_of_bits(15u << 23);
  const float subnormal = float_of_bits((magnitude >> 17) | (126u << 23)) - 0.5f;
  const uint32_t is_subnormal = -static_cast<uint32_t>(magnitude < (1u << 27));
  return float_of_bits(sign | select_bits(is_subnormal, bits_of_float(subnormal), bits_of_float(normal)));
}

// binary32 -> binary16, rounded to nearest even (overflow to inf, NaN to a quiet NaN):
// |x| is scaled so that values beyond half's range reach inf, then added to a power of
// two whose ulp is half's ulp at |x|, so that the float addition itself rounds.
FASTGAN_CPU_INLINE uint16_t float_to_half_bits(float value) {
  const uint32_t word = bits_of_float(value), magnitude = word << 1, sign = word & 0x80000000u;
  const float scaled = (std::fabs(value) * float_of_bits(239u << 23)) * float_of_bits(17u << 23);
  const uint32_t exponent = magnitude & 0xFF000000u;
  const uint32_t bias = select_bits(-static_cast<uint32_t>(exponent < 0x71000000u), 0x71000000u, exponent);
  const uint32_t rounded = bits_of_float(float_of_bits((bias >> 1) + 0x07800000u) + scaled);
  const uint32_t finite = ((rounded >> 13) & 0x7C00u) + (rounded & 0x0FFFu);
  const uint32_t is_nan = -static_cast<uint32_t>(magnitude > 0xFF000000u);
  return static_cast<uint16_t>((sign >> 16) | select_bits(is_nan, 0x7E00u, finite));
}

struct CpuHalf {
  uint16_t bits;
  CpuHalf() = default;
  FASTGAN_CPU_INLINE CpuHalf(float value) : bits(float_to_half_bits(value)) {}
  FASTGAN_CPU_INLINE operator float() const { return half_bits_to_float(bits); }
};
static_assert(sizeof(CpuHalf) == sizeof(c10::Half) && alignof(CpuHalf) == alignof(c10::Half));

// The CPU element type of an ATen scalar type, and back.
template <typename T>
struct CpuScalar { using type = T; using storage = T; };
template <>
struct CpuScalar<c10::Half> { using type = CpuHalf; using storage = c10::Half; };
template <>
struct CpuScalar<CpuHalf> { using type = CpuHalf; using storage = c10::Half; };

// t's elements as `scalar_t` (a CPU element type), checked against t's dtype as
// data_ptr<T>() checks it.
template <typename scalar_t>
scalar_t* cpu_data(const at::TensorBase& t) {
  return reinterpret_cast<scalar_t*>(t.data_ptr<typename CpuScalar<scalar_t>::storage>());
}

}  // namespace fastgan

// AT_DISPATCH_FLOATING_TYPES_AND2(kHalf, kBFloat16, ...) with scalar_t the CPU element
// type (CpuHalf for float16).
#define FASTGAN_CPU_DISPATCH(TYPE, NAME, ...)                                        \
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, TYPE, NAME, [&] {        \
    using scalar_t [[maybe_unused]] = typename ::fastgan::CpuScalar<scalar_t>::type; \
    return (__VA_ARGS__)();                                                          \
  })
