"""The CPU kernels' float16 element type (csrc/cpu_types.h): its conversions to and from
float are bit arithmetic of fastgan's own, so every float16 value, and float results
that round to ties, overflow and subnormals, are checked against torch's conversions."""
import pytest
import torch

from fastgan.ops import bias_act, clip_weights_

pytestmark = pytest.mark.usefixtures("one_thread")


def _every_half() -> torch.Tensor:
    """All 65536 float16 bit patterns (infinities, NaNs, subnormals and both zeros included)."""
    return torch.arange(-2**15, 2**15, dtype=torch.int32).to(torch.int16).view(torch.float16)


def _assert_same_halves(got: torch.Tensor, want: torch.Tensor) -> None:
    nan = want.isnan()
    assert torch.equal(got.isnan(), nan)
    assert torch.equal(got[~nan].view(torch.int16), want[~nan].view(torch.int16))


@pytest.mark.parametrize("gain", [1.0, -2.5, 0.7, 1 / 3, 1 + 2**-11, 1 - 2**-12, 4.2e-5, 1e5])
def test_float16_kernels_round_every_value_as_torch(gain):
    """y = float16(gain * float(x)) for every float16 x: gain 1 is the round trip, 1 + 2^-11
    puts every normal product exactly halfway between two halves (ties to even), 4.2e-5
    makes subnormals and 1e5 overflows to inf; the kernel adds its zero bias first, as
    the reference does (-0 + 0 = +0)."""
    x = _every_half()
    got = bias_act(x, None, "linear", gain=gain, backend="cpu")
    _assert_same_halves(got, ((x.float() + 0.0) * gain).half())


def test_float16_clipping_keeps_every_value_or_the_bound():
    """clip_weights_ on every float16 value: the value itself or the bound rounded to
    float16, NaN kept, as Tensor.clamp_."""
    x = _every_half()
    got = x.clone()
    clip_weights_([got], 0.1, backend="cpu")
    _assert_same_halves(got, x.clone().clamp_(-0.1, 0.1))
