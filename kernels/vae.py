"""Triton kernels for the VAE ops (the negative ELBO); the element math follows
``csrc/vae_math.h`` line for line:

    bernoulli  t = softplus(l) - x l                          dt/dl = sigmoid(l) - x
    gaussian   t = (ln 2pi + v + (x - m)^2 e^-v) / 2          dt/dm = (m - x) e^-v, dt/dv = (1 - (x - m)^2 e^-v) / 2
    kl         k = (mu^2 + e^lv - 1 - lv) / 2                 dk/dmu = mu, dk/dlv = (e^lv - 1) / 2
    loss_b = sum t + beta sum k,   reduced over the batch (none, mean: s = 1/B, sum)

Kernels:

- ``_vae_loss_fwd_kernel``: program b reads sample b's reconstruction once (its terms
  and gradient) and its (mu, logvar) once (the KL and its gradients). For reduction
  none it writes loss_b; otherwise it stores loss_b as a partial and the last program
  to finish (an acq_rel ticket on the self-resetting counter of
  ``gan_loss._workspace``) adds the partials in order: one launch, deterministic.
- ``_vae_loss_bwd_kernel``: the four saved gradients times the loss's gradient (per
  sample for none), one launch.
- ``_reparameterize_kernel`` and ``_reparameterize_bwd_kernel``: elementwise.
"""
from typing import Optional, Tuple

import torch
import triton
import triton.language as tl

from ._common import TL_DTYPES, acc_dtype, as_acc, cdiv, div_rn
from .gan_loss import _scale_of, _softplus_parts, _to, _workspace

BLOCK = 1024
NUM_WARPS = 4
HALF_LOG_2PI = tl.constexpr(0.91893853320467274178)
# Likelihood codes of csrc/vae_math.h (VaeLikelihood) and reductions (VaeReduction).
BERNOULLI, GAUSSIAN = 0, 1
REDUCTION_CODES = {"none": 0, "mean": 1, "sum": 2}
# Reconstruction kinds of one launch: none, bernoulli, gaussian with log-variance, unit gaussian.
NO_RECON, RECON_BERNOULLI, RECON_GAUSSIAN, RECON_UNIT = -1, 0, 1, 2


@triton.jit
def _recon_term(r, x, v, KIND: tl.constexpr):
    """(t, dt/drecon, dt/dv) of one reconstruction element (dv only for KIND 1)."""
    if KIND == 0:
        sp, sig, sig_neg, curv = _softplus_parts(r)
        t = sp - x * r
        d = sig - x
        dv = d
    elif KIND == 1:
        inv_var = tl.exp(-v)
        diff = r - x
        q = diff * diff * inv_var
        t = HALF_LOG_2PI + 0.5 * (v + q)
        d = diff * inv_var
        dv = 0.5 * (1 - q)
    else:
        diff = r - x
        t = HALF_LOG_2PI + 0.5 * diff * diff
        d = diff
        dv = d
    return t, d, dv


@triton.jit
def _vae_loss_fwd_kernel(r_ptr, x_ptr, v_ptr, rg_ptr, vg_ptr, mu_ptr, lv_ptr, mg_ptr, lg_ptr, loss_ptr, partials_ptr,
                         counter_ptr, n, m, rows, beta: tl.float64, KIND: tl.constexpr, HAS_KL: tl.constexpr,
                         REDUCTION: tl.constexpr, ACC: tl.constexpr, DTYPE: tl.constexpr, BLOCK: tl.constexpr):
    b = tl.program_id(0).to(tl.int64)
    scale = _scale_of(rows, REDUCTION == 1, ACC)
    beta_acc = as_acc(beta, ACC)
    kl_scale = scale * beta_acc
    total = tl.zeros([BLOCK], ACC)
    if KIND >= 0:
        base = b * n
        for start in range(0, n, BLOCK):
            offsets = tl.multiple_of(start, BLOCK) + tl.arange(0, BLOCK)
            mask = offsets < n
            r = tl.load(r_ptr + base + offsets, mask=mask, other=0).to(ACC)
            x = tl.load(x_ptr + base + offsets, mask=mask, other=0).to(ACC)
            if KIND == 1:
                v = tl.load(v_ptr + base + offsets, mask=mask, other=0).to(ACC)
            else:
                v = r
            t, d, dv = _recon_term(r, x, v, KIND)
            tl.store(rg_ptr + base + offsets, _to(scale * d, DTYPE), mask=mask)
            if KIND == 1:
                tl.store(vg_ptr + base + offsets, _to(scale * dv, DTYPE), mask=mask)
            total += tl.where(mask, t, 0)
    if HAS_KL:
        kl = tl.zeros([BLOCK], ACC)
        base = b * m
        for start in range(0, m, BLOCK):
            offsets = tl.multiple_of(start, BLOCK) + tl.arange(0, BLOCK)
            mask = offsets < m
            mu = tl.load(mu_ptr + base + offsets, mask=mask, other=0).to(ACC)
            lv = tl.load(lv_ptr + base + offsets, mask=mask, other=0).to(ACC)
            var = tl.exp(lv)
            tl.store(mg_ptr + base + offsets, _to(kl_scale * mu, DTYPE), mask=mask)
            tl.store(lg_ptr + base + offsets, _to(kl_scale * (0.5 * (var - 1)), DTYPE), mask=mask)
            kl += tl.where(mask, 0.5 * (mu * mu + var - 1 - lv), 0)
        total_row = tl.sum(total, axis=0) + beta_acc * tl.sum(kl, axis=0)
    else:
        total_row = tl.sum(total, axis=0)
    if REDUCTION == 0:
        tl.store(loss_ptr + b, _to(total_row, DTYPE))
    elif rows == 1:
        tl.store(loss_ptr, _to(scale * total_row, DTYPE))
    else:
        tl.store(partials_ptr + b, total_row)
        ticket = tl.atomic_add(counter_ptr, 1, sem="acq_rel", scope="gpu")
        if ticket == rows - 1:
            acc = tl.zeros([BLOCK], ACC)
            for start in range(0, rows, BLOCK):  # a fixed order: deterministic
                offsets = start + tl.arange(0, BLOCK)
                acc += tl.load(partials_ptr + offsets, mask=offsets < rows, other=0, volatile=True)
            tl.store(loss_ptr, _to(scale * tl.sum(acc, axis=0), DTYPE))
            tl.store(counter_ptr, 0)  # ready for the next launch on this stream


