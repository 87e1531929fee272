"""The benchmark runner works end to end (timings are reported, never asserted)."""
import json
import os
import shutil
import subprocess

import pytest
import torch
from conftest import requires_cuda

from benchmarks import cases_clip
from benchmarks.harness import TABLE_HEADER, Timer
from benchmarks.run import LOCAL_RESULTS, main

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ["--device", "cpu", "--quick", "--reps", "2", "--warmup", "1"]


def test_runner_writes_json_and_markdown(tmp_path):
    assert main(["--suite", "clip", *TINY, "--out", str(tmp_path)]) == 0
    payload = json.loads((tmp_path / "clip-cpu.json").read_text())
    variants = {(r["suite"], r["variant"]) for r in payload["results"]}
    assert ("clip", "fastgan-cpu") in variants and ("rmsprop+clip", "eager") in variants
    assert all(r["median_ms"] > 0 and r["fraction_of_floor"] > 0 for r in payload["results"])  # bandwidth cases
    assert payload["machine"]["bandwidth_GBps"] > 0
    assert "| clip |" in (tmp_path / "clip-cpu.md").read_text()


def test_variants_are_timed_in_interleaved_rounds():
    """A block of each variant's repetitions in turn, round after round: noise on a shared
    machine lands on every variant, not on whichever was running."""
    calls = []
    timer = Timer(torch.device("cpu"), warmup=1, reps=6, flush_mib=1)
    timings = timer.time_interleaved([lambda: calls.append("a"), lambda: calls.append("b")], rounds=3)
    timed = [c for c in calls[2:]]  # after one warm-up call each
    assert timed == ["a", "a", "b", "b"] * 3
    assert [t.reps for t in timings] == [6, 6]


def test_every_variant_runs_with_the_recorded_thread_count(tmp_path, monkeypatch):
    monkeypatch.setattr(cases_clip, "CRITICS", cases_clip.CRITICS[1:2])  # the toy MLP only
    before = torch.get_num_threads()
    threads = 2 if before == 1 else 1  # differs from the process's setting, so the runner must set it
    assert main(["--suite", "clip", *TINY, "--threads", str(threads), "--out", str(tmp_path)]) == 0
    payload = json.loads((tmp_path / "clip-cpu.json").read_text())
    assert payload["environment"]["threads"] == threads
    assert {r["threads"] for r in payload["results"]} == {threads}
    assert f"every variant with {threads} CPU thread(s)" in (tmp_path / "clip-cpu.md").read_text()
    assert torch.get_num_threads() == before  # restored for the rest of the process


@pytest.mark.skipif(shutil.which("git") is None or not os.path.exists(os.path.join(REPO, ".git")),
                    reason="needs a git checkout")
def test_quick_run_leaves_committed_results_untouched(monkeypatch):
    def tracked_status():
        return subprocess.run(["git", "status", "--porcelain", "--untracked-files=all", "benchmarks/results"],
                              cwd=REPO, capture_output=True, text=True, check=True).stdout

    monkeypatch.setattr(cases_clip, "CRITICS", cases_clip.CRITICS[1:2])  # the toy MLP only
    before = tracked_status()
    assert main(["--suite", "clip", *TINY]) == 0  # default --out
    assert tracked_status() == before
    written = os.path.join(LOCAL_RESULTS, "clip-cpu.json")
    assert os.path.isfile(written) and json.load(open(written))["command"].endswith("--warmup 1")
    ignored = subprocess.run(["git", "check-ignore", "-q", written], cwd=REPO)
    assert ignored.returncode == 0, f"{written} is not ignored by git"


def test_bad_flags_exit_2_naming_the_flag(capsys):
    for argv, flag in ((["--threads", "0"], "--threads"), (["--reps", "-1"], "--reps"),
                       (["--device", "tpu"], "--device"), (["--thread", "1"], "--thread")):
        with pytest.raises(SystemExit) as exc:
            main(argv)
        assert exc.value.code == 2
        assert flag in capsys.readouterr().err


def test_penalty_suite_runs(tmp_path):
    assert main(["--suite", "penalty", "--device", "cpu", "--quick", "--reps", "1", "--warmup", "1",
                 "--out", str(tmp_path)]) == 0
    payload = json.loads((tmp_path / "penalty-cpu.json").read_text())
    suites = {r["suite"] for r in payload["results"]}
    assert suites == {"interpolate", "grad_norm_penalty fwd+bwd", "wgan-gp critic step"}


