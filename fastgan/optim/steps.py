"""A training step's optimizer calls with less host time: :func:`optimizer_step` and
:func:`clear_grads`.

On a GPU a small GAN step is bound by host time. ``torch.optim.Adam(fused=True).step()``
spends about 57 us per call on a toy critic, of which its kernels (the step counts' add
and the fused update) need about 22 us: the rest is ``Optimizer.step``'s wrapper (a
profiler range, hook loops) and the per-step list building of the functional API.
``zero_grad(set_to_none=True)`` costs 9.5 us where setting the gradients to None costs
0.4 us. These make the same kernel calls with the same arguments, so the update is bit
for bit torch's, and hand every case they do not cover to torch.
"""
from typing import List, Optional, Tuple

import torch
from torch.optim import optimizer as _optimizer_module

from .._backend import _is_compiling
from ..ops._caller import without_grad

_GroupLists = Tuple[List[torch.Tensor], List[torch.Tensor], List[torch.Tensor], List[torch.Tensor],
                    List[torch.Tensor]]


def _no_hooks(optimizer: torch.optim.Optimizer) -> bool:
    return not (getattr(optimizer, "_optimizer_step_pre_hooks", True)
                or getattr(optimizer, "_optimizer_step_post_hooks", True)
                or getattr(_optimizer_module, "_global_optimizer_pre_hooks", True)
                or getattr(_optimizer_module, "_global_optimizer_post_hooks", True))


def _fused_adam_lists(optimizer: torch.optim.Adam, group: dict) -> Optional[_GroupLists]:
    """(params, grads, exp_avgs, exp_avg_sqs, steps) of a group that ``torch._fused_adam_``
    updates as torch's fused Adam does, or None where torch's own step must run."""
    if (not group["fused"] or group["amsgrad"] or group["differentiable"] or group.get("decoupled_weight_decay")
            or type(group["betas"][0]) is not float or type(group["betas"][1]) is not float):
        return None
    params, grads, exp_avgs, exp_avg_sqs, steps = [], [], [], [], []
    device = dtype = None
    state = optimizer.state
    for p in group["params"]:
        grad = p.grad
        if grad is None:
            continue
        s = state.get(p)
        if not s or grad.is_sparse:  # the first step initialises the state
            return None
        if device is None:
            device, dtype = p.device, p.dtype
        elif p.device != device or p.dtype != dtype:
            return None
        params.append(p)
        grads.append(grad)
        exp_avgs.append(s["exp_avg"])
        exp_avg_sqs.append(s["exp_avg_sq"])
        steps.append(s["step"])
    lr = group["lr"]
    if isinstance(lr, torch.Tensor) and params and lr.device != device:
        return None
    return params, grads, exp_avgs, exp_avg_sqs, steps


def optimizer_step(optimizer: torch.optim.Optimizer) -> None:
    """``optimizer.step()``. For a ``torch.optim.Adam`` whose groups are fused (as
    :func:`fastgan.train.recipes.adam` builds them), with its state initialised and no
    step hooks, the same kernels without the Python around them: per group
    ``torch._foreach_add_(steps, 1)`` and one ``torch._fused_adam_``. Anything else
    (another optimizer, AMSGrad, decoupled weight decay, tensor betas, hooks, an LR
    scheduler's patched ``step``, a GradScaler's ``grad_scale``, mixed devices or dtypes,
    the first step, a CUDA graph being captured, torch.compile) runs ``optimizer.step()``."""
    if (type(optimizer) is not torch.optim.Adam or "step" in optimizer.__dict__ or _is_compiling()
            or getattr(optimizer, "grad_scale", None) is not None or getattr(optimizer, "found_inf", None) is not None
            or not _no_hooks(optimizer)):
        optimizer.step()
        return
    plan = []
    for group in optimizer.param_groups:
        lists = _fused_adam_lists(optimizer, group)
        if lists is None:
            optimizer.step()
            return
        if lists[0]:
            plan.append((group, lists))
    if any(lists[0][0].is_cuda for _, lists in plan) and torch.cuda.is_current_stream_capturing():
        optimizer.step()  # with its check that every group is capturable
        return
    without_grad(_fused_adam_steps, plan)


def _fused_adam_steps(plan: List[Tuple[dict, _GroupLists]]) -> None:
    for group, (params, grads, exp_avgs, exp_avg_sqs, steps) in plan:
        beta1, beta2 = group["betas"]
        torch._foreach_add_(steps, 1)
        torch._fused_adam_(params, grads, exp_avgs, exp_avg_sqs, [], steps, amsgrad=False, lr=group["lr"],
                           beta1=beta1, beta2=beta2, weight_decay=group["weight_decay"], eps=group["eps"],
                           maximize=group["maximize"], grad_scale=None, found_inf=None)


def clear_grads(optimizer: torch.optim.Optimizer) -> None:
    """``optimizer.zero_grad(set_to_none=True)``: every parameter's ``.grad`` set to None,
    without ``zero_grad``'s profiler range. An optimizer class that defines its own
    ``zero_grad`` gets it called."""
    if type(optimizer).zero_grad is not torch.optim.Optimizer.zero_grad or "zero_grad" in optimizer.__dict__:
        optimizer.zero_grad(set_to_none=True)
        return
    for group in optimizer.param_groups:
        for p in group["params"]:
            p.grad = None
