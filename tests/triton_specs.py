"""Signatures for compiling every fastgan Triton kernel ahead of time (no GPU
needed): ``test_triton_compile.py`` builds each to PTX for sm_80 and sm_90, which
catches what the interpreter lets through (types, layouts, unsupported ops).

Each entry: (module under fastgan.kernels, kernel name, {arg: type}, {constexpr: value}).
A new Triton kernel adds its entries here.
"""
import triton.language as tl

MULTI_TENSOR_ARGS = {"numels": "*i64", "chunk_tensor": "*i32", "chunk_begin": "*i64"}

SPECS = []
for dtype, acc, name in [(tl.float32, "*fp32", "fp32"), (tl.bfloat16, "*fp32", "bf16"), (tl.float64, "*fp64", "fp64")]:
    SPECS.append((
        "clip", "_clip_kernel",
        {"addresses": "*i64", **MULTI_TENSOR_ARGS, "bounds": acc},
        {"DTYPE": dtype, "ALIGNED": True, "BLOCK": 2048},
    ))
    for centered in (False, True):
        for momentum in (False, True):
            SPECS.append((
                "clip", "_rmsprop_clip_kernel",
                {"addresses": "*i64", "n_tensors": "i32", **MULTI_TENSOR_ARGS, "hyper": acc},
                {"DTYPE": dtype, "CENTERED": centered, "MOMENTUM": momentum, "HAS_WEIGHT_DECAY": True,
                 "ALIGNED": True, "BLOCK": 2048},
            ))

for dtype, acc, name in [("*fp32", "*fp32", "fp32"), ("*bf16", "*fp32", "bf16"), ("*fp64", "*fp64", "fp64")]:
    ROW_ARGS = {"row_len": "i32", "tiles": "i32"}
    SPECS += [
        ("penalty", "_interpolate_kernel",
         {"out": dtype, "real": dtype, "fake": dtype, "eps": acc, **ROW_ARGS}, {"BLOCK": 4096}),
        ("penalty", "_interpolate_backward_kernel",
         {"grad_real": dtype, "grad_fake": dtype, "grad": dtype, "eps": acc, **ROW_ARGS},
         {"NEED_REAL": True, "NEED_FAKE": True, "BLOCK": 4096}),
        ("penalty", "_sum_squares_kernel", {"partial": acc, "grads": dtype, **ROW_ARGS}, {"BLOCK": 4096}),
        ("penalty", "_penalty_finish_kernel",
         {"loss": dtype, "norms": acc, "partial": acc, "hyper": acc, "rows": "i32", "tiles": "i32"},
         {"ONE_SIDED": True, "REDUCTION": 1, "ROWS": 32, "TILES": 128}),
        ("penalty", "_penalty_backward_kernel",
         {"out": dtype, "grads": dtype, "grad_loss": dtype, "norms": acc, "hyper": acc, "rows": "i32", **ROW_ARGS},
         {"ONE_SIDED": False, "REDUCTION": 0, "BLOCK": 4096}),
    ]
