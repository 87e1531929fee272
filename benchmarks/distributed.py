"""Weak scaling of distributed training (issue 13): time per WGAN-GP iteration (n_critic
critic steps and one generator step) of the toy MLPs with W = 1, 2, 4 processes under
torchrun, each process with the same batch (the global batch grows with W).

    python -m benchmarks.distributed                       # W = 1 2 4 on the CPU (gloo)
    python -m benchmarks.distributed --nproc 1 2 --device cuda --batch-per-rank 4096

Scaling efficiency = time(W = 1) / time(W): 1.0 is perfect weak scaling. Each W runs in
its own ``torch.distributed.run --standalone`` launch; rank 0 times ``--reps`` blocks of
``--iters`` iterations between barriers and reports the median per iteration. Results go
to ``benchmarks/results/local/distributed-<device>.{json,md}`` (untracked; ``--out``
elsewhere). On CPUs, W processes need W free cores (each runs one thread): on a shared or
small machine the figure measures the contention as much as the all-reduce.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Dict, List

LOCAL_RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "local")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _parse(argv):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.distributed", description=__doc__,
                                     allow_abbrev=False, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nproc", type=int, nargs="+", default=[1, 2, 4], help="process counts W (default 1 2 4)")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"), help="cpu (gloo) or cuda (NCCL)")
    parser.add_argument("--batch-per-rank", type=int, default=256, help="each process's batch (default 256)")
    parser.add_argument("--hidden", type=int, default=512, help="the toy MLPs' width (default 512)")
    parser.add_argument("--iters", type=int, default=10, help="iterations per timed block (default 10)")
    parser.add_argument("--reps", type=int, default=7, help="timed blocks (default 7)")
    parser.add_argument("--out", default=LOCAL_RESULTS, help="results folder (default benchmarks/results/local)")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)  # set for the torchrun processes
    args = parser.parse_args(argv)
    for flag in ("batch_per_rank", "hidden", "iters", "reps"):
        if getattr(args, flag) < 1:
            parser.error(f"--{flag.replace('_', '-')} must be a positive integer, got {getattr(args, flag)}")
    if any(w < 1 for w in args.nproc):
        parser.error(f"--nproc must be positive integers, got {args.nproc}")
    return args


def _worker(args) -> None:
    """One torchrun process: train the toy WGAN-GP and (rank 0) write the timings to args.worker."""
    import torch
    import torch.distributed as dist

    from fastgan.train import distributed
    from fastgan.train.data import DataSampler
    from fastgan.train.loop import TrainConfig, build_models
    from fastgan.train.recipes import get_recipe, make_optimizers

    torch.set_num_threads(1)
    ranks = distributed.ranks_from_environment()
    batch = args.batch_per_rank * ranks.world_size
    config = TrainConfig(recipe="wgan-gp", device=args.device, hidden=args.hidden, batch_size=batch).resolved()
    device = distributed.rank_device(config.device, ranks)
    with distributed.process_group(ranks, device):
        torch.manual_seed(0)
        nets = build_models(config)
        generator, critic = nets["generator"].to(device), nets["critic"].to(device)
        recipe = get_recipe("wgan-gp", data=config.data)
        opt_g, opt_d = make_optimizers(recipe, generator, critic)
        step_d, step_g = distributed.training_steps(ranks, recipe, generator, critic, opt_g, opt_d, device=device)
        sampler = DataSampler(config.data, seed=0, device=device)

        def iteration() -> None:
            for _ in range(recipe.n_critic):
                step_d(sampler.sample(batch), torch.randn(batch, config.latent_dim, device=device))
            step_g(torch.randn(batch, config.latent_dim, device=device))

        def synchronise() -> None:
            if device.startswith("cuda"):
                torch.cuda.synchronize(device)
            distributed.barrier(ranks)

        for _ in range(3):
            iteration()
        times: List[float] = []
        for _ in range(args.reps):
            synchronise()
            start = time.perf_counter()
            for _ in range(args.iters):
                iteration()
            synchronise()
            times.append((time.perf_counter() - start) / args.iters)
        if ranks.is_main:
            with open(args.worker, "w") as handle:
                json.dump({"world_size": ranks.world_size, "ms_per_iter": [1e3 * t for t in times]}, handle)
        if ranks.world_size > 1:
            dist.barrier()


def _launch(args, world_size: int, result: str) -> Dict[str, object]:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={world_size}",
           "-m", "benchmarks.distributed", "--worker", result, "--device", args.device,
           "--batch-per-rank", str(args.batch_per_rank), "--hidden", str(args.hidden), "--iters", str(args.iters),
           "--reps", str(args.reps)]
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""), OMP_NUM_THREADS="1")
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"W = {world_size} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    with open(result) as handle:
        return json.load(handle)


def main(argv=None) -> int:
    args = _parse(sys.argv[1:] if argv is None else argv)
    if args.worker:
        _worker(args)
        return 0
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        for world_size in args.nproc:
            timings = _launch(args, world_size, os.path.join(scratch, f"w{world_size}.json"))
            samples = sorted(timings["ms_per_iter"])
            rows.append({"world_size": world_size, "batch_per_rank": args.batch_per_rank,
                         "global_batch": args.batch_per_rank * world_size, "median_ms": statistics.median(samples),
                         "p20_ms": samples[int(0.2 * (len(samples) - 1))],
                         "p80_ms": samples[int(round(0.8 * (len(samples) - 1)))]})
    base = next((r["median_ms"] for r in rows if r["world_size"] == 1), None)
    for row in rows:
        row["efficiency"] = base / row["median_ms"] if base else None
    os.makedirs(args.out, exist_ok=True)
    stem = os.path.join(args.out, f"distributed-{args.device}")
    command = "python -m benchmarks.distributed " + " ".join(sys.argv[1:] if argv is None else argv)
    meta = {"device": args.device, "hidden": args.hidden, "iters": args.iters, "reps": args.reps,
            "cpu_count": os.cpu_count(), "command": command}
    with open(stem + ".json", "w") as handle:
        json.dump({"meta": meta, "rows": rows}, handle, indent=1)
    lines = ["| W | batch per rank | global batch | ms per iteration (median, p20-p80) | weak-scaling efficiency |",
             "|---|---|---|---|---|"]
    for r in rows:
        eff = f"{r['efficiency']:.2f}" if r["efficiency"] is not None else "-"
        lines.append(f"| {r['world_size']} | {r['batch_per_rank']} | {r['global_batch']} | {r['median_ms']:.2f} "
                     f"({r['p20_ms']:.2f}-{r['p80_ms']:.2f}) | {eff} |")
    table = "\n".join(lines)
    with open(stem + ".md", "w") as handle:
        handle.write(f"WGAN-GP toy MLPs (hidden {args.hidden}), {args.device}, {os.cpu_count()} CPUs\n\n{table}\n")
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
