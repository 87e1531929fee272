"""Lazy regularisation (issue 12 item 4, StyleGAN2 §B): the penalty on every k-th critic
step with its weight times k, and the critic's Adam rescaled by c = k / (k + 1)."""
import copy
import json
import math
import os

import pytest
import torch

import fastgan.models as models
from fastgan.train import checkpoint as ckpt
from fastgan.train import cli, recipes
from fastgan.train.loop import TrainConfig, train

pytestmark = pytest.mark.usefixtures("one_thread")


def test_lazy_optimizer_args():
    assert recipes.lazy_optimizer_args(1e-3, (0.0, 0.99), 1) == (1e-3, (0.0, 0.99))
    lr, (b1, b2) = recipes.lazy_optimizer_args(2e-3, (0.5, 0.99), 16)
    c = 16 / 17
    assert lr == pytest.approx(2e-3 * c, rel=1e-15)
    assert b1 == pytest.approx(0.5 ** c, rel=1e-15) and b2 == pytest.approx(0.99 ** c, rel=1e-15)
    for bad in (0, -2, 1.5, True, "4"):
        with pytest.raises(ValueError, match="reg_every must be an integer >= 1"):
            recipes.lazy_optimizer_args(1e-3, (0.5, 0.9), bad)
    with pytest.raises(ValueError, match="reg_every must be an integer >= 1"):
        recipes.get_recipe("wgan-gp", reg_every=0)


def test_critic_optimizer_is_rescaled_only_with_a_penalty():
    gen, critic = models.mlp_generator(2, 2, 8, 1), models.mlp_critic(2, 8, 1)
    _, opt_d = recipes.make_optimizers(recipes.get_recipe("wgan-gp", reg_every=4), gen, critic)
    lr, betas = recipes.lazy_optimizer_args(1e-4, (0.5, 0.9), 4)
    assert opt_d.param_groups[0]["lr"] == lr and opt_d.param_groups[0]["betas"] == betas
    _, opt_d = recipes.make_optimizers(recipes.get_recipe("gan", reg_every=4), gen, critic)  # no R1: no penalty
    assert opt_d.param_groups[0]["lr"] == 2e-4 and opt_d.param_groups[0]["betas"] == (0.5, 0.999)


def _step_grads(regularize, reg_every, gp_weight):
    torch.manual_seed(3)
    gen, critic = models.mlp_generator(2, 2, 8, 1).double(), models.mlp_critic(2, 8, 1).double()
    real, z = torch.randn(16, 2, dtype=torch.float64), torch.randn(16, 2, dtype=torch.float64)
    before = copy.deepcopy(critic.state_dict())
    torch.manual_seed(5)  # the penalty's eps
    recipes.critic_step(critic, gen, torch.optim.SGD(critic.parameters(), lr=1.0), real, z, gp_weight=gp_weight,
                        regularize=regularize, reg_every=reg_every)
    return [before[k] - v for k, v in critic.state_dict().items()]


def test_lazy_steps_leave_out_the_penalty_or_scale_it_by_k():
    for got, want in zip(_step_grads(False, 4, 0.7), _step_grads(True, 1, 0.0)):
        torch.testing.assert_close(got, want, rtol=0, atol=0)
    for got, want in zip(_step_grads(True, 4, 0.7), _step_grads(True, 1, 2.8)):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-15)


def _config(tmp_path, name, **kw):
    return TrainConfig(recipe="wgan-gp", data="8gaussians", out=str(tmp_path / name), device="cpu", hidden=16,
                       batch_size=32, eval_samples=200, plots=False, **kw)


def test_lazy_run_logs_the_average_penalty_and_resumes_bit_for_bit(tmp_path):
    # 4 steps of 5 critic steps with reg_every=3: penalties on critic steps 0, 3, 6, ...
    straight = _config(tmp_path, "a", steps=4, interval=2, reg_every=3, lr_decay="linear")
    summary = train(straight, progress=False, log=None)
    assert summary["reg_every"] == 3
    records = json.loads(open(os.path.join(straight.out, "log.json")).read())["records"]
    assert all(math.isfinite(r["gp"]) and r["gp"] > 0 for r in records)
    half = _config(tmp_path, "b", steps=4, interval=2, reg_every=3, lr_decay="linear", stop_after=1)
    train(half, progress=False, log=None)
    train(_config(tmp_path, "b", steps=4, interval=2, reg_every=3, lr_decay="linear"), resume=True, progress=False,
          log=None)
    a = ckpt.load_checkpoint(os.path.join(straight.out, "checkpoint.pt"))
    b = ckpt.load_checkpoint(os.path.join(half.out, "checkpoint.pt"))
    for net in ("generator", "critic"):
        for key in a[net]:
            assert torch.equal(a[net][key], b[net][key]), (net, key)
    lazy_lr, _ = recipes.lazy_optimizer_args(1e-4, (0.5, 0.9), 3)
    assert a["opt_d"]["param_groups"][0]["lr"] == pytest.approx(lazy_lr * (1 - 3 / 4), rel=1e-12)
    assert a["opt_g"]["param_groups"][0]["lr"] == pytest.approx(1e-4 * (1 - 3 / 4), rel=1e-12)


@pytest.mark.parametrize("argv,message", [
    (["--reg-every", "0"], "--reg-every: must be > 0"),
    (["--reg-every", "4", "--recipe", "wgan"], "--reg-every applies to a penalty"),
    (["--reg-every", "4", "--recipe", "gan"], "--reg-every applies to a penalty"),
])
def test_reg_every_flag_errors(argv, message, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["train", "--out", str(tmp_path / "run"), "--steps", "2", "--device", "cpu", *argv])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err
