"""The W-process halves of tests/test_distributed.py, run under torchrun (gloo, CPU):

    torchrun --standalone --nproc-per-node 2 tests/distributed_worker.py train OUT
        the equivalence runs OUT/<recipe>/, a run stopped and resumed OUT/resumed/, and
        one DDP critic step per penalty case OUT/grads-<case>-rank<r>.pt (inputs, grads)
    torchrun ... tests/distributed_worker.py hang OUT    rank 1 stops answering
    torchrun ... tests/distributed_worker.py die OUT     rank 1 dies
    torchrun ... tests/distributed_worker.py exit OUT    three DDP backwards, then exit at once

Shared settings (tiny models, few steps) live here so the test builds the same 1-process runs.
"""
import os
import sys
import time

import torch
from torch import nn

from fastgan.train import distributed, recipes
from fastgan.train.loop import TrainConfig, train

RUNS = {"gan": {}, "wgan": {}, "wgan-gp": {}, "wgan-gp-lazy": {"reg_every": 3}, "r3gan": {}}  # folder: overrides
STEPS = 20
PENALTY_CASES = {  # name: critic_step arguments
    "wgan-gp": dict(loss="wasserstein", gp_weight=10.0),
    "gan-r1": dict(loss="minimax", r1_gamma=1.0),
    "gan-r1-lazy-off": dict(loss="minimax", r1_gamma=1.0, reg_every=4, regularize=False),
    # float64: the finite difference divides logit differences by sigma^2, so float32's
    # batch-size-dependent rounding would show as ~1e-3 and hide a real mismatch
    "r3gan-approximate-f64": dict(loss="relativistic", r1_r2_gamma=1.0, approximate=True, dtype=torch.float64),
}
PENALTY_BATCH = 8


def config(run: str, out: str, **overrides) -> TrainConfig:
    """The run both sides train: 20 steps of the recipe of RUNS[run], 16-wide MLPs, a global batch of 32."""
    settings = dict(recipe=run.replace("-lazy", ""), **RUNS[run], data="8gaussians", steps=STEPS, out=out,
                    device="cpu", hidden=16, batch_size=32, interval=10, eval_samples=64, plots=False)
    return TrainConfig(**{**settings, **overrides})


class CriticWithSpare(nn.Module):
    """A small critic with a parameter its output never uses (it must keep no gradient)."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(2, 16), nn.LeakyReLU(0.2), nn.Linear(16, 16), nn.LeakyReLU(0.2),
                                 nn.Linear(16, 1))
        self.spare = nn.Parameter(torch.ones(3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def penalty_inputs(seed: int = 7):
    """Initial critic state, the global real and fake batches and ε (the same on every rank)."""
    torch.manual_seed(seed)
    critic = CriticWithSpare()
    real, fake = torch.randn(PENALTY_BATCH, 2), torch.randn(PENALTY_BATCH, 2)
    return critic.state_dict(), real, fake, torch.rand(PENALTY_BATCH)


def penalty_noise(dtype: torch.dtype, seed: int = 8):
    """The approximate R1 + R2's global (ε_real, ε_fake)."""
    generator = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(PENALTY_BATCH, 2, generator=generator, dtype=dtype) for _ in range(2))


def _penalty_steps(ranks: distributed.Ranks, out: str) -> None:
    state, real, fake, eps = penalty_inputs()
    rows = ranks.rows(PENALTY_BATCH)
    for name, kwargs in PENALTY_CASES.items():
        kwargs = dict(kwargs)
        regularize = kwargs.pop("regularize", True)
        dtype = kwargs.pop("dtype", torch.float32)
        critic = CriticWithSpare()
        critic.load_state_dict(state)
        critic.to(dtype)
        if kwargs.get("approximate"):
            kwargs["noise"] = tuple(n[rows] for n in penalty_noise(dtype))
        ddp = distributed.wrap(critic, "cpu", find_unused_parameters=True)
        opt = torch.optim.SGD(critic.parameters(), lr=0.0)  # the step leaves the gradients in .grad
        for _ in range(2):  # a second step: the first one's reduction finished cleanly
            recipes.critic_step(ddp, nn.Identity(), opt, real[rows].to(dtype), fake[rows].to(dtype),
                                eps=eps[rows].to(dtype), regularize=regularize, **kwargs)
        grads = {k: (None if p.grad is None else p.grad.clone()) for k, p in critic.named_parameters()}
        torch.save(grads, os.path.join(out, f"grads-{name}-rank{ranks.rank}.pt"))


def _train_runs(ranks: distributed.Ranks, out: str) -> None:
    for run in RUNS:
        train(config(run, os.path.join(out, run)), progress=False, log=None)
    resumed = os.path.join(out, "resumed")
    train(config("wgan-gp", resumed, stop_after=STEPS // 2), progress=False, log=None)
    train(config("wgan-gp", resumed), resume=True, progress=False, log=None)
    _penalty_steps(ranks, out)


def main(mode: str, out: str) -> int:
    torch.set_num_threads(1)
    ranks = distributed.ranks_from_environment()
    timeout = 60.0 if mode in ("train", "exit") else 3.0
    with distributed.process_group(ranks, "cpu", timeout):
        if mode == "train":
            _train_runs(ranks, out)
            return 0
        if mode == "exit":  # the last all-reduce ran inside a backward, just before Python exits
            ddp = distributed.wrap(nn.Linear(2, 1), "cpu")
            for _ in range(3):
                ddp(torch.randn(4, 2)).sum().backward()
            return 0
        try:
            with distributed.collective_failures(ranks):
                if ranks.rank == 1:
                    if mode == "die":
                        os._exit(3)
                    time.sleep(60)  # hang: never joins the all-reduce
                distributed.mean_over_ranks(ranks, {"x": torch.ones(())})
        except distributed.RankFailure as exc:
            print(exc, file=sys.stderr, flush=True)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
