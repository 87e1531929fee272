"""Differential fuzzing of every fastgan backend against the float64 reference, at
length: the trials of tests/test_fuzz.py (same seeds, same rule), as many as asked.

    python scripts/fuzz.py --trials 2000                      # every family, every backend here
    python scripts/fuzz.py --trials 500 --families bias_act losses --backends triton
    python scripts/fuzz.py --trials 300 --wide --check-known  # wider ranges; re-run known bugs

Trials that hit a known bug (tests/test_fuzz.py KNOWN_BUGS) are counted apart;
``--check-known`` runs them too and says whether each bug still shows. Prints one
line per failing trial, ``family#index`` first (``test_fuzz.make_trial(family, index)``
draws it again; with --wide, pass the family's WIDE settings too), and exits 1 when
any trial outside the known bugs fails.
"""
import argparse
import os
import sys
import time
from typing import Dict, List

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT, os.path.join(ROOT, "tests")]

import conftest  # noqa: E402  (sets TRITON_INTERPRET=1 without a GPU, before fastgan's kernels load)
import torch  # noqa: E402
import test_fuzz  # noqa: E402

import fastgan  # noqa: E402

#: --wide: ranges past CI's (norms down to 1e-5, inputs saturating every activation)
WIDE: Dict[str, Dict[str, object]] = {
    "grad_norm_penalty": dict(norm_range=(1e-5, 1e3)),
    "bias_act": dict(scales=(1.5, 6.0, 20.0)),
}


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def parse_args(argv: List[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=positive_int, default=200, help="trials per family and backend")
    parser.add_argument("--start", type=int, default=0, help="index of the first trial (default 0, as CI)")
    parser.add_argument("--families", nargs="+", default=sorted(test_fuzz.FAMILIES),
                        choices=sorted(test_fuzz.FAMILIES), metavar="FAMILY",
                        help=f"op families (default: all of {sorted(test_fuzz.FAMILIES)})")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    parser.add_argument("--backends", nargs="+", default=None, metavar="BACKEND",
                        help="backends to check (default: every non-reference backend usable on --device)")
    parser.add_argument("--wide", action="store_true", help="wider value ranges than CI's")
    parser.add_argument("--check-known", action="store_true", help="also run the trials of known bugs")
    parser.add_argument("--threads", type=positive_int, default=1, help="torch intra-op threads (default 1)")
    args = parser.parse_args(argv)
    if args.start < 0:
        parser.error(f"--start must be >= 0, got {args.start}")
    try:
        device = torch.device(args.device)
    except RuntimeError:
        parser.error(f"--device must be cpu or cuda, got {args.device!r}")
    usable = [b for b in fastgan.available_backends(device) if b != "reference"]
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA GPU here")
    args.backends = usable if args.backends is None else args.backends
    for backend in args.backends:
        if backend not in usable:
            parser.error(f"--backends: {backend!r} cannot run on {device} here; usable: {usable}")
    return args


def main(argv: List[str]) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    indices = range(args.start, args.start + args.trials)
    unexplained = 0
    for family in args.families:
        kw = WIDE.get(family, {}) if args.wide else {}
        for backend in args.backends:
            started = time.perf_counter()
            failures, known = test_fuzz.run_trials(family, backend, args.device, indices, **kw)
            seconds = time.perf_counter() - started
            unexplained += len(failures)
            print(f"{family:18s} {backend:7s} {args.trials} trials: {len(failures)} failed, "
                  f"{len(known)} left to known bugs ({seconds:.1f} s)", flush=True)
            for line in failures:
                print(f"    FAIL {line}", flush=True)
            if args.check_known and known:
                report_known(family, backend, args.device, indices, kw)
    print(f"{unexplained} failing trials outside the known bugs")
    return 1 if unexplained else 0


def report_known(family: str, backend: str, device: str, indices: range, kw: Dict[str, object]) -> None:
    """Per known bug: how many of its trials still fail."""
    counts: Dict[str, List[int]] = {}
    for index in indices:
        trial = test_fuzz.make_trial(family, index, **kw)
        name = test_fuzz.known_bug(trial, backend)
        if name is None:
            continue
        failed = 0
        try:
            test_fuzz.check_trial(trial, backend, device)
        except Exception:  # noqa: BLE001  (a crash counts as the bug showing)
            failed = 1
        counts.setdefault(name, [0, 0])
        counts[name][0] += failed
        counts[name][1] += 1
    for name, (failed, total) in counts.items():
        state = "still shows" if failed else "no longer shows"
        print(f"    known bug {name}: {failed} of {total} trials fail ({state})", flush=True)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
