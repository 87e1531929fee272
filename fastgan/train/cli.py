"""``python -m fastgan`` / ``fastgan``: the training job and the theory checks.

    fastgan train --recipe wgan-gp --data 8gaussians --steps 2000 --device auto --out runs/x
    fastgan train --out runs/x --steps 4000 --resume      (continue a run to step 4000)
    fastgan theory [--quick]

Bad flags exit with code 2 and a message naming the flag (``argparse``'s convention).
"""
import argparse
import os
import sys
from typing import List, Optional

from .._backend import BACKENDS
from .data import DATASETS
from .recipes import RECIPES


def _number(text: str, cast, accept, requirement: str):
    """argparse type: `text` as `cast`, refused unless accept(value) (message: requirement)."""
    try:
        value = cast(text)
    except ValueError:
        kind = "a positive integer" if cast is int else "a number"
        raise argparse.ArgumentTypeError(f"expected {kind}, got {text!r}") from None
    if not accept(value) or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be {requirement}, got {text}")
    return value


def _positive_int(text: str) -> int:
    return _number(text, int, lambda v: v > 0, "> 0")


def _positive_float(text: str) -> float:
    return _number(text, float, lambda v: v > 0, "finite and > 0")


def _non_negative_float(text: str) -> float:
    return _number(text, float, lambda v: v >= 0, "finite and >= 0")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fastgan", description="fastgan's training job and theory checks.")
    sub = parser.add_subparsers(dest="command", metavar="{train,theory}")
    sub.required = True

    train = sub.add_parser("train", help="train a GAN, WGAN or WGAN-GP", description=(
        "Train a recipe on a dataset; writes log.json, summary.json, checkpoint.pt and plots under --out."))
    train.add_argument("--recipe", choices=sorted(RECIPES), default=None,
                       help="gan (minimax D, non-saturating G), wgan (weight clipping) or wgan-gp (default)")
    train.add_argument("--data", choices=DATASETS, default=None, help="dataset (default 8gaussians)")
    train.add_argument("--steps", type=_positive_int, default=None,
                       help="generator steps to train to, each after n_critic critic steps (default 2000; "
                            "with --resume, the checkpoint's)")
    train.add_argument("--device", default="auto", help="auto (CUDA if available), cpu, cuda or cuda:N")
    train.add_argument("--out", default=None, help="output folder (default runs/<recipe>-<data>)")
    train.add_argument("--seed", type=int, default=None, help="seeds every random number generator (default 0)")
    train.add_argument("--batch-size", type=_positive_int, default=None, help="default 256 (toy), 64 (digits)")
    train.add_argument("--n-critic", type=_positive_int, default=None,
                       help="critic steps per generator step (recipe default: 1 gan, 5 wgan/wgan-gp)")
    train.add_argument("--lr", type=_positive_float, default=None,
                       help="learning rate of both networks (recipe default: 2e-4, 5e-5, 1e-4)")
    train.add_argument("--lr-decay", choices=("none", "linear"), default=None,
                       help="none (default) or linear: both learning rates fall linearly to 0 at --steps")
    train.add_argument("--gp-weight", type=_non_negative_float, default=None,
                       help="wgan-gp: penalty weight λ (default 0.1 on toy data, 10 on digits)")
    train.add_argument("--r1-gamma", type=_non_negative_float, default=None,
                       help="gan: R1 penalty γ on reals (default 0: off)")
    train.add_argument("--latent-dim", type=_positive_int, default=None, help="noise size (default 2 toy, 32 digits)")
    train.add_argument("--hidden", type=_positive_int, default=None, help="toy MLPs' width (default 512)")
    train.add_argument("--interval", type=_positive_int, default=None,
                       help="steps between log records and checkpoints (default steps/10, at most 500)")
    train.add_argument("--eval-samples", type=_positive_int, default=None,
                       help="samples the metrics use (default 2500)")
    train.add_argument("--backend", choices=BACKENDS, default=None, help="fastgan backend for every op")
    train.add_argument("--threads", type=_positive_int, default=None,
                       help="torch CPU threads (default torch's; 1 is often fastest for the toy MLPs on a busy machine)")
    train.add_argument("--capture", action="store_true",
                       help="record the critic step as a CUDA graph and replay it (CUDA only)")
    train.add_argument("--stop-after", type=_positive_int, default=None, metavar="STEP",
                       help="checkpoint and exit after this step; --resume continues (the schedule still ends at "
                            "--steps)")
    train.add_argument("--resume", action="store_true", help="continue from the checkpoint in --out")
    train.add_argument("--overwrite", action="store_true", help="start afresh even if --out holds a checkpoint")
    train.add_argument("--no-progress", action="store_true", help="no progress bar")
    train.add_argument("--no-plots", action="store_true", help="no plots")

    theory = sub.add_parser("theory", help="check THEORY.md's results numerically", description=(
        "Train small discriminators/critics on known 1-D densities and compare with D* = p/(p+q), "
        "-2 ln 2 + 2 JS(p||q) and the exact W1; prints a table, exits 1 on failure."))
    theory.add_argument("--quick", action="store_true", help="fewer training steps (looser, faster)")
    theory.add_argument("--seed", type=int, default=0)
    return parser


