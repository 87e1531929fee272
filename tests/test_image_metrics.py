"""fastgan.train.image_metrics: the digits classifier (accuracy, determinism, cache), the
Fréchet distance against its closed form, and the metrics on real, collapsed and blurred
digits; the GAN job logs them on digits."""
import json
import math
import os

import pytest
import torch

from fastgan.train import image_metrics as im
from fastgan.train.data import DataSampler
from fastgan.train.loop import TrainConfig, train


def _read_json(folder, name):
    with open(os.path.join(folder, name)) as f:
        return json.load(f)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def metrics():
    return im.DigitsMetrics(DataSampler("digits", seed=11).sample(1500))


def test_classifier_accuracy_on_the_held_out_split():
    train_x, _, held_x, _ = im.digits_split()
    assert len(held_x) == 359 and len(train_x) + len(held_x) == 1797
    assert im.held_out_accuracy() >= 0.95


def test_classifier_is_deterministic_and_cached_on_disk(tmp_path, monkeypatch):
    monkeypatch.setenv("FASTGAN_CACHE", str(tmp_path))
    im.digits_classifier.cache_clear()
    try:
        built = im.digits_classifier()
        path = tmp_path / f"digits-classifier-v{im.CACHE_VERSION}.pt"
        assert path.is_file()
        im.digits_classifier.cache_clear()
        loaded = im.digits_classifier()  # from the file
        retrained = im.train_classifier()
        for a, b, c in zip(built.state_dict().values(), loaded.state_dict().values(),
                           retrained.state_dict().values()):
            assert torch.equal(a, b) and torch.equal(a, c)
        path.write_bytes(b"FASTGAN-CHECKPOINT 1 " + b"0" * 64 + b"\nbroken")  # corrupted: rebuilt
        im.digits_classifier.cache_clear()
        rebuilt = im.digits_classifier()
        assert all(torch.equal(a, b) for a, b in zip(built.state_dict().values(), rebuilt.state_dict().values()))
    finally:
        im.digits_classifier.cache_clear()


def test_building_or_loading_the_classifier_leaves_the_global_rng_alone(tmp_path, monkeypatch):
    """A run's first evaluation builds the classifier: drawing from the training run's RNG
    there would make a resumed run differ from a straight one."""
    monkeypatch.setenv("FASTGAN_CACHE", str(tmp_path))
    try:
        for source in ("trained", "loaded from the file"):
            im.digits_classifier.cache_clear()
            state = torch.get_rng_state()
            im.digits_classifier()
            assert torch.equal(torch.get_rng_state(), state), source
    finally:
        im.digits_classifier.cache_clear()


def test_frechet_distance_matches_the_closed_form_for_commuting_covariances():
    g = torch.Generator().manual_seed(3)
    rotation, _ = torch.linalg.qr(torch.randn(6, 6, generator=g, dtype=torch.float64))
    s1, s2 = torch.rand(6, generator=g, dtype=torch.float64) + 0.1, torch.rand(6, generator=g, dtype=torch.float64)
    mu1, mu2 = torch.randn(6, generator=g, dtype=torch.float64), torch.randn(6, generator=g, dtype=torch.float64)
    cov1, cov2 = rotation @ torch.diag(s1 ** 2) @ rotation.T, rotation @ torch.diag(s2 ** 2) @ rotation.T
    expected = float((mu1 - mu2).square().sum() + (s1 - s2).square().sum())
    assert im.frechet_distance(mu1, cov1, mu2, cov2) == pytest.approx(expected, rel=1e-9, abs=1e-9)
    assert im.frechet_distance(mu1, cov1, mu1, cov1) == pytest.approx(0.0, abs=1e-9)


def test_real_digits_against_a_collapsed_and_a_blurred_set(metrics):
    real = metrics(DataSampler("digits", seed=12).sample(1500))
    assert real["classes"] == 10 and real["class_kl"] < 0.02 and real["confidence"] > 0.95 and real["fd"] < 5

    _, _, held_x, held_y = im.digits_split()
    collapsed = metrics(held_x[held_y == 3][:1].repeat(500, 1, 1, 1).float())
    assert collapsed["classes"] == 1 and collapsed["class_kl"] == pytest.approx(math.log(10))
    assert collapsed["fd"] > 50 * real["fd"]

    images = DataSampler("digits", seed=12).sample(1500)
    kernel = torch.full((1, 1, 3, 3), 1 / 9)
    blurred = metrics(torch.nn.functional.conv2d(images, kernel, padding=1))
    assert blurred["confidence"] < real["confidence"] - 0.1 and blurred["fd"] > 10 * real["fd"]


def test_bad_images_and_non_finite_samples(metrics):
    with pytest.raises(ValueError, match=r"images must be \(N, 1, 8, 8\)"):
        metrics(torch.zeros(4, 64))
    with pytest.raises(ValueError, match="at least 2 samples"):
        metrics(torch.zeros(1, 1, 8, 8))
    poisoned = torch.zeros(4, 1, 8, 8)
    poisoned[2, 0, 3, 3] = math.nan
    assert all(math.isnan(v) for v in metrics(poisoned).values())


def test_gan_runs_on_digits_log_the_image_metrics(tmp_path):
    config = TrainConfig(recipe="gan", data="digits", steps=2, interval=2, out=str(tmp_path / "gan"), device="cpu",
                         batch_size=16, eval_samples=200, plots=False)
    summary = train(config, progress=False, log=None)
    record = _read_json(config.out, "log.json")["records"][-1]
    for key in ("classes", "class_kl", "fd", "confidence"):
        assert math.isfinite(record[key]) and summary["final"][key] == record[key]
