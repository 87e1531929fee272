"""docs/theory.md's results, checked numerically with fastgan's losses and penalties
(fastgan.train.theory); each check is also shown able to fail."""
import math

import pytest
import torch

from fastgan.train import cli, theory


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny nets: see conftest.one_thread


def _all_pass(rows):
    assert rows and all(r.passed for r in rows), "\n" + theory.format_table(rows)


def test_js_divergence_against_scipy_quad():
    from scipy import integrate, stats

    p, q = (0.0, 1.0), (1.0, 1.5)

    def integrand(x):
        a, b = stats.norm.pdf(x, *p), stats.norm.pdf(x, *q)
        m = (a + b) / 2
        return 0.5 * (a * math.log(a / m) if a > 0 else 0.0) + 0.5 * (b * math.log(b / m) if b > 0 else 0.0)

    expected, _ = integrate.quad(integrand, -30, 30, limit=400, epsabs=1e-12)
    assert theory.js_divergence(p, q) == pytest.approx(expected, abs=1e-8)
    assert theory.js_divergence(q, p) == pytest.approx(expected, abs=1e-8)
    assert theory.js_divergence(p, p) == pytest.approx(0.0, abs=1e-12)
    assert theory.js_divergence((0.0, 0.1), (50.0, 0.1)) == pytest.approx(math.log(2), abs=1e-9)  # disjoint


def test_value_at_the_optimal_discriminator_is_minus_2ln2_plus_2js():
    rows = theory.check_value_at_optimum()
    _all_pass(rows)
    same = [r for r in rows if "q=N(0.0, 1.0)" in r.name][0]
    assert same.value == pytest.approx(-2 * math.log(2), abs=1e-12)  # the minimum, at q = p


def test_value_check_fails_for_a_wrong_discriminator(monkeypatch):
    # a discriminator at D = 1/2 everywhere is not D*: V = -2 ln 2, not -2 ln 2 + 2 JS
    monkeypatch.setattr(theory, "optimal_logit", lambda x, p, q: torch.zeros_like(x))
    rows = theory.check_value_at_optimum(pairs=(((0.0, 1.0), (1.0, 1.5)),))
    assert not rows[0].passed and rows[0].value == pytest.approx(-2 * math.log(2))


def test_trained_discriminator_approaches_d_star():
    _all_pass(theory.check_optimal_discriminator())


def test_untrained_discriminator_fails_the_d_star_check():
    rows = theory.check_optimal_discriminator(steps=0)
    assert not rows[0].passed  # max |D - D*|


def test_penalised_estimate_limits():
    # equal variances: W1 = |mean difference|; a huge λ removes the penalty's bias
    w1, estimate = theory.penalised_estimate((0.0, 1.0), (3.0, 1.0), gp_weight=1e7)
    assert w1 == pytest.approx(3.0, rel=1e-6) and estimate == pytest.approx(3.0, rel=1e-4)
    w1, estimate = theory.penalised_estimate((0.0, 1.0), (1.0, 1.5), gp_weight=10.0)
    assert estimate > w1 * 1.01  # with λ = 10 the critic overestimates W1


def test_wgan_gp_critic_recovers_w1_within_10_percent():
    _all_pass(theory.check_wasserstein_duality())


def test_untrained_critic_fails_the_w1_check():
    assert not theory.check_wasserstein_duality(steps=0)[0].passed


def test_theory_command_prints_a_table_and_exit_status(monkeypatch, capsys):
    assert cli.main(["theory", "--quick"]) == 0
    out = capsys.readouterr().out
    assert "V(D*, G) = -2 ln 2 + 2 JS" in out and "checks passed" in out and "FAIL" not in out
    failing = theory.CheckResult("broken", 1.0, 0.0, 1.0, 0.1)
    monkeypatch.setattr(theory, "run_checks", lambda quick, seed: [failing])
    assert cli.main(["theory"]) == 1
    assert "FAIL" in capsys.readouterr().out


def test_linear_vae_elbo_bounded_by_and_reaches_the_ppca_likelihood():
    rows = theory.check_linear_vae()
    _all_pass(rows)
    assert rows[2].error < 0.01 and rows[2].value <= rows[2].reference


def test_ppca_max_log_likelihood_is_the_likelihood_at_the_closed_form_optimum():
    x = theory.ppca_data(n=500, d=4, k=1, seed=3)
    centered = x - x.mean(0)
    values, vectors = torch.linalg.eigh(centered.T @ centered / x.shape[0])
    sigma2 = values[:-1].mean()  # eigh sorts ascending: the top eigenvalue is last
    w = vectors[:, -1:] * (values[-1] - sigma2).sqrt()
    marginal = torch.distributions.MultivariateNormal(x.mean(0), w @ w.T + sigma2 * torch.eye(4, dtype=x.dtype))
    assert theory.ppca_max_log_likelihood(x, 1) == pytest.approx(float(marginal.log_prob(x).mean()), abs=1e-10)


def test_linear_vae_checks_can_fail(monkeypatch):
    assert not theory.check_linear_vae(steps=0)[2].passed  # untrained: far from the maximum
    monkeypatch.setattr(theory, "ppca_max_log_likelihood", lambda x, k: -100.0)  # a bound the ELBO exceeds
    assert not theory.check_linear_vae(steps=0)[0].passed
