"""Fused bias + activation (issue 4: bias_act with a fused double backward).

Three modes per shape, each against eager PyTorch (``x + b.view(...)`` then
``F.leaky_relu`` etc., differentiated by autograd):

- ``fwd``: ``y = act(x + b)``;
- ``fwd+bwd``: and ``dx, db`` for a given ``dy`` (a training step's backward);
- ``fwd+bwd+dbl``: ``dx`` with ``create_graph=True`` then the gradient of ``<dx, v>``
  with respect to ``dy``, ``x`` and ``b`` (what an R1 / WGAN-GP penalty's backward
  runs through every activation of the critic).

plus ``r1 critic``: one R1 penalty step (input gradient with ``create_graph``, then the
penalty's backward to the parameters) of the WGAN-GP toy critic built with
``nn.LeakyReLU`` versus the same critic rewritten by :func:`fastgan.nn.fuse_bias_act`.

Bytes (the floor): forward reads x and writes y; the backward reads dy and the saved
tensor (y for relu/lrelu/tanh/sigmoid, x for silu/elu) and writes dx (db summed on the
fly); lrelu's double backward reads v and y and writes d_dy.
``torch.compile`` (``--compile``) compiles the eager function for the first-order
modes (it refuses double backward).
"""
from typing import Callable, Iterator, List

import torch
import torch.nn.functional as F

import fastgan
from fastgan.models import mlp_critic
from fastgan.nn import fuse_bias_act
from fastgan.ops import bias_act

from .harness import Case, Variant

EAGER_ACTS = {
    "lrelu": lambda z: F.leaky_relu(z, 0.2),
    "tanh": torch.tanh,
    "silu": F.silu,
}
SAVES_X = {"silu"}
# (act, shape, dtype): CPU runs the first ones; CUDA all.
CPU_SHAPES = [(256, 512), (4096, 512), (64, 128, 32, 32), (16, 64, 128, 128)]
CUDA_SHAPES = CPU_SHAPES + [(16, 64, 256, 256)]


def _fastgan_backends(device: torch.device) -> List[str]:
    """fastgan's kernels for `device` (the interpreted Triton kernels are a test tool, not timed)."""
    return [b for b in fastgan.available_backends(device)
            if b != "reference" and not (b == "triton" and device.type == "cpu")]


def _eager_fn(act: str, ndim: int) -> Callable:
    f = EAGER_ACTS[act]
    view = [1] * ndim
    view[1] = -1

    def eager(x, b):
        return f(x + b.view(view))

    return eager


def _modes(name: str, act: str, x: torch.Tensor, b: torch.Tensor, fns, compiled, n_bytes_per_elem: int):
    """Cases for the three modes; fns: {variant: f(x, b)}; compiled: f or None."""
    n = x.numel()
    s = n_bytes_per_elem
    dy = torch.randn_like(x)
    v = torch.randn_like(x)
    dy_req = dy.clone().requires_grad_()
    info = {"shape": str(tuple(x.shape)), "act": act, "dtype": str(x.dtype).replace("torch.", "")}
    bias_bytes = b.numel() * b.element_size()

    def fwd(f):
        return lambda: f(x, b)

    def fwd_bwd(f):
        return lambda: torch.autograd.grad(f(x, b), (x, b), dy)

    def fwd_bwd_dbl(f):
        def run():
            (dx,) = torch.autograd.grad(f(x, b), x, dy_req, create_graph=True)
            return torch.autograd.grad(dx, (dy_req, x, b), v, allow_unused=True)
        return run

    first = {k: f for k, f in fns.items()}
    if compiled is not None:
        first["torch.compile"] = compiled
    yield Case("bias_act", f"fwd {act} {name}", 2 * n * s + bias_bytes,
               [Variant(k, fwd(f)) for k, f in first.items()], info=info)
    yield Case("bias_act", f"fwd+bwd {act} {name}", 5 * n * s + 2 * bias_bytes,
               [Variant(k, fwd_bwd(f)) for k, f in first.items()], info=info)
    dbl_bytes = (2 + 3 + 3) * n * s if act not in SAVES_X and act != "tanh" else (2 + 3 + 6) * n * s
    yield Case("bias_act", f"fwd+bwd+dbl {act} {name}", dbl_bytes + bias_bytes,
               [Variant(k, fwd_bwd_dbl(f)) for k, f in fns.items()], info=info)


def bias_act_cases(device: torch.device, with_compile: bool, sizes: str) -> Iterator[Case]:
    shapes = (CUDA_SHAPES if device.type == "cuda" else CPU_SHAPES)[: 2 if sizes == "small" else None]
    dtypes = [torch.float32] + ([torch.bfloat16] if device.type == "cuda" else [])
    plan = [("lrelu", shape, dtype) for dtype in dtypes for shape in shapes]
    if sizes != "small":  # the other saved-tensor kinds on one conv shape
        plan += [("tanh", (64, 128, 32, 32), torch.float32), ("silu", (64, 128, 32, 32), torch.float32)]
    backends = _fastgan_backends(device)
    for act, shape, dtype in plan:
        generator = torch.Generator(device=device).manual_seed(0)
        x = torch.randn(shape, device=device, dtype=dtype, generator=generator).requires_grad_()
        b = torch.randn(shape[1], device=device, dtype=dtype, generator=generator).requires_grad_()
        eager = _eager_fn(act, len(shape))
        fns = {"eager": eager}
        for backend in backends:
            fns[f"fastgan-{backend}"] = lambda x_, b_, be=backend, a=act: bias_act(x_, b_, a, backend=be)
        compiled = torch.compile(eager) if with_compile else None
        yield from _modes("x".join(map(str, shape)) + ("" if dtype == torch.float32 else " bf16"), act, x, b, fns,
                          compiled, x.element_size())
        del x, b, fns, compiled

    # One R1 step of the WGAN-GP toy critic: eager LeakyReLU vs fused (same weights).
    for batch in ([256] if sizes == "small" else [256, 4096]):
        with torch.device(device):
            critic = mlp_critic(2, 512, 3)
        real = torch.randn(batch, 2, device=device)
        variants = []
        for name, model in [("eager", critic)] + [
                (f"fastgan-{b}", fuse_bias_act(critic, backend=b)) for b in backends]:
            params = list(model.parameters())

            def r1(model=model, params=params):
                x = real.detach().requires_grad_()
                (g,) = torch.autograd.grad(model(x).sum(), x, create_graph=True)
                return torch.autograd.grad(g.pow(2).sum(), params, allow_unused=True)

            variants.append(Variant(name, r1))
        # compute-bound (the matmuls): no bandwidth floor
        yield Case("bias_act", f"r1 critic mlp 2-512x3-1 batch {batch}", 0, variants,
                   info={"shape": f"({batch}, 512) x3", "act": "lrelu", "dtype": "float32"})
