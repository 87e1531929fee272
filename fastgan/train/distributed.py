"""Training across processes with ``torch.distributed``: the same model as one large batch.

Launched by ``torchrun`` (``fastgan train --nproc N`` runs torchrun's launcher), each of
the W processes reads its rank from the environment torchrun sets (``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK``, ``LOCAL_WORLD_SIZE``), joins the process group (NCCL on
the GPU ``LOCAL_RANK``, gloo on the CPU, with a timeout) and trains the generator and the
critic wrapped in ``DistributedDataParallel``.

``--batch-size`` B is the global batch. Every rank draws the whole global batch (data, z
and WGAN-GP's ε) from the same seeded generators, so the random stream is that of a
1-process run whatever W is, and computes its rows ``[r·B/W, (r+1)·B/W)``. DDP averages
the gradients of the per-rank batch means, which is the gradient of the global batch mean;
the logged losses (means over equal slices) are averaged over ranks the same way. The
penalties take the input gradient with ``create_graph=True`` through the DDP critic and
the step runs one ordinary backward (the pattern of pytorch#63812), so every parameter's
gradient is all-reduced once per step.
"""
import dataclasses
import datetime
import functools
import os
import time
from contextlib import contextmanager
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

import torch
from torch import nn

from .._layout import acc_dtype
from .recipes import Recipe, Stats, generator_step, make_critic_step

DEFAULT_TIMEOUT_S = 600.0  # a collective that waits longer than this means a rank died or hangs
QUIESCE_S = 0.05  # the GIL-free moment at the end of a run (see _quiesce)
ENVIRONMENT = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE")


class RankFailure(RuntimeError):
    """Another process of the run failed or stopped answering (a collective raised or timed out)."""


@dataclasses.dataclass(frozen=True)
class Ranks:
    """Where this process stands in the run: ``rank`` of ``world_size`` processes, the
    ``local_rank`` of ``local_world_size`` on its machine (1 process: all zeros/ones)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1

    @property
    def is_main(self) -> bool:
        """Rank 0 writes the checkpoints, logs, metrics, plots and progress bar."""
        return self.rank == 0

    def rows(self, batch_size: int) -> slice:
        """This rank's rows ``[r·b, (r+1)·b)`` of a global batch, ``b = batch_size / W``."""
        check_batch_size(batch_size, self.world_size)
        local = batch_size // self.world_size
        return slice(self.rank * local, (self.rank + 1) * local)


def ranks_from_environment(environ: Optional[Dict[str, str]] = None) -> Ranks:
    """The :class:`Ranks` torchrun describes in `environ` (default ``os.environ``); one
    process when ``WORLD_SIZE`` is unset. ValueError naming the variable when it is not
    an integer or out of range."""
    environ = os.environ if environ is None else environ
    if "WORLD_SIZE" not in environ:
        return Ranks()
    values = {}
    for name in ENVIRONMENT:
        text = environ.get(name, "1" if name == "LOCAL_WORLD_SIZE" else "0")
        try:
            values[name] = int(text)
        except ValueError:
            raise ValueError(f"${name} must be an integer (torchrun sets it), got {text!r}") from None
    ranks = Ranks(values["RANK"], values["WORLD_SIZE"], values["LOCAL_RANK"], values["LOCAL_WORLD_SIZE"])
    if not (0 <= ranks.rank < ranks.world_size and 0 <= ranks.local_rank < ranks.local_world_size):
        raise ValueError(f"torchrun's environment is inconsistent: RANK={ranks.rank} of WORLD_SIZE="
                         f"{ranks.world_size}, LOCAL_RANK={ranks.local_rank} of LOCAL_WORLD_SIZE="
                         f"{ranks.local_world_size}")
    return ranks


def check_batch_size(batch_size: int, world_size: int) -> None:
    """ValueError naming ``--batch-size`` unless the global batch splits evenly over W processes."""
    if batch_size % world_size:
        raise ValueError(f"--batch-size {batch_size} (the global batch) is not divisible by the {world_size} "
                         f"processes: each takes an equal slice; use a multiple of {world_size}")


def rank_device(device: str, ranks: Ranks) -> str:
    """The device of this rank: ``cpu``, or with W > 1 processes ``cuda:LOCAL_RANK`` for
    ``cuda`` (one GPU per process). ValueError when the machine has fewer GPUs than
    processes, or `device` pins one GPU (``cuda:N``) for several processes."""
    kind = torch.device(device)
    if ranks.world_size == 1 or kind.type != "cuda":
        return device
    if kind.index is not None:
        raise ValueError(f"--device {device} pins one GPU, but {ranks.local_world_size} processes run on this "
                         "machine: use --device cuda (each process takes the GPU of its LOCAL_RANK)")
    found = torch.cuda.device_count()
    if found < ranks.local_world_size:
        raise ValueError(f"--device cuda: {ranks.local_world_size} processes on this machine need one GPU each, "
                         f"but torch sees {found}; run at most {found} (--nproc / --nproc_per_node)")
    return f"cuda:{ranks.local_rank}"


