// One parallel pass over many tensors on the CPU: the elements of all tensors are
// cut into chunks and the chunks shared among at::parallel_for's threads, so
// many small tensors cost one fork/join rather than one each.
#pragma once

#include <ATen/Parallel.h>

#include <algorithm>
#include <vector>

// Element loops are compiled for AVX-512, AVX2 and the baseline x86-64 ISA and
// picked at load time (GCC function multi-versioning), so a source build runs
// vectorised code on whatever CPU it lands on.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && defined(__linux__)
#define FASTGAN_CPU_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define FASTGAN_CPU_CLONES
#endif

// A helper of such loops, always inlined so that it is compiled into each ISA clone
// (a separate function would run the baseline ISA).
#if defined(__GNUC__)
#define FASTGAN_CPU_INLINE inline __attribute__((always_inline))
#else
#define FASTGAN_CPU_INLINE inline
#endif

namespace fastgan {

constexpr int64_t kCpuChunk = 1 << 15;

// fn(tensor index, begin, end) is called on disjoint element ranges covering
// [0, numels[i]) for every tensor i: the pieces of `chunk` elements each tensor is cut into.
template <typename Fn>
void cpu_for_each_chunk(const std::vector<int64_t>& numels, const Fn& fn, int64_t chunk = kCpuChunk) {
  std::vector<int64_t> chunk_start(numels.size() + 1, 0);
  int64_t elements = 0;
  for (size_t i = 0; i < numels.size(); ++i) {
    chunk_start[i + 1] = chunk_start[i] + (numels[i] + chunk - 1) / chunk;
    elements += numels[i];
  }
  const int64_t total = chunk_start.back();
  if (elements <= chunk) {  // one chunk's work: waking the thread pool costs more than it saves
    for (size_t i = 0; i < numels.size(); ++i)
      if (numels[i] > 0) fn(static_cast<int64_t>(i), 0, numels[i]);
    return;
  }
  at::parallel_for(0, total, 1, [&](int64_t first, int64_t last) {
    for (int64_t c = first; c < last; ++c) {
      const auto t = std::upper_bound(chunk_start.begin(), chunk_start.end(), c) - chunk_start.begin() - 1;
      const int64_t begin = (c - chunk_start[t]) * chunk;
      fn(static_cast<int64_t>(t), begin, std::min(begin + chunk, numels[t]));
    }
  });
}

}  // namespace fastgan
