"""Run fastgan's benchmarks and write JSON, markdown and a PNG plot.

    python -m benchmarks                      # every suite, on CUDA if present else CPU
    python -m benchmarks --suite clip --device cpu --quick

Results go to ``benchmarks/results/local/<suite>-<device>.{json,md,png}`` (not tracked
by git); ``--out benchmarks/results`` replaces the committed results, on purpose.
Every variant runs with the same CPU thread count (``--threads``, default 1 on CPU, so
that a busy machine cannot turn thread-pool synchronisation into a fake speed-up); it is
recorded in every result row.
"""
import argparse
import gc
import os
import shlex
import sys
from typing import Dict, Iterator

import torch

from . import (cases_bias_act, cases_clip, cases_iteration, cases_losses, cases_overhead, cases_penalty, cases_r1r2,
               cases_vae)
from .harness import TABLE_HEADER, Case, Timer, environment, evaluate, measure_machine, table_rows, write_report

LOCAL_RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "local")

SUITES: Dict[str, object] = {
    "clip": lambda device, args: cases_clip.clip_cases(device, args.compile, args.sizes),
    "penalty": lambda device, args: cases_penalty.penalty_cases(device, args.compile, args.sizes),
    "losses": lambda device, args: cases_losses.loss_cases(device, args.compile, args.sizes),
    "bias_act": lambda device, args: cases_bias_act.bias_act_cases(device, args.compile, args.sizes),
    "overhead": lambda device, args: cases_overhead.overhead_cases(device, args.compile, args.sizes),
    "iteration": lambda device, args: cases_iteration.iteration_cases(device, args.compile, args.sizes),
    "r1r2": lambda device, args: cases_r1r2.r1r2_cases(device, args.compile, args.sizes),
    "vae": lambda device, args: cases_vae.vae_cases(device, args.compile, args.sizes),
}


def _parse(argv):
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__, allow_abbrev=False,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--suite", action="append", choices=sorted(SUITES), help="suite to run (repeatable); default all")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--quick", action="store_true", help="fewer repetitions and the small cases only")
    parser.add_argument("--reps", type=int, default=None, help="timed repetitions per variant")
    parser.add_argument("--warmup", type=int, default=None, help="untimed warm-up calls per variant")
    parser.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                        help="include torch.compile peers (default: on CUDA only)")
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads for every variant (default: 1 on CPU, torch's default on CUDA)")
    parser.add_argument("--out", default=LOCAL_RESULTS,
                        help="folder for the results files (default: benchmarks/results/local, untracked)")
    args = parser.parse_args(argv)
    for flag in ("reps", "warmup", "threads"):
        if getattr(args, flag) is not None and getattr(args, flag) < 1:
            parser.error(f"--{flag} must be a positive integer, got {getattr(args, flag)}")
    if args.device not in ("auto", "cpu") and not args.device.startswith("cuda"):
        parser.error(f"--device must be auto, cpu or cuda[:N], got {args.device!r}")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error(f"--device {args.device}: torch sees no CUDA GPU")
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.compile is None:
        args.compile = args.device.startswith("cuda")
    args.sizes = "small" if args.quick else "all"
    if args.reps is None:
        args.reps = (10 if args.quick else 30) if args.device == "cpu" else (50 if args.quick else 200)
    if args.warmup is None:
        args.warmup = 3 if args.device == "cpu" else 10
    if args.threads is None:
        args.threads = 1 if args.device == "cpu" else torch.get_num_threads()
    return args


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = _parse(argv)
    device = torch.device(args.device)
    threads_before = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    try:
        _run(args, device, argv)
    finally:
        torch.set_num_threads(threads_before)  # main() is also called in-process, by the tests
    return 0


def _run(args: argparse.Namespace, device: torch.device, argv) -> None:
    timer = Timer(device, warmup=args.warmup, reps=args.reps, flush_mib=64 if args.quick else 256)
    machine = measure_machine(device, timer, mib=(1024 if device.type == "cuda" else 256) // (4 if args.quick else 1))
    env = environment(device)
    print(f"device {env.get('gpu') or env.get('cpu')}: bandwidth {machine['bandwidth_GBps']:.1f} GB/s, "
          f"launch {machine['launch_latency_us']:.2f} us, {env['threads']} CPU thread(s) for every variant",
          flush=True)
    command = "python -m benchmarks " + " ".join(shlex.quote(a) for a in argv)
    for suite in args.suite or sorted(SUITES):
        rows = []
        cases: Iterator[Case] = SUITES[suite](device, args)
        print(f"\n{suite}\n\n{TABLE_HEADER}", end="", flush=True)
        for case in cases:
            case_rows = evaluate(case, timer, machine)
            rows += case_rows
            print(table_rows(case_rows), end="", flush=True)
            del case
            gc.collect()
        paths = write_report(f"{args.out}/{suite}-{device.type}", env, machine, rows, command.strip())
        print("wrote", ", ".join(paths))
