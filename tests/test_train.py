"""fastgan.train: data, metrics, checkpoints, step functions against hand-written
autograd, CUDA-graph capture, the training job, resume and the command line."""
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import HAS_CUDA, requires_cuda

import fastgan.models as models
from fastgan.optim import ClippedRMSprop
from fastgan.train import checkpoint as ckpt
from fastgan.train import cli, data, metrics, recipes
from fastgan.train.loop import TrainConfig, train

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny nets: see conftest.one_thread


# ---------------------------------------------------------------- data


def test_mixture_centers_match_their_definition():
    ring = data.mixture_centers("8gaussians").double()
    assert ring.shape == (8, 2)
    torch.testing.assert_close(ring.norm(dim=1), torch.full((8,), 2.0, dtype=torch.float64))
    angles = torch.atan2(ring[:, 1], ring[:, 0]).remainder(2 * math.pi)
    torch.testing.assert_close(angles.sort().values, torch.arange(8, dtype=torch.float64) * math.pi / 4)
    grid = data.mixture_centers("25gaussians")
    assert sorted(set(grid[:, 0].tolist())) == [-4.0, -2.0, 0.0, 2.0, 4.0]
    assert len({tuple(c) for c in grid.tolist()}) == 25
    assert data.mixture_std("8gaussians") == 0.02 and data.mixture_std("25gaussians") == 0.05


@pytest.mark.parametrize("name", ["8gaussians", "25gaussians"])
def test_mixture_samples_have_the_stated_spread_and_weights(name):
    x = data.sample_mixture(name, 50_000, torch.Generator().manual_seed(0)).double()
    centers = data.mixture_centers(name).double()
    nearest = torch.cdist(x, centers).argmin(1)
    offsets = x - centers[nearest]
    assert abs(offsets.std().item() - data.mixture_std(name)) < 0.02 * data.mixture_std(name)
    counts = torch.bincount(nearest, minlength=len(centers)).double() / len(x)
    assert (counts - 1 / len(centers)).abs().max() < 0.01


def test_swissroll_and_digits():
    roll = data.sample_swissroll(4000, torch.Generator().manual_seed(0))
    assert roll.shape == (4000, 2) and torch.isfinite(roll).all()
    radius = roll.norm(dim=1) * 7.5  # t in [1.5π, 4.5π] plus noise
    assert radius.min() > 1.5 * math.pi - 1.5 and radius.max() < 4.5 * math.pi + 1.5
    digits = data.load_digits()
    assert digits.shape == (1797, 1, 8, 8) and digits.dtype == torch.float32
    assert digits.min() == -1.0 and digits.max() == 1.0


@pytest.mark.parametrize("name", data.DATASETS)
def test_sampler_state_restores_the_stream(name):
    sampler = data.DataSampler(name, seed=3)
    sampler.sample(5)
    state = sampler.state_dict()
    first = sampler.sample(7)
    other = data.DataSampler(name, seed=99)
    other.load_state_dict(state)
    assert torch.equal(other.sample(7), first)
    assert first.shape == (7,) + data.sample_shape(name)
    with pytest.raises(ValueError, match="data must be one of"):
        data.DataSampler("mnist")


# ---------------------------------------------------------------- metrics


def test_mode_metrics_counts_by_hand():
    centers = data.mixture_centers("8gaussians")
    std = 0.02
    x = torch.cat([
        centers[0] + torch.tensor([[0.0, 0.0], [0.059, 0.0]]),  # two high-quality samples at mode 0
        centers[3] + torch.tensor([[0.0, 0.0601]]),  # just outside 3σ of mode 3
        centers[5] + torch.tensor([[0.03, -0.03]]),  # inside (0.042)
        torch.zeros(1, 2),  # the centre of the ring: far from every mode
    ])
    result = metrics.mode_metrics(x, centers, std)
    assert result == {"modes": 2.0, "num_modes": 8.0, "high_quality": 3 / 5}


@pytest.mark.parametrize("name", ["8gaussians", "25gaussians"])
def test_mode_metrics_on_the_data_itself(name):
    x = data.sample_mixture(name, 2500, torch.Generator().manual_seed(1))
    result = metrics.mode_metrics(x, data.mixture_centers(name), data.mixture_std(name))
    assert result["modes"] == result["num_modes"]
    # P(|N(0, σ²I₂)| <= 3σ) = 1 − exp(−9/2) = 0.98889; 2,500 samples: sd 0.0021
    assert abs(result["high_quality"] - (1 - math.exp(-4.5))) < 0.008