def test_losses_suite_smoke_prints_one_table(tmp_path, monkeypatch, capsys):
    from benchmarks import cases_losses

    monkeypatch.setattr(cases_losses, "QUICK", [(64, 1)])  # one shape: every kind and variant, fast
    assert main(["--suite", "losses", *TINY, "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    # one header; 9 cases of the pointwise kinds and 4 relativistic ones (RpGAN, RaGAN for D and G)
    assert out.count(TABLE_HEADER) == 1 and out.count(" | fastgan-cpu | ") == 13
    payload = json.loads((tmp_path / "losses-cpu.json").read_text())
    rows = {(r["suite"], r["case"], r["variant"]) for r in payload["results"]}
    assert len({(s, c) for s, c, _ in rows}) == 13  # 6 discriminator + 7 generator losses
    assert ("discriminator", "minimax 64x1", "fastgan-cpu") in rows
    assert ("generator", "least_squares 64x1", "eager") in rows
    assert ("generator", "relativistic_average 64x1", "fastgan-cpu") in rows
    pointwise = [r for r in payload["results"] if not r["case"].startswith("relativistic")]
    assert len(pointwise) == len(payload["results"]) - 8
    assert all(r["median_ms"] > 0 and r["bytes"] == 2 * r["logits"] * 4 + 8 for r in pointwise)


@pytest.mark.parametrize("with_compile", [False, True])
def test_iteration_variants_each_train_one_iteration(with_compile):
    """The whole-iteration suite's variants run on tiny models, repeatedly (each call is
    one iteration on the same static batch), with warm caches like a training loop."""
    from benchmarks import cases_iteration
    from fastgan import models

    case = cases_iteration._case(torch.device("cpu"), "tiny", lambda: models.mlp_generator(2, 2, 8, 1),
                                 lambda: models.mlp_critic(2, 8, 1), (2,), 16, 2, with_compile)
    assert [v.name for v in case.variants] == ["eager"] + ["torch.compile"] * with_compile + ["fastgan"]
    for variant in case.variants:
        for _ in range(2):
            variant.fn()
    assert not case.flush


def test_vae_suite_runs(tmp_path):
    assert main(["--suite", "vae", *TINY, "--out", str(tmp_path)]) == 0
    payload = json.loads((tmp_path / "vae-cpu.json").read_text())
    rows = {(r["case"], r["variant"]) for r in payload["results"]}
    assert rows == {(case, variant) for case in ("bernoulli 64x784 z128", "gaussian 64x3x64x64 z128")
                    for variant in ("eager", "fastgan-cpu")}
    assert all(r["median_ms"] > 0 for r in payload["results"])


def test_a_graph_replay_has_the_in_graph_launch_floor(monkeypatch):
    """A variant that replays a CUDA graph does not pay the host's per-launch cost: its
    launch floor is launches x the in-graph latency, not x the one-by-one latency (which
    put captured rows above 100% of their floor)."""
    from benchmarks import harness

    monkeypatch.setattr(harness, "count_launches", lambda fn, device: 10)
    machine = {"bandwidth_GBps": 1.0, "launch_latency_us": 5.0, "graph_launch_latency_us": 2.0}
    case = harness.Case("s", "c", 0, [harness.Variant("eager", lambda: None),
                                      harness.Variant("eager+graph", lambda: None, graphed=True)])
    rows = harness.evaluate(case, Timer(torch.device("cpu"), warmup=1, reps=2, flush_mib=1), machine)
    assert [row["floor_ms"] for row in rows] == [pytest.approx(0.05), pytest.approx(0.02)]
    del machine["graph_launch_latency_us"]  # a CPU run measures none
    assert harness.launch_latency_us(machine, case.variants[1]) == 5.0


@requires_cuda
def test_machine_ceilings_on_cuda_include_the_graph_latency():
    from benchmarks.harness import measure_machine

    device = torch.device("cuda")
    machine = measure_machine(device, Timer(device, warmup=1, reps=3), mib=16)
    assert 0 < machine["graph_launch_latency_us"] < machine["launch_latency_us"] * 4