def _check_device(parser: argparse.ArgumentParser, text: str, capture: bool) -> str:
    import torch

    if text == "auto":
        text = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(text)
    except (RuntimeError, ValueError):
        parser.error(f"--device: expected auto, cpu, cuda or cuda:N, got {text!r}")
    if device.type not in ("cpu", "cuda"):
        parser.error(f"--device: expected auto, cpu, cuda or cuda:N, got {text!r}")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            parser.error(f"--device {text}: torch sees no CUDA device here (use --device cpu or auto)")
        if device.index is not None and device.index >= torch.cuda.device_count():
            parser.error(f"--device {text}: only {torch.cuda.device_count()} CUDA device(s) here")
    if capture and device.type != "cuda":
        parser.error("--capture records the critic step as a CUDA graph: it needs --device cuda "
                     f"(the device here is {device})")
    return str(device)


def default_threads(data: str) -> int:
    """Intra-op threads when --threads is not given: 1 for the toy MLPs (2-D data), whose
    tiny matmuls only pay synchronisation for more threads (6x slower on a busy 2-core
    machine), and torch's own default for the digits conv nets."""
    import torch

    return torch.get_num_threads() if data == "digits" else 1


# Settings a resumed run must share with its checkpoint (the models and data stream depend on them).
_FIXED_ON_RESUME = ("recipe", "data", "seed", "batch_size", "latent_dim", "hidden")
_DEFAULTS = {"recipe": "wgan-gp", "data": "8gaussians", "steps": 2000, "seed": 0, "hidden": 512, "eval_samples": 2500}


def _check_dependencies(parser: argparse.ArgumentParser, args: argparse.Namespace, data: str) -> None:
    """parser.error naming the missing package of fastgan's ``train`` extra, if any."""
    import importlib.util

    needed = [("ot", "pot")]
    needed += [] if args.no_progress else [("tqdm", "tqdm")]
    needed += [] if args.no_plots else [("matplotlib", "matplotlib")]
    needed += [("sklearn", "scikit-learn")] if data == "digits" else []
    missing = [package for module, package in needed if importlib.util.find_spec(module) is None]
    if missing:
        parser.error(f"the training job needs {', '.join(missing)}: pip install 'fastgan[train]' "
                     f"(or pip install {' '.join(missing)})")


def _train(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    import dataclasses

    import torch

    from .loop import CHECKPOINT, TrainConfig, train

    if args.resume and args.overwrite:
        parser.error("--resume and --overwrite exclude each other")
    out = args.out or os.path.join("runs", f"{args.recipe or _DEFAULTS['recipe']}-{args.data or _DEFAULTS['data']}")
    if os.path.exists(out) and not os.path.isdir(out):
        parser.error(f"--out {out} exists and is not a folder")
    path = os.path.join(out, CHECKPOINT)
    has_checkpoint = os.path.isfile(path)
    if args.resume and not has_checkpoint:
        parser.error(f"--resume: no checkpoint in {out} (expected {path})")
    if has_checkpoint and not (args.resume or args.overwrite):
        parser.error(f"--out {out} already holds a checkpoint: pass --resume to continue it or --overwrite "
                     "to start afresh")
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    given = {k: v for k, v in vars(args).items() if k in fields and v is not None}
    if args.resume:  # unset flags take the checkpoint's values; the model-defining ones must agree
        try:
            saved = torch.load(path, map_location="cpu", weights_only=True)["config"]
        except Exception as exc:  # noqa: BLE001 - any unreadable file is a bad --resume
            parser.error(f"--resume: cannot read {path}: {exc}")
        for key in _FIXED_ON_RESUME:
            if key in given and given[key] != saved[key]:
                parser.error(f"--resume: the checkpoint in {out} was made with --{key.replace('_', '-')} "
                             f"{saved[key]}; got {given[key]}")
        values = {k: v for k, v in saved.items() if k in fields}
        values.update({k: v for k, v in given.items() if k not in ("device", "capture", "stop_after")})
    else:
        values = {**_DEFAULTS, **given}
    values.update(out=out, capture=args.capture, stop_after=args.stop_after, plots=not args.no_plots,
                  device=_check_device(parser, args.device, args.capture))
    recipe = values["recipe"]
    if values.get("r1_gamma") and recipe != "gan":
        parser.error(f"--r1-gamma applies to --recipe gan, not {recipe}")
    if values.get("lr_decay", "none") != "none" and values["capture"]:
        parser.error("--lr-decay linear cannot be combined with --capture: the captured critic step keeps the "
                     "learning rate it was recorded with")
    if values.get("gp_weight") is not None and recipe != "wgan-gp":
        parser.error(f"--gp-weight applies to --recipe wgan-gp, not {recipe}")
    _check_dependencies(parser, args, values["data"])
    torch.set_num_threads(args.threads or default_threads(values["data"]))
    train(TrainConfig(**values), resume=args.resume, progress=not args.no_progress)
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "train":
        return _train(parser, args)
    from .theory import main as theory_main

    return theory_main(quick=args.quick, seed=args.seed)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