def _brute_force_w1(x: np.ndarray, y: np.ndarray) -> float:
    """W1 by an optimal assignment after replicating both samples to a common size."""
    from scipy.optimize import linear_sum_assignment

    n, m = len(x), len(y)
    lcm = n * m // math.gcd(n, m)
    x, y = np.repeat(x, lcm // n, axis=0), np.repeat(y, lcm // m, axis=0)
    x, y = x.reshape(lcm, -1), y.reshape(lcm, -1)
    cost = np.linalg.norm(x[:, None, :] - y[None, :, :], axis=-1)
    rows, cols = linear_sum_assignment(cost)
    return float(cost[rows, cols].mean())


@pytest.mark.parametrize("n,m", [(9, 9), (4, 6), (7, 3)])
def test_w1_1d_against_assignment_and_scipy(n, m):
    from scipy.stats import wasserstein_distance

    rng = np.random.default_rng(n * 10 + m)
    x, y = rng.normal(size=n), rng.normal(1.0, 2.0, size=m)
    value = metrics.wasserstein1_1d(x, y)
    assert value == pytest.approx(_brute_force_w1(x, y), rel=1e-12, abs=1e-12)
    assert value == pytest.approx(wasserstein_distance(x, y), rel=1e-12)
    assert metrics.wasserstein1(torch.tensor(x), torch.tensor(y)) == pytest.approx(value, rel=1e-12)


@pytest.mark.parametrize("seed,n,m", [(0, 12, 12), (1, 20, 20), (2, 6, 9)])
def test_w1_2d_against_brute_force_assignment(seed, n, m):
    rng = np.random.default_rng(seed)
    x, y = rng.normal(size=(n, 2)), rng.normal(0.5, 1.5, size=(m, 2))
    assert metrics.wasserstein1(x, y) == pytest.approx(_brute_force_w1(x, y), rel=1e-9)


def test_w1_without_pot_is_the_optimal_assignment(monkeypatch):
    """Where pot is missing (the GPU machines), equal sizes are solved by scipy's exact
    assignment, which agrees with pot's network simplex; unequal sizes say what to install."""
    rng = np.random.default_rng(5)
    x, y = rng.normal(size=(300, 2)), rng.normal(0.5, 1.5, size=(300, 2))
    with_pot = metrics.wasserstein1(x, y) if _has_pot() else _brute_force_w1(x, y)
    monkeypatch.setitem(sys.modules, "ot", None)  # import ot raises ImportError
    assert metrics.wasserstein1(x, y) == pytest.approx(with_pot, rel=1e-12)
    small_x, small_y = rng.normal(size=(12, 2)), rng.normal(size=(12, 2))
    assert metrics.wasserstein1(small_x, small_y) == pytest.approx(_brute_force_w1(small_x, small_y), rel=1e-12)
    with pytest.raises(ImportError, match="different sizes .*pip install pot"):
        metrics.wasserstein1(x, y[:200])


def _has_pot() -> bool:
    import importlib.util

    return importlib.util.find_spec("ot") is not None


def test_w1_rejects_bad_input():
    with pytest.raises(ValueError, match="same d|one d"):
        metrics.wasserstein1(np.zeros((3, 2)), np.zeros((3, 3)))
    for x, y in ((np.zeros(6), np.ones((3, 2))), (np.zeros((6, 1)), np.ones(3))):  # 2-D y was flattened
        with pytest.raises(ValueError, match="one d, or both"):
            metrics.wasserstein1(x, y)
    with pytest.raises(ValueError, match="non-finite"):
        metrics.wasserstein1_1d([0.0, math.nan], [1.0, 2.0])


@pytest.mark.parametrize("with_pot", [True, False])
def test_w1_costs_are_exact_far_from_the_origin(with_pot, monkeypatch):
    """|x - y| from the differences: ot.dist's |x|^2 + |y|^2 - 2 x.y gave W1(x, x) = 3e-9
    and was 40% off at 1e5."""
    if with_pot and not _has_pot():
        pytest.skip("needs pot")
    if not with_pot:
        monkeypatch.setitem(sys.modules, "ot", None)
    x = np.random.default_rng(0).normal(size=(300, 2))
    assert metrics.wasserstein1(x, x) == 0.0
    far = x + 1e5
    assert metrics.wasserstein1(far, far + np.array([1e-3, 0.0])) == pytest.approx(1e-3, rel=1e-6)


def test_dual_estimate_of_a_linear_critic():
    critic = torch.nn.Linear(2, 1)
    with torch.no_grad():
        critic.weight.copy_(torch.tensor([[0.6, -0.8]]))
        critic.bias.fill_(3.0)
    real, fake = torch.randn(1000, 2), torch.randn(700, 2) + 1
    w = critic.weight.detach().T
    expected = float((real @ w).mean() - (fake @ w).mean())
    assert metrics.dual_estimate(critic, real, fake, batch_size=128) == pytest.approx(expected, abs=1e-5)
    with pytest.raises(ValueError, match="must not be empty"):
        metrics.dual_estimate(critic, real[:0], fake)


def test_dual_estimate_uses_eval_mode_and_restores_the_mode():
    """A batch-norm critic in training mode: the estimate is the eval-mode one, whatever
    the chunks, and leaves the running statistics as they were."""
    torch.manual_seed(0)
    critic = torch.nn.Sequential(torch.nn.Linear(2, 8), torch.nn.BatchNorm1d(8), torch.nn.Linear(8, 1))
    with torch.no_grad():
        critic[1].running_mean.normal_()
        critic[1].running_var.uniform_(0.5, 2.0)
    real, fake = torch.randn(300, 2), torch.randn(200, 2) + 1
    running = critic[1].running_mean.clone()
    critic.eval()
    expected = metrics.dual_estimate(critic, real, fake)
    critic.train()
    for batch_size in (64, 4096):
        assert metrics.dual_estimate(critic, real, fake, batch_size=batch_size) == pytest.approx(expected, rel=1e-12)
    assert critic.training and torch.equal(critic[1].running_mean, running)


def test_mode_metrics_refuse_empty_samples():
    with pytest.raises(ValueError, match="must not be empty"):
        metrics.mode_metrics(torch.zeros(0, 2), torch.zeros(8, 2), 0.02)


# ---------------------------------------------------------------- checkpoints


def test_rng_state_round_trip():
    import random

    ckpt.seed_everything(5)
    state = ckpt.rng_state()
    first = (torch.rand(3), np.random.rand(3), random.random())
    torch.rand(10), np.random.rand(10), random.random()
    ckpt.set_rng_state(state)
    second = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(first[0], second[0]) and np.array_equal(first[1], second[1]) and first[2] == second[2]


# ---------------------------------------------------------------- recipes


def test_recipe_defaults():
    gan, wgan, gp = (recipes.get_recipe(n) for n in ("gan", "wgan", "wgan-gp"))
    assert (gan.d_loss, gan.g_loss, gan.n_critic) == ("minimax", "non_saturating", 1)
    assert (wgan.d_loss, wgan.n_critic, wgan.lr, wgan.clip_value) == ("wasserstein", 5, 5e-5, 0.01)
    assert (gp.n_critic, gp.lr, gp.betas, gp.gp_weight) == (5, 1e-4, (0.5, 0.9), 0.1)
    assert recipes.get_recipe("wgan-gp", data="digits").gp_weight == 10.0
    assert recipes.get_recipe("wgan-gp", gp_weight=3.0, lr=None).gp_weight == 3.0
    g, d = models.mlp_generator(2, 2, 8, 1), models.mlp_critic(2, 8, 1)
    opt_g, opt_d = recipes.make_optimizers(wgan, g, d)
    assert isinstance(opt_d, ClippedRMSprop) and opt_d.param_groups[0]["clip_value"] == 0.01
    assert isinstance(opt_g, torch.optim.RMSprop) and opt_g.param_groups[0]["lr"] == 5e-5
    opt_g, opt_d = recipes.make_optimizers(gp, g, d)
    assert isinstance(opt_d, torch.optim.Adam) and opt_d.param_groups[0]["betas"] == (0.5, 0.9)
    with pytest.raises(ValueError, match="recipe must be one of"):
        recipes.get_recipe("lsgan")
    with pytest.raises(ValueError, match="n_critic"):
        recipes.get_recipe("wgan", n_critic=0)


def _toy_pair(seed=0):
    torch.manual_seed(seed)
    return models.mlp_generator(2, 2, 16, 2).double(), models.mlp_critic(2, 16, 2).double()


def _grads_after(step, critic):
    """Parameter gradients an SGD(lr=1) step applied: before − after."""
    before = [p.detach().clone() for p in critic.parameters()]
    step()
    return [b - p.detach() for b, p in zip(before, critic.parameters())]


def test_wgan_gp_critic_step_matches_hand_written_autograd():
    gen, critic = _toy_pair()
    real, z = torch.randn(32, 2, dtype=torch.float64), torch.randn(32, 2, dtype=torch.float64)
    lam = 0.7
    torch.manual_seed(11)  # the penalty's ε comes from the global generator
    got = _grads_after(lambda: recipes.critic_step(critic, gen, torch.optim.SGD(critic.parameters(), lr=1.0), real,
                                                   z, loss="wasserstein", gp_weight=lam), critic)
    gen2, critic2 = _toy_pair()
    torch.manual_seed(11)
    eps = torch.rand(32, dtype=torch.float64)
    fake = gen2(z).detach()
    x_hat = (eps[:, None] * real + (1 - eps[:, None]) * fake).requires_grad_(True)
    (g,) = torch.autograd.grad(critic2(x_hat).sum(), x_hat, create_graph=True)
    loss = critic2(fake).mean() - critic2(real).mean() + lam * ((g.norm(dim=1) - 1) ** 2).mean()
    expected = torch.autograd.grad(loss, list(critic2.parameters()))
    for a, b in zip(got, expected):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)


