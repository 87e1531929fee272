"""The integer codes that cross from Python to the C++ and Triton kernels (GAN-loss terms,
activations, reductions) agree in all three places: the C++ enums are read from csrc/."""
import importlib
import os
import re

import pytest

bias_act_ops = importlib.import_module("fastgan.ops.bias_act")  # (fastgan.ops.bias_act is also the function)
loss_ops = importlib.import_module("fastgan.ops.losses")
penalty_ops = importlib.import_module("fastgan.ops.penalty")

CSRC = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "csrc")


def cpp_enum(header: str, name: str) -> dict:
    """{enumerator: value} of `enum name` in csrc/header (explicit values only)."""
    with open(os.path.join(CSRC, header)) as f:
        text = f.read()
    body = re.search(r"enum\s+" + name + r"\s*:\s*\w+\s*\{(.*?)\};", text, re.S).group(1)
    body = re.sub(r"//[^\n]*", "", body)
    return {k: int(v) for k, v in re.findall(r"(\w+)\s*=\s*(-?\d+)", body)}


def test_gan_loss_terms_agree():
    cpp = cpp_enum("gan_loss_math.h", "GanTerm")
    python = {name: getattr(loss_ops, name) for name in ("SOFTPLUS_NEG", "SOFTPLUS", "NEG_SOFTPLUS",
                                                          "NEG_SOFTPLUS_NEG", "IDENTITY", "NEG_IDENTITY",
                                                          "HINGE_REAL", "HINGE_FAKE", "HALF_SQUARE_ONE",
                                                          "HALF_SQUARE")}
    camel = {k: "k" + "".join(part.title() for part in k.lower().split("_")) for k in python}
    assert {k: cpp[camel[k]] for k in python} == python
    assert cpp["kGanTermCount"] == len(python)
    from fastgan.kernels import gan_loss as kernels

    assert {k: getattr(kernels, k) for k in python} == python
    assert kernels.SLOPES == {loss_ops.IDENTITY: 1, loss_ops.NEG_IDENTITY: -1}


def test_reductions_agree():
    gan = cpp_enum("gan_loss_math.h", "GanReduction")
    assert loss_ops.REDUCTIONS == {"none": gan["kReductionNone"], "mean": gan["kReductionMean"],
                                   "sum": gan["kReductionSum"]}
    penalty = cpp_enum("penalty_math.h", "PenaltyReduction")
    assert penalty_ops.REDUCTIONS == {"none": penalty["kPenaltyNone"], "mean": penalty["kPenaltyMean"],
                                      "sum": penalty["kPenaltySum"]}
    from fastgan.kernels import penalty as kernels

    assert kernels.REDUCTION_CODES == penalty_ops.REDUCTIONS


@pytest.mark.parametrize("name", bias_act_ops.ACTIVATIONS)
def test_activation_ids_agree(name):
    cpp = cpp_enum("bias_act_math.h", "Act")
    assert cpp["kNumActs"] == len(bias_act_ops.ACTIVATIONS)
    from fastgan.kernels import bias_act as kernels

    act_id = bias_act_ops._ACTS[name][0]
    assert cpp["k" + ("Lrelu" if name == "lrelu" else name.title())] == act_id
    assert getattr(kernels, name.upper()) == act_id


def test_relativistic_kinds_agree():
    cpp = cpp_enum("gan_loss_math.h", "RelativisticKind")
    assert loss_ops.RELATIVISTIC_KINDS == {"relativistic": cpp["kRelativisticPair"],
                                           "relativistic_average": cpp["kRelativisticAverage"]}
    assert (loss_ops.RELATIVISTIC_PAIR, loss_ops.RELATIVISTIC_AVERAGE) == (cpp["kRelativisticPair"],
                                                                          cpp["kRelativisticAverage"])
    assert cpp["kRelativisticKindCount"] == len(loss_ops.RELATIVISTIC_KINDS)
    from fastgan.kernels import gan_loss as kernels

    assert (kernels.RELATIVISTIC_PAIR, kernels.RELATIVISTIC_AVERAGE) == (loss_ops.RELATIVISTIC_PAIR,
                                                                        loss_ops.RELATIVISTIC_AVERAGE)


def test_vae_codes_agree():
    vae_ops = importlib.import_module("fastgan.ops.vae")
    likelihoods = cpp_enum("vae_math.h", "VaeLikelihood")
    assert vae_ops.LIKELIHOODS == {"bernoulli": likelihoods["kVaeBernoulli"], "gaussian": likelihoods["kVaeGaussian"]}
    assert likelihoods["kVaeLikelihoodCount"] == len(vae_ops.LIKELIHOODS)
    reductions = cpp_enum("vae_math.h", "VaeReduction")
    assert vae_ops.REDUCTIONS == {"none": reductions["kVaeNone"], "mean": reductions["kVaeMean"],
                                  "sum": reductions["kVaeSum"]}
    from fastgan.kernels import vae as kernels

    assert {"bernoulli": kernels.BERNOULLI, "gaussian": kernels.GAUSSIAN} == vae_ops.LIKELIHOODS
    assert kernels.REDUCTION_CODES == vae_ops.REDUCTIONS
