"""Checkpoints a run can trust, and the run folder's lock.

A checkpoint file is a header line ``FASTGAN-CHECKPOINT 1 <sha256 of the payload>``
followed by the payload, ``torch.save`` bytes of tensors and plain Python values; it is
written atomically (unique temporary file, fsync, ``os.replace``) and its checksum is
verified before anything is unpickled (``weights_only=True``). A run folder is held by
one process at a time through an exclusive ``fcntl.flock`` on its ``.lock`` file.
"""
import contextlib
import errno
import fcntl
import hashlib
import io
import json
import os
import random
import tempfile
from typing import IO, Any, Callable, Dict, Iterator, List, Optional

import numpy as np
import torch

MAGIC = b"FASTGAN-CHECKPOINT 1 "
TMP_PREFIX = ".tmp-"
LOCK_FILE = ".lock"


class CheckpointError(ValueError):
    """A checkpoint file is unreadable, corrupted, or does not fit the run."""


class RunFolderBusy(RuntimeError):
    """Another process holds the run folder's lock."""


def _cuda_states(cuda_device: Optional[torch.device]) -> List[torch.Tensor]:
    if cuda_device is not None:
        return [torch.cuda.get_rng_state(cuda_device)]
    return torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []


def rng_state(cuda_device: Optional[torch.device] = None) -> Dict[str, Any]:
    """The torch (CPU and every CUDA device, or only `cuda_device`: a distributed rank's
    own GPU), numpy and Python global RNG states, as tensors and plain Python values (so
    ``torch.load(weights_only=True)`` reads them)."""
    np_state = np.random.get_state()
    py_version, py_internal, py_gauss = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": _cuda_states(cuda_device),
        "numpy": {"name": np_state[0], "key": torch.from_numpy(np_state[1].astype(np.int64)),
                  "pos": int(np_state[2]), "has_gauss": int(np_state[3]), "gauss": float(np_state[4])},
        "python": {"version": py_version, "internal": list(py_internal), "gauss": py_gauss},
    }


def set_rng_state(state: Dict[str, Any], cuda_device: Optional[torch.device] = None) -> None:
    """Restore what :func:`rng_state` returned; with `cuda_device`, the first saved CUDA
    state goes to that device only (a distributed rank's own GPU). The states may lie on
    a GPU (a checkpoint loaded with ``map_location="cuda"``): generators take CPU bytes."""
    torch.set_rng_state(state["torch"].cpu())
    cuda_states = [s.cpu() for s in state["cuda"]]
    if cuda_states and cuda_device is not None:
        torch.cuda.set_rng_state(cuda_states[0], cuda_device)
    elif cuda_states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda_states)
    n = state["numpy"]
    np.random.set_state((n["name"], n["key"].cpu().numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["gauss"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["internal"]), p["gauss"]))


def seed_everything(seed: int) -> None:
    """Seed Python's, numpy's and torch's (CPU and CUDA) global generators; `seed` in [0, 2**32)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def atomic_write(path: str, write: Callable[[IO[bytes]], None]) -> None:
    """Call ``write(f)`` on a uniquely named temporary file in `path`'s folder, flush it
    to disk, then ``os.replace`` it onto `path`: a reader (or a crash) sees the old file
    or the new one, never a partial file, and concurrent writers never share a name."""
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=TMP_PREFIX, suffix="-" + os.path.basename(path), dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes it private; give it a normal file's mode
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def remove_stale_temporaries(folder: str) -> List[str]:
    """Delete the ``.tmp-*`` files a killed writer left in `folder` (call it while
    holding the folder's lock, so no live writer owns them); returns their names."""
    stale = [name for name in os.listdir(folder) if name.startswith(TMP_PREFIX)]
    for name in stale:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(folder, name))
    return stale


