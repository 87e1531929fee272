"""``python -m fastgan`` / ``fastgan``: the training job and the theory checks.

    fastgan train --recipe wgan-gp --data 8gaussians --steps 2000 --device auto --out runs/x
    fastgan train --out runs/x --steps 4000 --resume      (continue a run to step 4000)
    fastgan train --nproc 4 --batch-size 1024 ...     (4 processes on this machine: torchrun, DDP)
    torchrun --nproc_per_node 4 -m fastgan train ...  (the same, launched by torchrun itself)
    fastgan theory [--quick]

Bad flags exit with code 2 and a message naming the flag (``argparse``'s convention).
``--help`` and argument errors answer before torch is imported: this module imports
torch and fastgan's ops only inside the functions that run a command.
"""
import argparse
import contextlib
import os
import sys
from typing import TYPE_CHECKING, Callable, List, NoReturn, Optional

from .names import BACKENDS, DATASETS, LR_DECAYS, RECIPE_NAMES, VAE_RECIPES

if TYPE_CHECKING:  # the module imports torch: loaded only where a command runs
    from .distributed import Ranks

THEORY_PAGE = "docs/theory.md"
SEED_LIMIT = 2**32  # torch's CPU generator keeps a seed's low 32 bits: larger seeds would repeat runs
# Sane upper bounds: beyond them a run cannot allocate its tensors on any machine fastgan targets.
LIMITS = {"--steps": 10**9, "--batch-size": 65_536, "--n-critic": 1_000, "--latent-dim": 4_096, "--hidden": 8_192,
          "--interval": 10**9, "--eval-samples": 1_000_000, "--threads": 1_024, "--stop-after": 10**9,
          "--reg-every": 10_000, "--nproc": 1_024}
MAX_TIMEOUT_S = 7 * 24 * 3600.0
MAX_LR = 1.0
MAX_PENALTY_WEIGHT = 1e6
PSEUDO_FILE_SYSTEMS = ("/proc", "/sys")


def _number(text: str, cast, accept, requirement: str):
    """argparse type: `text` as `cast`, refused unless accept(value) (message: requirement)."""
    try:
        value = cast(text)
    except ValueError:
        kind = "an integer" if cast is int else "a number"
        raise argparse.ArgumentTypeError(f"expected {kind}, got {text!r}") from None
    if not accept(value) or value in (float("inf"), float("-inf")) or value != value:
        raise argparse.ArgumentTypeError(f"must be {requirement}, got {text}")
    return value


def _count(flag: str) -> Callable[[str], int]:
    """argparse type of a positive integer flag, at most LIMITS[flag]."""
    limit = LIMITS[flag]

    def parse(text: str) -> int:
        return _number(text, int, lambda v: 0 < v <= limit, f"> 0 and <= {limit:,}")
    return parse


def _learning_rate(text: str) -> float:
    return _number(text, float, lambda v: 0 < v <= MAX_LR, f"finite, > 0 and <= {MAX_LR:g}")


def _penalty_weight(text: str) -> float:
    return _number(text, float, lambda v: 0 <= v <= MAX_PENALTY_WEIGHT, f"finite, >= 0 and <= {MAX_PENALTY_WEIGHT:g}")


def _timeout(text: str) -> float:
    return _number(text, float, lambda v: 0 < v <= MAX_TIMEOUT_S, f"finite, > 0 and <= {MAX_TIMEOUT_S:g} seconds")


def _seed(text: str) -> int:
    return _number(text, int, lambda v: 0 <= v < SEED_LIMIT, "an integer in [0, 2**32)")


