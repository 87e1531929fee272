"""Distributed training (issue 13): two gloo processes on the CPU, launched by torchrun,
train the model one process trains on the global batch; the DDP penalty step's gradients
are the formula's on the concatenated batch; a 2-process run resumes bit for bit; bad
input and a failing rank stop the run with a clear message.

The 2-process halves run in one torchrun launch of tests/distributed_worker.py."""
import json
import os
import shutil
import subprocess
import sys
import time

import distributed_worker as worker
import pytest
import torch
import torch.nn.functional as F
from conftest import requires_cuda

from fastgan.train import checkpoint as ckpt
from fastgan.train import cli, distributed, recipes
from fastgan.train.distributed import Ranks
from fastgan.train.loop import train

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORKER = os.path.join(ROOT, "tests", "distributed_worker.py")
RELATIVE = 1e-5  # float32 parameters after 20 iterations, W = 2 against W = 1 (measured: below 3e-7)


def _torchrun(*args, timeout=240):
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""), OMP_NUM_THREADS="1")
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", *args]
    return subprocess.run(command, capture_output=True, text=True, cwd=ROOT, env=env, timeout=timeout)


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory):
    out = tmp_path_factory.mktemp("two-processes")
    proc = _torchrun(WORKER, "train", str(out))
    assert proc.returncode == 0, proc.stderr[-4000:]
    return out


@pytest.fixture(scope="module")
def one_process(tmp_path_factory):
    out = tmp_path_factory.mktemp("one-process")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for run in worker.RUNS:
            train(worker.config(run, str(out / run)), progress=False, log=None)
    finally:
        torch.set_num_threads(threads)
    return out


def _checkpoint(folder, name="checkpoint.pt"):
    return ckpt.load_checkpoint(os.path.join(folder, name))


def _assert_models_close(got, want, what):
    for net in ("generator", "critic"):
        assert set(got[net]) == set(want[net]), f"{what}: {net} state dicts differ in keys"  # plain, no 'module.'
        for key, value in want[net].items():
            error = (got[net][key] - value).norm() / value.norm().clamp_min(1e-30)
            assert error <= RELATIVE, f"{what}: {net}.{key} differs by {error:.2e} relative"


@pytest.mark.parametrize("recipe", worker.RUNS)  # wgan-gp-lazy: lazy regularisation on the same steps on every rank
def test_two_processes_train_the_one_process_model(two_processes, one_process, recipe):
    got, want = _checkpoint(two_processes / recipe), _checkpoint(one_process / recipe)
    assert got["step"] == want["step"] == worker.STEPS
    _assert_models_close(got, want, recipe)
    # the logged losses are the global batch's means, all-reduced over the ranks
    for got_record, want_record in zip(json.loads(got["records"]), json.loads(want["records"])):
        for key in ("d_loss", "g_loss", "w_estimate"):
            assert got_record[key] == pytest.approx(want_record[key], rel=1e-4, abs=1e-6), key
    assert len(got["rng_ranks"]) == 2 and len(want["rng_ranks"]) == 1
    for name in ("summary.json", "log.json"):
        saved = json.loads((two_processes / recipe / name).read_text())
        assert (saved.get("world_size") or saved["config"]["world_size"]) == 2


def test_two_process_run_resumes_bit_for_bit(two_processes):
    straight, resumed = _checkpoint(two_processes / "wgan-gp"), _checkpoint(two_processes / "resumed")
    assert resumed["step"] == straight["step"] == worker.STEPS
    for net in ("generator", "critic"):
        for key, value in straight[net].items():
            assert torch.equal(resumed[net][key], value), f"{net}.{key}"
    for opt in ("opt_g", "opt_d"):
        for index, state in straight[opt]["state"].items():
            for key, value in state.items():
                assert torch.equal(resumed[opt]["state"][index][key], value), f"{opt}[{index}].{key}"
    assert torch.equal(resumed["sampler"]["generator"], straight["sampler"]["generator"])
    for rank in range(2):
        assert torch.equal(resumed["rng_ranks"][rank]["torch"], straight["rng_ranks"][rank]["torch"])


