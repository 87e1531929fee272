"""The ``fastgan`` command line: every bad flag exits 2 with a message naming the flag,
``--help`` and argument errors answer before torch is imported, no abbreviations, and the
thread default."""
import errno
import json
import os
import subprocess
import sys

import pytest
import torch
from conftest import HAS_CUDA

import fastgan
from fastgan.train import cli, names, recipes

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ["--steps", "1", "--hidden", "16", "--eval-samples", "100", "--batch-size", "32", "--no-progress",
        "--no-plots", "--device", "cpu"]

pytestmark = pytest.mark.usefixtures("one_thread")


def _exit(argv, capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(argv)
    return info.value.code, capsys.readouterr().err


@pytest.mark.parametrize("flags,message", [
    (["--lr", "1e308"], "--lr: must be finite, > 0 and <= 1, got 1e308"),
    (["--lr", "nan"], "--lr: must be finite"),
    (["--gp-weight", "1e300"], "--gp-weight: must be finite, >= 0 and <= 1e+06"),
    (["--seed", str(2**32)], "--seed: must be an integer in [0, 2**32)"),
    (["--seed", "-1"], "--seed: must be an integer in [0, 2**32)"),
    (["--threads", str(2**31)], "--threads: must be > 0 and <= 1,024"),
    (["--batch-size", str(10**9)], "--batch-size: must be > 0 and <= 65,536"),
    (["--hidden", str(10**6)], "--hidden: must be > 0 and <= 8,192"),
    (["--latent-dim", str(10**7)], "--latent-dim: must be > 0 and <= 4,096"),
    (["--eval-samples", str(10**9)], "--eval-samples: must be > 0 and <= 1,000,000"),
    (["--data", "digits", "--eval-samples", "1"], "--eval-samples 1: the digits metrics need at least 2 samples"),
    (["--steps", str(10**12)], "--steps: must be > 0 and <= 1,000,000,000"),
    (["--device", "cpu:1"], "--device cpu:1: the CPU has no device index; use --device cpu"),
    (["--out", ""], "--out: the output folder must not be empty"),
    (["--out", "/proc/fastgan-run"], "--out /proc/fastgan-run: is under /proc, a kernel pseudo file system"),
    (["--out", "/sys/kernel/fastgan"], "is under /sys"),
    (["--out", "x" * 5000], "cannot create or write files there (File name too long)"),
    (["--step", "10"], "unrecognized arguments: --step 10"),  # no abbreviation of --steps
    (["--resume", "--overwrite"], "--resume and --overwrite exclude each other"),
])
def test_bad_train_flags_exit_2_naming_the_flag(flags, message, capsys, tmp_path):
    argv = ["train", "--out", str(tmp_path / "run"), *flags] if "--out" not in flags else ["train", *flags]
    code, err = _exit(argv, capsys)
    assert code == 2 and message in err, err
    assert err.startswith("usage: fastgan train"), err  # the subcommand's usage line, not the top level's
    assert "Traceback" not in err


def test_theory_seed_bound(capsys):
    code, err = _exit(["theory", "--seed", str(2**32)], capsys)
    assert code == 2 and "--seed: must be an integer in [0, 2**32)" in err and err.startswith("usage: fastgan theory")


def test_out_under_a_file(capsys, tmp_path):
    (tmp_path / "file").write_text("x")
    code, err = _exit(["train", "--out", str(tmp_path / "file" / "run")], capsys)
    assert code == 2 and "cannot create or write files there (Not a directory)" in err, err
    code, err = _exit(["train", "--out", str(tmp_path / "file")], capsys)
    assert code == 2 and "exists and is not a folder" in err, err


def test_read_only_out_is_refused_at_start(capsys, tmp_path, monkeypatch):
    from fastgan.train import checkpoint as ckpt

    def read_only(path, write):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), path)

    monkeypatch.setattr(ckpt, "atomic_write", read_only)  # a read-only mount, which a test cannot make
    code, err = _exit(["train", "--out", str(tmp_path / "run"), *TINY], capsys)
    assert code == 2 and "--out" in err and "Read-only file system" in err, err
    assert not (tmp_path / "run" / "checkpoint.pt").exists()  # refused before training


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_existing_read_only_folder_is_refused_at_start(capsys, tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        code, err = _exit(["train", "--out", str(folder), *TINY], capsys)
    finally:
        folder.chmod(0o755)
    assert code == 2 and "cannot create or write files there" in err, err


def test_training_without_pot_uses_scipy_and_without_either_exits_2(capsys, tmp_path, monkeypatch):
    """pot is optional where scipy is present (the GPU machines lack pot): W1 comes from
    scipy's exact assignment. Without either, the job refuses at start, naming pot."""
    import importlib.util

    find_spec, hidden = importlib.util.find_spec, {"ot"}
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name in hidden else find_spec(name, *a))
    monkeypatch.setitem(sys.modules, "ot", None)  # import ot raises ImportError
    cli.main(["train", "--out", str(tmp_path / "run"), *TINY])
    final = json.loads((tmp_path / "run" / "summary.json").read_text())["final"]
    assert 0 < final["w1"] < float("inf"), final
    hidden.add("scipy")
    code, err = _exit(["train", "--out", str(tmp_path / "other"), *TINY], capsys)
    assert code == 2 and "the training job needs pot" in err, err


