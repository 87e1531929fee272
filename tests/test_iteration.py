"""The training iteration as one call (issue 11 item 2): on the CPU it is bit for bit the
sequence of critic and generator steps the loop ran before; on CUDA one graph per
iteration that follows a learning-rate schedule and replays like the eager steps."""
import copy
import sys

import pytest
import torch
from conftest import cpu_backends, requires_cuda

import fastgan.models as models
from fastgan.train import recipes
from fastgan.train.graphs import check_capturable
from fastgan.train.iteration import TrainIteration, match_capturable
from fastgan.train.loop import TrainConfig, build_models

pytestmark = pytest.mark.usefixtures("one_thread")

CASES = {  # recipe name -> overrides: every optimizer, loss and penalty path, lazy R1 included
    "gan": dict(),
    "gan-r1-lazy": dict(r1_gamma=0.5, reg_every=2),
    "wgan": dict(),
    "wgan-gp": dict(n_critic=3),
}


def _setup(case, device="cpu", capturable=False, seed=0):
    name = case.split("-r1")[0]
    recipe = recipes.get_recipe(name, **CASES[case])
    torch.manual_seed(seed)
    gen, critic = models.mlp_generator(2, 2, 16, 2).to(device), models.mlp_critic(2, 16, 2).to(device)
    opt_g, opt_d = recipes.make_optimizers(recipe, gen, critic, capturable=capturable)
    return recipe, gen, critic, opt_g, opt_d


def _batches(recipe, iterations, device, seed=1):
    data = torch.Generator().manual_seed(seed)
    return [torch.randn(recipe.n_critic, 32, 2, generator=data).to(device) for _ in range(iterations)]


def _state(gen, critic, opt_g, opt_d):
    tensors = [t.detach().clone() for t in list(gen.parameters()) + list(critic.parameters())]
    for opt in (opt_g, opt_d):
        for state in opt.state.values():
            tensors += [v.detach().clone() for v in state.values() if isinstance(v, torch.Tensor)]
    return tensors


@pytest.mark.parametrize("case", list(CASES))
def test_uncaptured_iteration_is_bit_for_bit_the_step_sequence(case):
    """TrainIteration on the CPU = the loop's former body: per critic step z, then the
    step (its ε), then the generator's z and step, with the same regularisation schedule
    and the same means of the statistics."""
    recipe, gen, critic, opt_g, opt_d = _setup(case)
    iteration = TrainIteration(recipe, gen, critic, opt_g, opt_d, latent_dim=2)
    twin = copy.deepcopy((gen, critic, opt_g, opt_d))
    batches = _batches(recipe, 3, "cpu")
    torch.manual_seed(7)
    for step, reals in enumerate(batches):
        iteration(reals, step * recipe.n_critic)
    got_means, got_state = iteration.take_means(), _state(gen, critic, opt_g, opt_d)

    gen, critic, opt_g, opt_d = twin
    step_d = recipes.make_critic_step(recipe, critic, gen, opt_d)
    sums, counts = {}, {}
    torch.manual_seed(7)
    for step, reals in enumerate(batches):
        stats = []
        for i, real in enumerate(reals):
            z = torch.randn(32, 2)
            stats.append(step_d(real, z, regularize=(step * recipe.n_critic + i) % recipe.reg_every == 0))
        stats.append(recipes.generator_step(gen, critic, opt_g, torch.randn(32, 2), loss=recipe.g_loss))
        for one in stats:
            for key, value in one.items():
                sums[key] = sums[key] + value if key in sums else value.clone()
                counts[key] = counts.get(key, 0) + 1
    want_means = {key: float(value) / counts[key] for key, value in sums.items()}
    assert got_means == want_means
    for got, want in zip(got_state, _state(gen, critic, opt_g, opt_d), strict=True):
        assert torch.equal(got, want)
    assert iteration.take_means() == {}  # nothing ran since


def test_take_means_resets_and_counts_each_statistic():
    recipe, gen, critic, opt_g, opt_d = _setup("wgan-gp")
    iteration = TrainIteration(recipe, gen, critic, opt_g, opt_d, latent_dim=2)
    assert iteration.take_means() == {}
    for step, reals in enumerate(_batches(recipe, 2, "cpu")):
        iteration(reals, step * recipe.n_critic)
    assert iteration._counts["d_loss"] == 6 and iteration._counts["g_loss"] == 2
    means = iteration.take_means()
    assert set(means) >= {"d_loss", "gp", "g_loss", "w_estimate"} and all(map(torch.isfinite, map(torch.tensor,
                                                                                                   means.values())))
    assert iteration._counts == {} and all(float(total) == 0 for total in iteration._sums.values())


def test_reals_must_hold_n_critic_batches():
    recipe, gen, critic, opt_g, opt_d = _setup("wgan-gp")
    iteration = TrainIteration(recipe, gen, critic, opt_g, opt_d, latent_dim=2)
    with pytest.raises(ValueError, match="n_critic=3 batches, got 2"):
        iteration(torch.randn(2, 32, 2), 0)