def build_parser() -> argparse.ArgumentParser:
    """The ``fastgan`` parser; each subcommand's parser is its namespace's ``command_parser``."""
    parser = argparse.ArgumentParser(prog="fastgan", description="fastgan's training job and theory checks.",
                                     allow_abbrev=False)
    sub = parser.add_subparsers(dest="command", metavar="{train,theory}")
    sub.required = True

    train = sub.add_parser("train", help="train a GAN, WGAN, WGAN-GP, R3GAN, VAE or VAE/GAN", allow_abbrev=False,
                           description=("Train a recipe on a dataset; writes log.json, summary.json, checkpoint.pt "
                                        "and plots under --out."))
    train.set_defaults(command_parser=train)
    train.add_argument("--recipe", choices=RECIPE_NAMES + VAE_RECIPES, default=None,
                       help="gan (minimax D, non-saturating G), wgan (weight clipping), wgan-gp (default) or r3gan "
                            "(RpGAN + R1 + R2); vae (fused negative ELBO) or vae-gan (Larsen et al. 2016)")
    train.add_argument("--data", choices=DATASETS, default=None, help="dataset (default 8gaussians)")
    train.add_argument("--steps", type=_count("--steps"), default=None,
                       help="generator steps to train to, each after n_critic critic steps (default 2000; "
                            "with --resume, the checkpoint's)")
    train.add_argument("--device", default="auto", help="auto (CUDA if available), cpu, cuda or cuda:N")
    train.add_argument("--out", default=None, help="output folder (default runs/<recipe>-<data>); one run at a time "
                                                   "holds it")
    train.add_argument("--seed", type=_seed, default=None,
                       help="seeds every random number generator, in [0, 2**32) (default 0)")
    train.add_argument("--batch-size", type=_count("--batch-size"), default=None,
                       help="default 256 (toy), 64 (digits)")
    train.add_argument("--n-critic", type=_count("--n-critic"), default=None,
                       help="critic steps per generator step (recipe default: 1 gan/r3gan, 5 wgan/wgan-gp)")
    train.add_argument("--lr", type=_learning_rate, default=None,
                       help="learning rate of every network (recipe default: 2e-4, 5e-5, 1e-4; r3gan 2e-4, vae 1e-3, "
                            "vae-gan 2e-4)")
    train.add_argument("--lr-decay", choices=LR_DECAYS, default=None,
                       help="none (default) or linear: both learning rates fall linearly to 0 at --steps")
    train.add_argument("--gp-weight", type=_penalty_weight, default=None,
                       help="wgan-gp: penalty weight λ (default 0.1 on toy data, 10 on digits)")
    train.add_argument("--r1-gamma", type=_penalty_weight, default=None,
                       help="gan: R1 penalty γ on reals (default 0: off)")
    train.add_argument("--r1-r2-gamma", type=_penalty_weight, default=None, metavar="GAMMA",
                       help="r3gan: γ of γ/2 (R1 + R2) (default 0.1 on the 2-D data, 1 on digits; see README "
                            "§Training quality)")
    train.add_argument("--approximate-penalty", action="store_true", default=None,
                       help="r3gan: the finite-difference R1 + R2 (σ = 0.01, first-order autograd only) instead "
                            "of the exact double backward")
    train.add_argument("--reg-every", type=_count("--reg-every"), default=None, metavar="K",
                       help="lazy regularisation (StyleGAN2): the penalty on every K-th critic step only, its weight "
                            "times K (default 1: every step)")
    train.add_argument("--latent-dim", type=_count("--latent-dim"), default=None,
                       help="noise size (default 2 toy, 32 digits)")
    train.add_argument("--hidden", type=_count("--hidden"), default=None, help="toy MLPs' width (default 512)")
    train.add_argument("--interval", type=_count("--interval"), default=None,
                       help="steps between log records and checkpoints (default steps/10, at most 500)")
    train.add_argument("--eval-samples", type=_count("--eval-samples"), default=None,
                       help="samples the metrics use (default 2500)")
    train.add_argument("--backend", choices=BACKENDS, default=None, help="fastgan backend for every op")
    train.add_argument("--threads", type=_count("--threads"), default=None,
                       help="torch CPU threads (default: 1 for the toy MLPs, torch's default for digits)")
    train.add_argument("--capture", action=argparse.BooleanOptionalAction, default=None,
                       help="record each training iteration (n_critic critic steps and the generator step) as one "
                            "CUDA graph and replay it: the default on CUDA; --no-capture runs it eagerly")
    train.add_argument("--stop-after", type=_count("--stop-after"), default=None, metavar="STEP",
                       help="checkpoint and exit after this step; --resume continues (the schedule still ends at "
                            "--steps)")
    train.add_argument("--nproc", type=_count("--nproc"), default=None, metavar="N",
                       help="train with N processes on this machine (torchrun's launcher, DDP; --batch-size is the "
                            "global batch); for several machines run torchrun yourself (see the README)")
    train.add_argument("--timeout", dest="timeout_s", type=_timeout, default=None, metavar="SECONDS",
                       help="with several processes: how long one waits for the others before the run stops "
                            "(default 600)")
    train.add_argument("--resume", action="store_true", help="continue from the checkpoint in --out")
    train.add_argument("--overwrite", action="store_true", help="start afresh even if --out holds a checkpoint")
    train.add_argument("--no-progress", action="store_true", help="no progress bar")
    train.add_argument("--no-plots", action="store_true", help="no plots")

    theory = sub.add_parser("theory", help=f"check the results of {THEORY_PAGE} numerically", allow_abbrev=False,
                            description=(
        f"Check {THEORY_PAGE} (the project's math page): train small discriminators/critics on known 1-D "
        "densities and compare with D* = p/(p+q), -2 ln 2 + 2 JS(p||q) and the exact W1; prints a table, "
        "exits 1 on failure."))
    theory.set_defaults(command_parser=theory)
    theory.add_argument("--quick", action="store_true", help="fewer training steps (looser, faster)")
    theory.add_argument("--seed", type=_seed, default=0, help="seed, in [0, 2**32) (default 0)")
    return parser


