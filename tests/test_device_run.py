"""benchmarks/device_run.sh, the one-call GPU check: its budget logic runs anywhere."""
import os
import subprocess

SCRIPT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks", "device_run.sh")


def test_device_run_respects_its_budget(tmp_path):
    # A phase that would not fit the budget is skipped and said so, and the summary is
    # written as the run goes.
    assert subprocess.run(["bash", "-n", SCRIPT]).returncode == 0
    result = subprocess.run(["bash", SCRIPT], env={**os.environ, "OUT": str(tmp_path), "BUDGET": "20"},
                            capture_output=True, text=True, timeout=120)
    summary = (tmp_path / "summary.txt").read_text()
    assert result.returncode == 1, result.stdout + result.stderr
    assert "build: skipped, the budget is spent" in summary
    assert "command: bash benchmarks/device_run.sh" in summary
