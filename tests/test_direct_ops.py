"""Every registered op checks its own arguments: a bad direct ``torch.ops.fastgan.*`` or
``torch.ops.fastgan_triton.*`` call raises an error naming the argument, and never reads
or writes out of bounds. The cases run in a child process, so that a crash fails its own
case instead of the test run."""
import json
import os
import subprocess
import sys

import pytest
from conftest import backends_for

NAMESPACES = ["fastgan"] + (["fastgan_triton"] if "triton" in backends_for("cpu") else [])

# name -> (op, code building the arguments with t(*shape, dtype=...), the argument the error names)
CASES = {
    "interpolate_short_eps": ("interpolate", "t(4, 3), t(4, 3), t(2)", "eps"),
    "interpolate_short_fake": ("interpolate", "t(4, 3), t(2, 3), t(4)", "fake"),
    "interpolate_eps_dtype": ("interpolate", "t(4, 3), t(4, 3), t(4, dtype=torch.float64)", "eps"),
    "interpolate_empty": ("interpolate", "t(0, 3), t(0, 3), t(0)", "real"),
    "interpolate_meta_fake": ("interpolate", "t(4, 3), t(4, 3, device='meta'), t(4)", "fake"),
    "interpolate_backward_short_eps": ("interpolate_backward", "t(4, 3), t(3), True, True", "eps"),
    "penalty_reduction_code": ("grad_norm_penalty", "t(4, 3), 1.0, 1.0, False, 7", "reduction"),
    "penalty_int_grads": ("grad_norm_penalty", "torch.ones(4, 3, dtype=torch.int32), 1.0, 1.0, False, 1", "grads"),
    "penalty_backward_empty_grad_loss": (
        "grad_norm_penalty_backward", "t(0), t(4, 3), t(4), 1.0, 1.0, False, 1", "grad_loss"),
    "penalty_backward_short_norms": (
        "grad_norm_penalty_backward", "t(), t(4, 3), t(2), 1.0, 1.0, False, 1", "norms"),
    "penalty_backward_reduction_code": (
        "grad_norm_penalty_backward", "t(), t(4, 3), t(4), 1.0, 1.0, False, 3", "reduction"),
    "gan_loss_reduction_zero": ("gan_loss", "t(8), t(8), 0, 1, 0", "reduction"),
    "gan_loss_reduction_three": ("gan_loss", "t(8), t(8), 0, 1, 3", "reduction"),
    "gan_loss_term_code": ("gan_loss", "t(8), t(8), 10, 1, 1", "x_term"),
    "gan_loss_y_dtype": ("gan_loss", "t(8), t(8, dtype=torch.float64), 0, 1, 1", "y"),
    "gan_loss_meta_y": ("gan_loss", "t(8), t(8, device='meta'), 0, 1, 1", "y"),
    "gan_loss_backward_empty_grad": ("gan_loss_backward", "t(0), t(8), t(8), t(8), t(8), 0, 1, 1", "grad"),
    "gan_loss_backward_short_x_grad": ("gan_loss_backward", "t(), t(3), t(8), t(8), t(8), 0, 1, 1", "x_grad"),
    "gan_loss_pointwise_short_grad": ("gan_loss_pointwise", "t(8), t(3), 0, 1", "grad"),
    "gan_loss_pointwise_order": ("gan_loss_pointwise", "t(8), None, 0, 3", "order"),
    "relativistic_kind_code": ("relativistic_loss", "t(8), t(8), 2, 1", "kind"),
    "relativistic_negative_kind": ("relativistic_loss", "t(8), t(8), -1, 1", "kind"),
    "relativistic_reduction_none": ("relativistic_loss", "t(8), t(8), 0, 0", "reduction"),
    "relativistic_pair_short_y": ("relativistic_loss", "t(8), t(3), 0, 1", "y"),
    "relativistic_y_dtype": ("relativistic_loss", "t(8), t(8, dtype=torch.float64), 1, 1", "y"),
    "relativistic_meta_y": ("relativistic_loss", "t(8), t(8, device='meta'), 1, 1", "y"),
    "bias_act_short_bias": ("bias_act", "t(4, 8), t(3), 2, 0.2, 1.0, 1", "bias"),
    "bias_act_act_id": ("bias_act", "t(4, 8), t(8), 7, 0.2, 1.0, 1", "activation"),
    "bias_act_negative_act_id": ("bias_act", "t(4, 8), t(8), -1, 0.2, 1.0, 1", "activation"),
    "bias_act_dim": ("bias_act", "t(4, 8), t(8), 2, 0.2, 1.0, 5", "dim"),
    "bias_act_grad_short_y": ("bias_act_grad", "t(4, 8), None, None, t(4, 3), 2, 0.2, 1.0, 1, True", "y"),
    "bias_act_grad_db_dim": ("bias_act_grad", "t(4, 8), None, None, t(4, 8), 2, 0.2, 1.0, 2, True", "dim"),
    "clip_mixed_dtypes": ("clip_", "[t(8, dtype=torch.float64), t(8)], 0.1", "tensors"),
    "clip_meta_tensor": ("clip_", "[t(8), t(8, device='meta')], 0.1", "tensors"),
    "rmsprop_short_list": (
        "rmsprop_clip_", "[t(8), t(8)], [t(8), t(8)], [t(8)], [], [], 0.1, 0.99, 1e-8, 0.0, 0.0, False, False, 0.1",
        "square_avgs"),
    "rmsprop_short_state": (
        "rmsprop_clip_", "[t(4096)], [t(4096)], [t(8)], [], [], 0.1, 0.99, 1e-8, 0.0, 0.0, False, False, 0.1",
        "square_avgs"),
    "rmsprop_short_grads_list": (
        "rmsprop_clip_", "[t(8), t(8)], [t(8)], [t(8), t(8)], [], [], 0.1, 0.99, 1e-8, 0.0, 0.0, False, False, 0.1",
        "grads"),
    "rmsprop_lr_tensor_two_elements": (
        "rmsprop_clip_", "[t(8)], [t(8)], [t(8)], [], [], 0.1, 0.99, 1e-8, 0.0, 0.0, False, False, 0.1, t(2)",
        "lr_tensor"),
    "rmsprop_lr_tensor_integer": (
        "rmsprop_clip_", "[t(8)], [t(8)], [t(8)], [], [], 0.1, 0.99, 1e-8, 0.0, 0.0, False, False, 0.1, "
        "torch.ones(1, dtype=torch.int64)", "lr_tensor"),
    "rmsprop_lr_tensor_meta": (
        "rmsprop_clip_", "[t(8)], [t(8)], [t(8)], [], [], 0.1, 0.99, 1e-8, 0.0, 0.0, False, False, 0.1, "
        "t(1, device='meta')", "lr_tensor"),
    "perturb_short_noise": ("perturb", "t(4, 3), t(4, 2), 0.1", "noise"),
    "perturb_noise_dtype": ("perturb", "t(4, 3), t(4, 3, dtype=torch.float64), 0.1", "noise"),
    "perturb_sigma_zero": ("perturb", "t(4, 3), t(4, 3), 0.0", "sigma"),
    "perturb_empty": ("perturb", "t(0, 3), t(0, 3), 0.1", "x"),
    "fd_penalty_short_outputs": ("finite_difference_penalty", "t(4, 1), t(3, 1), 0.1, 1.0", "outputs"),
    "fd_penalty_meta_outputs": ("finite_difference_penalty", "t(4), t(4, device='meta'), 0.1, 1.0", "outputs"),
    "fd_penalty_int_perturbed": (
        "finite_difference_penalty", "torch.ones(4, dtype=torch.int32), torch.ones(4, dtype=torch.int32), 0.1, 1.0",
        "perturbed"),
    "fd_penalty_sigma_nan": ("finite_difference_penalty", "t(4), t(4), float('nan'), 1.0", "sigma"),
    "fd_penalty_weight_negative": ("finite_difference_penalty", "t(4), t(4), 0.1, -1.0", "weight"),
    "fd_penalty_backward_grad_loss_shape": (
        "finite_difference_penalty_backward", "t(4), t(4), t(4), 0.1, 1.0, True, True", "grad_loss"),
    "fd_penalty_backward_short_outputs": (
        "finite_difference_penalty_backward", "t(), t(4), t(2), 0.1, 1.0, True, True", "outputs"),
    "vae_loss_likelihood_code": ("vae_loss", "t(4, 3), t(4, 3), None, t(4, 2), t(4, 2), 2, 1.0, 1", "likelihood"),
    "vae_loss_reduction_code": ("vae_loss", "t(4, 3), t(4, 3), None, t(4, 2), t(4, 2), 0, 1.0, 3", "reduction"),
    "vae_loss_negative_beta": ("vae_loss", "t(4, 3), t(4, 3), None, t(4, 2), t(4, 2), 0, -1.0, 1", "beta"),
    "vae_loss_short_target": ("vae_loss", "t(4, 3), t(4, 2), None, None, None, 0, 1.0, 1", "target"),
    "vae_loss_short_logvar": ("vae_loss", "None, None, None, t(4, 3), t(4, 2), 0, 1.0, 1", "logvar"),
    "vae_loss_mu_batch": ("vae_loss", "t(4, 3), t(4, 3), None, t(3, 2), t(3, 2), 0, 1.0, 1", "mu"),
    "vae_loss_logvar_alone": ("vae_loss", "None, None, None, t(4, 3), None, 0, 1.0, 1", "logvar"),
    "vae_loss_recon_logvar_bernoulli": ("vae_loss", "t(4, 3), t(4, 3), t(4, 3), None, None, 0, 1.0, 1",
                                        "recon_logvar"),
    "vae_loss_int_mu": ("vae_loss", "None, None, None, torch.ones(4, 3, dtype=torch.int32), t(4, 3), 0, 1.0, 1",
                        "mu"),
    "vae_loss_meta_logvar": ("vae_loss", "None, None, None, t(4, 3), t(4, 3, device='meta'), 0, 1.0, 1", "logvar"),
    "vae_loss_empty_recon": ("vae_loss", "t(0, 3), t(0, 3), None, None, None, 0, 1.0, 1", "recon"),
    "vae_loss_backward_short_grad": ("vae_loss_backward", "t(3), t(4, 3), t(0), t(4, 2), t(4, 2), 0", "grad_loss"),
    "vae_loss_backward_rows": ("vae_loss_backward", "t(), t(4, 3), t(0), t(3, 2), t(3, 2), 1", "mu_grad"),
    "vae_loss_backward_dtype": ("vae_loss_backward", "t(), t(4, 3, dtype=torch.float64), t(0), t(0), t(0), 1",
                                "recon_grad"),
    "vae_reparameterize_short_eps": ("vae_reparameterize", "t(4, 3), t(4, 3), t(4, 2)", "eps"),
    "vae_reparameterize_meta_logvar": ("vae_reparameterize", "t(4, 3), t(4, 3, device='meta'), t(4, 3)", "logvar"),
    "vae_reparameterize_backward_short_z": ("vae_reparameterize_backward", "t(4, 3), t(3, 3), t(4, 3)", "z"),
}