def default_threads(data: str) -> int:
    """Intra-op threads when --threads is not given: 1 for the toy MLPs (2-D data), whose
    tiny matmuls only pay synchronisation for more threads (6x slower on a busy 2-core
    machine), and torch's own default for the digits conv nets."""
    import torch

    return torch.get_num_threads() if data == "digits" else 1


def _check_device(error: Callable[[str], NoReturn], text: str, capture: bool) -> str:
    import torch

    if text == "auto":
        text = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(text)
    except (RuntimeError, ValueError):
        error(f"--device: expected auto, cpu, cuda or cuda:N, got {text!r}")
    if device.type not in ("cpu", "cuda"):
        error(f"--device: expected auto, cpu, cuda or cuda:N, got {text!r}")
    if device.type == "cpu" and device.index not in (None, 0):
        error(f"--device {text}: the CPU has no device index; use --device cpu")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            error(f"--device {text}: torch sees no CUDA device here (use --device cpu or auto)")
        if device.index is not None and device.index >= torch.cuda.device_count():
            error(f"--device {text}: only {torch.cuda.device_count()} CUDA device(s) here")
    if capture and device.type != "cuda":
        error("--capture records each training iteration as a CUDA graph: it needs --device cuda "
              f"(the device here is {device}; on CUDA it is the default)")
    return "cpu" if device.type == "cpu" else str(device)


def _check_backend(error: Callable[[str], NoReturn], backend: Optional[str], device: str) -> None:
    """error() unless `backend` (None: $FASTGAN_BACKEND or auto) can run tensors on `device`."""
    import torch

    import fastgan

    flag = "--backend" if backend is not None else "--backend (from $FASTGAN_BACKEND)"
    try:
        fastgan.resolve_backend(backend, torch.device(device), flag)
    except (fastgan.BackendError, ValueError) as exc:
        error(str(exc))


def _check_out_name(error: Callable[[str], NoReturn], out: str) -> None:
    """The checks of --out that need no file system writes."""
    if not out:
        error("--out: the output folder must not be empty")
    if "\0" in out:
        error("--out: contains a NUL character")
    real = os.path.realpath(out)
    for top in PSEUDO_FILE_SYSTEMS:
        if real == top or real.startswith(top + os.sep):
            error(f"--out {out}: is under {top}, a kernel pseudo file system; choose a folder on disk")
    if os.path.exists(out) and not os.path.isdir(out):
        error(f"--out {out}: exists and is not a folder")


