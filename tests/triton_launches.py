"""Calls of every Triton launcher in fastgan.kernels, with the arguments real use passes.

The JIT compiles one kernel per specialisation: the constexpr flags, the dtype, and for
each integer argument whether it is 1 (then a constant), a multiple of 16 or neither
(likewise each pointer's 16-byte alignment). So each launcher is called with every flag
combination at one odd size in float32, and with sizes 1, a multiple of 16 (aligned), odd
and several tiles long, in every dtype, for one combination. Under
``triton_jit.recording`` these compile what a GPU would; a new launcher adds its calls here.
"""
import torch

DTYPES = (torch.float32, torch.bfloat16, torch.float16, torch.float64)
ACC = {torch.float32: torch.float32, torch.bfloat16: torch.float32, torch.float16: torch.float32,
       torch.float64: torch.float64}
# (B, N) batches: one sample of one element, 16-multiples, odd sizes, rows of several tiles.
SHAPES = ((1, 1), (16, 32), (5, 3), (3, 2 * 4096 + 16))
ODD = (5, 3)


def _variants(dtype, every_flag):
    """(shape, all flags?) pairs: every flag combination at the odd shape in float32, one
    combination at every shape in every dtype."""
    return [(shape, every_flag and dtype == torch.float32 and shape == ODD) for shape in SHAPES]


def _penalty(dtype):
    from fastgan.kernels import penalty

    for (rows, n), every in _variants(dtype, True):
        x = torch.randn(rows, n, dtype=dtype)
        eps = torch.rand(rows, dtype=ACC[dtype])
        penalty.interpolate(x, x, eps)
        penalty.interpolate_backward(x, eps, True, True)
        for need in ((True, False), (False, True)) if every else ():
            penalty.interpolate_backward(x, eps, *need)
        for reduction, one_sided in [(r, s) for r in (0, 1, 2) for s in (False, True)] if every else [(1, False)]:
            loss, norms = penalty.grad_norm_penalty(x, 1.0, 10.0, one_sided, reduction)
            grad_loss = torch.ones(rows if reduction == 0 else (), dtype=dtype)
            penalty.grad_norm_penalty_backward(grad_loss, x, norms, 1.0, 10.0, one_sided, reduction)
    odd = torch.randn(17, dtype=dtype)[1:].reshape(4, 4)  # a pointer off 16-byte alignment
    penalty.interpolate(odd, odd, torch.rand(4, dtype=ACC[dtype]))


def _gan_loss(dtype):
    from fastgan.kernels import gan_loss

    one = torch.ones((), dtype=dtype)
    big = 5 * gan_loss.ELEMENTS_PER_PROGRAM + 7  # several programs: the partials and the ticket
    for (rows, n), every in _variants(dtype, True):
        size = rows * n if rows * n < 4096 else big
        x = torch.randn(size, dtype=dtype)
        y = torch.randn(size + (16 if size % 16 == 0 else 1), dtype=dtype)  # 16-multiples stay 16-multiples
        reductions = (1, 2) if every else (1,)
        pairs = ((0, 1), (5, 4), (6, 7), (8, 9), (3, 2)) if every else ((0, 1), (5, 4))
        for reduction in reductions:
            for x_term, y_term in pairs:
                loss, x_grad, y_grad = gan_loss.gan_loss(x, y, x_term, y_term, reduction)
                gan_loss.gan_loss_backward(one, x_grad, y_grad, x, y, x_term, y_term, reduction)
            for term in (0, 5) if every or size == 1 else ():  # a generator's loss: one side
                loss, x_grad, y_grad = gan_loss.gan_loss(x, None, term, 0, reduction)
                gan_loss.gan_loss_backward(one, x_grad, y_grad, x, None, term, 0, reduction)
        for term in range(10) if every else (0,):
            for order in (0, 1, 2):
                gan_loss.gan_loss_pointwise(x, None if order == 0 else x, term, order)
        # relativistic_loss: RpGAN pairs x with a copy; RaGAN takes x and y (other sizes).
        for reduction in reductions:
            gan_loss.relativistic_loss(x, x.flip(0), gan_loss.RELATIVISTIC_PAIR, reduction)
            gan_loss.relativistic_loss(x, y, gan_loss.RELATIVISTIC_AVERAGE, reduction)


