"""The ``r3gan`` recipe (issue 12 item 5): RpGAN for D and G plus γ/2 (R1 + R2), exact or
finite-difference, Adam(0, 0.99), one critic step; its steps equal the formulas, the
one-graph iteration stays bit for bit the step sequence, and the job and CLI run it."""
import copy
import json
import math

import pytest
import torch
import torch.nn.functional as F
from conftest import requires_cuda

import fastgan.models as models
from fastgan.train import cli, recipes
from fastgan.train.iteration import TrainIteration
from fastgan.train.loop import TrainConfig, train

pytestmark = pytest.mark.usefixtures("one_thread")


def _toy_pair(seed=0):
    torch.manual_seed(seed)
    return models.mlp_generator(2, 2, 16, 2).double(), models.mlp_critic(2, 16, 2).double()


def _sgd_grads(step, module):
    """The gradients an SGD(lr=1) step applied to `module`: before − after."""
    before = [p.detach().clone() for p in module.parameters()]
    step()
    return [b - p.detach() for b, p in zip(before, module.parameters())]


def _input_grad_sq(logits, x):
    (g,) = torch.autograd.grad(logits.sum(), x, create_graph=True)
    return g.pow(2).sum(1).mean()


def _finite_difference_sq(critic, x, logits, noise, sigma):
    return ((critic(x + sigma * noise) - logits) / sigma).pow(2).sum(1).mean()


def test_recipe_defaults_and_optimizers():
    r3 = recipes.get_recipe("r3gan")
    assert (r3.d_loss, r3.g_loss, r3.n_critic, r3.optimizer, r3.betas) == \
        ("relativistic", "relativistic", 1, "adam", (0.0, 0.99))
    assert r3.r1_r2_gamma == recipes.TOY_GAMMA and not r3.approximate_penalty and r3.sigma == 0.01
    assert recipes.get_recipe("r3gan", data="digits").r1_r2_gamma == recipes.DIGITS_GAMMA
    assert recipes.get_recipe("r3gan", r1_r2_gamma=2.5, approximate_penalty=True).r1_r2_gamma == 2.5
    for name in ("gan", "wgan", "wgan-gp"):  # the other recipes carry no R1 + R2
        assert recipes.get_recipe(name).r1_r2_gamma == 0.0
    g, d = models.mlp_generator(2, 2, 8, 1), models.mlp_critic(2, 8, 1)
    opt_g, opt_d = recipes.make_optimizers(r3, g, d)
    assert opt_g.param_groups[0]["betas"] == opt_d.param_groups[0]["betas"] == (0.0, 0.99)
    _, lazy_d = recipes.make_optimizers(recipes.get_recipe("r3gan", reg_every=4), g, d)
    assert lazy_d.param_groups[0]["lr"] == r3.lr and lazy_d.param_groups[0]["betas"] == r3.betas


@pytest.mark.parametrize("overrides,message", [
    (dict(r1_r2_gamma=-1.0), "r1_r2_gamma must be finite and >= 0"),
    (dict(gp_weight=float("nan")), "r1_r2_gamma must be finite and >= 0, got nan"),
    (dict(r1_r2_gamma=float("inf")), "r1_r2_gamma must be finite and >= 0"),
    (dict(n_critic=2.5), "n_critic must be an integer >= 1, got 2.5"),
    (dict(n_critic=True), "n_critic must be an integer >= 1, got True"),
    (dict(lr=float("inf")), "lr must be finite and > 0, got inf"),
    (dict(lr=float("nan")), "lr must be finite and > 0, got nan"),
    (dict(sigma=0.0), "sigma must be finite and > 0"),
    (dict(sigma=float("nan")), "sigma must be finite and > 0"),
])
def test_get_recipe_rejects_bad_values_naming_them(overrides, message):
    with pytest.raises(ValueError, match=message):
        recipes.get_recipe("r3gan", **overrides)


def test_approximate_penalty_belongs_to_r3gan():
    with pytest.raises(ValueError, match="approximate_penalty .* applies to recipe 'r3gan', not 'wgan-gp'"):
        recipes.get_recipe("wgan-gp", approximate_penalty=True)


