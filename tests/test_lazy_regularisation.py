"""Lazy regularisation (issue 12 item 4, StyleGAN2 §B): the penalty on every k-th critic
step with its weight times k, riding on that regular step (the optimizer keeps its
settings: no separate k+1-th step to compensate for)."""
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


def test_reg_every_must_be_a_positive_integer():
    for bad in (0, -2, 1.5, True, "4"):
        with pytest.raises(ValueError, match="reg_every must be an integer >= 1"):
            recipes.get_recipe("wgan-gp", reg_every=bad)


@pytest.mark.parametrize("name", ["wgan-gp", "r3gan", "gan"])
def test_critic_optimizer_keeps_the_recipe_settings(name):
    gen, critic = models.mlp_generator(2, 2, 8, 1), models.mlp_critic(2, 8, 1)
    recipe = recipes.get_recipe(name, reg_every=4)
    _, opt_d = recipes.make_optimizers(recipe, gen, critic)
    assert opt_d.param_groups[0]["lr"] == recipe.lr and opt_d.param_groups[0]["betas"] == tuple(recipe.betas)


def test_a_lazy_cycle_moves_adam_as_far_as_eager_regularisation():
    """With a negligible penalty, k critic steps with reg_every = k are k Adam steps of the
    same size as with reg_every = 1 (a rescaled Adam moved 0.8x as far at k = 4)."""
    moved = {}
    for k in (1, 4):
        torch.manual_seed(11)
        gen, critic = models.mlp_generator(2, 2, 8, 1), models.mlp_critic(2, 8, 1)
        recipe = recipes.get_recipe("wgan-gp", reg_every=k, gp_weight=1e-12)
        _, opt_d = recipes.make_optimizers(recipe, gen, critic)
        before = [p.detach().clone() for p in critic.parameters()]
        generator = torch.Generator().manual_seed(12)
        for step in range(4):
            real, z = torch.randn(16, 2, generator=generator), torch.randn(16, 2, generator=generator)
            recipes.critic_step(critic, gen, opt_d, real, z, gp_weight=recipe.gp_weight, regularize=step % k == 0,
                                reg_every=k)
        assert opt_d.state[next(iter(critic.parameters()))]["step"] == 4
        moved[k] = [p.detach() - b for p, b in zip(critic.parameters(), before)]
    for lazy, eager in zip(moved[4], moved[1]):
        torch.testing.assert_close(lazy, eager, rtol=1e-4, atol=1e-7)


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
    assert a["opt_d"]["param_groups"][0]["lr"] == pytest.approx(1e-4 * (1 - 3 / 4), rel=1e-12)
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


def test_a_graphed_call_needs_a_warm_up():
    from fastgan.train.graphs import GraphedCall

    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="CriticStep: warmup must be an integer >= 1"):
            GraphedCall(lambda: None, warmup=bad, owner="CriticStep")


def test_a_captured_critic_step_refuses_to_skip_its_penalty(monkeypatch):
    """The recorded step holds its penalty: regularize=False cannot take it out (it was
    ignored). Checked before any capture, so it runs without a GPU."""
    monkeypatch.setattr(recipes, "check_capturable", lambda *args: None)
    gen, critic = models.mlp_generator(2, 2, 8, 1), models.mlp_critic(2, 8, 1)
    step = recipes.CriticStep(critic, gen, torch.optim.Adam(critic.parameters()), gp_weight=10.0, capture=True)
    with pytest.raises(ValueError, match="regularize=False needs capture=False"):
        step(torch.randn(4, 2), torch.randn(4, 2), regularize=False)
