"""Checkpoints a run can trust: checksums and structure checks refuse corrupted files with
exit code 2, one run at a time holds a run folder, and a run killed at random points
while checkpointing always resumes (to the same weights as an uninterrupted run)."""
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch
from conftest import requires_cuda

from fastgan.train import checkpoint as ckpt
from fastgan.train import cli
from fastgan.train.loop import CHECKPOINT, TrainConfig, train

pytestmark = pytest.mark.usefixtures("one_thread")

FLAGS = ["--no-progress", "--no-plots", "--device", "cpu"]


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory):
    """A finished 2-step run (tiny nets) to corrupt copies of."""
    out = str(tmp_path_factory.mktemp("run") / "run")
    torch.set_num_threads(1)
    assert cli.main(["train", "--recipe", "wgan-gp", "--steps", "2", "--interval", "1", "--hidden", "16",
                     "--batch-size", "32", "--eval-samples", "100", "--out", out, *FLAGS]) == 0
    return out


def _resume(out, capsys, steps="3"):
    with pytest.raises(SystemExit) as info:
        cli.main(["train", "--out", out, "--resume", "--steps", steps, *FLAGS])
    return info.value.code, capsys.readouterr().err


def _copy(run_folder, tmp_path):
    out = str(tmp_path / "copy")
    shutil.copytree(run_folder, out)
    return out, os.path.join(out, CHECKPOINT)


def test_round_trip_and_a_failed_save_keeps_the_old_file(tmp_path):
    path = str(tmp_path / "ckpt.pt")
    ckpt.save_checkpoint(path, {"step": 3, "x": torch.arange(4)})
    with pytest.raises(Exception):  # an unpicklable object fails mid-save ...
        ckpt.save_checkpoint(path, {"step": 4, "bad": lambda: None})
    state = ckpt.load_checkpoint(path)  # ... and the old checkpoint survives intact
    assert state["step"] == 3 and torch.equal(state["x"], torch.arange(4))
    assert os.listdir(tmp_path) == ["ckpt.pt"]  # no temporary file left behind


def _flip_middle(path, count=64):
    blob = bytearray(open(path, "rb").read())
    middle = len(blob) // 2
    blob[middle:middle + count] = bytes(b ^ 0xFF for b in blob[middle:middle + count])
    open(path, "wb").write(bytes(blob))


def _truncate(path, keep):
    blob = open(path, "rb").read()
    open(path, "wb").write(blob[:keep(len(blob))])


def _strip_header(path):
    blob = open(path, "rb").read()
    assert blob.startswith(ckpt.MAGIC)
    open(path, "wb").write(blob[len(ckpt.MAGIC) + 65:])