@triton.jit
def _scale_rows_block(in_ptr, out_ptr, grad_ptr, n, row_len, block, PER_ROW: tl.constexpr, ACC: tl.constexpr,
                      DTYPE: tl.constexpr, BLOCK: tl.constexpr):
    offsets = block.to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offsets < n
    if PER_ROW:
        g = tl.load(grad_ptr + offsets // row_len, mask=mask, other=0).to(ACC)
    else:
        g = tl.load(grad_ptr).to(ACC)
    v = tl.load(in_ptr + offsets, mask=mask, other=0).to(ACC)
    tl.store(out_ptr + offsets, _to(g * v, DTYPE), mask=mask)


@triton.jit
def _vae_loss_bwd_kernel(grad_ptr, in0, out0, n0, len0, in1, out1, n1, len1, in2, out2, n2, len2, in3, out3, n3,
                         len3, PER_ROW: tl.constexpr, ACC: tl.constexpr, DTYPE: tl.constexpr, BLOCK: tl.constexpr):
    pid = tl.program_id(0)
    c0 = tl.cdiv(n0, BLOCK)
    c1 = c0 + tl.cdiv(n1, BLOCK)
    c2 = c1 + tl.cdiv(n2, BLOCK)
    if pid < c0:
        _scale_rows_block(in0, out0, grad_ptr, n0, len0, pid, PER_ROW, ACC, DTYPE, BLOCK)
    elif pid < c1:
        _scale_rows_block(in1, out1, grad_ptr, n1, len1, pid - c0, PER_ROW, ACC, DTYPE, BLOCK)
    elif pid < c2:
        _scale_rows_block(in2, out2, grad_ptr, n2, len2, pid - c1, PER_ROW, ACC, DTYPE, BLOCK)
    else:
        _scale_rows_block(in3, out3, grad_ptr, n3, len3, pid - c2, PER_ROW, ACC, DTYPE, BLOCK)


@triton.jit
def _reparameterize_kernel(mu_ptr, lv_ptr, eps_ptr, z_ptr, n, ACC: tl.constexpr, DTYPE: tl.constexpr,
                           BLOCK: tl.constexpr):
    offsets = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offsets < n
    mu = tl.load(mu_ptr + offsets, mask=mask).to(ACC)
    lv = tl.load(lv_ptr + offsets, mask=mask).to(ACC)
    eps = tl.load(eps_ptr + offsets, mask=mask).to(ACC)
    tl.store(z_ptr + offsets, _to(mu + tl.exp(0.5 * lv) * eps, DTYPE), mask=mask)


@triton.jit
def _reparameterize_bwd_kernel(grad_ptr, lv_ptr, eps_ptr, out_ptr, n, ACC: tl.constexpr, DTYPE: tl.constexpr,
                               BLOCK: tl.constexpr):
    offsets = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offsets < n
    g = tl.load(grad_ptr + offsets, mask=mask).to(ACC)
    lv = tl.load(lv_ptr + offsets, mask=mask).to(ACC)
    eps = tl.load(eps_ptr + offsets, mask=mask).to(ACC)
    tl.store(out_ptr + offsets, _to(0.5 * g * tl.exp(0.5 * lv) * eps, DTYPE), mask=mask)


# ---- launchers ----


def _saved(present: bool, like: Optional[torch.Tensor], first: torch.Tensor) -> torch.Tensor:
    return torch.empty_like(like) if present else first.new_empty((0,))


def vae_loss(recon: Optional[torch.Tensor], target: Optional[torch.Tensor], recon_logvar: Optional[torch.Tensor],
             mu: Optional[torch.Tensor], logvar: Optional[torch.Tensor], likelihood: int, beta: float,
             reduction: int) -> Tuple[torch.Tensor, ...]:
    """(loss, recon_grad, recon_logvar_grad, mu_grad, logvar_grad); see the module doc.
    An absent input's gradient is a (0,) tensor."""
    first = recon if recon is not None else mu
    rows = first.shape[0]
    has_recon, has_kl, has_v = recon is not None, mu is not None, recon_logvar is not None
    contiguous = [t.contiguous() if t is not None else None for t in (recon, target, recon_logvar, mu, logvar)]
    recon, target, recon_logvar, mu, logvar = contiguous
    kind = NO_RECON if not has_recon else (RECON_BERNOULLI if likelihood == BERNOULLI
                                           else RECON_GAUSSIAN if has_v else RECON_UNIT)
    loss = first.new_empty((rows,) if reduction == 0 else ())
    recon_grad = _saved(has_recon, recon, first)
    recon_logvar_grad = _saved(has_v, recon_logvar, first)
    mu_grad, logvar_grad = _saved(has_kl, mu, first), _saved(has_kl, logvar, first)
    acc = acc_dtype(first.dtype)
    counter = _workspace(first.device, acc)[1]
    partials = torch.empty(rows if reduction != 0 and rows > 1 else 1, dtype=acc, device=first.device)
    # An absent input passes the first tensor's pointers (never read: KIND / HAS_KL say so).
    pick = lambda t: first if t is None else t  # noqa: E731
    _vae_loss_fwd_kernel[(rows,)](
        pick(recon), pick(target), pick(recon_logvar), pick(recon_grad if has_recon else None),
        pick(recon_logvar_grad if has_v else None), pick(mu), pick(logvar), pick(mu_grad if has_kl else None),
        pick(logvar_grad if has_kl else None), loss, partials, counter,
        recon.numel() // rows if has_recon else 0, mu.numel() // rows if has_kl else 0, rows, float(beta),
        KIND=kind, HAS_KL=has_kl, REDUCTION=reduction, ACC=TL_DTYPES[acc], DTYPE=TL_DTYPES[first.dtype],
        BLOCK=BLOCK, num_warps=NUM_WARPS,
    )
    return loss, recon_grad, recon_logvar_grad, mu_grad, logvar_grad


def vae_loss_backward(grad_loss: torch.Tensor, recon_grad: torch.Tensor, recon_logvar_grad: torch.Tensor,
                      mu_grad: torch.Tensor, logvar_grad: torch.Tensor,
                      reduction: int) -> Tuple[torch.Tensor, ...]:
    """grad_loss (per sample for reduction 0) times each saved gradient, in one launch."""
    saved = [t.contiguous() for t in (recon_grad, recon_logvar_grad, mu_grad, logvar_grad)]
    outs = [torch.empty_like(t) for t in saved]
    grad = grad_loss.contiguous()
    rows = next(t.shape[0] for t in saved if t.numel())
    blocks = sum(cdiv(t.numel(), BLOCK) for t in saved)
    if blocks:
        args = []
        for t, o in zip(saved, outs):
            args += [t, o, t.numel(), max(1, t.numel() // rows)]
        acc = acc_dtype(grad.dtype)
        _vae_loss_bwd_kernel[(blocks,)](grad, *args, PER_ROW=reduction == 0, ACC=TL_DTYPES[acc],
                                        DTYPE=TL_DTYPES[grad.dtype], BLOCK=BLOCK, num_warps=NUM_WARPS)
    return tuple(outs)


def reparameterize(mu: torch.Tensor, logvar: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """mu + exp(logvar / 2) * eps."""
    mu, logvar, eps = mu.contiguous(), logvar.contiguous(), eps.contiguous()
    z = torch.empty_like(mu)
    acc = acc_dtype(mu.dtype)
    _reparameterize_kernel[(cdiv(mu.numel(), BLOCK),)](mu, logvar, eps, z, mu.numel(), ACC=TL_DTYPES[acc],
                                                              DTYPE=TL_DTYPES[mu.dtype], BLOCK=BLOCK,
                                                              num_warps=NUM_WARPS)
    return z


def reparameterize_backward(grad: torch.Tensor, logvar: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """grad * exp(logvar / 2) * eps / 2: the logvar-gradient of reparameterize."""
    grad, logvar, eps = grad.contiguous(), logvar.contiguous(), eps.contiguous()
    out = torch.empty_like(grad)
    acc = acc_dtype(grad.dtype)
    _reparameterize_bwd_kernel[(cdiv(grad.numel(), BLOCK),)](grad, logvar, eps, out, grad.numel(),
                                                                    ACC=TL_DTYPES[acc], DTYPE=TL_DTYPES[grad.dtype],
                                                                    BLOCK=BLOCK, num_warps=NUM_WARPS)
    return out