CHILD = r"""
import json, sys, torch, fastgan.ops
namespace = getattr(torch.ops, sys.argv[1])
t = lambda *shape, dtype=torch.float32, device="cpu": torch.randn(shape, dtype=dtype, device=device)
for name, op, args in json.loads(sys.argv[2]):
    print(json.dumps({"case": name, "started": True}), flush=True)
    try:
        getattr(namespace, op)(*eval("(" + args + ",)"))
        result = {"case": name, "error": None}
    except Exception as exc:
        result = {"case": name, "error": type(exc).__name__, "message": str(exc)}
    print(json.dumps(result), flush=True)
"""


@pytest.fixture(scope="module")
def outcomes():
    """{(namespace, case): outcome}: each namespace's cases in one child process, restarted
    after the case that crashed it (outcome "crashed")."""
    results = {}
    env = {**os.environ}
    for namespace in NAMESPACES:
        pending = [(name, op, args) for name, (op, args, _) in CASES.items()]
        while pending:
            proc = subprocess.run([sys.executable, "-c", CHILD, namespace, json.dumps(pending)], capture_output=True,
                                  text=True, env=env, timeout=600)
            started = None
            for line in proc.stdout.splitlines():
                record = json.loads(line)
                if record.get("started"):
                    started = record["case"]
                else:
                    results[(namespace, record["case"])] = record
                    started = None
            if started is not None:  # the child died inside this case
                results[(namespace, started)] = {"case": started, "error": "crashed",
                                                 "message": f"exit {proc.returncode}: {proc.stderr[-500:]}"}
            done = {case for (ns, case) in results if ns == namespace}
            if proc.returncode != 0 and started is None:
                raise AssertionError(proc.stderr[-2000:])
            pending = [item for item in pending if item[0] not in done]
    return results


@pytest.mark.parametrize("namespace", NAMESPACES)
@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_direct_call_is_a_clear_error(outcomes, namespace, case):
    outcome = outcomes[(namespace, case)]
    argument = CASES[case][2]
    assert outcome["error"] in ("RuntimeError", "ValueError", "TypeError", "IndexError"), outcome
    assert argument in outcome["message"], outcome