def test_two_process_checkpoint_continues_in_one_process(two_processes, one_process, tmp_path):
    """Checkpoints are plain state dicts: a 2-process run continues in one process like the 1-process run."""
    ends = {}
    for origin, folder in (("two", two_processes), ("one", one_process)):
        out = tmp_path / origin
        shutil.copytree(folder / "wgan-gp", out)
        train(worker.config("wgan-gp", str(out), steps=worker.STEPS + 4, interval=4), resume=True, progress=False,
              log=None)
        ends[origin] = _checkpoint(out)
    _assert_models_close(ends["two"], ends["one"], "continued")


def _penalty_formula(case, state, real, fake, eps):
    """The critic step's loss on the whole batch, written out, and its parameter gradients
    (the approximate R1 + R2: one process's critic step on the whole batch)."""
    critic = worker.CriticWithSpare()
    critic.load_state_dict(state)
    kwargs = worker.PENALTY_CASES[case]
    if kwargs.get("approximate"):
        kwargs = dict(kwargs)
        dtype = kwargs.pop("dtype")
        critic.to(dtype)
        recipes.critic_step(critic, torch.nn.Identity(), torch.optim.SGD(critic.parameters(), lr=0.0),
                            real.to(dtype), fake.to(dtype), noise=worker.penalty_noise(dtype), **kwargs)
        return {name: p.grad for name, p in critic.named_parameters()}
    real = real.clone().requires_grad_(True)
    f_real, f_fake = critic(real), critic(fake)
    if kwargs["loss"] == "wasserstein":
        loss = f_fake.mean() - f_real.mean()
    else:
        loss = F.softplus(-f_real).mean() + F.softplus(f_fake).mean()
    if kwargs.get("regularize", True) and kwargs.get("gp_weight"):
        mixed = (eps[:, None] * real.detach() + (1 - eps[:, None]) * fake).requires_grad_(True)
        (grads,) = torch.autograd.grad(critic(mixed).sum(), mixed, create_graph=True)
        loss = loss + kwargs["gp_weight"] * ((grads.norm(dim=1) - 1) ** 2).mean()
    if kwargs.get("regularize", True) and kwargs.get("r1_gamma"):
        (grads,) = torch.autograd.grad(f_real.sum(), real, create_graph=True)
        loss = loss + kwargs["r1_gamma"] / 2 * grads.pow(2).sum(1).mean()
    names = [name for name, _ in critic.named_parameters()]
    return dict(zip(names, torch.autograd.grad(loss, list(critic.parameters()), allow_unused=True)))


@pytest.mark.parametrize("case", list(worker.PENALTY_CASES))
def test_ddp_penalty_step_gradients_equal_the_formula_on_the_whole_batch(two_processes, case):
    want = _penalty_formula(case, *worker.penalty_inputs())
    assert want["spare"] is None
    for rank in range(2):
        got = torch.load(two_processes / f"grads-{case}-rank{rank}.pt", weights_only=True)
        assert got["spare"] is None, "a parameter without gradient must keep none (pytorch#47562)"
        for name, grad in want.items():
            if grad is not None:
                torch.testing.assert_close(got[name], grad, msg=f"rank {rank}: {name}")


def test_nproc_launches_torchrun_and_trains_the_same_model(one_process, tmp_path):
    out = tmp_path / "cli"
    cmd = [sys.executable, "-m", "fastgan", "train", "--nproc", "2", "--recipe", "gan", "--steps", str(worker.STEPS),
           "--hidden", "16", "--batch-size", "32", "--interval", "10", "--eval-samples", "64", "--device", "cpu",
           "--no-plots", "--no-progress", "--out", str(out)]
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env, timeout=240)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert proc.stdout.count("gan on 8gaussians: 20 steps") == 1  # rank 0 alone reports
    _assert_models_close(_checkpoint(out), _checkpoint(one_process / "gan"), "--nproc 2")
    assert json.loads((out / "summary.json").read_text())["world_size"] == 2