def test_gan_r1_critic_step_matches_hand_written_autograd():
    gen, critic = _toy_pair(1)
    real, z = torch.randn(16, 2, dtype=torch.float64), torch.randn(16, 2, dtype=torch.float64)
    opt = torch.optim.SGD(critic.parameters(), lr=1.0)
    stats = {}
    got = _grads_after(lambda: stats.update(recipes.discriminator_step(critic, gen, opt, real, z, loss="minimax",
                                                                         r1_gamma=4.0)), critic)
    gen2, critic2 = _toy_pair(1)
    x = real.clone().requires_grad_(True)
    real_logits, fake_logits = critic2(x), critic2(gen2(z).detach())
    (g,) = torch.autograd.grad(real_logits.sum(), x, create_graph=True)
    bce = torch.nn.functional.softplus(-real_logits).mean() + torch.nn.functional.softplus(fake_logits).mean()
    loss = bce + 2.0 * g.pow(2).sum(1).mean()
    expected = torch.autograd.grad(loss, list(critic2.parameters()))
    for a, b in zip(got, expected):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(stats["d_loss"], loss.detach())
    torch.testing.assert_close(stats["adv"], bce.detach())
    torch.testing.assert_close(stats["w_estimate"], (real_logits.mean() - fake_logits.mean()).detach())