def _bias_act(dtype):
    from fastgan.kernels import bias_act

    for shape, every in _variants(dtype, True):
        x = torch.randn(shape, dtype=dtype)
        b = torch.randn(shape[1], dtype=dtype)
        for act in range(7) if every else (3,):
            y = bias_act.forward(x, b, act, 0.2, 2.0, 1)
            bias_act.backward(x, None, None, y, act, 0.2, 2.0, 1)
            bias_act.backward(x, x, b, None, act, 0.2, 2.0, 1)
            if act in (3, 4, 5, 6):
                bias_act.backward2(x, x, None, None, y, act, 0.2, 2.0, 1, True)
                bias_act.backward2(x, x, x, b, None, act, 0.2, 2.0, 1, False)
        if every:
            bias_act.forward(x, None, 2, 0.2, 2.0, 1)
    nchw = torch.randn(2, 8, 4, 4, dtype=dtype)  # the bias along a non-innermost dimension
    bias_act.forward(nchw, torch.randn(8, dtype=dtype), 2, 0.2, 2.0, 1)


def _clip(dtype):
    from fastgan.kernels import clip

    for shapes in ([(1,)], [(64, 32), (32,)], [(3, 5), (7,), (4096 + 3,)]):
        every = dtype == torch.float32 and len(shapes) == 3
        params = [torch.randn(s, dtype=dtype) for s in shapes]
        clip.clip_(params, 0.01)
        grads = [torch.randn_like(p) for p in params]
        states = [[torch.rand_like(p) for p in params] for _ in range(3)]
        flags = [(c, m, w) for c in (False, True) for m in (0.0, 0.9) for w in (0.0, 1e-4)] if every else \
            [(False, 0.0, 0.0)]
        for centered, momentum, weight_decay in flags:
            clip.rmsprop_clip_(params, grads, states[0], states[1] if centered else [], states[2] if momentum else [],
                               5e-5, 0.99, 1e-8, weight_decay, momentum, centered, False, 0.01)
        # A tensor lr (capturable steps), float32 as torch's capturable optimizers hold it.
        clip.rmsprop_clip_(params, grads, states[0], [], [], 0.0, 0.99, 1e-8, 0.0, 0.0, False, False, 0.01,
                           torch.tensor(5e-5))


def _fd_penalty(dtype):
    from fastgan.kernels import fd_penalty

    for (rows, n), every in _variants(dtype, True):
        x = torch.randn(rows, n, dtype=dtype)
        fd_penalty.perturb(x, x, 0.01)
        fd_penalty.finite_difference_penalty(x, x, 0.01, 5.0)
        for need in ((True, True), (True, False), (False, True)) if every else ((True, True),):
            fd_penalty.finite_difference_penalty_backward(torch.ones((), dtype=dtype), x, x, 0.01, 5.0, *need)
    odd = torch.randn(17, dtype=dtype)[1:].reshape(4, 4)  # a pointer off 16-byte alignment
    fd_penalty.perturb(odd, odd, 0.01)


def _vae(dtype):
    from fastgan.kernels import vae

    for (rows, n), every in _variants(dtype, True):
        recon, target, logvar = (torch.randn(rows, n, dtype=dtype) for _ in range(3))
        mu, mu_logvar = torch.randn(rows, n, dtype=dtype), torch.randn(rows, n, dtype=dtype)
        # (recon?, recon_logvar?, kl?, likelihood): bernoulli + KL, gaussian, unit gaussian + KL, KL alone
        kinds = [(True, False, True, 0), (True, True, False, 1), (True, False, True, 1), (False, False, True, 0)]
        for has_recon, has_v, has_kl, likelihood in kinds if every else kinds[:1]:
            for reduction in (0, 1, 2) if every else (1,):
                saved = vae.vae_loss(recon if has_recon else None, target if has_recon else None,
                                     logvar if has_v else None, mu if has_kl else None,
                                     mu_logvar if has_kl else None, likelihood, 0.5, reduction)[1:]
                grad_loss = torch.ones(rows if reduction == 0 else (), dtype=dtype)
                vae.vae_loss_backward(grad_loss, *saved, reduction)
        z = vae.reparameterize(mu, mu_logvar, target)
        vae.reparameterize_backward(z, mu_logvar, target)


def run_every_launcher() -> None:
    for dtype in DTYPES:
        for family in (_penalty, _gan_loss, _bias_act, _clip, _fd_penalty, _vae):
            family(dtype)