def test_lazy_pattern_follows_the_global_critic_index():
    recipe, gen, critic, opt_g, opt_d = _setup("wgan-gp")
    recipe = recipes.get_recipe("wgan-gp", n_critic=3, reg_every=4)
    iteration = TrainIteration(recipe, gen, critic, opt_g, opt_d, latent_dim=2)
    assert [iteration.pattern(3 * step) for step in range(4)] == [
        (True, False, False), (False, True, False), (False, False, True), (False, False, False)]


def test_set_lr_replaces_floats_and_fills_tensors_in_place():
    param = torch.nn.Parameter(torch.zeros(3))
    floats = torch.optim.Adam([param], lr=1e-3)
    recipes.set_lr(floats, 5e-4)
    assert floats.param_groups[0]["lr"] == 5e-4
    lr = torch.tensor(1e-3)
    tensors = torch.optim.Adam([param], lr=lr, capturable=False, foreach=False)
    recipes.set_lr(tensors, 5e-4)
    assert tensors.param_groups[0]["lr"] is lr and float(lr) == pytest.approx(5e-4, rel=1e-7)


@pytest.mark.parametrize("case", ["gan", "wgan"])
def test_capturable_optimizers_hold_tensor_learning_rates(case):
    recipe, gen, critic, opt_g, opt_d = _setup(case, capturable=True)
    for opt, lr in ((opt_g, recipe.lr), (opt_d, recipe.lr)):
        group = opt.param_groups[0]
        assert group["capturable"] and isinstance(group["lr"], torch.Tensor)
        assert group["lr"].dtype == torch.float32 and float(group["lr"]) == pytest.approx(lr, rel=1e-7)


def test_match_capturable_converts_a_loaded_optimizer_both_ways():
    recipe, gen, critic, opt_g, opt_d = _setup("gan")
    iteration = TrainIteration(recipe, gen, critic, opt_g, opt_d, latent_dim=2)
    iteration(_batches(recipe, 1, "cpu")[0], 0)
    match_capturable(opt_d, True)
    group = opt_d.param_groups[0]
    assert group["capturable"] and isinstance(group["lr"], torch.Tensor) and group["lr"].shape == ()
    assert all(state["step"].dtype == torch.float32 for state in opt_d.state.values())
    match_capturable(opt_d, False)
    assert not group["capturable"] and group["lr"] == pytest.approx(recipe.lr, rel=1e-7)
    assert isinstance(group["lr"], float)
    iteration(_batches(recipe, 1, "cpu")[0], 1)  # and it still steps


def test_capture_is_refused_on_the_cpu_naming_the_reason():
    recipe, gen, critic, opt_g, opt_d = _setup("gan")
    with pytest.raises(ValueError, match="capturable=True"):
        TrainIteration(recipe, gen, critic, opt_g, opt_d, latent_dim=2, capture=True)
    recipe, gen, critic, opt_g, opt_d = _setup("gan", capturable=True)
    with pytest.raises(ValueError, match="needs CUDA.*cpu"):
        check_capturable([gen, critic], [opt_g, opt_d])


#: Tensor methods that read values on the host: on CUDA each synchronises, and inside a
#: capture raises (operation not permitted when stream is capturing).
HOST_READS = ("item", "tolist", "numpy", "cpu", "nonzero", "__bool__", "__float__", "__int__", "__index__")

#: (recipe, overrides, data): every loss, penalty and optimizer path of `fastgan train`
RECORDED_CASES = [("gan", {}, "8gaussians"), ("gan", dict(r1_gamma=0.5, reg_every=2), "8gaussians"),
                  ("wgan", {}, "8gaussians"), ("wgan-gp", {}, "digits"), ("r3gan", {}, "8gaussians"),
                  ("r3gan", dict(approximate_penalty=True), "8gaussians")]


@pytest.mark.parametrize("backend", cpu_backends("cpu", "triton"))
@pytest.mark.parametrize("name, overrides, data", RECORDED_CASES,
                         ids=[f"{n}-{d}{'-' if o else ''}{'-'.join(o)}" for n, o, d in RECORDED_CASES])
