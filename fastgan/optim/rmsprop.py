"""RMSprop with WGAN weight clipping fused into its step (docs/theory.md §3)."""
from typing import Any, Dict, Iterable, Optional

import torch

from .._backend import _check_name, resolve_backend
from .._validate import check_floating, check_lr_tensor, check_positive_finite, check_real
from ..ops.clip import _rmsprop_clip, clip_weights_


def _checked_clip_value(index: int, value) -> float:
    """A group's ``clip_value`` as a float, or ValueError/TypeError naming the group
    unless it is a finite number > 0 (NaN would disable clipping, c <= 0 would pin
    or zero every parameter)."""
    return check_positive_finite(f"param_groups[{index}]['clip_value']", value)


_REALS = ("lr", "alpha", "eps", "weight_decay", "momentum")


def _checked_lr(index: int, lr):
    """A group's learning rate: a float checked finite and >= 0, or a one-element
    floating tensor (capturable steps read its value on the device, unchecked)."""
    if isinstance(lr, torch.Tensor):
        check_lr_tensor(f"param_groups[{index}]['lr']", lr, lr.device)
        return lr
    return check_real(f"param_groups[{index}]['lr']", lr, minimum=0.0)
_FLAGS = ("centered", "maximize", "capturable")


def _check_settings(where: str, settings: Dict[str, Any]) -> None:
    """ValueError/TypeError naming the setting (``lr`` or ``param_groups[1]['lr']``)
    unless every real one present is a finite number >= 0 and every flag a bool
    (``centered="no"`` would be taken as True)."""
    name = (lambda key: f"{where}[{key!r}]") if where else (lambda key: key)
    for key in _REALS:
        if key == "lr" and isinstance(settings.get(key), torch.Tensor):
            check_lr_tensor(name(key), settings[key], settings[key].device)
        elif key in settings:
            check_real(name(key), settings[key], minimum=0.0)
    for key in _FLAGS:
        if key in settings and not isinstance(settings[key], bool):
            raise TypeError(f"{name(key)} must be a bool, got {type(settings[key]).__name__}")


def _check_group(index: int, group: Dict[str, Any]) -> None:
    """Every setting of ``param_groups[index]`` that it holds (see _check_settings),
    and its clip_value."""
    if "clip_value" in group:  # absent only while __init__ adds the groups it was given
        _checked_clip_value(index, group["clip_value"])
    _check_settings(f"param_groups[{index}]", group)