def test_wgan_critic_step_clips():
    gen, critic = models.mlp_generator(2, 2, 16, 2), models.mlp_critic(2, 16, 2)
    recipe = recipes.get_recipe("wgan", lr=0.1)
    _, opt = recipes.make_optimizers(recipe, gen, critic)
    step = recipes.make_critic_step(recipe, critic, gen, opt)
    out = step(torch.randn(64, 2), torch.randn(64, 2))
    assert all(p.abs().max() <= 0.01 for p in critic.parameters())
    assert torch.isfinite(out["d_loss"]) and out["gp"] == 0
    # a plain optimizer with clip_value clips through fastgan.ops.clip_weights_
    critic2 = models.mlp_critic(2, 16, 2)
    recipes.critic_step(critic2, gen, torch.optim.SGD(critic2.parameters(), lr=0.1), torch.randn(8, 2),
                        torch.randn(8, 2), clip_value=0.003)
    assert max(p.abs().max().item() for p in critic2.parameters()) == pytest.approx(0.003)


@pytest.mark.parametrize("kind", ["wasserstein", "non_saturating"])
def test_generator_step_matches_autograd_and_leaves_the_critic_alone(kind):
    gen, critic = _toy_pair(2)
    z = torch.randn(16, 2, dtype=torch.float64)
    opt = torch.optim.SGD(gen.parameters(), lr=1.0)
    out = {}
    got = _grads_after(lambda: out.update(recipes.generator_step(gen, critic, opt, z, loss=kind)), gen)
    assert all(p.grad is None and p.requires_grad for p in critic.parameters())
    gen2, critic2 = _toy_pair(2)
    logits = critic2(gen2(z))
    loss = -logits.mean() if kind == "wasserstein" else torch.nn.functional.softplus(-logits).mean()
    for a, b in zip(got, torch.autograd.grad(loss, list(gen2.parameters()))):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(out["g_loss"], loss.detach())


def test_capture_refuses_cleanly_on_cpu():
    gen, critic = models.mlp_generator(2, 2, 8, 1), models.mlp_critic(2, 8, 1)
    recipe = recipes.get_recipe("wgan-gp")
    _, opt = recipes.make_optimizers(recipe, gen, critic)
    with pytest.raises(ValueError, match="capturable=True"):
        recipes.make_critic_step(recipe, critic, gen, opt, capture=True)
    _, opt = recipes.make_optimizers(recipe, gen, critic, capturable=True)
    with pytest.raises(ValueError, match="CUDA graph and needs CUDA.*cpu"):
        recipes.make_critic_step(recipe, critic, gen, opt, capture=True)