def test_backend_that_cannot_run_exits_2(capsys, tmp_path, monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)  # triton without its interpreter: CUDA tensors only
    code, err = _exit(["train", "--out", str(tmp_path), "--device", "cpu", "--backend", "triton"], capsys)
    assert code == 2 and "--backend: backend 'triton' cannot run these tensors" in err, err
    if not HAS_CUDA:
        code, err = _exit(["train", "--out", str(tmp_path), "--device", "cpu", "--backend", "cuda"], capsys)
        assert code == 2 and "--backend: backend 'cuda' cannot run these tensors" in err, err
    monkeypatch.setenv("FASTGAN_BACKEND", "bogus")
    code, err = _exit(["train", "--out", str(tmp_path), "--device", "cpu"], capsys)
    assert code == 2 and "$FASTGAN_BACKEND" in err, err


def test_cli_names_match_the_library():
    from fastgan.train import data, loop

    assert names.BACKENDS == fastgan.BACKENDS
    assert names.RECIPE_NAMES == tuple(recipes.RECIPES)
    assert data.DATASETS is names.DATASETS and loop.LR_DECAYS is names.LR_DECAYS


def test_help_and_argument_errors_answer_before_torch_is_imported():
    runner = (
        "import json, sys\n"
        "from fastgan.train import cli\n"
        "codes = []\n"
        "for argv in (['--help'], ['train', '--help'], ['theory', '--help'], ['train', '--step', '10'],\n"
        "             ['train', '--lr', '1e308'], ['train', '--seed', str(2**64)], []):\n"
        "    try:\n"
        "        cli.main(argv)\n"
        "    except SystemExit as exc:\n"
        "        codes.append(exc.code)\n"
        "print(json.dumps({'codes': codes, 'torch': 'torch' in sys.modules}))\n"
    )
    env = {**os.environ, "PYTHONPATH": ROOT}
    proc = subprocess.run([sys.executable, "-c", runner], capture_output=True, text=True, cwd=ROOT, env=env,
                          timeout=60)
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result == {"codes": [0, 0, 0, 2, 2, 2, 2], "torch": False}, proc.stderr
    assert "docs/theory.md" in proc.stdout and "THEORY.md" not in proc.stdout
    # python -m fastgan goes through fastgan/__init__.py and __main__.py: neither may import torch for --help
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "fastgan", "train", "--help"],
                          capture_output=True, text=True, cwd=ROOT, env=env, timeout=60)
    imported = [line.rsplit("|", 1)[-1].strip() for line in proc.stderr.splitlines() if "|" in line]
    assert proc.returncode == 0 and "--threads" in proc.stdout
    assert "fastgan.train.cli" in imported and not any(m.split(".")[0] == "torch" for m in imported), imported


def test_threads_default_one_for_toy_mlps_and_flag_overrides(tmp_path):
    torch.set_num_threads(2)
    assert cli.main(["train", "--out", str(tmp_path / "a"), *TINY]) == 0
    assert torch.get_num_threads() == 1
    assert cli.main(["train", "--out", str(tmp_path / "b"), "--threads", "2", *TINY]) == 0
    assert torch.get_num_threads() == 2
    torch.set_num_threads(3)  # digits' conv nets keep torch's (here: the process's) setting
    assert cli.default_threads("digits") == 3 and cli.default_threads("8gaussians") == 1


def test_lazy_package_still_exposes_every_public_name():
    import fastgan.train as train_package

    for package in (fastgan, train_package):
        for name in package.__all__:
            assert getattr(package, name) is not None, (package.__name__, name)
        with pytest.raises(AttributeError, match="no attribute 'bogus'"):
            package.bogus
    assert fastgan.BUILD_INFO["torch"] == torch.__version__ and fastgan.models.mlp_critic is not None