class ClippedRMSprop(torch.optim.RMSprop):
    """``torch.optim.RMSprop`` whose ``step()`` also clamps every parameter into
    ``[-clip_value, clip_value]``, fused into one pass over parameter, gradient and
    state per (device, dtype) group (one launch on CUDA for a whole critic).

    ``step()`` equals ``torch.optim.RMSprop.step()`` followed by
    ``clamp_(-clip_value, clip_value)`` on every parameter of the group,
    including parameters without a gradient (which RMSprop skips but the WGAN
    loop still clips). The state layout is RMSprop's, so ``state_dict()`` loads
    into and from ``torch.optim.RMSprop`` (groups gain a ``clip_value`` entry;
    one loaded from RMSprop takes this optimizer's default).

    Args:
        params: parameters or param groups (a group may set its own ``clip_value``).
        lr, alpha, eps, weight_decay, momentum, centered, maximize, capturable:
            as in ``torch.optim.RMSprop`` (defaults from the WGAN paper: lr 5e-5).
            ``lr`` may be a one-element tensor on the parameters' device, as with
            ``capturable=True`` in torch: the fused kernel reads it on the device, so a
            step recorded in a CUDA graph uses the value the tensor holds at each
            replay (update it in place, e.g. ``group["lr"].fill_(new_lr)``).
        clip_value: c > 0.
        backend: fastgan backend for the fused step (see :func:`fastgan.set_backend`).

    A ``clip_value`` that is not a finite number > 0 (NaN would disable clipping,
    c <= 0 pin or zero every parameter), a real setting that is not finite and >= 0
    and a flag that is not a bool raise ValueError/TypeError naming the argument, or
    the group (``param_groups[1]['clip_value']``): at construction, in
    ``add_param_group`` and ``load_state_dict`` (before any change), and for
    ``clip_value`` and ``lr`` at every ``step()`` (a group edited through
    ``param_groups``), before any parameter moves.
    """

    def __init__(self, params, lr: float = 5e-5, alpha: float = 0.99, eps: float = 1e-8,
                 weight_decay: float = 0, momentum: float = 0, centered: bool = False,
                 clip_value: float = 0.01, *, maximize: bool = False, capturable: bool = False,
                 backend: Optional[str] = None):
        clip_value = check_positive_finite("clip_value", clip_value)
        _check_settings("", dict(lr=lr, alpha=alpha, eps=eps, weight_decay=weight_decay, momentum=momentum,
                                 centered=centered, maximize=maximize, capturable=capturable))
        if isinstance(params, torch.Tensor) or not isinstance(params, Iterable):
            raise TypeError(f"params must be an iterable of tensors or param groups, got {type(params).__name__}")
        self.backend = None if backend is None else _check_name(backend, "backend")
        super().__init__(params, lr=lr, alpha=alpha, eps=eps, weight_decay=weight_decay, momentum=momentum,
                         centered=centered, capturable=capturable, foreach=False, maximize=maximize,
                         differentiable=False)
        # Groups added from now on take this default through torch's add_param_group.
        self.defaults["clip_value"] = clip_value
        for group in self.param_groups:
            group.setdefault("clip_value", clip_value)

    def add_param_group(self, param_group: Dict[str, Any]) -> None:
        """``torch.optim.Optimizer.add_param_group``, refusing (and not adding) a group
        whose ``clip_value`` is not a finite number > 0, whose other settings are bad
        (see the class doc) or whose parameters are not real floating-point tensors;
        errors name the group."""
        index = len(self.param_groups)
        super().add_param_group(param_group)
        group = self.param_groups[-1]
        try:
            _check_group(index, group)
            for position, p in enumerate(group["params"]):
                check_floating(f"param_groups[{index}]['params'][{position}]", p)
        except (TypeError, ValueError):
            self.param_groups.pop()
            raise

    def load_state_dict(self, state_dict: Dict[str, Any]) -> None:
        """``torch.optim.Optimizer.load_state_dict``, refusing a state dict with a bad
        ``clip_value`` or other setting in any group before any state changes (groups
        without a clip_value, as ``torch.optim.RMSprop``'s, take this optimizer's default)."""
        groups = state_dict.get("param_groups") if isinstance(state_dict, dict) else None
        for index, group in enumerate(groups if isinstance(groups, list) else []):
            if isinstance(group, dict):
                _check_group(index, group)
        super().load_state_dict(state_dict)

    def __getstate__(self) -> Dict[str, Any]:
        """torch's optimizer state for pickling and ``copy.deepcopy``, with the backend."""
        return {**super().__getstate__(), "backend": self.backend}

    def __setstate__(self, state):
        super().__setstate__(state)
        default = self.defaults.get("clip_value", 0.01)
        for group in self.param_groups:
            group.setdefault("clip_value", default)
        self.__dict__.setdefault("backend", None)

    def __repr__(self) -> str:
        return super().__repr__().replace(type(self).__name__, f"{type(self).__name__}[backend={self.backend}]", 1)

    def _group_buckets(self, group):
        """Per (device, dtype): [params, grads, square_avgs, grad_avgs, momentum_buffers],
        plus the step counters and the parameters without a gradient."""
        buckets, steps, no_grad = {}, [], []
        centered, use_momentum = group["centered"], group["momentum"] > 0
        for p in group["params"]:
            grad = p.grad
            if grad is None:
                no_grad.append(p)
                continue
            if grad.is_sparse:
                raise RuntimeError("ClippedRMSprop does not support sparse gradients")
            state = self.state[p]
            if len(state) == 0:
                state["step"] = torch.zeros((), dtype=torch.float32,
                                            device=p.device if group["capturable"] else None)
                state["square_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                if use_momentum:
                    state["momentum_buffer"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                if centered:
                    state["grad_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            lists = buckets.get((p.device, p.dtype))
            if lists is None:
                lists = buckets[(p.device, p.dtype)] = ([], [], [], [], [])
            lists[0].append(p)
            lists[1].append(grad)
            lists[2].append(state["square_avg"])
            if centered:
                lists[3].append(state["grad_avg"])
            if use_momentum:
                lists[4].append(state["momentum_buffer"])
            steps.append(state["step"])
        return buckets, steps, no_grad

    @torch.no_grad()
    def step(self, closure=None):
        """Perform one RMSprop step and clip; returns the closure's loss if given."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        # Every group is checked before any state changes: a bad value set through
        # param_groups after construction fails here, naming its group.
        hyper = [(_checked_lr(index, group["lr"]), _checked_clip_value(index, group["clip_value"]))
                 for index, group in enumerate(self.param_groups)]
        for index, (group, (lr, clip_value)) in enumerate(zip(self.param_groups, hyper)):
            if group.get("differentiable", False):
                raise NotImplementedError("ClippedRMSprop does not support differentiable=True")
            buckets, steps, no_grad = self._group_buckets(group)
            if isinstance(lr, torch.Tensor):
                for device, _ in buckets:
                    check_lr_tensor(f"param_groups[{index}]['lr']", lr, device)
            # Every bucket's backend is resolved before any state changes.
            backends = [resolve_backend(self.backend, device, "ClippedRMSprop.step") for device, _ in buckets]
            if steps:
                torch._foreach_add_(steps, 1.0)
            for backend, (params, grads, square_avgs, grad_avgs, buffers) in zip(backends, buckets.values()):
                _rmsprop_clip(params, grads, square_avgs, grad_avgs, buffers, lr, group["alpha"], group["eps"],
                              group["weight_decay"], group["momentum"], group["centered"], group["maximize"],
                              clip_value, backend)
            if no_grad:
                clip_weights_(no_grad, clip_value, backend=self.backend)
        return loss