@requires_cuda
@pytest.mark.parametrize("name", ["gan", "wgan", "wgan-gp"])
def test_captured_critic_step_replays_like_eager(name):
    def run(capture):
        torch.manual_seed(0)
        gen, critic = models.mlp_generator(2, 2, 64, 2).cuda(), models.mlp_critic(2, 64, 2).cuda()
        recipe = recipes.get_recipe(name, r1_gamma=1.0 if name == "gan" else None)
        _, opt = recipes.make_optimizers(recipe, gen, critic, capturable=True)
        step = recipes.make_critic_step(recipe, critic, gen, opt, capture=capture)
        step.initial = torch.cat([p.detach().reshape(-1) for p in critic.parameters()])
        batches = torch.Generator().manual_seed(1)
        losses = []
        for _ in range(8):  # 3 warm-up calls, the capture, 4 replays
            real, z = torch.randn(64, 2, generator=batches).cuda(), torch.randn(64, 2, generator=batches).cuda()
            losses.append(step(real, z)["d_loss"].clone())
        torch.cuda.synchronize()
        return torch.stack(losses), [p.detach().clone() for p in critic.parameters()], step

    eager_losses, eager_params, eager_step = run(False)
    graph_losses, graph_params, step = run(True)
    assert step.graph is not None and step.calls == 8
    assert torch.isfinite(graph_losses).all()
    assert len(set(graph_losses[3:].tolist())) == 5  # each replay ran on its own batch
    if name == "wgan-gp":  # ε comes from the graph's Philox offsets: the same law, other draws,
        # so compare the updates' directions and sizes
        torch.testing.assert_close(step.initial, eager_step.initial)
        moved_graph = torch.cat([p.reshape(-1) for p in graph_params]) - step.initial
        moved_eager = torch.cat([p.reshape(-1) for p in eager_params]) - eager_step.initial
        assert torch.nn.functional.cosine_similarity(moved_graph, moved_eager, dim=0) > 0.8
        assert 0.8 < moved_graph.norm() / moved_eager.norm() < 1.25
    else:
        torch.testing.assert_close(graph_losses, eager_losses, rtol=1e-4, atol=1e-5)
        for a, b in zip(graph_params, eager_params):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


@requires_cuda
def test_captured_step_rejects_a_batch_of_another_shape():
    gen, critic = models.mlp_generator(2, 2, 16, 1).cuda(), models.mlp_critic(2, 16, 1).cuda()
    recipe = recipes.get_recipe("wgan")
    _, opt = recipes.make_optimizers(recipe, gen, critic, capturable=True)
    step = recipes.make_critic_step(recipe, critic, gen, opt, capture=True)
    for _ in range(4):
        step(torch.randn(32, 2, device="cuda"), torch.randn(32, 2, device="cuda"))
    with pytest.raises(ValueError, match="captured shape"):
        step(torch.randn(16, 2, device="cuda"), torch.randn(32, 2, device="cuda"))


# ---------------------------------------------------------------- the training job


def _config(tmp_path, recipe="wgan-gp", steps=6, **kw):
    return TrainConfig(recipe=recipe, data=kw.pop("data", "8gaussians"), steps=steps, out=str(tmp_path / recipe),
                       device="cpu", hidden=32, batch_size=64, interval=kw.pop("interval", 3), eval_samples=300,
                       **kw)


