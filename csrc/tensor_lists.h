// Host-side preparation of tensor lists for multi-tensor kernels (CPU and CUDA).
//
// A multi-tensor kernel treats tensor i of every list as one flat array of
// numel elements. That holds when the tensors are non-overlapping and dense with
// identical strides; anything else (a strided view, a grad whose layout differs
// from its parameter) is staged through a contiguous copy that is written back.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include <utility>
#include <vector>

namespace fastgan {

struct FlatTensorLists {
  // lists[l][i]: flat-addressable tensor i of list l.
  std::vector<std::vector<at::Tensor>> lists;
  std::vector<int64_t> numels;
  // (user tensor, staging copy) pairs to copy back after the kernel.
  std::vector<std::pair<at::Tensor, at::Tensor>> write_back;

  void finish() {
    for (auto& pair : write_back) pair.first.copy_(pair.second);
    write_back.clear();
  }
  int64_t size() const { return static_cast<int64_t>(numels.size()); }
};

// Bumps the version counter of every tensor a kernel wrote in place, as torch's own
// in-place ops do: autograd checks it before using a saved tensor.
inline void bump_versions(at::TensorList tensors) {
  for (const at::Tensor& t : tensors) t.unsafeGetTensorImpl()->bump_version();
}

inline bool same_flat_layout(const at::Tensor& a, const at::Tensor& b) {
  return a.sizes().equals(b.sizes()) && (a.numel() <= 1 || a.strides().equals(b.strides()));
}

// `written[l]` says whether the kernel writes list l (those need a write-back); errors
// call list l `names[l]`.
inline FlatTensorLists flatten_tensor_lists(const std::vector<at::TensorList>& lists,
                                           const std::vector<bool>& written, const std::vector<const char*>& names,
                                           const char* op) {
  TORCH_CHECK(!lists.empty() && lists.size() == written.size() && lists.size() == names.size(), op,
              ": internal error, bad list spec");
  const int64_t n = static_cast<int64_t>(lists[0].size());
  FlatTensorLists out;
  out.lists.resize(lists.size());
  if (n == 0) return out;
  const at::Tensor& first = lists[0][0];
  for (size_t l = 0; l < lists.size(); ++l) {
    TORCH_CHECK(static_cast<int64_t>(lists[l].size()) == n, op, ": ", names[l], " has ", lists[l].size(),
                " tensors but ", names[0], " has ", n);
  }
  for (int64_t i = 0; i < n; ++i) {
    const at::Tensor& lead = lists[0][i];
    bool flat = lead.is_non_overlapping_and_dense();
    for (size_t l = 0; l < lists.size(); ++l) {
      const at::Tensor& t = lists[l][i];
      TORCH_CHECK(t.layout() == c10::kStrided && at::isFloatingType(t.scalar_type()), op, ": ", names[l], "[", i,
                  "] must be a dense floating-point tensor, got ", t.scalar_type());
      TORCH_CHECK(t.scalar_type() == first.scalar_type() && t.device() == first.device(), op, ": ", names[l], "[",
                  i, "] is ", t.scalar_type(), " on ", t.device(), " but ", names[0], "[0] is ", first.scalar_type(),
                  " on ", first.device(), ": one dtype and device per call");
      TORCH_CHECK(t.sizes().equals(lead.sizes()), op, ": ", names[l], "[", i, "] has shape ", t.sizes(), " but ",
                  names[0], "[", i, "] has ", lead.sizes());
      flat = flat && t.is_non_overlapping_and_dense() && same_flat_layout(t, lead);
    }
    for (size_t l = 0; l < lists.size(); ++l) {
      const at::Tensor& t = lists[l][i];
      if (flat || t.is_contiguous()) {
        out.lists[l].push_back(t);
      } else {
        at::Tensor staged = t.contiguous();
        if (written[l]) out.write_back.emplace_back(t, staged);
        out.lists[l].push_back(staged);
      }
    }
    out.numels.push_back(lead.numel());
  }
  return out;
}

}  // namespace fastgan