@pytest.mark.parametrize("corrupt,message", [
    (lambda p: _flip_middle(p), "its SHA-256 checksum does not match"),
    (lambda p: _flip_middle(p, 1), "its SHA-256 checksum does not match"),
    (lambda p: _truncate(p, lambda n: n // 2), "its SHA-256 checksum does not match"),
    (lambda p: _truncate(p, lambda n: 10), "is not a fastgan checkpoint"),
    (lambda p: _truncate(p, lambda n: 0), "is not a fastgan checkpoint"),
    (lambda p: _strip_header(p), "is not a fastgan checkpoint"),  # the bare torch.save payload
], ids=["flip-64-bytes", "flip-1-byte", "truncated-half", "truncated-header", "empty", "no-header"])
def test_damaged_file_exits_2(run_folder, tmp_path, capsys, corrupt, message):
    out, path = _copy(run_folder, tmp_path)
    corrupt(path)
    code, err = _resume(out, capsys)
    assert code == 2 and "--resume:" in err and message in err, err


@pytest.mark.parametrize("edit,message", [
    (lambda s: s.pop("opt_d"), "lacks opt_d"),
    (lambda s: s.pop("config"), "lacks its config"),
    (lambda s: s.update(records="{not json"), "records are not JSON"),
    (lambda s: s.update(step=-5), "step -5 is not an integer in [0, 3]"),
    (lambda s: s.update(step=10**9), "step 1000000000 is not an integer in [0, 3]"),
    (lambda s: s.update(step=2.0), "step 2.0 is not an integer"),
    (lambda s: s.update(elapsed=float("nan")), "elapsed time nan"),
    (lambda s: s["critic"].update({"0.weight": torch.full_like(s["critic"]["0.weight"], float("nan"))}),
     "critic['0.weight'] holds non-finite values"),
    (lambda s: s["generator"].update({"0.weight": torch.zeros(3, 3)}), "generator['0.weight'] is (3, 3)"),
    (lambda s: s["generator"].update({"extra": torch.zeros(1)}), "unexpected ['extra']"),
    (lambda s: s["opt_d"]["state"][0].update(exp_avg=torch.full_like(s["opt_d"]["state"][0]["exp_avg"], float("inf"))),
     "opt_d state 'exp_avg' of parameter 0 holds non-finite values"),
    (lambda s: s["opt_g"]["state"][0].update(exp_avg_sq=torch.zeros(7)), "opt_g state 'exp_avg_sq' of parameter 0"),
    (lambda s: s["opt_g"]["param_groups"][0]["params"].pop(), "opt_g is for"),
    (lambda s: s.update(sampler={"name": "8gaussians", "generator": torch.zeros(3, dtype=torch.uint8)}),
     "does not restore"),
    (lambda s: s["config"].update(hidden=-3), "holds --hidden -3, which that flag refuses"),
    (lambda s: s["config"].update(recipe="lsgan"), "holds --recipe 'lsgan', which that flag refuses"),
    (lambda s: s["config"].update(lr="fast"), "holds --lr 'fast', which that flag refuses"),
    (lambda s: s["config"].update(hidden=64), "generator['0.weight'] is (16, 2), the model needs (64, 2)"),
], ids=["no-opt_d", "no-config", "records", "step-negative", "step-huge", "step-float", "elapsed-nan", "nan-weights",
        "wrong-shape", "extra-key", "inf-optimizer-state", "optimizer-shape", "optimizer-params", "sampler-state",
        "config-hidden", "config-recipe", "config-lr", "other-run"])
def test_structurally_wrong_checkpoint_exits_2(run_folder, tmp_path, capsys, edit, message):
    out, path = _copy(run_folder, tmp_path)
    state = ckpt.load_checkpoint(path)
    edit(state)
    ckpt.save_checkpoint(path, state)  # a valid checksum over a wrong payload
    code, err = _resume(out, capsys)
    assert code == 2 and message in err and "Traceback" not in err, err


def test_the_intact_copy_resumes(run_folder, tmp_path, capsys):
    out, path = _copy(run_folder, tmp_path)
    assert cli.main(["train", "--out", out, "--resume", "--steps", "3", *FLAGS]) == 0
    assert ckpt.load_checkpoint(path)["step"] == 3


def test_a_second_run_on_one_out_exits_2(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    holder = subprocess.Popen(  # another process holds the folder's lock (no torch: starts in a blink)
        [sys.executable, "-c", "import fcntl, os, sys, time\n"
         f"fd = os.open({str(out / ckpt.LOCK_FILE)!r}, os.O_RDWR | os.O_CREAT)\n"
         "fcntl.flock(fd, fcntl.LOCK_EX)\nprint('held', flush=True)\ntime.sleep(60)\n"],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(SystemExit) as info:
            cli.main(["train", "--out", str(out), "--steps", "1", "--hidden", "16", *FLAGS])
        err = capsys.readouterr().err
        assert info.value.code == 2 and "is in use by another fastgan run" in err and "--out" in err, err
        with pytest.raises(ckpt.RunFolderBusy):  # the library's own entry point refuses too
            train(TrainConfig(steps=1, out=str(out), device="cpu", hidden=16, plots=False), progress=False, log=None)
    finally:
        holder.kill()
        holder.wait()
    assert cli.main(["train", "--out", str(out), "--steps", "1", "--hidden", "16", "--eval-samples", "100",
                     *FLAGS]) == 0  # the lock dies with its holder


def _config(out, **kw):
    return TrainConfig(recipe="wgan-gp", data="8gaussians", steps=kw.pop("steps", 24), out=out, device="cpu",
                       hidden=16, batch_size=32, interval=1, eval_samples=64, plots=False, **kw)


def _child(out, kill_in_fsync):
    """The child process's run: resume when a checkpoint exists; `kill_in_fsync`: SIGKILL
    itself inside the 3rd atomic write, after the data is written, before the rename."""
    torch.set_num_threads(1)
    if kill_in_fsync:
        calls = []
        real_fsync = os.fsync

        def fsync(fd):
            calls.append(fd)
            if len(calls) == 3:
                os.kill(os.getpid(), signal.SIGKILL)
            real_fsync(fd)
        os.fsync = fsync
    train(_config(out), resume=os.path.exists(os.path.join(out, CHECKPOINT)), progress=False, log=None)


def _fork_and_kill(out, delay=None):
    """Run _child in a forked process and SIGKILL it after `delay` seconds (None: it kills itself)."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 1
        try:
            _child(out, kill_in_fsync=delay is None)
            code = 0
        finally:
            os._exit(code)
    deadline = time.monotonic() + 60
    if delay is not None:
        time.sleep(delay)
        os.kill(pid, signal.SIGKILL)
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return
        time.sleep(0.01)
    pytest.fail("the child did not die")


def test_kill_during_checkpointing_always_resumes(tmp_path):
    straight = str(tmp_path / "straight")
    train(_config(straight), progress=False, log=None)
    out = str(tmp_path / "killed")
    _fork_and_kill(out)  # dies by its own hand inside a checkpoint
    assert any(name.startswith(ckpt.TMP_PREFIX) for name in os.listdir(out))  # the write it left behind
    rng = random.Random(16)
    for _ in range(4):
        _fork_and_kill(out, rng.uniform(0.02, 0.4))
        if os.path.exists(os.path.join(out, CHECKPOINT)):
            assert 0 <= ckpt.load_checkpoint(os.path.join(out, CHECKPOINT))["step"] <= 24  # always whole
    open(os.path.join(out, ckpt.TMP_PREFIX + "empty.pt"), "wb").close()  # a 0-byte leftover
    train(_config(out), resume=os.path.exists(os.path.join(out, CHECKPOINT)), progress=False, log=None)
    assert not [name for name in os.listdir(out) if name.startswith(ckpt.TMP_PREFIX)]
    a = ckpt.load_checkpoint(os.path.join(straight, CHECKPOINT))
    b = ckpt.load_checkpoint(os.path.join(out, CHECKPOINT))
    assert a["step"] == b["step"] == 24
    for net in ("generator", "critic"):
        for key in a[net]:
            assert torch.equal(a[net][key], b[net][key]), (net, key)
    assert json.loads(open(os.path.join(out, "log.json")).read())["records"][-1]["step"] == 24


@requires_cuda
def test_rng_state_of_one_cuda_device_round_trips():
    """A distributed rank saves and restores its own GPU's generator only."""
    device = torch.device("cuda", torch.cuda.device_count() - 1)
    state = ckpt.rng_state(cuda_device=device)
    assert len(state["cuda"]) == 1
    first = torch.rand(4, device=device)
    ckpt.set_rng_state(state, cuda_device=device)
    assert torch.equal(torch.rand(4, device=device), first)