@contextmanager
def process_group(ranks: Ranks, device: str, timeout_s: float = DEFAULT_TIMEOUT_S) -> Iterator[None]:
    """Join torch.distributed's default process group for the ``with`` block (nothing for
    one process): NCCL bound to this rank's GPU, or gloo on the CPU; a collective that
    waits more than `timeout_s` raises. A group the caller already initialised is used
    as it is (and must have W processes) and left open."""
    import torch.distributed as dist

    if ranks.world_size == 1:
        yield
        return
    if dist.is_initialized():
        if dist.get_world_size() != ranks.world_size:
            raise ValueError(f"the initialised process group has {dist.get_world_size()} processes, torchrun's "
                             f"environment says {ranks.world_size}")
        yield
        return
    kind = torch.device(device)
    timeout = datetime.timedelta(seconds=timeout_s)
    if kind.type == "cuda":
        torch.cuda.set_device(kind)
        dist.init_process_group("nccl", timeout=timeout, device_id=kind)
    else:
        dist.init_process_group("gloo", timeout=timeout)
    try:
        yield
        _quiesce(dist)
    finally:
        dist.destroy_process_group()


def _quiesce(dist) -> None:
    """Let gloo's worker threads release every finished collective before Python exits.

    A collective issued during a backward (DDP's all-reduce) keeps a copy of the
    thread-local state, Python objects included, and the worker thread that ran it
    drops that copy just after waking the waiting rank; the drop needs the GIL. If the
    interpreter is already finalizing, taking the GIL ends the thread inside a
    destructor and the process aborts ("terminate called without an active
    exception"; pytorch#190489). DDP keeps the group alive past
    ``destroy_process_group``, so its threads are not joined there: a barrier issued
    here (outside any backward, so it holds no Python objects) and a moment without
    the GIL give every pending drop its turn while the interpreter is whole."""
    dist.barrier()
    time.sleep(QUIESCE_S)


@contextmanager
def collective_failures(ranks: Ranks) -> Iterator[None]:
    """Turn torch.distributed's errors (a peer that closed its connection, a timeout)
    into :class:`RankFailure` with a message saying what happened."""
    import torch.distributed as dist

    try:
        yield
    except (dist.DistError, RuntimeError) as exc:
        if ranks.world_size == 1 or not _is_collective_error(exc):
            raise
        raise RankFailure(f"rank {ranks.rank} of {ranks.world_size}: another process of the run failed or stopped "
                          f"answering (see its own error; torchrun reports which), so this one stops too. "
                          f"torch.distributed said: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
                          ) from exc


def _is_collective_error(exc: BaseException) -> bool:
    import torch.distributed as dist

    if isinstance(exc, dist.DistError):
        return True
    text = str(exc)
    return any(word in text for word in ("Connection closed by peer", "Timed out", "timed out", "Gloo", "gloo",
                                         "NCCL", "Connection reset", "Broken pipe"))


def wrap(module: nn.Module, device: str, *, find_unused_parameters: bool = False) -> nn.Module:
    """``module`` in ``DistributedDataParallel`` (its parameters shared, not copied), batch
    norms made ``SyncBatchNorm`` so their statistics are the global batch's. DDP syncs
    nothing but gradients: the modules hold no state that could diverge.
    ``find_unused_parameters``: parameters the loss does not reach keep no gradient, as in
    one process, instead of stalling the all-reduce (pytorch#47562)."""
    from torch.nn.parallel import DistributedDataParallel

    has_batch_norm = any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in module.modules())
    if has_batch_norm:
        if torch.device(device).type != "cuda":
            raise ValueError("the model has batch norm, whose statistics over the global batch need "
                             "SyncBatchNorm, which torch runs on CUDA only: train it with W > 1 processes on GPUs, "
                             "or in one process on the CPU")
        module = nn.SyncBatchNorm.convert_sync_batchnorm(module)
    ids = [torch.device(device)] if torch.device(device).type == "cuda" else None
    return DistributedDataParallel(module, device_ids=ids, forward_sync_buffers=False,
                                   find_unused_parameters=find_unused_parameters)


def training_steps(ranks: Ranks, recipe: Recipe, generator: nn.Module, critic: nn.Module,
                   opt_g: torch.optim.Optimizer, opt_d: torch.optim.Optimizer, *, device: str, capture: bool = False,
                   backend: Optional[str] = None) -> Tuple[Callable[..., Stats], Callable[..., Stats]]:
    """``(step_d, step_g)``: ``step_d(real, z, regularize=...)`` one critic step and
    ``step_g(z[, real=])`` one generator step on the **global** batch (real: (B, ...), z:
    (B, latent)). One process: :func:`~fastgan.train.recipes.make_critic_step`'s step and
    :func:`~fastgan.train.recipes.generator_step`. W processes: the same step functions
    on DDP-wrapped models, fed with this rank's rows (see :class:`ShardedSteps`)."""
    if ranks.world_size == 1:
        return (make_critic_step(recipe, critic, generator, opt_d, capture=capture, backend=backend),
                functools.partial(generator_step, generator, critic, opt_g, loss=recipe.g_loss, backend=backend))
    if capture:
        raise ValueError(f"capture=True records one process's critic step as a CUDA graph; a run of "
                         f"{ranks.world_size} processes (torchrun / --nproc) trains eagerly: drop --capture")
    sharded = ShardedSteps(ranks, recipe, generator, critic, opt_g, opt_d, device=device, backend=backend)
    return sharded.critic_step, sharded.generator_step