@contextlib.contextmanager
def _hold_out(error: Callable[[str], NoReturn], out: str):
    """Create --out, take its lock and check that files can be written there, for the ``with`` block."""
    from . import checkpoint as ckpt

    with contextlib.ExitStack() as stack:
        try:
            stack.enter_context(ckpt.lock_run_folder(out))
            ckpt.atomic_write(os.path.join(out, ".write-check"), lambda f: f.write(b"ok\n"))
            os.unlink(os.path.join(out, ".write-check"))
        except ckpt.RunFolderBusy as exc:
            error(f"--out {exc}; wait for it to finish or choose another --out")
        except OSError as exc:
            error(f"--out {out}: cannot create or write files there ({exc.strerror or exc})")
        yield


def _check_dependencies(error: Callable[[str], NoReturn], args: argparse.Namespace, data: str) -> None:
    """error() naming the missing package of fastgan's ``train`` extra, if any."""
    import importlib.util

    # W1 is solved by pot, or by scipy's exact assignment (slower; training's evaluation has equal sizes)
    needed = [] if importlib.util.find_spec("scipy") is not None else [("ot", "pot")]
    needed += [] if args.no_progress else [("tqdm", "tqdm")]
    needed += [] if args.no_plots else [("matplotlib", "matplotlib")]
    needed += [("sklearn", "scikit-learn")] if data == "digits" else []
    missing = [package for module, package in needed if importlib.util.find_spec(module) is None]
    if missing:
        error(f"the training job needs {', '.join(missing)}: pip install 'fastgan[train]' "
              f"(or pip install {' '.join(missing)})")


def _check_saved_config(error: Callable[[str], NoReturn], parser: argparse.ArgumentParser, path: str, saved,
                        required) -> None:
    """error() unless the checkpoint's config `saved` is a dict with the `required` keys
    whose values pass their flags' own checks (type and choices)."""
    if not isinstance(saved, dict) or not set(required) <= set(saved):
        error(f"--resume: {path} lacks its config: not a fastgan run checkpoint")
    for action in parser._actions:  # noqa: SLF001 - the flags' own checks, not a second copy of them
        value = saved.get(action.dest)
        if value is None or not (action.type or action.choices):
            continue
        try:
            ok = (action.type is None or action.type(str(value)) == value) and value in (action.choices or [value])
        except argparse.ArgumentTypeError:
            ok = False
        if not ok:
            error(f"--resume: {path} holds {action.option_strings[0]} {value!r}, which that flag refuses")


_DEFAULTS = {"recipe": "wgan-gp", "data": "8gaussians", "steps": 2000, "seed": 0, "hidden": 512, "eval_samples": 2500}


def _train(args: argparse.Namespace) -> int:
    error = args.command_parser.error
    if args.resume and args.overwrite:
        error("--resume and --overwrite exclude each other")
    out = args.out if args.out is not None else os.path.join(
        "runs", f"{args.recipe or _DEFAULTS['recipe']}-{args.data or _DEFAULTS['data']}")
    _check_out_name(error, out)
    ranks = _check_ranks(error, args)
    if not ranks.is_main:
        error = _rank_error(error, ranks.rank)
    device = _check_device(error, args.device, args.capture)  # W > 1: train() gives each rank its GPU
    _check_backend(error, args.backend, _check_rank_device(error, ranks, device, args.capture))
    if not ranks.is_main:  # rank 0 holds --out and writes there; the others read the same checkpoint
        return _train_in(error, args, out, device, ranks)
    with _hold_out(error, out):
        if not args.nproc or args.nproc == 1:
            return _train_in(error, args, out, device, ranks)
        _resolve(error, args, out, device, ranks)  # every check a worker makes, before any worker starts
    return _launch(args.argv, args.nproc)


