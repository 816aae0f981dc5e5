"""What keeps long runs safe: one writer per folder, finite numbers, dead env workers and full
disks reported in one line, and SIGTERM handled like Ctrl-C."""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import functools
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from stable_baselines3.common.callbacks import BaseCallback

from cpc_rl.experiments.config import RunError

DISK_FULL_ERRORS = (errno.ENOSPC, errno.EFBIG, errno.EDQUOT)


class NonFiniteError(RuntimeError):
    """A NaN or inf appeared; the message says where and at which step."""


def _try_flock(handle: int) -> bool:
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


class FolderLock:
    """
    An exclusive lock on ``folder/name`` (``flock``), held while the process runs. The kernel
    drops it when the process ends, however it ends, so a crash never leaves it stuck.

    :param folder: the run or comparison folder.
    :param what: how the error names the folder's user ("training run", "comparison").
    """

    def __init__(self, folder: Path, what: str, name: str = ".lock") -> None:
        self.path = Path(folder) / name
        self.what = what
        self._handle: int | None = None

    def acquire(self, wait: float = 0.0) -> FolderLock:
        """
        :param wait: seconds to wait for a holder to let go (a stopped run still saving its checkpoint).
        """
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        deadline = time.monotonic() + wait
        while not _try_flock(handle):
            if time.monotonic() < deadline:
                time.sleep(0.5)
                continue
            holder = os.read(handle, 64).decode(errors="replace").strip() or "unknown"
            os.close(handle)
            raise RunError(
                f"{self.path.parent} is in use by another {self.what} (pid {holder}); wait for it to end or stop it "
                "(a process that crashed holds no lock)"
            )
        os.ftruncate(handle, 0)
        os.write(handle, str(os.getpid()).encode())
        self._handle = handle
        return self

    def release(self) -> None:
        if self._handle is not None:
            os.close(self._handle)  # closing drops the flock
            self._handle = None

    def __enter__(self) -> FolderLock:
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Within the block, SIGTERM raises ``KeyboardInterrupt`` (so a run saves a checkpoint as on Ctrl-C)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def ignore_stop_signals() -> Iterator[None]:
    """Within the block, SIGINT and SIGTERM wait: what it writes is not cut short by a second stop."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def non_finite_parameter(module: torch.nn.Module) -> str | None:
    """The name of the first parameter holding a NaN or inf, or None."""
    for name, parameter in module.named_parameters():
        if not torch.isfinite(parameter).all():
            return name
    return None


class FiniteGuard(BaseCallback):
    """
    Stops training at the first NaN or inf: in a reward or a float observation (every step), or
    in a logged loss (``train/*loss*``) or the weights after an update (checked before the next
    rollout). CPC's accuracies and MI bound are NaN by design when a step k had no pair.
    """

    def _on_step(self) -> bool:
        rewards = self.locals.get("rewards")
        if rewards is not None and not np.isfinite(rewards).all():
            env = int(np.flatnonzero(~np.isfinite(rewards))[0])
            raise NonFiniteError(f"env {env} returned a non-finite reward at step {self.num_timesteps}")
        observations = self.locals.get("new_obs")
        arrays = observations.values() if isinstance(observations, dict) else [observations]
        for array in arrays:
            if isinstance(array, np.ndarray) and array.dtype.kind == "f" and not np.isfinite(array).all():
                raise NonFiniteError(f"an env returned a non-finite observation at step {self.num_timesteps}")
        return True

    def _on_rollout_start(self) -> None:
        for key, value in self.model.logger.name_to_value.items():
            # Losses only: an accuracy or MI bound is NaN when a step k had no pair (short episodes).
            if key.startswith("train/") and "loss" in key and isinstance(value, float) and not np.isfinite(value):
                raise NonFiniteError(f"{key} was {value} in the update before step {self.num_timesteps}")
        name = non_finite_parameter(self.model.policy)
        if name is not None:
            raise NonFiniteError(
                f"weight {name} became non-finite in the update before step {self.num_timesteps} "
                "(a loss or gradient overflowed: lower the learning rate or check the rewards)"
            )


_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # mallopt's parameter numbers (glibc's malloc.h)
MB = 1024**2


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split()
    ]


@functools.cache  # one handle per process: heap_breakdown runs once per update in bench/memory.py
def _glibc() -> Any:
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return None
    if not all(hasattr(libc, name) for name in ("malloc_trim", "mallopt", "mallinfo2")):  # glibc < 2.33
        return None
    libc.mallinfo2.restype = _MallInfo2
    return libc


def heap_breakdown() -> dict[str, float] | None:
    """glibc's view of the heap in MB (in use, free but kept, mmapped), or None off glibc."""
    libc = _glibc()
    if libc is None:
        return None
    info = libc.mallinfo2()
    return {"in_use": info.uordblks / MB, "free_kept": info.fordblks / MB, "mmapped": info.hblkhd / MB}


def keep_freed_memory_mapped() -> bool:
    """
    Have glibc serve tensors below 256 MB from the heap and stop trimming its top on every
    ``free``, so that what one update frees the next one reuses without page faults.

    :return: False off glibc, where nothing was changed.
    """
    libc = _glibc()
    if libc is None:
        return False
    libc.mallopt(_M_MMAP_THRESHOLD, 256 * MB)
    libc.mallopt(_M_TRIM_THRESHOLD, 1024 * MB)
    return True


def resident_bytes() -> int:
    """This process's resident memory (Linux's /proc)."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class ReleaseFreedMemory(BaseCallback):
    """
    Keeps the memory an update uses mapped from one update to the next, and hands the heap's free
    memory back to the OS (glibc's ``malloc_trim``) once the process has grown ``budget_mb`` past
    what it held after the last hand-back.

    Why both: glibc left to itself keeps the freed blocks of torch's many differently sized tensors
    (a training process grew ~30 MB per update, bench/memory.py), while trimming after every update
    made the next one fault its ~200 MB of tensors back in, page by page (~50k page faults per
    RecurrentPPO update at ~2.5 us each: about a tenth of the learner's time, docs/benchmarks.md).
    So training starts with :func:`keep_freed_memory_mapped`, and growth is bounded by the budget.
    That sets glibc's thresholds for the whole process; off glibc (or Linux) this does nothing.

    :param budget_mb: growth of the resident memory (MB) allowed before the free memory is given back.
    """

    def __init__(self, budget_mb: float = 64) -> None:
        super().__init__()
        self.budget_bytes = int(budget_mb * MB)
        self._libc = _glibc() if os.path.exists("/proc/self/statm") else None
        self._ceiling: int | None = None
        self.trims = 0

    def _on_training_start(self) -> None:
        if self._libc is not None:
            keep_freed_memory_mapped()

    def _on_rollout_start(self) -> None:
        if self._libc is None:
            return
        resident = resident_bytes()
        if self._ceiling is None:
            # Measured with an update's memory in place (or before the first): the level to keep.
            self._ceiling = resident + self.budget_bytes
        elif resident > self._ceiling:
            self._libc.malloc_trim(0)
            self.trims += 1
            self._ceiling = None

    def _on_step(self) -> bool:
        return True

    def _on_training_end(self) -> None:
        if self._libc is not None:
            self._libc.malloc_trim(0)  # what training kept is not needed by what comes after it


class ActingThreads(BaseCallback):
    """
    One torch thread while the policy acts, ``learner_threads`` while it trains. Acting runs the
    networks on one frame per env: a second intra-op thread gains nothing there, and its
    OpenMP spin-wait after each call takes the core from the env workers that step next.

    :param learner_threads: torch threads for ``train()``.
    """

    def __init__(self, learner_threads: int) -> None:
        super().__init__()
        self.learner_threads = learner_threads

    def _on_rollout_start(self) -> None:
        torch.set_num_threads(1)

    def _on_rollout_end(self) -> None:
        torch.set_num_threads(self.learner_threads)

    def _on_step(self) -> bool:
        return True


def dead_workers(vec_env: Any, wait_seconds: float = 2.0) -> list[tuple[int, int | None, int]]:
    """``(index, pid, exit code)`` of the subprocess env workers that have exited."""
    processes = getattr(vec_env, "processes", [])
    for process in processes:
        process.join(timeout=wait_seconds / max(len(processes), 1))
    return [(i, p.pid, p.exitcode) for i, p in enumerate(processes) if p.exitcode is not None]


def close_vec_env(vec_env: Any) -> None:
    """Close a vec env whose workers may be dead or interrupted, never blocking on a pipe."""
    if getattr(vec_env, "processes", None) and any(p.exitcode is not None for p in vec_env.processes):
        # A step half-received from the live workers would make close() wait for replies already read.
        vec_env.waiting = False
        for process in vec_env.processes:
            if process.exitcode is None:
                process.terminate()
    try:
        vec_env.close()
    except (EOFError, BrokenPipeError, ConnectionResetError):
        pass  # workers already gone (Ctrl-C reaches them too)


def describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


def is_disk_full(error: BaseException) -> bool:
    return isinstance(error, OSError) and error.errno in DISK_FULL_ERRORS