def save_checkpoint(path: str, state: Dict[str, Any]) -> None:
    """Write `state` (tensors and plain Python values) to `path` atomically, after a
    header with the SHA-256 of the payload (see the module docstring)."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    payload = buffer.getvalue()
    digest = hashlib.sha256(payload).hexdigest().encode()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    atomic_write(path, lambda f: (f.write(MAGIC + digest + b"\n"), f.write(payload)))


def load_checkpoint(path: str, map_location="cpu") -> Dict[str, Any]:
    """Load a checkpoint written by :func:`save_checkpoint` after verifying its checksum.

    Raises :class:`CheckpointError` naming `path` when the file cannot be read, lacks
    the header, fails the checksum (a flipped bit, a truncation) or does not unpickle
    to a dict under ``weights_only=True``."""
    try:
        with open(path, "rb") as f:
            blob = f.read()
    except OSError as exc:
        raise CheckpointError(f"cannot read {path}: {exc.strerror or exc}") from None
    header_end = blob.find(b"\n", 0, len(MAGIC) + 65)
    if not blob.startswith(MAGIC) or header_end != len(MAGIC) + 64:
        raise CheckpointError(f"{path} is not a fastgan checkpoint (no 'FASTGAN-CHECKPOINT 1' header; "
                              "older checkpoints cannot be resumed)")
    payload = blob[header_end + 1:]
    if hashlib.sha256(payload).hexdigest().encode() != blob[len(MAGIC):header_end]:
        raise CheckpointError(f"{path} is corrupted: its SHA-256 checksum does not match its contents "
                              f"({len(payload)} payload bytes)")
    try:
        state = torch.load(io.BytesIO(payload), map_location=map_location, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - a checksummed file that still fails to unpickle is refused
        raise CheckpointError(f"{path} cannot be unpickled safely: {exc}") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path} holds a {type(state).__name__}, not a checkpoint dict")
    return state


_held_locks: Dict[str, list] = {}  # real path of a run folder -> [fd, depth]: the lock is re-entrant in-process


@contextlib.contextmanager
def lock_run_folder(folder: str) -> Iterator[None]:
    """Hold an exclusive ``fcntl.flock`` on ``folder/.lock`` (created, with `folder`, if
    needed) for the ``with`` block. Re-entrant within a process. Raises
    :class:`RunFolderBusy` at once if another process holds it, and ``OSError`` if the
    folder cannot be created or written."""
    os.makedirs(folder, exist_ok=True)
    key = os.path.realpath(folder)
    if key in _held_locks:
        _held_locks[key][1] += 1
        try:
            yield
        finally:
            _held_locks[key][1] -= 1
        return
    fd = os.open(os.path.join(folder, LOCK_FILE), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise RunFolderBusy(f"{folder} is in use by another fastgan run (it holds {LOCK_FILE})") from None
            raise
        _held_locks[key] = [fd, 1]
        try:
            yield
        finally:
            del _held_locks[key]
    finally:
        os.close(fd)  # closing the descriptor releases the flock


RUN_KEYS = ("config", "step", "elapsed", "generator", "critic", "opt_g", "opt_d", "sampler", "rng", "records")


def _check_tensors(path: str, what: str, tensors: Dict[str, Any], shapes: Dict[str, torch.Size]) -> None:
    if not isinstance(tensors, dict):
        raise CheckpointError(f"{path}: {what} is a {type(tensors).__name__}, not a state dict")
    if set(tensors) != set(shapes):
        missing, extra = sorted(set(shapes) - set(tensors)), sorted(set(tensors) - set(shapes))
        raise CheckpointError(f"{path}: {what} does not fit the model (missing {missing}, unexpected {extra})")
    for key, shape in shapes.items():
        value = tensors[key]
        if not isinstance(value, torch.Tensor) or value.shape != shape:
            got = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
            raise CheckpointError(f"{path}: {what}[{key!r}] is {got}, the model needs {tuple(shape)}")
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            raise CheckpointError(f"{path}: {what}[{key!r}] holds non-finite values")


def _check_optimizer(path: str, what: str, state: Any, optimizer: torch.optim.Optimizer) -> None:
    if not isinstance(state, dict) or not isinstance(state.get("state"), dict) or \
            not isinstance(state.get("param_groups"), list):
        raise CheckpointError(f"{path}: {what} is not an optimizer state dict")
    params = [p for group in optimizer.param_groups for p in group["params"]]
    saved_ids = [i for group in state["param_groups"] for i in (group.get("params", []) if isinstance(group, dict)
                                                                else [None])]
    if len(saved_ids) != len(params):
        raise CheckpointError(f"{path}: {what} is for {len(saved_ids)} parameters, the model has {len(params)}")
    by_id = dict(zip(saved_ids, params))
    for index, entry in state["state"].items():
        if index not in by_id or not isinstance(entry, dict):
            raise CheckpointError(f"{path}: {what} has state for an unknown parameter {index!r}")
        for key, value in entry.items():
            if not isinstance(value, torch.Tensor):
                continue
            if value.dim() > 0 and value.shape != by_id[index].shape:
                raise CheckpointError(f"{path}: {what} state {key!r} of parameter {index} is {tuple(value.shape)}, "
                                      f"the parameter is {tuple(by_id[index].shape)}")
            if value.is_floating_point() and not bool(torch.isfinite(value).all()):
                raise CheckpointError(f"{path}: {what} state {key!r} of parameter {index} holds non-finite values")


def check_run_state(path: str, state: Dict[str, Any], *, steps: int, modules: Dict[str, torch.nn.Module],
                    optimizers: Dict[str, torch.optim.Optimizer]) -> None:
    """Raise :class:`CheckpointError` unless `state` (from :func:`load_checkpoint`) is a
    whole run checkpoint that fits: every key of :data:`RUN_KEYS`; ``step`` an int in
    [0, steps]; ``elapsed`` finite and >= 0; the state dict of each of `modules` (by
    key) with exactly the model's keys and shapes and finite values; each of
    `optimizers`' states for as many parameters, with per-parameter tensors of the
    parameter's shape and finite; ``records`` a JSON list."""
    missing = [key for key in RUN_KEYS if key not in state]
    if missing:
        raise CheckpointError(f"{path} lacks {', '.join(missing)}: not a fastgan run checkpoint")
    step = state["step"]
    if isinstance(step, bool) or not isinstance(step, int) or not 0 <= step <= steps:
        raise CheckpointError(f"{path}: step {step!r} is not an integer in [0, {steps}] (--steps {steps})")
    elapsed = state["elapsed"]
    if isinstance(elapsed, bool) or not isinstance(elapsed, (int, float)) or not 0 <= elapsed < float("inf"):
        raise CheckpointError(f"{path}: elapsed time {elapsed!r} is not a finite number >= 0")
    if not isinstance(state["config"], dict):
        raise CheckpointError(f"{path}: config is a {type(state['config']).__name__}, not a dict")
    for name, module in modules.items():
        _check_tensors(path, name, state[name], {k: v.shape for k, v in module.state_dict().items()})
    for name, optimizer in optimizers.items():
        _check_optimizer(path, name, state[name], optimizer)
    try:
        records = json.loads(state["records"])
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: records are not JSON ({exc})") from None
    if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
        raise CheckpointError(f"{path}: records are not a JSON list of objects")