def test_a_failed_worker_is_named_by_its_rank(monkeypatch, capsys, tmp_path):
    """torchrun's first failure: its global rank and exit code (ProcessFailure has no
    `rank`: reading it raised AttributeError over the message)."""
    import torch.distributed.run as torchrun
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError, ProcessFailure

    def fail(config):
        raise ChildFailedError("fastgan", {3: ProcessFailure(local_rank=1, pid=123, exitcode=-9,
                                                             error_file=str(tmp_path / "none.json"))})

    monkeypatch.setattr(torchrun, "run", fail)
    assert cli._launch(["train", "--nproc", "4", "--device", "cpu"], 4) == 1
    assert "fastgan train --nproc 4: rank 3 failed with exit code -9" in capsys.readouterr().err


def _exit_code(argv, capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(argv)
    return info.value.code, capsys.readouterr().err


def _torchrun_environment(monkeypatch, rank=0, world_size=2):
    for name, value in (("RANK", rank), ("WORLD_SIZE", world_size), ("LOCAL_RANK", rank),
                        ("LOCAL_WORLD_SIZE", world_size)):
        monkeypatch.setenv(name, str(value))


def test_global_batch_not_divisible_by_the_processes_exits_2(capsys, monkeypatch, tmp_path):
    flags = ["train", "--batch-size", "33", "--device", "cpu", "--out", str(tmp_path / "run")]
    code, err = _exit_code(flags + ["--nproc", "2"], capsys)  # refused before any process starts
    assert code == 2 and "--batch-size 33" in err and "2 processes" in err, err
    _torchrun_environment(monkeypatch, rank=1)  # what each torchrun worker says
    code, err = _exit_code(flags, capsys)
    assert code == 2 and "(rank 1) --batch-size 33" in err and "2 processes" in err, err
    code, err = _exit_code(flags[:-2] + ["--out", str(tmp_path / "b"), "--batch-size", "32", "--nproc", "2"], capsys)
    assert code == 2 and "already runs under torchrun" in err, err
    code, err = _exit_code(["train", "--data", "digits", "--device", "cpu", "--out", str(tmp_path / "c")], capsys)
    assert code == 2 and "--data digits with 2 processes needs --device cuda" in err, err


@pytest.mark.parametrize("flags,message", [
    (["--nproc", "0"], "--nproc: must be > 0"),
    (["--nproc", "two"], "--nproc: expected an integer"),
    (["--timeout", "0"], "--timeout: must be finite, > 0"),
    (["--timeout", "nan"], "--timeout: must be finite, > 0"),
])
def test_bad_distributed_flags_exit_2(flags, message, capsys, tmp_path):
    code, err = _exit_code(["train", "--out", str(tmp_path), *flags], capsys)
    assert code == 2 and message in err, err


def test_rng_state_for_rank():
    saved = {"rng": "rank 0", "rng_ranks": ["rank 0", "rank 1"]}
    assert distributed.rng_state_for_rank(Ranks(1, 2, 1, 2), saved) == "rank 1"
    # another W, or a 1-process checkpoint: rank 0's state (every rank draws the same global stream)
    assert distributed.rng_state_for_rank(Ranks(3, 4, 1, 2), saved) == "rank 0"
    assert distributed.rng_state_for_rank(Ranks(1, 2, 1, 2), {"rng": "rank 0"}) == "rank 0"


def test_fewer_gpus_than_processes_is_refused(capsys, monkeypatch, tmp_path):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    code, err = _exit_code(["train", "--device", "cuda", "--nproc", "2", "--out", str(tmp_path)], capsys)
    assert code == 2 and "2 processes on this machine need one GPU each, but torch sees 1" in err, err
    with pytest.raises(ValueError, match="pins one GPU"):
        distributed.rank_device("cuda:0", Ranks(0, 2, 0, 2))
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert distributed.rank_device("cuda", Ranks(3, 4, 1, 2)) == "cuda:1"
    assert distributed.rank_device("cpu", Ranks(1, 2, 1, 2)) == "cpu"


def test_environment_and_rows():
    assert distributed.ranks_from_environment({}) == Ranks()
    env = {"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2"}
    ranks = distributed.ranks_from_environment(env)
    assert ranks == Ranks(3, 4, 1, 2) and not ranks.is_main and ranks.rows(32) == slice(24, 32)
    with pytest.raises(ValueError, match=r"\$RANK must be an integer"):
        distributed.ranks_from_environment(dict(env, RANK="x"))
    with pytest.raises(ValueError, match="inconsistent"):
        distributed.ranks_from_environment(dict(env, RANK="4"))
    with pytest.raises(ValueError, match="--batch-size 30 .* not divisible by the 4 processes"):
        ranks.rows(30)


def test_capture_is_refused_with_several_processes():
    gen, critic = torch.nn.Linear(2, 2), torch.nn.Linear(2, 1)
    recipe = recipes.get_recipe("wgan-gp")
    opt_g, opt_d = recipes.make_optimizers(recipe, gen, critic)
    with pytest.raises(ValueError, match="drop --capture"):
        distributed.training_steps(Ranks(0, 2, 0, 2), recipe, gen, critic, opt_g, opt_d, device="cuda", capture=True)


@pytest.mark.parametrize("mode", ["hang", "die"])
def test_a_failing_rank_stops_the_run_with_a_message(tmp_path, mode):
    start = time.monotonic()
    proc = _torchrun(WORKER, mode, str(tmp_path), timeout=120)
    took = time.monotonic() - start
    assert proc.returncode != 0 and took < 50, (proc.returncode, took)  # the hanging rank would sleep 60 s
    if mode == "hang":  # the process group's timeout (3 s) ends rank 0's wait, torchrun stops rank 1
        assert "another process of the run failed or stopped answering" in proc.stderr, proc.stderr[-3000:]
    else:  # torchrun reports the rank that died
        assert "exitcode  : 3" in proc.stderr, proc.stderr[-3000:]


def test_ranks_exit_cleanly_right_after_a_ddp_backward(tmp_path):
    """A gloo worker thread that drops a backward's all-reduce while Python finalizes
    aborts the process (pytorch#190489): before process_group waited for those drops,
    18 of 40 launches of this worker died with SIGABRT; after, 0 of 40. Five launches
    catch a regression with probability above 0.95."""
    for launch in range(5):
        proc = _torchrun(WORKER, "exit", str(tmp_path), timeout=120)
        assert proc.returncode == 0 and "terminate called" not in proc.stderr, (launch, proc.stderr[-3000:])


@requires_cuda
def test_batch_norm_is_synchronised_in_both_steps_on_cuda(tmp_path):
    """The digits generator's batch norms are SyncBatchNorm in the DDP generator step and
    in the critic step's no-grad G(z) (one NCCL process: the code path, not the sync)."""
    import torch.distributed as dist

    from fastgan import models

    dist.init_process_group("nccl", store=dist.FileStore(str(tmp_path / "store"), 1), rank=0, world_size=1)
    try:
        gen, critic = models.digits_generator(8).cuda(), models.digits_critic(8).cuda()
        recipe = recipes.get_recipe("wgan-gp", data="digits")
        opt_g, opt_d = recipes.make_optimizers(recipe, gen, critic)
        steps = distributed.ShardedSteps(Ranks(0, 1, 0, 1), recipe, gen, critic, opt_g, opt_d, device="cuda:0")
        for module in (steps.step_d.generator, steps.ddp_generator.module):
            assert any(isinstance(m, torch.nn.SyncBatchNorm) for m in module.modules())
        steps.critic_step(torch.randn(8, 1, 8, 8, device="cuda"), torch.randn(8, 8, device="cuda"))
        steps.generator_step(torch.randn(8, 8, device="cuda"))
        assert all(p.grad is not None for p in gen.parameters())
    finally:
        dist.destroy_process_group()
