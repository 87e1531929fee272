"""Timing, machine ceilings and reporting shared by every benchmark suite.

Timing: CUDA events around each repetition (a monotonic clock on CPU), after
warm-up; we report the median and the 20th/80th percentiles over many
repetitions. A case's variants are timed in interleaved rounds (each round times a
block of every variant's repetitions in turn), so that a burst of noise on a shared
machine, or a slow drift, lands on all of them rather than on whichever ran then.
Caches (GPU L2, CPU L3) are flushed before each repetition,
outside the timed region, so that a critic that fits in cache is not timed from
it: in training, the forward and backward passes between two optimizer steps
evict it anyway.

Ceilings, measured once per run: memory bandwidth (the better of a large copy
and a large in-place update, bytes read + written over time) and launch latency (the per-call time of a
stream of tiny ops; on CUDA also per kernel of the same stream replayed as a CUDA graph,
the latency of a variant that replays one). A case's floor is max(bytes / bandwidth, launches x
latency); ``fraction_of_floor`` = floor / measured median.
"""
import dataclasses
import json
import os
import platform
import statistics
import time
from typing import Callable, Dict, List, Optional

import torch


@dataclasses.dataclass
class Variant:
    """One implementation of a case: `fn` runs it once (in place is fine)."""

    name: str
    fn: Callable[[], object]
    launches: Optional[int] = None  # filled by the runner on CUDA (profiler count)
    graphed: bool = False  # replays a CUDA graph: its launches' floor is the in-graph latency


@dataclasses.dataclass
class Case:
    suite: str
    name: str
    bytes_moved: int  # the fewest bytes any implementation must move (each input read, each output written
    # once); 0 for compute-bound cases, whose floor is then launches x latency (CUDA) or not given
    variants: List[Variant]
    baseline: str = "eager"
    info: Dict[str, object] = dataclasses.field(default_factory=dict)
    flush: bool = True  # flush caches before each repetition (not for host-overhead cases: a loop keeps them warm)


@dataclasses.dataclass
class Timing:
    median_ms: float
    p20_ms: float
    p80_ms: float
    reps: int


def _quantile(values: List[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, int(round(q * (len(ordered) - 1)))))]


