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
FLOAT_TYPES = ("fp32", "bf16", "fp16", "fp64")
# reads one partial sum per (row, tile): not a stream of the data
NOT_STREAMING = {"penalty._penalty_finish_kernel"}
ELEMENT_COUNTS = {"n", "nx", "ny", "row_len"}  # integer arguments that count the elements a launch moves


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


def _dtypes(record) -> set:
    """The floating dtypes a specialisation moves: its typed pointers', or its DTYPE
    constexpr (the multi-tensor kernels take addresses as integers)."""
    types = {t[1:] for t in record["signature"].values() if t.startswith("*") and t[1:] in FLOAT_TYPES}
    return types | ({record["constexprs"]["DTYPE"]} if "DTYPE" in record["constexprs"] else set())


def test_every_kernel_and_dtype_is_covered(compiled):
    kernels = {record["kernel"] for record in compiled}
    assert len(kernels) == 22, sorted(kernels)
    for kernel in kernels:
        covered = set().union(*(_dtypes(r) for r in compiled if r["kernel"] == kernel))
        assert set(FLOAT_TYPES) <= covered, (kernel, covered)


def test_counts_of_one_are_specialised(compiled):
    # The case that broke on the H200: the launchers do pass counts of 1.
    specialised = {record["kernel"] for record in compiled if record["specialised"]}
    assert {"penalty._penalty_finish_kernel", "penalty._penalty_backward_kernel", "gan_loss._gan_loss_fwd_kernel",
            "gan_loss._gan_loss_bwd_kernel"} <= specialised


def test_aligned_float32_uses_16_byte_loads(compiled):
    # With every pointer 16-byte aligned and every count a multiple of 16 (the JIT's
    # alignment attributes), float32 data must move in 16-byte vectors; an element count
    # of 1 (a constant) has no full block to vectorise. (A linear loss term's backward
    # only stores its constant: its vectors are stores.)
    checked, scalar_loads = set(), []
    for record in compiled:
        integral = {k for k, t in record["signature"].items() if not t.startswith("fp")}
        if _dtypes(record) != {"fp32"} or integral != set(record["aligned16"]):
            continue
        if set(record["specialised"]) & ELEMENT_COUNTS or record["kernel"] in NOT_STREAMING:
            continue
        checked.add(record["kernel"])
        scalar_loads.extend([record] if record["v4_loads"] + record["v4_stores"] == 0 else [])
    assert not scalar_loads, json.dumps(scalar_loads, indent=1)
    streaming = {record["kernel"] for record in compiled} - NOT_STREAMING
    assert checked == streaming, streaming - checked


def test_no_approximate_sqrt_or_division(compiled):
    # torch.sqrt and true division round to nearest; the kernels must too.
    for record in compiled:
        assert record.get("approx_sqrt", 0) == 0 and record.get("approx_div", 0) == 0, record
