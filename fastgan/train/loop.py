"""The main job: train a GAN recipe on a dataset, log losses and metrics per interval,
checkpoint atomically, resume bit for bit, and plot the result."""
import contextlib
import dataclasses
import json
import math
import os
import time
from dataclasses import dataclass
from typing import Any, Dict, List, Optional

import torch
from torch import nn

from .. import models
from . import checkpoint as ckpt
from . import distributed
from .data import MIXTURES, DataSampler, mixture_centers, mixture_std
from .metrics import MODE_SAMPLES, dual_estimate, mode_metrics, wasserstein1
from .names import LR_DECAYS, VAE_RECIPES
from .iteration import TrainIteration, match_capturable
from .recipes import get_recipe, linear_decay_lr, make_optimizers, set_lr

CHECKPOINT = "checkpoint.pt"
LOG = "log.json"
SUMMARY = "summary.json"
# Settings a resumed run must share with its checkpoint (the models and data stream depend on them).
FIXED_ON_RESUME = ("recipe", "data", "seed", "batch_size", "latent_dim", "hidden")
W1_SAMPLES = 2500  # samples per side of the exact W1 logged every interval (an O(n²) transport problem)


@dataclass
class TrainConfig:
    """Everything that defines a run (saved in its checkpoint and log). None means the
    recipe's or the data's default: batch 256 (toy) / 64 (digits), latent 2 / 32,
    interval ``max(1, min(500, steps // 10))``."""

    recipe: str = "wgan-gp"
    data: str = "8gaussians"
    steps: int = 1000
    out: str = "runs/wgan-gp-8gaussians"
    device: str = "auto"
    seed: int = 0
    batch_size: Optional[int] = None
    n_critic: Optional[int] = None
    lr: Optional[float] = None
    lr_decay: str = "none"
    gp_weight: Optional[float] = None
    r1_gamma: Optional[float] = None
    reg_every: Optional[int] = None  # lazy regularisation: penalties on every k-th critic step (recipe default 1)
    r1_r2_gamma: Optional[float] = None  # r3gan: γ of γ/2 (R1 + R2) (None: the data's default)
    approximate_penalty: bool = False  # r3gan: the finite-difference R1 + R2 (first-order autograd only)
    latent_dim: Optional[int] = None
    hidden: int = 512
    interval: Optional[int] = None
    backend: Optional[str] = None
    capture: Optional[bool] = None  # one CUDA graph per iteration; None: on CUDA devices, not on the CPU
    eval_samples: int = MODE_SAMPLES
    plots: bool = True
    stop_after: Optional[int] = None  # checkpoint and return after this step (a preemptible slice of the run)
    timeout_s: float = distributed.DEFAULT_TIMEOUT_S  # W processes: the longest wait for another rank
    world_size: int = 1  # processes of the run (set by train() from torchrun's environment)

    def resolved(self) -> "TrainConfig":
        """A copy with every default filled in and the device picked."""
        toy = self.data != "digits"
        device = self.device
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        return dataclasses.replace(
            self, device=device, capture=device.startswith("cuda") if self.capture is None else self.capture,
            batch_size=self.batch_size or (256 if toy else 64),
            latent_dim=self.latent_dim or (2 if toy else 32),
            interval=self.interval or max(1, min(500, self.steps // 10)),
        )


def build_models(config: TrainConfig) -> Dict[str, nn.Module]:
    """Generator and critic for the data: 2-D toy data → WGAN-GP's toy MLPs
    (``hidden`` wide, 3 hidden layers); digits → the small conv nets of fastgan.models."""
    if config.data == "digits":
        return {"generator": models.digits_generator(config.latent_dim), "critic": models.digits_critic()}
    return {"generator": models.mlp_generator(config.latent_dim, 2, config.hidden, 3),
            "critic": models.mlp_critic(2, config.hidden, 3)}


def _json_default(value):
    if isinstance(value, tuple):
        return list(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def _write_json(path: str, payload: Any) -> None:
    text = json.dumps(payload, indent=1, default=_json_default) + "\n"
    ckpt.atomic_write(path, lambda f: f.write(text.encode()))


class Evaluator:
    """Metrics of the current generator and critic on fixed evaluation samples: a
    fixed real set and fixed noise (their own seeds), so they consume no training
    randomness and the same z is tracked over training."""

    def __init__(self, config: TrainConfig):
        device = torch.device(config.device)
        self.config = config
        real_seed = config.seed + 1_000_003
        self.real = DataSampler(config.data, seed=real_seed, device=device).sample(config.eval_samples)
        noise = torch.Generator().manual_seed(config.seed + 2_000_003)
        self.z = torch.randn(config.eval_samples, config.latent_dim, generator=noise).to(device)
        self.image_metrics = None
        if config.data == "digits":
            from .image_metrics import DigitsMetrics

            self.image_metrics = DigitsMetrics(self.real)

    @torch.no_grad()
    def samples(self, generator: nn.Module) -> torch.Tensor:
        was_training = generator.training
        generator.eval()
        try:
            return torch.cat([generator(z) for z in self.z.split(1024)])
        finally:
            generator.train(was_training)

    def __call__(self, generator: nn.Module, critic: Optional[nn.Module]) -> Dict[str, float]:
        """Metrics of generator(z); the critic's dual estimate unless `critic` is None (a VAE)."""
        fake = self.samples(generator)
        out: Dict[str, float] = {}
        if self.config.data in MIXTURES:
            out.update(mode_metrics(fake, mixture_centers(self.config.data), mixture_std(self.config.data)))
        if self.image_metrics is not None:
            out.update(self.image_metrics(fake))
        n = min(W1_SAMPLES, len(fake))
        flat = (lambda x: x[:n].reshape(n, -1).cpu())
        out["w1"] = wasserstein1(flat(self.real), flat(fake)) if bool(torch.isfinite(fake).all()) else math.nan
        if critic is not None:
            out["dual_estimate"] = dual_estimate(critic, self.real, fake)
        return out


def restore_run(path: str, config: TrainConfig, modules: Dict[str, nn.Module],
                optimizers: Dict[str, torch.optim.Optimizer], sampler: DataSampler,
                ranks: distributed.Ranks = distributed.Ranks()):
    """Load and check the checkpoint at `path` into the models and optimizers (by their
    checkpoint keys), sampler and global RNGs; returns (step, elapsed seconds, records).
    Raises ckpt.CheckpointError."""
    state = ckpt.load_checkpoint(path, map_location=config.device)
    saved = state.get("config")
    for key in FIXED_ON_RESUME if isinstance(saved, dict) else ():  # the likelier mistake first: another run
        if saved.get(key) != getattr(config, key):
            raise ckpt.CheckpointError(f"the checkpoint in {config.out} was made with {key}={saved.get(key)!r}, "
                                       f"not {getattr(config, key)!r}")
    ckpt.check_run_state(path, state, steps=config.steps, modules=modules, optimizers=optimizers)
    # The optimizers were built from this run's settings (a resume may change --lr);
    # load_state_dict would put back the checkpoint's: its state is kept,
    # this run's settings are put back into every group.
    settings = {key: [{k: v for k, v in group.items() if k != "params"} for group in opt.param_groups]
                for key, opt in optimizers.items()}
    try:
        for key, module in {**modules, **optimizers}.items():
            module.load_state_dict(state[key])
        for key, opt in optimizers.items():
            for group, own in zip(opt.param_groups, settings[key]):
                group.update(own)
        sampler.load_state_dict(state["sampler"])
        ckpt.set_rng_state(distributed.rng_state_for_rank(ranks, state),
                           distributed.rank_cuda_device(ranks, config.device))
    except (KeyError, TypeError, ValueError, RuntimeError, IndexError) as exc:
        raise ckpt.CheckpointError(f"{path} does not restore: {type(exc).__name__}: {exc}") from None
    return state["step"], float(state["elapsed"]), json.loads(state["records"])


def train(config: TrainConfig, *, resume: bool = False, progress: bool = True,
          log: Optional[callable] = print) -> Dict[str, Any]:
    """Run (or, with ``resume``, continue) a training job; returns the summary.

    Each step is ``n_critic`` critic steps and one generator step (``lr_decay="linear"``:
    both learning rates fall linearly to 0 at ``config.steps``, as in WGAN-GP's image
    experiments; the default keeps them constant). Every ``interval``
    steps, at the end and at a ``stop_after`` step: metrics on fixed evaluation samples, a record in
    ``out/log.json`` (mean losses over the interval, metrics, wall time), and an atomic
    checkpoint ``out/checkpoint.pt`` (models, optimizers, step, RNG and data-sampler
    states, the log). At the end: ``out/summary.json`` and plots (``samples.png``,
    ``curves.png``). Resuming restores everything and continues to ``config.steps``;
    on the CPU the result is bit for bit that of an uninterrupted run (``stop_after``
    ends this call early, after a checkpoint; the learning-rate schedule still ends at
    ``steps``, so a run resumed with the same ``steps`` is the uninterrupted run; its log
    has one more record, at the stop, and the next record's means start there).

    Under ``torchrun`` (``WORLD_SIZE`` > 1) the run is one of W processes training the
    same model as one process on the global batch ``batch_size`` (see
    :mod:`fastgan.train.distributed`); rank 0 holds the lock and writes every file, the
    checkpoint holds plain state dicts and every rank's RNG state (``rng_ranks``).

    The run holds ``out/.lock`` (an exclusive ``flock``; another holder raises
    :class:`~fastgan.train.checkpoint.RunFolderBusy`) and first deletes the ``.tmp-*``
    files a killed run left. Resuming verifies the checkpoint's SHA-256 and its structure
    (keys, shapes, finite values, a step in [0, steps]) and raises
    :class:`~fastgan.train.checkpoint.CheckpointError` on any mismatch.
    """
    ranks = distributed.ranks_from_environment()
    if config.recipe in VAE_RECIPES and config.capture:
        raise ValueError(f"capture=True records a GAN iteration as a CUDA graph; recipe {config.recipe!r} trains "
                         "eagerly: drop --capture")
    if ranks.world_size > 1 and config.capture:
        raise ValueError(f"capture=True records one process's training iteration as a CUDA graph; a run of "
                         f"{ranks.world_size} processes (torchrun / --nproc) trains eagerly: drop --capture")
    config = config.resolved() if ranks.world_size == 1 else dataclasses.replace(config, capture=False).resolved()
    if config.stop_after is not None and config.stop_after < 1:
        raise ValueError(f"stop_after must be a positive step, got {config.stop_after}")
    if config.lr_decay not in LR_DECAYS:
        raise ValueError(f"lr_decay must be one of {', '.join(LR_DECAYS)}; got {config.lr_decay!r}")
    if config.recipe in VAE_RECIPES:  # fastgan.train.vae: one process, eager
        from .vae import get_vae_recipe, run_vae

        if ranks.world_size > 1:
            raise ValueError(f"recipe {config.recipe!r} trains in one process, not {ranks.world_size}")
        recipe, run, config = get_vae_recipe(config.recipe, lr=config.lr), run_vae, \
            dataclasses.replace(config, capture=False)
    else:
        recipe, run = get_recipe(config.recipe, data=config.data, n_critic=config.n_critic, lr=config.lr,
                                 gp_weight=config.gp_weight, r1_gamma=config.r1_gamma,
                                 reg_every=config.reg_every, r1_r2_gamma=config.r1_r2_gamma,
                                 approximate_penalty=config.approximate_penalty or None), _run
    distributed.check_batch_size(config.batch_size, ranks.world_size)
    config = dataclasses.replace(config, device=distributed.rank_device(config.device, ranks),
                                 world_size=ranks.world_size)
    if not ranks.is_main:
        progress, log = False, None
    with distributed.process_group(ranks, config.device, config.timeout_s), \
            distributed.collective_failures(ranks), \
            (ckpt.lock_run_folder(config.out) if ranks.is_main else contextlib.nullcontext()):
        if ranks.is_main:
            ckpt.remove_stale_temporaries(config.out)  # left by a run killed while writing; we hold the lock
        summary = run(config, recipe, ranks, resume=resume, progress=progress, log=log)
        distributed.barrier(ranks)  # on every rank, train() returns once rank 0 has written its files
        return summary


def _run(config: TrainConfig, recipe, ranks: distributed.Ranks, *, resume: bool, progress: bool,
         log: Optional[callable]) -> Dict[str, Any]:
    device = torch.device(config.device)
    path = os.path.join(config.out, CHECKPOINT)

    ckpt.seed_everything(config.seed)
    nets = build_models(config)
    generator, critic = nets["generator"].to(device), nets["critic"].to(device)
    opt_g, opt_d = make_optimizers(recipe, generator, critic, capturable=config.capture, backend=config.backend)
    base_lr = {opt: float(opt.param_groups[0]["lr"]) for opt in (opt_g, opt_d)}
    sampler = DataSampler(config.data, seed=config.seed)  # on the CPU: the batches go up in one copy
    records: List[Dict[str, Any]] = []
    start, elapsed = 0, 0.0
    if resume:
        start, elapsed, records = restore_run(path, config, {"generator": generator, "critic": critic},
                                              {"opt_g": opt_g, "opt_d": opt_d}, sampler, ranks)
        for opt in (opt_g, opt_d):  # the checkpoint may come from a run with(out) capture
            match_capturable(opt, config.capture)

    # The steps take the global batch (W processes: each its rows, on DDP models); the
    # iteration, not a step, is what a capture records.
    steps = distributed.training_steps(ranks, recipe, generator, critic, opt_g, opt_d, device=config.device,
                                       backend=config.backend)
    iteration = TrainIteration(recipe, generator, critic, opt_g, opt_d, latent_dim=config.latent_dim,
                               capture=config.capture, backend=config.backend, steps=steps)
    evaluate = Evaluator(config)

    def checkpoint(step: int) -> None:
        rng_ranks = distributed.gather_rng_states(ranks, ckpt.rng_state(distributed.rank_cuda_device(ranks,
                                                                                                   config.device)))
        if not ranks.is_main:
            return
        ckpt.save_checkpoint(path, {
            "config": dataclasses.asdict(config), "step": step, "elapsed": elapsed,
            "generator": generator.state_dict(), "critic": critic.state_dict(),
            "opt_g": opt_g.state_dict(), "opt_d": opt_d.state_dict(),
            "sampler": sampler.state_dict(), "rng": rng_ranks[0], "rng_ranks": rng_ranks,
            "records": json.dumps(records),
        })
        _write_json(os.path.join(config.out, LOG), {"config": dataclasses.asdict(config), "recipe":
                                                   dataclasses.asdict(recipe), "records": records})

    bar = None
    if progress:
        from .progress import progress_bar

        bar = progress_bar(config.steps, start, f"{config.recipe} {config.data}")
    t0 = time.perf_counter()
    last = config.steps if config.stop_after is None else min(config.steps, config.stop_after)
    for step in range(start + 1, last + 1):
        if config.lr_decay == "linear":
            for opt in (opt_g, opt_d):
                set_lr(opt, linear_decay_lr(base_lr[opt], step, config.steps))
        reals = _to_device(torch.stack([sampler.sample(config.batch_size) for _ in range(recipe.n_critic)]), device)
        iteration(reals, (step - 1) * recipe.n_critic)
        if bar is not None:
            bar.update(1)
        if step % config.interval == 0 or step == last:
            now = time.perf_counter()
            elapsed += now - t0
            record: Dict[str, Any] = {"step": step, "time_s": round(elapsed, 3)}
            record.update(distributed.mean_over_ranks(ranks, iteration.take_means()))
            record.update(evaluate(generator, critic) if ranks.is_main else {})
            record["eval_s"] = round(time.perf_counter() - now, 3)
            records.append(record)
            checkpoint(step)
            t0 = time.perf_counter()
            if bar is not None:
                shown = {k: f"{record[k]:.3g}" for k in ("d_loss", "g_loss", "modes", "w1") if k in record}
                if "high_quality" in record:
                    shown["high_quality"] = f"{100 * record['high_quality']:.1f}%"
                bar.set_postfix(shown)
    if bar is not None:
        bar.close()

    summary = summarize(config, recipe, records)
    if not ranks.is_main:
        return summary
    _write_json(os.path.join(config.out, SUMMARY), summary)
    if config.plots and records:
        from . import plots

        plots.plot_run(config.out, config.recipe, config.data, evaluate.real, evaluate.samples(generator), critic,
                       records)
    if log is not None:
        log(format_summary(summary))
    return summary


def _to_device(batch: torch.Tensor, device: torch.device) -> torch.Tensor:
    """`batch` on `device`. To a GPU from pinned memory without waiting: a copy from
    pageable memory would first wait for the stream, i.e. the previous iteration."""
    if device.type != "cuda":
        return batch.to(device)
    return batch.pin_memory().to(device, non_blocking=True)


def summarize(config: TrainConfig, recipe, records: List[Dict[str, Any]]) -> Dict[str, Any]:
    """The final record with the run's settings and speed."""
    last = records[-1] if records else {}
    return {"recipe": config.recipe, "data": config.data, "device": config.device,
            "device_name": torch.cuda.get_device_name(config.device) if config.device.startswith("cuda") else "cpu",
            "steps": last.get("step", 0), "time_s": last.get("time_s", 0.0),
            "steps_per_s": (last["step"] / last["time_s"]) if last.get("time_s") else None,
            "n_critic": recipe.n_critic, "lr": recipe.lr, "lr_decay": config.lr_decay, "gp_weight": recipe.gp_weight,
            "r1_gamma": recipe.r1_gamma, "r1_r2_gamma": recipe.r1_r2_gamma,
            "approximate_penalty": recipe.approximate_penalty, "reg_every": recipe.reg_every,
            "batch_size": config.batch_size,
            "seed": config.seed, "world_size": config.world_size,
            "final": last, "out": config.out}


def format_summary(summary: Dict[str, Any]) -> str:
    final = summary["final"]
    parts = [f"{summary['recipe']} on {summary['data']}: {summary['steps']} steps in {summary['time_s']:.1f} s "
             f"({summary['device_name']})"]
    if "modes" in final:
        parts.append(f"modes {final['modes']:.0f}/{final['num_modes']:.0f}, "
                     f"high-quality {100 * final['high_quality']:.1f}%")
    if "classes" in final:
        parts.append(f"classes {final['classes']:.0f}/10, class KL {final['class_kl']:.3g}, FD {final['fd']:.4g}, "
                     f"confidence {final['confidence']:.3f}")
    for key in ("w1", "dual_estimate", "d_loss", "g_loss", "loss", "kl", "recon_mse"):
        if key in final:
            parts.append(f"{key} {final[key]:.4g}")
    return "; ".join(parts) + f"\nwritten to {summary['out']}"
