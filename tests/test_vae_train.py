"""fastgan.train.vae: VAE and VAE/GAN training runs, the ELBO against eager formulas,
bit-for-bit resume, the VAE/GAN gradient routing and the command line's refusals."""
import json
import math
import os

import pytest
import torch

from fastgan import models
from fastgan.train import checkpoint as ckpt
from fastgan.train import cli, vae
from fastgan.train.loop import TrainConfig, train


def _read_json(folder, name):
    with open(os.path.join(folder, name)) as f:
        return json.load(f)


def _read_bytes(folder, name):
    with open(os.path.join(folder, name), "rb") as f:
        return f.read()


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny nets: see conftest.one_thread


def _config(tmp_path, recipe="vae", data="digits", steps=4, **kw):
    return TrainConfig(recipe=recipe, data=data, steps=steps, out=str(tmp_path / f"{recipe}-{data}"), device="cpu",
                       hidden=32, batch_size=32, interval=kw.pop("interval", 2), eval_samples=200, **kw)


@pytest.mark.parametrize("recipe,data", [("vae", "digits"), ("vae-gan", "digits"), ("vae", "8gaussians")])
def test_short_run_writes_finite_losses_metrics_and_plots(tmp_path, recipe, data):
    config = _config(tmp_path, recipe, data, plots=recipe == "vae")
    summary = train(config, progress=False, log=None)
    log = _read_json(config.out, "log.json")
    assert [r["step"] for r in log["records"]] == [2, 4] and summary["steps"] == 4
    losses = ("loss", "recon", "kl") if recipe == "vae" else ("enc_loss", "llike", "kl", "dec_loss", "g_loss", "d_loss")
    for record in log["records"]:
        for key in losses + ("w1", "recon_mse"):
            assert math.isfinite(record[key]), (key, record)
        assert record["kl"] >= 0
    final = summary["final"]
    if data == "digits":
        assert 1 <= final["classes"] <= 10 and 0 <= final["class_kl"] <= math.log(10) + 1e-9
        assert final["fd"] > 0 and 0.1 <= final["confidence"] <= 1
    else:
        assert "modes" in final and "classes" not in final
    assert ("dual_estimate" in final) == (recipe == "vae-gan")
    if recipe == "vae":
        for name in ("samples.png", "reconstructions.png", "curves.png"):
            assert _read_bytes(config.out, name)[:4] == b"\x89PNG"


def test_vae_learns_digits_quickly(tmp_path):
    """60 steps lower the negative ELBO of a fresh batch (a loss that cannot fail to fall is
    not tested: the first interval's mean is compared with the last)."""
    summary = train(_config(tmp_path, steps=60, interval=20, plots=False), progress=False, log=None)
    records = _read_json(summary["out"], "log.json")["records"]
    assert records[-1]["loss"] < 0.8 * records[0]["loss"]


