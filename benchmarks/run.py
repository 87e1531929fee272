"""Run fastgan's benchmarks and write JSON, markdown and a PNG plot.

    python -m benchmarks                      # every suite, on CUDA if present else CPU
    python -m benchmarks --suite clip --device cpu --quick

Results go to ``benchmarks/results/<suite>-<device>.{json,md,png}``.
"""
import argparse
import gc
import shlex
import sys
from typing import Dict, Iterator

import torch

from . import cases_bias_act, cases_clip, cases_losses, cases_penalty
from .harness import Case, Timer, environment, evaluate, markdown_table, measure_machine, write_report

SUITES: Dict[str, object] = {
    "clip": lambda device, args: cases_clip.clip_cases(device, args.compile, args.sizes),
    "penalty": lambda device, args: cases_penalty.penalty_cases(device, args.compile, args.sizes),
    "losses": lambda device, args: cases_losses.loss_cases(device, args.compile, args.sizes),
    "bias_act": lambda device, args: cases_bias_act.bias_act_cases(device, args.compile, args.sizes),
}


def _parse(argv):
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--suite", action="append", choices=sorted(SUITES), help="suite to run (repeatable); default all")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--quick", action="store_true", help="fewer repetitions and the small cases only")
    parser.add_argument("--reps", type=int, default=None, help="timed repetitions per variant")
    parser.add_argument("--warmup", type=int, default=None, help="untimed warm-up calls per variant")
    parser.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                        help="include torch.compile peers (default: on CUDA only)")
    parser.add_argument("--out", default="benchmarks/results", help="folder for the results files")
    args = parser.parse_args(argv)
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.compile is None:
        args.compile = args.device.startswith("cuda")
    args.sizes = "small" if args.quick else "all"
    if args.reps is None:
        args.reps = (10 if args.quick else 30) if args.device == "cpu" else (50 if args.quick else 200)
    if args.warmup is None:
        args.warmup = 3 if args.device == "cpu" else 10
    return args


def main(argv=None) -> int:
    args = _parse(sys.argv[1:] if argv is None else argv)
    device = torch.device(args.device)
    timer = Timer(device, warmup=args.warmup, reps=args.reps, flush_mib=64 if args.quick else 256)
    machine = measure_machine(device, timer, mib=(1024 if device.type == "cuda" else 256) // (4 if args.quick else 1))
    env = environment(device)
    print(f"device {env.get('gpu') or env.get('cpu')}: bandwidth {machine['bandwidth_GBps']:.1f} GB/s, "
          f"launch {machine['launch_latency_us']:.2f} us", flush=True)
    command = "python -m benchmarks " + " ".join(shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv))
    for suite in args.suite or sorted(SUITES):
        rows = []
        cases: Iterator[Case] = SUITES[suite](device, args)
        for case in cases:
            case_rows = evaluate(case, timer, machine)
            rows += case_rows
            print(markdown_table(case_rows), flush=True)
            del case
            gc.collect()
        paths = write_report(f"{args.out}/{suite}-{device.type}", env, machine, rows, command.strip())
        print("wrote", ", ".join(paths))
    return 0