class Timer:
    def __init__(self, device: torch.device, warmup: int = 10, reps: int = 100, min_seconds: float = 0.0,
                 flush_mib: int = 256):
        self.device = device
        self.warmup = warmup
        self.reps = reps
        self.min_seconds = min_seconds
        # Written before each repetition, outside the timed region: bigger than any
        # GPU L2 (H100: 50 MB, H200: 60 MB) or server L3 slice.
        self._flush = torch.empty(flush_mib * 2**20, dtype=torch.int8, device=device)

    def _warm_up(self, fn: Callable[[], object]) -> None:
        """At least `warmup` calls, then more (up to 4x) until a call is no slower than
        1.5x the fastest so far: first calls pay for allocation, autotuning and
        oneDNN/cuDNN plan creation, sometimes for several iterations."""
        fastest, calls = float("inf"), 0
        while True:
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
            begin = time.perf_counter()
            fn()
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
            elapsed = time.perf_counter() - begin
            fastest = min(fastest, elapsed)
            calls += 1
            if calls >= 4 * max(1, self.warmup) or (calls >= self.warmup and elapsed <= 1.5 * fastest):
                return

    def time(self, fn: Callable[[], object], flush: bool = True) -> Timing:
        return self.time_interleaved([fn], flush)[0]

    def _block(self, fn: Callable[[], object], reps: int, flush: bool) -> List[float]:
        """`reps` timed calls of `fn` in a row, in ms."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True))
                      for _ in range(reps)]
            for start, end in events:
                if flush:
                    self._flush.zero_()
                start.record()
                fn()
                end.record()
            torch.cuda.synchronize(self.device)
            return [start.elapsed_time(end) for start, end in events]
        samples = []
        for _ in range(reps):
            if flush:
                self._flush.zero_()
            begin = time.perf_counter()
            fn()
            samples.append((time.perf_counter() - begin) * 1e3)
        return samples

    def time_interleaved(self, fns: List[Callable[[], object]], flush: bool = True, rounds: int = 5) -> List[Timing]:
        """Each of `fns` warmed up, then timed in `rounds` rounds of a block of
        ceil(reps / rounds) repetitions each, the functions in turn within a round (a
        block keeps a function's loop warm, as a training loop does), and on the CPU
        more rounds until `min_seconds` have passed."""
        for fn in fns:
            self._warm_up(fn)
        rounds = max(1, min(rounds, self.reps))
        block = -(-self.reps // rounds)
        samples: List[List[float]] = [[] for _ in fns]
        deadline = time.perf_counter() + self.min_seconds
        done = 0
        while done < rounds or (self.device.type != "cuda" and time.perf_counter() < deadline):
            for fn, kept in zip(fns, samples):
                kept.extend(self._block(fn, block, flush))
            done += 1
        return [Timing(statistics.median(kept), _quantile(kept, 0.2), _quantile(kept, 0.8), len(kept))
                for kept in samples]


def count_launches(fn: Callable[[], object], device: torch.device) -> Optional[int]:
    """Kernels and memory operations `fn` puts on the GPU, counted with the profiler."""
    if device.type != "cuda":
        return None
    from torch.profiler import ProfilerActivity, profile

    fn()
    torch.cuda.synchronize(device)
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        fn()
        torch.cuda.synchronize(device)
    return sum(1 for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA)


def graph_replay(step: Callable[[], None], warmup: int = 3) -> Callable[[], None]:
    """`step` recorded as a CUDA graph on the current device, after `warmup` calls on a
    side stream; returns the graph's replay."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(warmup):
            step()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        step()
    return graph.replay


def measure_machine(device: torch.device, timer: Timer, mib: int = 1024) -> Dict[str, float]:
    """Memory bandwidth (GB/s, bytes read + written) and per-launch latency (us).

    Bandwidth is the better of a copy (``dst.copy_(src)``) and an in-place update
    (``x.mul_(1)``): on CPUs a copy's stores first read the destination lines
    (write-allocate), so it under-states what an in-place kernel can reach."""
    n = mib * 2**20 // 4  # float32 elements
    src = torch.randn(n, device=device)
    dst = torch.empty_like(src)
    copy = timer.time(lambda: dst.copy_(src))
    inplace = timer.time(lambda: dst.mul_(1.0))
    tiny = torch.zeros(1, device=device)
    launches = 200

    def many_tiny():
        for _ in range(launches):
            tiny.add_(1.0)

    per_launch = timer.time(many_tiny).median_ms / launches
    del src, dst
    copy_gbps = 2 * n * 4 / (copy.median_ms * 1e-3) / 1e9
    inplace_gbps = 2 * n * 4 / (inplace.median_ms * 1e-3) / 1e9
    machine = {"bandwidth_GBps": max(copy_gbps, inplace_gbps), "copy_bandwidth_GBps": copy_gbps,
               "inplace_bandwidth_GBps": inplace_gbps, "launch_latency_us": per_launch * 1e3}
    if device.type == "cuda":
        # The same stream of tiny kernels recorded as one CUDA graph: a replay does not
        # pay the host's per-launch cost, so a captured variant's floor is this latency.
        # Not measured on CUDA before: a failure is reported and leaves the suites running.
        try:
            machine["graph_launch_latency_us"] = timer.time(graph_replay(many_tiny)).median_ms / launches * 1e3
        except RuntimeError as exc:
            print(f"graph launch latency not measured ({exc}): captured variants get the one-by-one latency")
    return machine


def launch_latency_us(machine: Dict[str, float], variant: Variant) -> float:
    """The per-launch floor of `variant`: in a CUDA graph's replay, or launched one by one."""
    return machine.get("graph_launch_latency_us", machine["launch_latency_us"]) if variant.graphed \
        else machine["launch_latency_us"]


def environment(device: torch.device) -> Dict[str, object]:
    env: Dict[str, object] = {
        "device": str(device),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
    }
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    env["cpu"] = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        import triton

        env["triton"] = triton.__version__
    except ImportError:
        env["triton"] = None
    if device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
        env["cuda"] = torch.version.cuda
    import fastgan

    env["fastgan_build"] = {k: v for k, v in fastgan.BUILD_INFO.items()}
    return env


def evaluate(case: Case, timer: Timer, machine: Dict[str, float]) -> List[Dict[str, object]]:
    """Time every variant of `case`; ratios are speed-ups (baseline time / variant time)."""
    rows = []
    for variant in case.variants:
        variant.launches = count_launches(variant.fn, timer.device)
    timings = timer.time_interleaved([variant.fn for variant in case.variants], flush=case.flush)
    for variant, timing in zip(case.variants, timings):
        rows.append({"suite": case.suite, "case": case.name, "variant": variant.name,
                     "median_ms": timing.median_ms, "p20_ms": timing.p20_ms, "p80_ms": timing.p80_ms,
                     "reps": timing.reps, "threads": torch.get_num_threads(), "launches": variant.launches,
                     "bytes": case.bytes_moved, **case.info})
    by_name = {row["variant"]: row for row in rows}
    bandwidth_floor_ms = case.bytes_moved / (machine["bandwidth_GBps"] * 1e9) * 1e3
    for variant, row in zip(case.variants, rows):
        for peer in by_name:
            if peer != row["variant"]:
                row[f"speedup_vs_{peer}"] = by_name[peer]["median_ms"] / row["median_ms"]
        launch_floor_ms = (row["launches"] or 0) * launch_latency_us(machine, variant) * 1e-3
        floor_ms = max(bandwidth_floor_ms, launch_floor_ms)
        row["floor_ms"] = floor_ms
        # No floor for compute-bound cases (bytes_moved = 0) timed where launches are not counted.
        row["fraction_of_floor"] = floor_ms / row["median_ms"] if floor_ms > 0 else None
        row["achieved_GBps"] = case.bytes_moved / (row["median_ms"] * 1e-3) / 1e9
    return rows


TABLE_HEADER = ("| suite | case | variant | median ms | p20-p80 ms | launches | GB/s | vs eager | fraction of floor |\n"
                "|---|---|---|---:|---:|---:|---:|---:|---:|\n")


def table_rows(rows: List[Dict[str, object]], baseline: str = "eager") -> str:
    """The markdown lines of ``rows`` under :data:`TABLE_HEADER`, one per variant."""
    lines = []
    for r in rows:
        vs = r.get(f"speedup_vs_{baseline}", 1.0 if r["variant"] == baseline else float("nan"))
        launches = "" if r["launches"] is None else str(r["launches"])
        lines.append(
            f"| {r['suite']} | {r['case']} | {r['variant']} | {r['median_ms']:.4f} | "
            f"{r['p20_ms']:.4f}-{r['p80_ms']:.4f} | {launches} | "
            f"{r['achieved_GBps']:.1f} | {vs:.2f}x | "
            f"{'-' if r['fraction_of_floor'] is None else format(r['fraction_of_floor'], '.0%')} |\n"
        )
    return "".join(lines)


def write_report(path_stem: str, env: Dict[str, object], machine: Dict[str, float], rows: List[Dict[str, object]],
                 command: str) -> List[str]:
    """Write <stem>.json, <stem>.md and (with matplotlib) <stem>.png; return the paths."""
    os.makedirs(os.path.dirname(path_stem) or ".", exist_ok=True)
    payload = {"command": command, "environment": env, "machine": machine, "results": rows,
               "date": time.strftime("%Y-%m-%d %H:%M:%S %Z")}
    with open(path_stem + ".json", "w") as handle:
        json.dump(payload, handle, indent=1, default=str)
    graph_latency = (f" ({machine['graph_launch_latency_us']:.2f} us a kernel in a CUDA graph's replay)"
                     if "graph_launch_latency_us" in machine else "")
    text = [f"# fastgan benchmarks on {env.get('gpu') or env.get('cpu')}", "",
            f"Command: `{command}`  ", f"Date: {payload['date']}  ",
            "Versions: " + ", ".join(f"{k} {env.get(k)}" for k in ("torch", "triton", "cuda", "python") if env.get(k)),
            "", f"Memory bandwidth {machine['bandwidth_GBps']:.1f} GB/s (read + write; copy "
            f"{machine['copy_bandwidth_GBps']:.1f}, in-place {machine['inplace_bandwidth_GBps']:.1f}), "
            f"launch latency {machine['launch_latency_us']:.2f} us{graph_latency}, every variant with "
            f"{env['threads']} CPU thread(s) (`--threads`).", "",
            "Medians over the repetitions; speed-ups are eager median / variant median; the floor is "
            "max(bytes moved / bandwidth, launches x launch latency), launches counted on CUDA only (a variant "
            "that replays a CUDA graph: the in-graph latency).", "",
            TABLE_HEADER + table_rows(rows)]
    with open(path_stem + ".md", "w") as handle:
        handle.write("\n".join(text))
    paths = [path_stem + ".json", path_stem + ".md"]
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed: no plot written (pip install matplotlib)")
        return paths
    cases = list(dict.fromkeys((r["suite"], r["case"]) for r in rows))
    variants = list(dict.fromkeys(r["variant"] for r in rows))
    fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(cases)), 4))
    width = 0.8 / max(1, len(variants))
    for k, variant in enumerate(variants):
        xs, ys = [], []
        for i, key in enumerate(cases):
            match = [r for r in rows if (r["suite"], r["case"]) == key and r["variant"] == variant]
            if match:
                xs.append(i + k * width)
                ys.append(match[0].get("speedup_vs_eager", 1.0))
        ax.bar(xs, ys, width, label=variant)
    ax.set_xticks([i + 0.4 - width / 2 for i in range(len(cases))])
    ax.set_xticklabels([f"{s}\n{c}" for s, c in cases], fontsize=7)
    ax.set_ylabel("speed-up over eager (x)")
    ax.set_yscale("log")
    ax.axhline(1.0, color="black", linewidth=0.5)
    ax.legend(fontsize=7)
    ax.set_title(f"fastgan on {env.get('gpu') or env.get('cpu')}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path_stem + ".png", dpi=120)
    plt.close(fig)
    return paths + [path_stem + ".png"]