def test_negative_elbo_matches_the_eager_formula():
    torch.manual_seed(0)
    model = vae.VAE(models.digits_encoder(4, 8), models.digits_decoder(4, 8), images=True, data_shape=(1, 8, 8))
    x = torch.rand(5, 1, 8, 8) * 2 - 1
    torch.manual_seed(1)
    loss, recon, kl = model.negative_elbo(x, beta=0.5)
    mu, logvar = model.encoder(x)
    torch.manual_seed(1)
    logits = model.decoder(mu + (logvar / 2).exp() * torch.randn(mu.shape))
    target = (x + 1) / 2
    eager_recon = (torch.nn.functional.softplus(logits) - target * logits).flatten(1).sum(1).mean()
    eager_kl = 0.5 * (mu.square() + logvar.exp() - 1 - logvar).sum(1).mean()
    torch.testing.assert_close(recon, eager_recon, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(kl, eager_kl, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(loss, eager_recon + 0.5 * eager_kl, rtol=1e-5, atol=1e-5)

    toy = vae.VAE(models.mlp_encoder(2, 2, 16, 2), models.mlp_generator(2, 2, 16, 2), images=False, data_shape=(2,),
                  learned_variance=True)
    with torch.no_grad():
        toy.decoder_logvar.copy_(torch.tensor([-1.0, 0.5]))
    x = torch.randn(6, 2)
    torch.manual_seed(2)
    loss, recon, kl = toy.negative_elbo(x)
    mu, logvar = toy.encoder(x)
    torch.manual_seed(2)
    mean = toy.decoder(mu + (logvar / 2).exp() * torch.randn(mu.shape))
    lv = toy.decoder_logvar
    eager = 0.5 * (math.log(2 * math.pi) + lv + (x - mean).square() / lv.exp()).sum(1).mean()
    torch.testing.assert_close(recon, eager, rtol=1e-5, atol=1e-5)


def _vae_gan(seed=0):
    torch.manual_seed(seed)
    model = vae.VAE(models.digits_encoder(4, 8), models.digits_decoder(4, 8), images=True, data_shape=(1, 8, 8))
    return model, models.digits_critic(8), torch.rand(6, 1, 8, 8) * 2 - 1


def _grads(model, disc, x, gamma):
    torch.manual_seed(5)  # the same ε and prior z on every call
    return vae.vae_gan_gradients(model, disc, x, gamma=gamma)


def test_gan_loss_never_reaches_the_encoder():
    """The discriminator's last layer enters only the GAN terms: changing it changes the
    decoder's and discriminator's gradients but not the encoder's; γ (the weight of
    L_llike in the decoder's loss) changes neither the encoder's nor the discriminator's."""
    model, disc, x = _vae_gan()
    enc, dec, dis, stats = _grads(model, disc, x, gamma=0.1)
    assert all(torch.isfinite(v) for v in stats.values())
    with torch.no_grad():
        disc[-1].weight.mul_(-3.0)
        disc[-1].bias.add_(1.0)
    enc2, dec2, dis2, _ = _grads(model, disc, x, gamma=0.1)
    for a, b in zip(enc, enc2):
        assert torch.equal(a, b)
    assert any(not torch.allclose(a, b) for a, b in zip(dec, dec2))
    assert any(not torch.allclose(a, b) for a, b in zip(dis, dis2))
    enc3, dec3, dis3, _ = _grads(model, disc, x, gamma=10.0)
    for a, b in zip(enc2, enc3):
        assert torch.equal(a, b)
    for a, b in zip(dis2, dis3):
        assert torch.equal(a, b)
    assert any(not torch.allclose(a, b) for a, b in zip(dec2, dec3))


def test_vae_gan_encoder_gradient_is_that_of_kl_plus_feature_reconstruction():
    model, disc, x = _vae_gan(1)
    enc, _, _, _ = _grads(model, disc, x, gamma=1.0)
    torch.manual_seed(5)
    mu, logvar = model.encoder(x)
    x_rec = torch.tanh(model.decoder(mu + (logvar / 2).exp() * torch.randn(mu.shape)) / 2)
    f_real, f_rec = disc[:-1](x).detach(), disc[:-1](x_rec)
    llike = 0.5 * (math.log(2 * math.pi) + (f_real - f_rec).square()).sum(1).mean()
    kl = 0.5 * (mu.square() + logvar.exp() - 1 - logvar).sum(1).mean()
    expected = torch.autograd.grad(llike + kl, tuple(model.encoder.parameters()))
    for a, b in zip(enc, expected):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("recipe,data", [("vae-gan", "digits"), ("vae", "8gaussians")])
def test_resume_is_bit_for_bit(tmp_path, recipe, data):
    straight = _config(tmp_path / "a", recipe, data, steps=4, plots=False, lr_decay="linear")
    train(straight, progress=False, log=None)
    half = _config(tmp_path / "b", recipe, data, steps=4, plots=False, lr_decay="linear", stop_after=3)
    train(half, progress=False, log=None)
    assert ckpt.load_checkpoint(os.path.join(half.out, "checkpoint.pt"))["step"] == 3
    train(_config(tmp_path / "b", recipe, data, steps=4, plots=False, lr_decay="linear"), resume=True,
          progress=False, log=None)
    a = ckpt.load_checkpoint(os.path.join(straight.out, "checkpoint.pt"))
    b = ckpt.load_checkpoint(os.path.join(half.out, "checkpoint.pt"))
    assert a["step"] == b["step"] == 4
    nets = ("generator", "critic") if recipe == "vae-gan" else ("generator",)
    for net in nets:
        assert a[net].keys() == b[net].keys() and len(a[net]) > 0
        for key in a[net]:
            assert torch.equal(a[net][key], b[net][key]), (net, key)
    for opt in ("opt_g", "opt_d") if recipe == "vae-gan" else ("opt_g",):
        for index, state in a[opt]["state"].items():
            for key, value in state.items():
                assert torch.equal(torch.as_tensor(value), torch.as_tensor(b[opt]["state"][index][key]))
    assert torch.equal(a["rng"]["torch"], b["rng"]["torch"])
    records_a, records_b = json.loads(a["records"]), json.loads(b["records"])
    assert [r["step"] for r in records_b] == [2, 3, 4]
    for key in ("w1", "recon_mse", "fd", "modes"):  # the evaluation (interval means differ: 3-4 vs 2-4)
        assert records_a[-1].get(key) == records_b[-1].get(key), key


def test_resume_refuses_a_gan_checkpoint(tmp_path):
    config = _config(tmp_path, "vae", "8gaussians", steps=2, plots=False)
    train(config, progress=False, log=None)
    gan = TrainConfig(**{**config.__dict__, "recipe": "gan"})
    with pytest.raises(ckpt.CheckpointError, match="recipe='vae'"):
        train(gan, resume=True, progress=False, log=None)


def test_python_api_refuses_capture_and_unknown_recipes(tmp_path):
    with pytest.raises(ValueError, match="drop --capture"):
        train(_config(tmp_path, capture=True), progress=False, log=None)
    with pytest.raises(ValueError, match="recipe must be one of"):
        vae.get_vae_recipe("vae-wgan")


@pytest.mark.parametrize("flags,message", [
    (["--n-critic", "2"], "--n-critic applies to the GAN recipes, not vae"),
    (["--nproc", "2"], "--nproc applies to the GAN recipes, not vae"),
    (["--gp-weight", "1"], "--gp-weight applies to --recipe wgan-gp, not vae"),
    (["--r1-gamma", "1"], "--r1-gamma applies to --recipe gan, not vae"),
    (["--reg-every", "2"], "--reg-every applies to a penalty"),
    (["--lr", "0"], "--lr: must be finite, > 0"),
])
def test_bad_flags_exit_2_naming_the_flag(tmp_path, capsys, flags, message):
    argv = ["train", "--recipe", "vae", "--data", "digits", "--out", str(tmp_path / "run"), "--no-progress", *flags]
    with pytest.raises(SystemExit) as info:
        cli.main(argv)
    assert info.value.code == 2
    assert message in capsys.readouterr().err


def test_cli_trains_a_vae(tmp_path):
    out = tmp_path / "run"
    assert cli.main(["train", "--recipe", "vae-gan", "--data", "8gaussians", "--steps", "2", "--hidden", "16",
                     "--eval-samples", "100", "--out", str(out), "--no-progress", "--no-plots", "--device", "cpu",
                     "--threads", "1"]) == 0
    summary = _read_json(out, "summary.json")
    assert summary["recipe"] == "vae-gan" and summary["steps"] == 2 and summary["gamma"] == vae.VAE_RECIPES[
        "vae-gan"].gamma