class ShardedSteps:
    """The critic and generator steps of a W-process run, called with the global batch.

    Each call draws what a 1-process step would draw, takes this rank's rows and runs the
    ordinary step functions on ``DistributedDataParallel`` models: the critic step on the
    DDP critic (its loss and penalty gradients all-reduced in its one backward), the
    generator step on the DDP generator. The other model of each step runs without DDP
    (its module inside the DDP wrapper, batch norms synchronised): it gets no gradient
    there (G under ``no_grad``, the critic frozen), so there is nothing to reduce.
    WGAN-GP's ε and the approximate R1 + R2's noise are drawn for the global batch where
    the penalty would draw them and sliced.
    Lazy regularisation is decided by the step index, the same on every rank.
    """

    def __init__(self, ranks: Ranks, recipe: Recipe, generator: nn.Module, critic: nn.Module,
                 opt_g: torch.optim.Optimizer, opt_d: torch.optim.Optimizer, *, device: str,
                 backend: Optional[str] = None):
        self.ranks, self.recipe, self.backend = ranks, recipe, backend
        self.opt_g = opt_g
        self.ddp_generator = wrap(generator, device)
        # a critic may hold parameters its loss and penalties do not reach (torch warns once that it found none)
        self.ddp_critic = wrap(critic, device, find_unused_parameters=True)
        self.step_d = make_critic_step(recipe, self.ddp_critic, self.ddp_generator.module, opt_d, backend=backend)

    def critic_step(self, real: torch.Tensor, z: torch.Tensor, regularize: bool = True) -> Stats:
        """One critic step on this rank's rows of the global (B, ...) `real` and (B, latent) `z`."""
        rows = self.ranks.rows(real.shape[0])
        eps = noise = None
        if regularize and self.recipe.gp_weight:  # G(z) draws nothing, so ε comes next in the stream
            eps = torch.rand(real.shape[0], device=real.device, dtype=acc_dtype(real.dtype))[rows]
        if regularize and self.recipe.r1_r2_gamma and self.recipe.approximate_penalty:  # ε_real, then ε_fake
            noise = tuple(torch.randn(real.shape, device=real.device, dtype=real.dtype)[rows] for _ in range(2))
        return self.step_d(real[rows], z[rows], regularize=regularize, eps=eps, noise=noise)

    def generator_step(self, z: torch.Tensor, real: Optional[torch.Tensor] = None) -> Stats:
        """One generator step on this rank's rows of the global (B, latent) `z` and, for a
        relativistic loss, of the global (B, ...) `real` batch."""
        rows = self.ranks.rows(z.shape[0])
        return generator_step(self.ddp_generator, self.ddp_critic.module, self.opt_g, z[rows], loss=self.recipe.g_loss,
                              backend=self.backend, real=None if real is None else real[rows])


def mean_over_ranks(ranks: Ranks, values: Dict[str, float]) -> Dict[str, float]:
    """`values` (each a mean over this rank's equal slices) averaged over the ranks: the
    global batch's means. One all-reduce; one process: `values` as they are."""
    if ranks.world_size == 1 or not values:
        return values
    import torch.distributed as dist

    keys = sorted(values)
    stacked = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64)
    dist.all_reduce(stacked)
    return dict(zip(keys, (stacked / ranks.world_size).tolist()))


def barrier(ranks: Ranks) -> None:
    """Wait until every rank gets here (one process: return)."""
    if ranks.world_size > 1:
        import torch.distributed as dist

        dist.barrier()


def gather_rng_states(ranks: Ranks, state: Dict[str, Any]) -> List[Dict[str, Any]]:
    """Every rank's RNG `state` (from :func:`~fastgan.train.checkpoint.rng_state`), in rank
    order, on every rank (one process: ``[state]``)."""
    if ranks.world_size == 1:
        return [state]
    import torch.distributed as dist

    states: List[Any] = [None] * ranks.world_size
    dist.all_gather_object(states, state)
    return states


def rank_cuda_device(ranks: Ranks, device: str) -> Optional[torch.device]:
    """The one GPU whose RNG state this rank saves and restores (W > 1 on CUDA), else None
    (one process saves every device's, as before)."""
    kind = torch.device(device)
    return kind if ranks.world_size > 1 and kind.type == "cuda" else None


def rng_state_for_rank(ranks: Ranks, saved: Dict[str, Any]) -> Dict[str, Any]:
    """The RNG state rank r restores from a checkpoint: its own (``rng_ranks[r]``) when the
    checkpoint was written by a run of W processes, else rank 0's (``rng``). Every rank
    draws the same global stream, so rank 0's state also continues a run with another W."""
    per_rank = saved.get("rng_ranks")
    if isinstance(per_rank, list) and len(per_rank) == ranks.world_size:
        return per_rank[ranks.rank]
    return saved["rng"]
