"""Compile fastgan's Triton kernels for sm_90 exactly as the JIT would on a GPU, without one.

The interpreter accepts code the compiler rejects, and the JIT specialises each launch
on its arguments (an integer equal to 1 becomes a compile-time constant; integers and
pointers divisible by 16 get alignment attributes). So the real launchers are called on
CPU tensors while :func:`recording` stands in for ``JITFunction.run``: each launch is
bound by Triton's own binder for a Hopper target, and each distinct specialisation is
compiled to PTX by :func:`compile_all`. Run with ``TRITON_INTERPRET=0``.

``python tests/triton_jit.py`` prints one JSON record per compiled specialisation.
"""
import contextlib
import json
import multiprocessing
import os
import sys
from typing import Callable, Dict, Iterator, List, Tuple

from triton import knobs
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource, compile as triton_compile, make_backend
from triton.runtime.jit import JITFunction, create_function_from_signature

TARGET = GPUTarget("cuda", 90, 32)


@contextlib.contextmanager
def recording(launches: Dict[tuple, tuple]) -> Iterator[None]:
    """Within the block, a kernel launch records its specialisation in `launches` (key:
    the JIT's cache key; value: what ``triton.compile`` needs) instead of running."""
    backend = make_backend(TARGET)
    binders: Dict[JITFunction, Callable] = {}

    def run(self, *args, grid, warmup, **kwargs):
        kwargs["debug"] = kwargs.get("debug", self.debug) or knobs.runtime.debug
        kwargs["instrumentation_mode"] = knobs.compilation.instrumentation_mode
        if self not in binders:
            binders[self] = create_function_from_signature(self.signature, self.params, backend)
        bound_args, specialization, options = binders[self](*args, **kwargs)
        options, signature, constexprs, attrs = self._pack_args(backend, kwargs, bound_args, specialization, options)
        key = (self.fn.__qualname__, repr(specialization), repr(sorted(options.__dict__.items())))
        launches.setdefault(key, (self, signature, constexprs, attrs, options))
        return None

    original = JITFunction.run
    JITFunction.run = run
    try:
        yield
    finally:
        JITFunction.run = original


def _describe(fn, signature, constexprs, attrs) -> dict:
    names = [p.name for p in fn.params]
    declared = {p.name for p in fn.params if p.is_constexpr}
    return {
        "kernel": f"{fn.fn.__module__.rsplit('.', 1)[-1]}.{fn.fn.__qualname__}",
        "signature": {k: v for k, v in signature.items() if v != "constexpr"},
        "constexprs": {names[path[0]]: str(value) for path, value in constexprs.items()},
        # arguments the JIT made constants (an integer equal to 1)
        "specialised": sorted(names[path[0]] for path in constexprs if names[path[0]] not in declared),
        "aligned16": sorted(names[path[0]] for path, value in attrs.items() if value),
    }


def compile_one(item: Tuple) -> dict:
    """PTX facts of one recorded specialisation, or the compiler's error."""
    fn, signature, constexprs, attrs, options = item
    record = _describe(fn, signature, constexprs, attrs)
    try:
        compiled = triton_compile(ASTSource(fn, signature, constexprs, attrs), target=TARGET,
                                  options=options.__dict__)
    except Exception as exc:  # noqa: BLE001 - reported, one record per failing specialisation
        record["error"] = f"{type(exc).__name__}: {exc}"[:2000]
        return record
    ptx = compiled.asm["ptx"]
    record.update(
        v4_loads=ptx.count("ld.global.v4") + ptx.count("ld.global.L1::evict_last.v4"),
        v4_stores=ptx.count("st.global.v4"),
        approx_sqrt=ptx.count("sqrt.approx"),
        approx_div=ptx.count("div.full") + ptx.count("div.approx"),
    )
    return record


_ITEMS: List[tuple] = []


def _compile_index(index: int) -> dict:
    return compile_one(_ITEMS[index])


def compile_all(launches: Dict[tuple, tuple], processes: int = os.cpu_count() or 1) -> List[dict]:
    """compile_one of every recorded specialisation, in forked worker processes."""
    _ITEMS[:] = launches.values()
    with multiprocessing.get_context("fork").Pool(processes) as pool:
        return pool.map(_compile_index, range(len(_ITEMS)), chunksize=4)


def main() -> None:
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from triton_launches import run_every_launcher

    launches: Dict[tuple, tuple] = {}
    with recording(launches):
        run_every_launcher()
    for record in compile_all(launches):
        print(json.dumps(record), flush=True)


if __name__ == "__main__":
    main()