def test_iteration_reads_no_tensor_value_on_the_host(name, overrides, data, backend, monkeypatch):
    """What the CUDA graph records must not read a tensor's value on the host: fastgan's
    code (its Triton op bodies included) called during an iteration uses no HOST_READS.
    Checked on the CPU, where CI runs it; take_means, which reads outside the graph, is
    the guard's own positive control."""
    config = TrainConfig(recipe=name, data=data, hidden=16, backend=backend).resolved()
    recipe = recipes.get_recipe(name, data=data, n_critic=2, **overrides)
    torch.manual_seed(0)
    nets = build_models(config)
    opt_g, opt_d = recipes.make_optimizers(recipe, nets["generator"], nets["critic"], backend=backend)
    iteration = TrainIteration(recipe, nets["generator"], nets["critic"], opt_g, opt_d,
                               latent_dim=config.latent_dim, backend=backend)
    shape = (recipe.n_critic, 4, 1, 8, 8) if data == "digits" else (recipe.n_critic, 16, 2)
    reals = torch.randn(shape)
    iteration(reals, 0)  # the eager first call, as before a recording
    reads = []

    def watched(method_name, method):
        def call(*args, **kwargs):
            caller = sys._getframe(1)
            if caller.f_globals.get("__name__", "").split(".")[0] in ("fastgan", "kernels"):
                reads.append(f"{method_name} at {caller.f_code.co_filename}:{caller.f_lineno}")
            return method(*args, **kwargs)
        return call

    for method_name in HOST_READS:
        monkeypatch.setattr(torch.Tensor, method_name, watched(method_name, getattr(torch.Tensor, method_name)))
    for index in range(1, 4):
        iteration(reals, index * recipe.n_critic)
    assert reads == []
    iteration.take_means()
    assert reads and reads[0].startswith("tolist at ") and "iteration.py" in reads[0]


# ---- CUDA: one graph per iteration ----


def _train_cuda(case, capture, iterations=10, decay=True):
    recipe, gen, critic, opt_g, opt_d = _setup(case, "cuda", capturable=True)
    base = {opt: float(opt.param_groups[0]["lr"]) for opt in (opt_g, opt_d)}
    iteration = TrainIteration(recipe, gen, critic, opt_g, opt_d, latent_dim=2, capture=capture)
    torch.cuda.manual_seed(11)
    means = []
    for step, reals in enumerate(_batches(recipe, iterations, "cuda")):
        if decay:
            for opt in (opt_g, opt_d):
                recipes.set_lr(opt, base[opt] * (1 - step / iterations))
        iteration(reals, step * recipe.n_critic)
        means.append(iteration.take_means())
    torch.cuda.synchronize()
    return means, [p.detach().clone() for p in list(gen.parameters()) + list(critic.parameters())], iteration


@requires_cuda
@pytest.mark.parametrize("case", list(CASES))
def test_captured_iterations_replay_like_eager_with_lr_decay(case):
    """3 eager warm-up iterations, the recording, then replays, with the learning rates
    decaying in place: the same training as the uncaptured iterations to float32
    rounding (the graph draws z and ε from the CUDA generator at the same offsets)."""
    eager_means, eager_params, _ = _train_cuda(case, capture=False)
    graph_means, graph_params, iteration = _train_cuda(case, capture=True)
    assert len(iteration._graphs) == (2 if case == "gan-r1-lazy" else 1)
    assert all(g.graph is not None for g in iteration._graphs.values())
    for got, want in zip(graph_means, eager_means):
        assert got.keys() == want.keys()
        torch.testing.assert_close(torch.tensor(list(got.values())), torch.tensor(list(want.values())),
                                   rtol=1e-4, atol=1e-5)
    for got, want in zip(graph_params, eager_params):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


@requires_cuda
def test_replays_do_not_grow_memory():
    recipe, gen, critic, opt_g, opt_d = _setup("wgan-gp", "cuda", capturable=True)
    iteration = TrainIteration(recipe, gen, critic, opt_g, opt_d, latent_dim=2, capture=True)
    batches = _batches(recipe, 2, "cuda")
    for step in range(6):
        iteration(batches[step % 2], step * recipe.n_critic)
    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated()
    for step in range(6, 30):
        iteration(batches[step % 2], step * recipe.n_critic)
    torch.cuda.synchronize()
    assert torch.cuda.memory_allocated() == before
    assert all(map(torch.isfinite, map(torch.tensor, iteration.take_means().values())))


def test_adam_recipes_get_torchs_fused_adam_where_it_runs():
    # One kernel for all parameters (a third of the per-parameter loop's host time for a
    # toy critic on the CPU); torch's default elsewhere, e.g. on the meta device.
    recipe = recipes.get_recipe("wgan-gp")
    gen, critic = models.mlp_generator(2, 2, 8, 2), models.mlp_critic(2, 8, 2)
    for opt in recipes.make_optimizers(recipe, gen, critic):
        assert opt.param_groups[0]["fused"] is True
    meta = models.mlp_critic(2, 8, 2).to("meta")
    assert recipes.adam(meta, 1e-4, (0.5, 0.9)).param_groups[0]["fused"] is None
    reference = [p.detach().clone() for p in critic.parameters()]
    plain = torch.optim.Adam([p.clone().requires_grad_(True) for p in reference], lr=1e-2, betas=(0.5, 0.9))
    fused = recipes.adam(critic, 1e-2, (0.5, 0.9))
    for step in range(3):
        for p, q in zip(plain.param_groups[0]["params"], critic.parameters()):
            p.grad = torch.full_like(p, 0.1 * (step + 1))
            q.grad = p.grad.clone()
        plain.step()
        fused.step()
    for p, q in zip(plain.param_groups[0]["params"], critic.parameters()):
        torch.testing.assert_close(q, p)
