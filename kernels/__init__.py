"""fastgan's Triton kernels, installed as ``fastgan.kernels``.

Modules here import triton; fastgan imports them lazily, the first time a
``backend="triton"`` op runs, so fastgan works without triton installed.
Under ``TRITON_INTERPRET=1`` (read when a module here is first imported) the
kernels also run on CPU tensors, which is how the test-suite checks them.
"""