@pytest.mark.parametrize("recipe", ["gan", "wgan", "wgan-gp"])
def test_short_run_writes_finite_losses_metrics_and_plots(tmp_path, recipe):
    summary = train(_config(tmp_path, recipe, r1_gamma=1.0 if recipe == "gan" else None), progress=False, log=None)
    out = tmp_path / recipe
    log = json.loads((out / "log.json").read_text())
    assert [r["step"] for r in log["records"]] == [3, 6]
    for record in log["records"]:
        for key in ("d_loss", "g_loss", "adv", "w_estimate", "modes", "high_quality", "w1", "dual_estimate"):
            assert math.isfinite(record[key]), (key, record)
        assert 0 <= record["modes"] <= 8 and 0 <= record["high_quality"] <= 1
    assert log["recipe"]["n_critic"] == (1 if recipe == "gan" else 5)
    assert json.loads((out / "summary.json").read_text())["final"] == log["records"][-1] == summary["final"]
    for png in ("samples.png", "curves.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert os.path.isfile(out / "checkpoint.pt")


def test_digits_run_writes_a_sample_grid(tmp_path):
    train(_config(tmp_path, "wgan-gp", steps=2, data="digits", interval=2), progress=False, log=None)
    out = tmp_path / "wgan-gp"
    record = json.loads((out / "log.json").read_text())["records"][-1]
    assert math.isfinite(record["w1"]) and "modes" not in record
    assert (out / "samples.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize("recipe,decay", [("wgan-gp", "linear"), ("wgan", "none")])
def test_resume_is_bit_for_bit(tmp_path, recipe, decay):
    straight = _config(tmp_path / "a", recipe, steps=6, interval=2, plots=False, lr_decay=decay)
    train(straight, progress=False, log=None)
    half = _config(tmp_path / "b", recipe, steps=6, interval=2, plots=False, lr_decay=decay, stop_after=3)
    with pytest.raises(ValueError, match="lr_decay must be one of"):
        train(_config(tmp_path / "c", recipe, lr_decay="cosine"), progress=False, log=None)
    train(half, progress=False, log=None)
    assert ckpt.load_checkpoint(os.path.join(half.out, "checkpoint.pt"))["step"] == 3
    train(_config(tmp_path / "b", recipe, steps=6, interval=2, plots=False, lr_decay=decay), resume=True,
          progress=False, log=None)
    a = ckpt.load_checkpoint(os.path.join(straight.out, "checkpoint.pt"))
    b = ckpt.load_checkpoint(os.path.join(half.out, "checkpoint.pt"))
    assert a["step"] == b["step"] == 6
    for net in ("generator", "critic"):
        for key in a[net]:
            assert torch.equal(a[net][key], b[net][key]), (net, key)
    for opt in ("opt_g", "opt_d"):
        for index, state in a[opt]["state"].items():
            for key, value in state.items():
                assert torch.equal(torch.as_tensor(value), torch.as_tensor(b[opt]["state"][index][key]))
    assert torch.equal(a["sampler"]["generator"], b["sampler"]["generator"])
    assert torch.equal(a["rng"]["torch"], b["rng"]["torch"])
    records_a, records_b = json.loads(a["records"]), json.loads(b["records"])
    assert [r["step"] for r in records_b] == [2, 3, 4, 6]
    assert records_a[-1]["modes"] == records_b[-1]["modes"] and records_a[-1]["w1"] == records_b[-1]["w1"]
    lr = recipes.get_recipe(recipe).lr
    expected_lr = lr * (1 - 5 / 6) if decay == "linear" else lr  # the last step's rate
    for opt in ("opt_g", "opt_d"):
        assert a[opt]["param_groups"][0]["lr"] == pytest.approx(expected_lr, rel=1e-12)


def test_resume_refuses_another_run(tmp_path):
    train(_config(tmp_path, "wgan", steps=1, plots=False), progress=False, log=None)
    other = _config(tmp_path, "wgan", steps=2, plots=False)
    other.out = str(tmp_path / "wgan")
    other.hidden = 64
    with pytest.raises(ValueError, match="hidden"):
        train(other, resume=True, progress=False, log=None)


# ---------------------------------------------------------------- command line


def _exit_code(argv, capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(argv)
    return info.value.code, capsys.readouterr().err


@pytest.mark.parametrize("argv,message", [
    (["train", "--recipe", "lsgan"], "invalid choice: 'lsgan'"),
    (["train", "--data", "mnist"], "invalid choice: 'mnist'"),
    (["train", "--steps", "0"], "--steps: must be > 0"),
    (["train", "--steps", "ten"], "--steps: expected an integer"),
    (["train", "--lr", "-1"], "--lr: must be finite, > 0 and <= 1"),
    (["train", "--device", "tpu"], "--device: expected auto, cpu, cuda"),
    (["train", "--device", "cpu", "--capture"], "--capture records each training iteration as a CUDA graph"),
    (["train", "--recipe", "wgan", "--r1-gamma", "1"], "--r1-gamma applies to --recipe gan"),
    (["train", "--recipe", "gan", "--gp-weight", "1"], "--gp-weight applies to --recipe wgan-gp"),
    (["train", "--resume", "--overwrite"], "exclude each other"),
    (["train", "--lr-decay", "cosine"], "invalid choice: 'cosine'"),
    (["theory", "--bogus"], "unrecognized arguments"),
    ([], "required"),
])
def test_bad_flags_exit_2_with_a_clear_message(argv, message, capsys, tmp_path):
    if argv[:1] == ["train"]:
        argv = argv + ["--out", str(tmp_path / "run")]
    code, err = _exit_code(argv, capsys)
    assert code == 2 and message in err, err


def test_resume_without_checkpoint_and_existing_checkpoint(tmp_path, capsys):
    out = str(tmp_path / "run")
    code, err = _exit_code(["train", "--out", out, "--resume"], capsys)
    assert code == 2 and "--resume: no checkpoint in" in err
    assert cli.main(["train", "--recipe", "wgan", "--steps", "1", "--out", out, "--hidden", "16",
                     "--eval-samples", "100", "--no-progress", "--no-plots", "--device", "cpu"]) == 0
    code, err = _exit_code(["train", "--out", out, "--steps", "2"], capsys)
    assert code == 2 and "already holds a checkpoint" in err
    code, err = _exit_code(["train", "--out", out, "--resume", "--recipe", "gan"], capsys)
    assert code == 2 and "was made with --recipe wgan" in err
    # --resume takes the rest from the checkpoint and continues to --steps
    assert cli.main(["train", "--out", out, "--resume", "--steps", "2", "--no-progress", "--no-plots"]) == 0
    assert json.loads(open(os.path.join(out, "summary.json")).read())["steps"] == 2


@pytest.mark.skipif(HAS_CUDA, reason="checks the message on a machine without CUDA")
def test_device_cuda_without_cuda(capsys, tmp_path):
    code, err = _exit_code(["train", "--device", "cuda", "--out", str(tmp_path)], capsys)
    assert code == 2 and "torch sees no CUDA device" in err


def test_python_dash_m_fastgan_train(tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "fastgan", "train", "--recipe", "wgan-gp", "--data", "8gaussians", "--steps", "4",
           "--device", "auto", "--out", str(out), "--hidden", "32", "--interval", "2", "--eval-samples", "200",
           "--threads", "1"]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "wgan-gp on 8gaussians: 4 steps" in proc.stdout and "modes" in proc.stdout
    assert "4/4" in proc.stderr  # the tqdm bar
    assert len(json.loads((out / "log.json").read_text())["records"]) == 2
    bad = subprocess.run([sys.executable, "-m", "fastgan", "train", "--steps", "-5"], capture_output=True, text=True,
                         cwd=ROOT, timeout=120)
    assert bad.returncode == 2 and "--steps: must be > 0" in bad.stderr


def test_stop_after_then_resume_from_the_command_line(tmp_path):
    out = str(tmp_path / "run")
    flags = ["--no-progress", "--no-plots", "--device", "cpu"]
    assert cli.main(["train", "--recipe", "wgan-gp", "--steps", "4", "--stop-after", "2", "--interval", "1",
                     "--out", out, "--hidden", "16", "--eval-samples", "100", "--lr-decay", "linear", *flags]) == 0
    assert ckpt.load_checkpoint(os.path.join(out, "checkpoint.pt"))["step"] == 2
    # the saved --stop-after does not carry over: the resumed run goes on to --steps
    assert cli.main(["train", "--out", out, "--resume", *flags]) == 0
    summary = json.loads(open(os.path.join(out, "summary.json")).read())
    assert summary["steps"] == 4 and summary["final"]["step"] == 4


def test_resume_refuses_a_stop_it_has_passed(tmp_path, capsys):
    out = str(tmp_path / "run")
    flags = ["--no-progress", "--no-plots", "--device", "cpu"]
    assert cli.main(["train", "--recipe", "wgan", "--steps", "6", "--stop-after", "4", "--interval", "2",
                     "--out", out, "--hidden", "8", "--eval-samples", "64", *flags]) == 0
    for stop in ("2", "4"):
        with pytest.raises(SystemExit) as info:
            cli.main(["train", "--out", out, "--resume", "--stop-after", stop, *flags])
        assert info.value.code == 2
        assert f"--stop-after {stop}: the checkpoint in {out} is at step 4 already" in capsys.readouterr().err


@pytest.mark.parametrize("recipe,change", [("wgan", ["--lr", "1e-3"]), ("wgan-gp", ["--lr", "2e-4"]),
                                           ("vae", ["--lr", "1e-2"])])
def test_resume_trains_with_the_settings_it_was_given(tmp_path, recipe, change):
    """A resume may change --lr: the optimizers keep the checkpoint's state and take the
    new settings, those of a fresh run with the same flags."""
    flags = ["--recipe", recipe, "--steps", "4", "--interval", "2", "--hidden", "8", "--eval-samples", "64",
             "--batch-size", "16", "--no-progress", "--no-plots", "--device", "cpu"]
    out = str(tmp_path / "run")
    assert cli.main(["train", *flags, "--stop-after", "2", "--out", out]) == 0
    before = ckpt.load_checkpoint(os.path.join(out, "checkpoint.pt"))
    assert cli.main(["train", "--out", out, "--resume", *change, "--no-progress", "--no-plots",
                     "--device", "cpu"]) == 0
    fresh = str(tmp_path / "fresh")
    assert cli.main(["train", *flags, *change, "--stop-after", "1", "--out", fresh]) == 0
    after = ckpt.load_checkpoint(os.path.join(out, "checkpoint.pt"))
    want = ckpt.load_checkpoint(os.path.join(fresh, "checkpoint.pt"))
    assert after["step"] == 4
    changed = 0
    for key in ("opt_g", "opt_d"):
        for group, own, old in zip(after[key].get("param_groups", []), want[key].get("param_groups", []),
                                   before[key].get("param_groups", [])):
            settings = {k: v for k, v in own.items() if k != "params"}
            assert {k: group[k] for k in settings} == settings, key
            changed += settings != {k: old[k] for k in settings}
    assert changed  # the flag changed some optimizer's settings


@requires_cuda
@pytest.mark.parametrize("recipe", ["wgan-gp", "vae"])
def test_stop_and_resume_on_cuda(tmp_path, recipe):
    """A checkpoint loaded onto the GPU holds its RNG states there; the generators take
    them back from CPU copies (they raised "RNG state must be a torch.ByteTensor")."""
    out = str(tmp_path / "run")
    flags = ["--no-progress", "--no-plots", "--device", "cuda"]
    assert cli.main(["train", "--recipe", recipe, "--steps", "4", "--stop-after", "2", "--interval", "1", "--out",
                     out, "--hidden", "16", "--eval-samples", "100", *flags]) == 0
    assert cli.main(["train", "--out", out, "--resume", *flags]) == 0
    assert ckpt.load_checkpoint(os.path.join(out, "checkpoint.pt"))["step"] == 4


@requires_cuda
def test_command_line_captures_on_cuda_with_lr_decay(tmp_path):
    """The README's main job on CUDA: one CUDA graph per iteration by default, linear lr
    decay under capture; its losses follow the uncaptured run's."""
    flags = ["train", "--recipe", "wgan-gp", "--steps", "6", "--interval", "2", "--hidden", "32", "--eval-samples",
             "200", "--lr-decay", "linear", "--device", "cuda", "--no-progress", "--no-plots"]
    finals = {}
    for name, extra in (("captured", []), ("eager", ["--no-capture"])):
        out = str(tmp_path / name)
        assert cli.main([*flags, "--out", out, *extra]) == 0
        log = json.loads(open(os.path.join(out, "log.json")).read())
        assert log["config"]["capture"] == (name == "captured")
        finals[name] = json.loads(open(os.path.join(out, "summary.json")).read())["final"]
    for key in ("d_loss", "g_loss", "gp"):
        assert math.isfinite(finals["captured"][key])
        assert finals["captured"][key] == pytest.approx(finals["eager"][key], rel=1e-3, abs=1e-4), key


def test_quality_script_target_and_table():
    import importlib.util

    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "scripts", "quality_runs.py")
    spec = importlib.util.spec_from_file_location("quality_runs", path)
    quality = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(quality)
    records = [{"step": 250, "time_s": 10.0, "modes": 8, "num_modes": 8, "high_quality": 0.8, "w1": 0.3},
               {"step": 500, "time_s": 20.0, "modes": 7, "num_modes": 8, "high_quality": 0.95, "w1": 0.2},
               {"step": 750, "time_s": 30.0, "modes": 8, "num_modes": 8, "high_quality": 0.91, "w1": 0.1}]
    assert quality.first_at_target(records)["step"] == 750
    assert quality.first_at_target(records[:2]) is None
    results = {"wgan-gp-25gaussians-20k": {"steps": 750, "train_time_s": 30.0, "final": records[-1], "device": "cpu",
                                           "first_at_target": {"step": 750, "time_s": 30.0}}}
    row = quality.table(results).splitlines()[2]
    assert "| 8/8 | 91.0% | 0.100 | 750 (0.5 min) | 17.3/25 at 94.8% |" in row


def test_progress_rate_is_averaged_over_the_metric_pauses():
    from fastgan.train.progress import WindowedRate

    # 10 steps/s, with a 4 s pause for metrics and a checkpoint after every 400 steps (44 s per interval)
    rate, now, count, readings = WindowedRate(window_s=120.0), 0.0, 0, []
    for interval in range(10):
        for _ in range(40):
            now, count = now + 1.0, count + 10
            readings.append(rate.add(now, count))
        now += 4.0
        readings.append(rate.add(now, count))
    settled = readings[-200:]  # once the window is full
    mean = 400 / 44
    assert all(abs(r - mean) / mean < 0.06 for r in settled), (min(settled), max(settled))
    assert WindowedRate().add(1.0, 0) is None
