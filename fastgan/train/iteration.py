"""One training iteration — ``n_critic`` critic updates and one generator update — as
one call, recorded as one CUDA graph when captured (docs/theory.md §2–3).

On a GPU a small GAN step is bound by host time: an eager WGAN-GP critic step
launches about 180 kernels, each costing microseconds of Python and dispatcher time.
Replaying the whole iteration from one graph leaves the host one ``copy_`` of the
data batches and one ``replay`` per iteration. Everything a step needs changes on
the device: the noise (z, the penalty's ε) is drawn inside the graph from the CUDA
generator, the learning rates are device tensors updated in place
(:func:`~fastgan.train.recipes.set_lr`), and the step statistics are summed into
device tensors that the loop reads once per logging interval.
"""
import functools
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn

from ..ops.losses import RELATIVISTIC_KINDS
from .graphs import GraphedCall, check_capturable
from .recipes import Recipe, generator_step, make_critic_step

Pattern = Tuple[bool, ...]


class TrainIteration:
    """``iteration(reals, first_index)`` runs ``n_critic`` critic steps on
    ``reals[i]`` (``(n_critic, B, ...)``) with fresh ``z ~ N(0, I)`` of shape
    ``(B, latent_dim)``, then one generator step on a fresh z (a relativistic generator
    loss, R3GAN's, also reads the last real batch ``reals[-1]``), exactly as calling
    :func:`~fastgan.train.recipes.critic_step` and
    :func:`~fastgan.train.recipes.generator_step` in that order would (the same
    random draws in the same order: on the CPU the result is bit for bit theirs).
    ``first_index`` is the global index of the first critic step: lazy
    regularisation applies the penalties on the critic steps whose index is a
    multiple of ``recipe.reg_every``.

    ``capture=True`` (CUDA only; optimizers from
    ``make_optimizers(..., capturable=True)``) records the iteration as one CUDA
    graph per regularisation pattern (one graph unless ``reg_every`` > 1) through
    :class:`~fastgan.train.graphs.GraphedCall`: ``warmup`` eager iterations on a side
    stream, then one recording, then replays. Every call is one real iteration.

    Statistics: every step's returned values are added on the device into running
    sums; :meth:`take_means` returns their means since its last call (one host
    synchronisation) and resets them.
    """

    def __init__(self, recipe: Recipe, generator: nn.Module, critic: nn.Module, opt_g: torch.optim.Optimizer,
                 opt_d: torch.optim.Optimizer, *, latent_dim: int, capture: bool = False,
                 backend: Optional[str] = None, warmup: int = 3, steps: Optional[Tuple[Callable, Callable]] = None):
        self.recipe, self.generator, self.critic = recipe, generator, critic
        self.opt_g, self.opt_d = opt_g, opt_d
        self.latent_dim, self.backend, self.capture, self.warmup = latent_dim, backend, bool(capture), warmup
        # (step_d(real, z, regularize=), step_g(z)) on the global batch; by default the
        # configured one-process steps, uncaptured: the iteration is the unit recorded.
        self._step_d, self._step_g = steps or (
            make_critic_step(recipe, critic, generator, opt_d, capture=False, backend=backend),
            functools.partial(generator_step, generator, critic, opt_g, loss=recipe.g_loss, backend=backend))
        # a relativistic generator loss (R3GAN) compares with the critic on the iteration's last real batch
        self._g_reads_real = recipe.g_loss in RELATIVISTIC_KINDS
        self._sums: Dict[str, torch.Tensor] = {}
        self._counts: Dict[str, int] = {}
        self._graphs: Dict[Pattern, GraphedCall] = {}
        if self.capture:
            check_capturable([generator, critic], [opt_g, opt_d])

    def pattern(self, first_index: int) -> Pattern:
        """Which of this iteration's critic steps apply the penalties."""
        k = self.recipe.reg_every
        return tuple((first_index + i) % k == 0 for i in range(self.recipe.n_critic))

    def __call__(self, reals: torch.Tensor, first_index: int) -> None:
        if reals.shape[0] != self.recipe.n_critic:
            raise ValueError(f"reals must hold n_critic={self.recipe.n_critic} batches, got {reals.shape[0]}")
        pattern = self.pattern(first_index)
        if not self.capture:
            self._accumulate(self._run(reals, pattern))
        else:
            graphed = self._graphs.get(pattern)
            if graphed is None:
                graphed = self._graphs[pattern] = GraphedCall(
                    lambda batches: self._accumulate(self._run(batches, pattern)), warmup=self.warmup,
                    names=("reals",), owner="TrainIteration", before_record=self._before_record)
            graphed(reals)
        for key in self._sums:
            self._counts[key] = self._counts.get(key, 0) + (1 if key == "g_loss" else len(pattern))

    def _run(self, reals: torch.Tensor, pattern: Pattern) -> List[Dict[str, torch.Tensor]]:
        batch, device = reals.shape[1], reals.device
        stats = []
        for real, regularize in zip(reals, pattern):
            z = torch.randn(batch, self.latent_dim, device=device)
            stats.append(self._step_d(real, z, regularize=regularize))
        z = torch.randn(batch, self.latent_dim, device=device)
        stats.append(self._step_g(z, real=reals[-1]) if self._g_reads_real else self._step_g(z))
        return stats

    def _accumulate(self, stats: Sequence[Dict[str, torch.Tensor]]) -> None:
        if not self._sums:  # the first (eager) iteration allocates the sums outside any graph's pool
            self._sums = {key: torch.zeros_like(value) for step in stats for key, value in step.items()}
        for step in stats:  # one foreach add per step (one launch on CUDA), not one add_ per statistic
            torch._foreach_add_([self._sums[key] for key in step], list(step.values()))

    def _before_record(self) -> None:
        self.opt_g.zero_grad(set_to_none=True)  # gradients are allocated in the graph's pool
        self.opt_d.zero_grad(set_to_none=True)

    def take_means(self) -> Dict[str, float]:
        """The mean of every statistic over the steps since the last call; resets the sums."""
        keys = list(self._sums)
        if not self._counts:  # no step since the last call
            return {}
        values = torch.stack([self._sums[key].float() for key in keys]).tolist()  # one synchronisation
        means = {key: value / self._counts[key] for key, value in zip(keys, values)}
        for total in self._sums.values():
            total.zero_()
        self._counts.clear()
        return means


def match_capturable(optimizer: torch.optim.Optimizer, capturable: bool) -> None:
    """Make a loaded optimizer's groups and state fit ``capturable`` (a checkpoint keeps
    the mode of the run that wrote it, and ``load_state_dict`` restores its groups
    as saved): capturable groups hold their lr as a float32 tensor and their step
    counters on the parameters' device; others a float lr, and CPU step counters
    unless the group is fused (torch's fused Adam counts on the parameters' device)."""
    for group in optimizer.param_groups:
        if "capturable" in group:
            group["capturable"] = capturable
        device = group["params"][0].device if group["params"] else torch.device("cpu")
        lr = group["lr"]
        if capturable:
            value = lr.to(device=device, dtype=torch.float32) if isinstance(lr, torch.Tensor) else \
                torch.tensor(lr, dtype=torch.float32, device=device)
            group["lr"] = value.reshape(())
        elif isinstance(lr, torch.Tensor):
            group["lr"] = float(lr)
        on_device = capturable or bool(group.get("fused"))
        for p in group["params"]:
            step = optimizer.state.get(p, {}).get("step")
            if isinstance(step, torch.Tensor):
                optimizer.state[p]["step"] = step.to(device=p.device if on_device else "cpu", dtype=torch.float32)