def _check_ranks(error: Callable[[str], NoReturn], args: argparse.Namespace) -> "Ranks":
    """The processes of this run: torchrun's environment, or the --nproc N this command launches."""
    from . import distributed

    try:
        ranks = distributed.ranks_from_environment()
    except ValueError as exc:
        error(str(exc))
    if args.nproc is not None and "WORLD_SIZE" in os.environ:
        error(f"--nproc {args.nproc} launches torchrun; this process already runs under torchrun "
              f"(WORLD_SIZE={os.environ['WORLD_SIZE']}): drop --nproc")
    if args.nproc:
        return distributed.Ranks(0, args.nproc, 0, args.nproc)
    return ranks


def _rank_error(error: Callable[[str], NoReturn], rank: int) -> Callable[[str], NoReturn]:
    """error() whose message says which rank refused (every rank makes the same checks)."""
    def rank_error(message: str) -> NoReturn:
        error(f"(rank {rank}) {message}")
    return rank_error


def _check_rank_device(error: Callable[[str], NoReturn], ranks: "Ranks", device: str, capture: bool) -> str:
    from . import distributed

    if ranks.world_size == 1:
        return device
    if capture:
        error(f"--capture records one process's training iteration as a CUDA graph; a run of {ranks.world_size} "
              "processes trains eagerly: drop --capture")
    try:
        return distributed.rank_device(device, ranks)
    except ValueError as exc:
        error(str(exc))


def _launch(argv: List[str], nproc: int) -> int:
    """Run ``fastgan train`` (`argv` without --nproc) in `nproc` processes on this machine
    through torch.distributed.run (torchrun's launcher and standalone rendezvous); returns
    0, or the exit code of the first process that failed."""
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args, run

    forwarded, skip = [], False
    for token in argv:
        if skip or token == "--nproc" or token.startswith("--nproc="):
            skip = token == "--nproc"
            continue
        forwarded.append(token)
    try:
        run(parse_args(["--standalone", f"--nproc-per-node={nproc}", "--module", "fastgan", *forwarded]))
    except ChildFailedError as exc:
        rank, failure = exc.get_first_failure()  # the global rank (a ProcessFailure has only local_rank)
        print(f"fastgan train --nproc {nproc}: rank {rank} failed with exit code {failure.exitcode}; "
              "torchrun stopped the other processes (their messages are above)", file=sys.stderr)
        return failure.exitcode if failure.exitcode > 0 else 1
    return 0


def _train_in(error: Callable[[str], NoReturn], args: argparse.Namespace, out: str, device: str,
              ranks: "Ranks") -> int:
    """The rest of ``fastgan train`` (rank 0: while it holds --out)."""
    import torch

    from . import checkpoint as ckpt
    from . import distributed
    from .loop import TrainConfig, train

    values = _resolve(error, args, out, device, ranks)
    _check_dependencies(error, args, values["data"])
    torch.set_num_threads(args.threads or default_threads(values["data"]))
    try:
        train(TrainConfig(**values), resume=args.resume, progress=not args.no_progress)
    except ckpt.CheckpointError as exc:
        error(f"--resume: {exc}")
    except distributed.RankFailure as exc:
        print(f"fastgan train: {exc}", file=sys.stderr)
        return 1
    except (RuntimeError, MemoryError) as exc:  # torch.OutOfMemoryError is a RuntimeError; the CPU's is a plain one
        if not isinstance(exc, (torch.OutOfMemoryError, MemoryError)) and "can't allocate memory" not in str(exc):
            raise
        error(f"out of memory ({type(exc).__name__}): lower --batch-size, --hidden, --latent-dim or --eval-samples")
    return 0


