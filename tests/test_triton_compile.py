"""Every Triton kernel compiles for Hopper (sm_90) with the specialisations the JIT picks
for the arguments the real launchers pass (tests/triton_jit.py), on a machine without a
GPU: the interpreter accepts code that the compiler rejects, such as ``n.to(...)`` on a
count the JIT turned into the constant 1."""
import json
import os
import subprocess
import sys

import pytest

pytest.importorskip("triton")

HERE = os.path.dirname(os.path.abspath(__file__))
FLOAT_POINTERS = ("*fp32", "*bf16", "*fp16", "*fp64")


@pytest.fixture(scope="module")
def compiled():
    env = {**os.environ, "TRITON_INTERPRET": "0"}
    result = subprocess.run([sys.executable, os.path.join(HERE, "triton_jit.py")], capture_output=True, text=True,
                            env=env, timeout=1800)
    assert result.returncode == 0, result.stderr[-4000:]
    return [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]


def test_every_specialisation_compiles(compiled):
    failures = [record for record in compiled if "error" in record]
    assert not failures, json.dumps(failures[:5], indent=1)


def test_every_kernel_and_dtype_is_covered(compiled):
    kernels = {record["kernel"] for record in compiled}
    assert len(kernels) == 13, sorted(kernels)
    for kernel in kernels:
        pointer_types = {t for r in compiled if r["kernel"] == kernel for t in r["signature"].values()}
        assert set(FLOAT_POINTERS) <= pointer_types, (kernel, pointer_types)


def test_counts_of_one_are_specialised(compiled):
    # The case that broke on the H200: the launchers do pass counts of 1.
    specialised = {record["kernel"] for record in compiled if record["specialised"]}
    assert {"penalty._penalty_finish_kernel", "penalty._penalty_backward_kernel", "gan_loss._gan_loss_fwd_kernel",
            "gan_loss._gan_loss_bwd_kernel"} <= specialised


def test_aligned_float32_uses_16_byte_loads(compiled):
    # With every pointer 16-byte aligned and every count a multiple of 16 (the JIT's
    # alignment attributes), float32 data must move in 16-byte vectors.
    checked = 0
    for record in compiled:
        args = record["signature"]
        if "*fp32" not in args.values() or any(t in ("*bf16", "*fp16", "*fp64") for t in args.values()):
            continue
        if record["specialised"] or set(args) - {k for k, t in args.items() if t.startswith("fp")} != set(
                record["aligned16"]):
            continue
        checked += 1
        assert record["v4_loads"] > 0, record
    assert checked >= 20


def test_no_approximate_sqrt_or_division(compiled):
    # torch.sqrt and true division round to nearest; the kernels must too.
    for record in compiled:
        assert record.get("approx_sqrt", 0) == 0 and record.get("approx_div", 0) == 0, record