# GAN losses (kernels/gan_loss.py): the fused forward for every term (the four
# discriminator pairs, V's pair, and one side alone as for the generator), the
# backward (with and without linear sides), and the pointwise kernel for every
# term and each kind of derivative.
LOSS_BLOCK = {"BLOCK": 2048}
for dtype, acc, acc_ptr, name in [(tl.float32, tl.float32, "*fp32", "fp32"), (tl.bfloat16, tl.float32, "*fp32", "bf16"),
                                  (tl.float64, tl.float64, "*fp64", "fp64")]:
    ptr = {"fp32": "*fp32", "bf16": "*bf16", "fp64": "*fp64"}[name]
    pairs = [(0, 1), (5, 4), (6, 7), (8, 9), (3, 2)] if name == "fp32" else [(0, 1)]
    for x_term, y_term in pairs + [(2, 2)]:
        SPECS.append((
            "gan_loss", "_gan_loss_fwd_kernel",
            {"x_ptr": ptr, "x_grad_ptr": ptr, "nx": "i32", "y_ptr": ptr, "y_grad_ptr": ptr, "ny": "i32",
             "loss_ptr": ptr, "partials_ptr": acc_ptr, "counter_ptr": "*i32"},
            {"X_TERM": x_term, "Y_TERM": y_term, "HAS_Y": (x_term, y_term) != (2, 2), "MEAN": True, "ACC": acc,
             "DTYPE": dtype, "ALIGNED": True, **LOSS_BLOCK, "MAX_PROGRAMS": 1024},
        ))
    # Backward: saved gradients, and linear sides (X_SLOPE, Y_SLOPE != 0) that read none
    # (fp32 keeps a saved side: its loads must be 16-byte vectors).
    for x_slope, y_slope in [(0, 0), (-1, 0)] if name == "fp32" else [(0, 0), (-1, 1)]:
        SPECS.append((
            "gan_loss", "_gan_loss_bwd_kernel",
            {"grad_ptr": ptr, "x_grad_ptr": ptr, "x_out_ptr": ptr, "nx": "i32", "y_grad_ptr": ptr, "y_out_ptr": ptr,
             "ny": "i32"},
            {"X_SLOPE": x_slope, "Y_SLOPE": y_slope, "MEAN": True, "ACC": acc, "DTYPE": dtype, "ALIGNED": True,
             **LOSS_BLOCK},
        ))
    # fp32: t of every term, t' of a softplus and the hinge, t'' of each kind of second derivative.
    if name == "fp32":
        term_orders = [(t, 0) for t in range(10)] + [(0, 1), (6, 1), (0, 2), (2, 2), (5, 2), (8, 2)]
    else:
        term_orders = [(0, 1), (6, 1)]
    for term, order in term_orders:
        SPECS.append((
            "gan_loss", "_gan_loss_pointwise_kernel",
            {"x_ptr": ptr, "grad_ptr": ptr, "out_ptr": ptr, "n": "i32"},
            {"TERM": term, "ORDER": order, "HAS_GRAD": order > 0, "ACC": acc, "DTYPE": dtype, "ALIGNED": True,
             **LOSS_BLOCK},
        ))

# Fused bias + activation (kernels/bias_act.py). Activation ids: 0 linear, 1 relu, 2 lrelu,
# 3 tanh, 4 sigmoid, 5 silu, 6 elu; the derivative from y (FROM_Y) for relu/lrelu/tanh/sigmoid.
_FROM_Y = {1, 2, 3, 4}
_SECOND_ORDER = (3, 4, 5, 6)
for dtype, ptr, acc, acts in [
    (tl.float32, "*fp32", "*fp32", range(7)),
    (tl.bfloat16, "*bf16", "*fp32", (2, 3, 5)),
    (tl.float64, "*fp64", "*fp64", (2, 3, 5)),
]:
    shape = {"hyper": acc, "n": "i32", "inner": "i32", "channels": "i32"}
    launch = {"ALIGNED": True, "INDEX64": False, "BLOCK": 1024}
    for act in acts:
        SPECS.append((
            "bias_act", "_bias_act_fwd_kernel",
            {"x_ptr": ptr, "b_ptr": ptr, "y_ptr": ptr, **shape},
            {"DTYPE": dtype, "ACT": act, "HAS_BIAS": True, **launch},
        ))
        SPECS.append((
            "bias_act", "_bias_act_bwd_kernel",
            {"dy_ptr": ptr, "ref_ptr": ptr, "b_ptr": ptr, "dx_ptr": ptr, **shape},
            {"DTYPE": dtype, "ACT": act, "FROM_Y": act in _FROM_Y, "HAS_BIAS": act not in _FROM_Y, **launch},
        ))
        if act in _SECOND_ORDER:
            SPECS.append((
                "bias_act", "_bias_act_bwd2_kernel",
                {"ddx_ptr": ptr, "dy_ptr": ptr, "ref_ptr": ptr, "b_ptr": ptr, "d_dy_ptr": ptr, "d_ref_ptr": ptr,
                 **shape},
                {"DTYPE": dtype, "ACT": act, "FROM_Y": act in _FROM_Y, "HAS_BIAS": act not in _FROM_Y,
                 "NEED_DDY": True, **launch},
            ))