def _resolve(error: Callable[[str], NoReturn], args: argparse.Namespace, out: str, device: str,
             ranks: "Ranks") -> dict:
    """The TrainConfig fields of this run: the flags, the checkpoint's on --resume, the
    defaults; error() for a combination the run refuses."""
    import dataclasses

    from . import checkpoint as ckpt
    from . import distributed
    from .loop import CHECKPOINT, FIXED_ON_RESUME, TrainConfig

    path = os.path.join(out, CHECKPOINT)
    has_checkpoint = os.path.isfile(path)
    if args.resume and not has_checkpoint:
        error(f"--resume: no checkpoint in {out} (expected {path})")
    if has_checkpoint and not (args.resume or args.overwrite):
        error(f"--out {out} already holds a checkpoint: pass --resume to continue it or --overwrite to start afresh")
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    given = {k: v for k, v in vars(args).items() if k in fields and v is not None}
    if args.resume:  # unset flags take the checkpoint's values; the model-defining ones must agree
        try:
            state = ckpt.load_checkpoint(path)
        except ckpt.CheckpointError as exc:
            error(f"--resume: {exc}")
        saved = state.get("config")
        if args.stop_after is not None and isinstance(state.get("step"), int) and args.stop_after <= state["step"]:
            error(f"--stop-after {args.stop_after}: the checkpoint in {out} is at step {state['step']} already")
        _check_saved_config(error, args.command_parser, path, saved, FIXED_ON_RESUME)
        for key in FIXED_ON_RESUME:
            if key in given and given[key] != saved[key]:
                error(f"--resume: the checkpoint in {out} was made with --{key.replace('_', '-')} {saved[key]}; "
                      f"got {given[key]}")
        values = {k: v for k, v in saved.items() if k in fields}
        values.update({k: v for k, v in given.items() if k not in ("device", "capture", "stop_after")})
    else:
        values = {**_DEFAULTS, **given}
    values.update(out=out, capture=args.capture, stop_after=args.stop_after, plots=not args.no_plots, device=device)
    recipe = values["recipe"]
    if recipe in VAE_RECIPES:  # one process, eager, one update of each network per step
        for flag, value in (("--n-critic", values.get("n_critic")), ("--capture", args.capture),
                            ("--nproc", ranks.world_size if ranks.world_size > 1 else None)):
            if value:
                error(f"{flag} applies to the GAN recipes, not {recipe}")
    if values.get("r1_gamma") and recipe != "gan":
        error(f"--r1-gamma applies to --recipe gan, not {recipe}")
    if values.get("gp_weight") is not None and recipe != "wgan-gp":
        error(f"--gp-weight applies to --recipe wgan-gp, not {recipe}")
    if values.get("r1_r2_gamma") is not None and recipe != "r3gan":
        error(f"--r1-r2-gamma applies to --recipe r3gan, not {recipe}")
    if values.get("approximate_penalty") and recipe != "r3gan":
        error(f"--approximate-penalty applies to --recipe r3gan (its R1 + R2), not {recipe}")
    if (values.get("reg_every") or 1) > 1 and not (recipe in ("wgan-gp", "r3gan") or values.get("r1_gamma")):
        error(f"--reg-every applies to a penalty (--recipe wgan-gp or r3gan, or gan with --r1-gamma), not {recipe} "
              "without one")
    try:
        resolved = TrainConfig(**values).resolved()
        distributed.check_batch_size(resolved.batch_size, ranks.world_size)
    except ValueError as exc:
        error(str(exc))
    if resolved.data == "digits" and resolved.eval_samples < 2:
        error(f"--eval-samples {resolved.eval_samples}: the digits metrics need at least 2 samples (their Fréchet "
              "distance takes a covariance)")
    if ranks.world_size > 1 and values["data"] == "digits" and device == "cpu":
        error(f"--data digits with {ranks.world_size} processes needs --device cuda: the generator's batch norm "
              "becomes SyncBatchNorm (statistics of the global batch), which torch runs on CUDA only")
    return values


def main(argv: Optional[List[str]] = None) -> int:
    """Parse `argv` (default ``sys.argv[1:]``) and run the command; returns the exit code
    (argument errors exit 2 through ``SystemExit``)."""
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    if unknown:  # shown with the subcommand's usage line (no abbreviations: --step is not --steps)
        args.command_parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    if args.command == "train":
        return _train(args)
    from .theory import main as theory_main

    return theory_main(quick=args.quick, seed=args.seed)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
