"""The benchmark runner works end to end (timings are reported, never asserted)."""
import json

from benchmarks.run import main


def test_runner_writes_json_and_markdown(tmp_path):
    assert main(["--suite", "clip", "--device", "cpu", "--quick", "--reps", "2", "--warmup", "1",
                 "--out", str(tmp_path)]) == 0
    payload = json.loads((tmp_path / "clip-cpu.json").read_text())
    variants = {(r["suite"], r["variant"]) for r in payload["results"]}
    assert ("clip", "fastgan-cpu") in variants and ("rmsprop+clip", "eager") in variants
    assert all(r["median_ms"] > 0 and r["fraction_of_floor"] > 0 for r in payload["results"])  # bandwidth cases
    assert payload["machine"]["bandwidth_GBps"] > 0
    assert "| clip |" in (tmp_path / "clip-cpu.md").read_text()


def test_penalty_suite_runs(tmp_path):
    assert main(["--suite", "penalty", "--device", "cpu", "--quick", "--reps", "1", "--warmup", "1",
                 "--out", str(tmp_path)]) == 0
    payload = json.loads((tmp_path / "penalty-cpu.json").read_text())
    suites = {r["suite"] for r in payload["results"]}
    assert suites == {"interpolate", "grad_norm_penalty fwd+bwd", "wgan-gp critic step"}