@pytest.mark.parametrize("approximate", [False, True])
def test_critic_step_is_rpgan_plus_half_gamma_r1_r2(approximate):
    """One SGD(lr=1) critic step applies the gradient of
    ``mean softplus(−(D(r) − D(f))) + γ/2 (R1 + R2)`` (float64), R1 and R2 exact by double
    backward or, approximately, ``mean Σ ((D(x + σε) − D(x)) / σ)²`` with the step's ε."""
    gamma, sigma = 3.0, 0.05
    gen, critic = _toy_pair(1)
    real, z = torch.randn(16, 2, dtype=torch.float64), torch.randn(16, 2, dtype=torch.float64)
    stats = {}
    torch.manual_seed(5)  # the approximate penalty draws ε for real, then for fake
    got = _sgd_grads(lambda: stats.update(recipes.critic_step(
        critic, gen, torch.optim.SGD(critic.parameters(), lr=1.0), real, z, loss="relativistic", r1_r2_gamma=gamma,
        approximate=approximate, sigma=sigma)), critic)

    gen2, critic2 = _toy_pair(1)
    torch.manual_seed(5)
    x_real, x_fake = real.clone().requires_grad_(True), gen2(z).detach().requires_grad_(True)
    real_logits, fake_logits = critic2(x_real), critic2(x_fake)
    rpgan = F.softplus(-(real_logits - fake_logits)).mean()
    if approximate:
        noise_real, noise_fake = torch.randn_like(real), torch.randn_like(real)
        r1 = _finite_difference_sq(critic2, x_real, real_logits, noise_real, sigma)
        r2 = _finite_difference_sq(critic2, x_fake, fake_logits, noise_fake, sigma)
    else:
        r1, r2 = _input_grad_sq(real_logits, x_real), _input_grad_sq(fake_logits, x_fake)
    loss = rpgan + gamma / 2 * (r1 + r2)
    expected = torch.autograd.grad(loss, list(critic2.parameters()))
    for a, b in zip(got, expected, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(stats["adv"], rpgan.detach())
    torch.testing.assert_close(stats["r1_r2"], (gamma / 2 * (r1 + r2)).detach())
    torch.testing.assert_close(stats["d_loss"], loss.detach())
    assert float(stats["r1_r2"]) > 0


def test_lazy_critic_step_scales_gamma_and_skips_unregularised_steps():
    gen, critic = _toy_pair(2)
    real, z = torch.randn(8, 2, dtype=torch.float64), torch.randn(8, 2, dtype=torch.float64)
    step = dict(loss="relativistic", r1_r2_gamma=0.5, reg_every=4)
    twin = copy.deepcopy(critic)
    skipped = recipes.critic_step(critic, gen, torch.optim.SGD(critic.parameters(), lr=1.0), real, z,
                                  regularize=False, **step)
    assert skipped["r1_r2"] == 0 and skipped["d_loss"] == skipped["adv"]
    other = copy.deepcopy(twin)
    lazy = recipes.critic_step(twin, gen, torch.optim.SGD(twin.parameters(), lr=1.0), real, z, **step)
    eager = recipes.critic_step(other, gen, torch.optim.SGD(other.parameters(), lr=1.0), real, z,
                                loss="relativistic", r1_r2_gamma=2.0)  # γ · reg_every
    torch.testing.assert_close(lazy["r1_r2"], eager["r1_r2"], rtol=1e-12, atol=0)
    for a, b in zip(twin.parameters(), other.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-15)


def test_generator_step_is_rpgan_against_the_real_batch():
    """G minimises ``mean softplus(−(D(G(z)) − D(real)))``; the critic gets no gradient."""
    gen, critic = _toy_pair(3)
    z, real = torch.randn(16, 2, dtype=torch.float64), torch.randn(16, 2, dtype=torch.float64)
    out = {}
    got = _sgd_grads(lambda: out.update(recipes.generator_step(
        gen, critic, torch.optim.SGD(gen.parameters(), lr=1.0), z, loss="relativistic", real=real)), gen)
    assert all(p.grad is None and p.requires_grad for p in critic.parameters())
    gen2, critic2 = _toy_pair(3)
    loss = F.softplus(-(critic2(gen2(z)) - critic2(real))).mean()
    for a, b in zip(got, torch.autograd.grad(loss, list(gen2.parameters())), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(out["g_loss"], loss.detach())


@pytest.mark.parametrize("loss,real", [("relativistic", None), ("non_saturating", torch.zeros(4, 2))])
def test_generator_step_needs_real_exactly_for_relativistic_losses(loss, real):
    gen, critic = models.mlp_generator(2, 2, 8, 1), models.mlp_critic(2, 8, 1)
    with pytest.raises(ValueError, match="real .* relativistic"):
        recipes.generator_step(gen, critic, torch.optim.SGD(gen.parameters(), lr=1.0), torch.randn(4, 2),
                               loss=loss, real=real)


@pytest.mark.parametrize("overrides", [dict(), dict(approximate_penalty=True), dict(reg_every=2)])
def test_uncaptured_iteration_is_bit_for_bit_the_r3gan_step_sequence(overrides):
    """TrainIteration = per iteration: z, the critic step (ε when approximate), then the
    generator's z and its step on the iteration's last real batch."""
    recipe = recipes.get_recipe("r3gan", n_critic=2, **overrides)
    torch.manual_seed(0)
    gen, critic = models.mlp_generator(2, 2, 16, 2), models.mlp_critic(2, 16, 2)
    opt_g, opt_d = recipes.make_optimizers(recipe, gen, critic)
    twin = copy.deepcopy((gen, critic, opt_g, opt_d))
    data = torch.Generator().manual_seed(1)
    batches = [torch.randn(recipe.n_critic, 32, 2, generator=data) for _ in range(3)]
    iteration = TrainIteration(recipe, gen, critic, opt_g, opt_d, latent_dim=2)
    torch.manual_seed(7)
    for step, reals in enumerate(batches):
        iteration(reals, step * recipe.n_critic)
    got = iteration.take_means()

    gen2, critic2, opt_g2, opt_d2 = twin
    step_d = recipes.make_critic_step(recipe, critic2, gen2, opt_d2)
    sums = {}
    torch.manual_seed(7)
    for step, reals in enumerate(batches):
        for i, real in enumerate(reals):
            stats = step_d(real, torch.randn(32, 2), regularize=(step * recipe.n_critic + i) % recipe.reg_every == 0)
            for key, value in stats.items():
                sums.setdefault(key, []).append(float(value))
        g = recipes.generator_step(gen2, critic2, opt_g2, torch.randn(32, 2), loss="relativistic", real=reals[-1])
        sums.setdefault("g_loss", []).append(float(g["g_loss"]))
    assert set(got) == set(sums) and "r1_r2" in got
    for key, values in sums.items():
        assert got[key] == pytest.approx(sum(values) / len(values), rel=1e-6), key
    for a, b in zip(list(gen.parameters()) + list(critic.parameters()),
                    list(gen2.parameters()) + list(critic2.parameters()), strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize("approximate", [False, True])
def test_short_r3gan_run_on_8gaussians_ends_with_finite_losses(tmp_path, approximate):
    config = TrainConfig(recipe="r3gan", data="8gaussians", steps=6, out=str(tmp_path / "run"), device="cpu",
                         hidden=32, batch_size=64, interval=3, eval_samples=300, approximate_penalty=approximate,
                         plots=False)
    summary = train(config, progress=False, log=None)
    log = json.loads((tmp_path / "run" / "log.json").read_text())
    assert log["recipe"]["approximate_penalty"] is approximate and log["recipe"]["n_critic"] == 1
    assert summary["r1_r2_gamma"] == recipes.TOY_GAMMA
    for record in log["records"]:
        for key in ("d_loss", "g_loss", "adv", "r1_r2", "w1", "high_quality"):
            assert math.isfinite(record[key]), (key, record)
        assert record["r1_r2"] > 0


def _exit_code(argv, capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(argv)
    return info.value.code, capsys.readouterr().err


@pytest.mark.parametrize("argv,message", [
    (["--recipe", "gan", "--approximate-penalty"], "--approximate-penalty applies to --recipe r3gan"),
    (["--recipe", "wgan-gp", "--r1-r2-gamma", "1"], "--r1-r2-gamma applies to --recipe r3gan"),
    (["--recipe", "r3gan", "--r1-r2-gamma", "-1"], "--r1-r2-gamma: must be finite, >= 0"),
    (["--recipe", "r3gan", "--r1-gamma", "1"], "--r1-gamma applies to --recipe gan"),
    (["--recipe", "r3gan", "--gp-weight", "1"], "--gp-weight applies to --recipe wgan-gp"),
])
def test_bad_r3gan_flags_exit_2_naming_the_flag(argv, message, capsys, tmp_path):
    code, err = _exit_code(["train", *argv, "--out", str(tmp_path / "run")], capsys)
    assert code == 2 and message in err, err


def test_sharded_steps_pass_their_rows_of_the_global_noise_draw():
    """Under DDP each rank slices the approximate penalty's noise from a draw of the global
    batch's shape at the point of the stream where one process's penalty draws it, and the
    mean of the row-sliced steps' gradients is the one-process step's (float64)."""
    from fastgan.train.distributed import Ranks, ShardedSteps

    recipe = recipes.get_recipe("r3gan", approximate_penalty=True)
    real, z = torch.randn(32, 2, dtype=torch.float64), torch.randn(32, 2, dtype=torch.float64)
    sharded = object.__new__(ShardedSteps)  # its step logic without the DDP wrappers
    sharded.ranks, sharded.recipe, seen = Ranks(1, 2, 1, 2), recipe, {}
    sharded.step_d = lambda real, z, **kwargs: seen.update(kwargs, real=real, z=z)
    torch.manual_seed(4)
    sharded.critic_step(real, z)
    torch.manual_seed(4)
    noise = [torch.randn(32, 2, dtype=torch.float64) for _ in range(2)]
    assert torch.equal(seen["real"], real[16:]) and torch.equal(seen["z"], z[16:])
    assert torch.equal(seen["noise"][0], noise[0][16:]) and torch.equal(seen["noise"][1], noise[1][16:])

    gen, critic = _toy_pair(4)
    kwargs = dict(loss="relativistic", r1_r2_gamma=1.0, approximate=True, sigma=0.05)

    def grads(rows, noise=None):
        twin = copy.deepcopy(critic)
        recipes.critic_step(twin, gen, torch.optim.SGD(twin.parameters(), lr=0.0), real[rows], z[rows],
                            noise=noise, **kwargs)
        return torch.cat([p.grad.flatten() for p in twin.parameters()])

    torch.manual_seed(4)
    whole = grads(slice(None))  # draws ε_real, then ε_fake, as above
    halves = sum(grads(rows, (noise[0][rows], noise[1][rows])) for rows in (slice(0, 16), slice(16, 32))) / 2
    torch.testing.assert_close(halves, whole, rtol=1e-10, atol=1e-13)


def _train_cuda(overrides, capture, iterations=8):
    recipe = recipes.get_recipe("r3gan", **overrides)
    torch.manual_seed(0)
    gen, critic = models.mlp_generator(2, 2, 16, 2).cuda(), models.mlp_critic(2, 16, 2).cuda()
    opt_g, opt_d = recipes.make_optimizers(recipe, gen, critic, capturable=True)
    iteration = TrainIteration(recipe, gen, critic, opt_g, opt_d, latent_dim=2, capture=capture)
    data = torch.Generator().manual_seed(1)
    torch.cuda.manual_seed(11)
    means = []
    for step in range(iterations):
        iteration(torch.randn(recipe.n_critic, 32, 2, generator=data).cuda(), step * recipe.n_critic)
        means.append(iteration.take_means())
    torch.cuda.synchronize()
    return means, [p.detach().clone() for p in list(gen.parameters()) + list(critic.parameters())], iteration


@requires_cuda
@pytest.mark.parametrize("overrides", [dict(), dict(approximate_penalty=True), dict(reg_every=2)])
def test_captured_r3gan_iterations_replay_like_eager(overrides):
    """The r3gan iteration (the G step reading the static real buffer, the double
    backward or the noise drawn inside the graph) recorded as a CUDA graph trains as the
    eager iterations do, to float32 rounding."""
    eager_means, eager_params, _ = _train_cuda(overrides, capture=False)
    graph_means, graph_params, iteration = _train_cuda(overrides, capture=True)
    assert len(iteration._graphs) == (2 if overrides.get("reg_every") else 1)
    for got, want in zip(graph_means, eager_means, strict=True):
        assert got.keys() == want.keys() and "r1_r2" in got
        torch.testing.assert_close(torch.tensor(list(got.values())), torch.tensor(list(want.values())),
                                   rtol=1e-4, atol=1e-5)
    for got, want in zip(graph_params, eager_params, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


def test_approximate_r3gan_resumes_bit_for_bit(tmp_path):
    """The penalty's noise comes from the global generator, whose state the checkpoint keeps."""
    from fastgan.train import checkpoint as ckpt

    def config(folder, **kw):
        return TrainConfig(recipe="r3gan", data="8gaussians", steps=6, out=str(tmp_path / folder), device="cpu",
                           hidden=16, batch_size=32, interval=2, eval_samples=100, plots=False,
                           approximate_penalty=True, **kw)

    train(config("straight"), progress=False, log=None)
    train(config("halves", stop_after=3), progress=False, log=None)
    train(config("halves"), resume=True, progress=False, log=None)
    a, b = (ckpt.load_checkpoint(str(tmp_path / folder / "checkpoint.pt")) for folder in ("straight", "halves"))
    assert a["step"] == b["step"] == 6
    for net in ("generator", "critic"):
        for key in a[net]:
            assert torch.equal(a[net][key], b[net][key]), (net, key)


def test_r1r2_benchmark_suite_times_the_rpgan_step(tmp_path):
    """The R3GAN discriminator-step suite runs its RpGAN variants and records how close the
    approximate penalty is to the exact one (timings are reported, never asserted)."""
    from benchmarks import cases_r1r2
    from benchmarks.run import main

    assert cases_r1r2.LOSS == "relativistic"
    assert main(["--suite", "r1r2", "--device", "cpu", "--quick", "--reps", "1", "--warmup", "1",
                 "--out", str(tmp_path)]) == 0
    results = json.loads((tmp_path / "r1r2-cpu.json").read_text())["results"]
    assert {r["variant"] for r in results} >= {"eager", "fastgan-cpu exact", "fastgan-cpu approx",
                                               "fastgan-cpu no penalty"}
    for r in results:
        assert math.isfinite(r["median_ms"]) and r["cpu_exact_penalty"] > 0 and r["cpu_approx_penalty"] > 0
