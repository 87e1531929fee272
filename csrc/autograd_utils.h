// Helpers shared by the families' C++ autograd (csrc/*_autograd.cpp).
#pragma once

#include <ATen/core/grad_mode.h>
#include <c10/core/impl/LocalDispatchKeySet.h>
#include <ATen/core/LegacyTypeDispatch.h>

namespace fastgan {

// Runs `call` (a call of a differentiable fastgan op inside a backward formula) below
// the Autograd key when no graph is being built, i.e. in a first-order backward: the
// op's own autograd Function would record nothing and only cost host time. With
// create_graph=True (a double backward) the call goes through autograd as usual.
template <typename Call>
auto call_in_backward(const Call& call) {
  if (at::GradMode::is_enabled()) return call();
  at::AutoDispatchBelowADInplaceOrView guard;
  return call();
}

}  // namespace fastgan
