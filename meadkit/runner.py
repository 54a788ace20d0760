"""Run one function over many small tasks: in-process, a local process pool, or a Dask cluster.

Workers get a task and return a small JSON-able record; frames never travel. Each worker uses
one thread for BLAS/OpenCV/torch, so parallelism comes from processes. Results arrive as they
finish, so the caller can show progress and commit records one by one.

The local pool is the standard library's: its workers live for the whole run (loky, joblib's
backend, replaces any worker whose memory grew by 300 MB after its first task — every take
worker, once the face models and 1080p buffers are in — and pays the imports and model loads
again). A worker that dies (segfault, out of memory) breaks the pool: its in-flight tasks are
then rerun one at a time in fresh processes, so only the task that kills a process alone is
recorded as crashed.
"""
from __future__ import annotations

import multiprocessing
import os
import sys
from collections import deque
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from typing import Any, Callable, Iterable, Iterator, Optional

BACKENDS = ("local", "dask")
_THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS", "VECLIB_MAXIMUM_THREADS")


def single_threaded() -> None:
    """Limit this process to one compute thread (OpenCV, torch, BLAS via env for later imports)."""
    for var in _THREAD_VARS:
        os.environ[var] = "1"
    import cv2

    cv2.setNumThreads(1)
    if "torch" in sys.modules:  # a later import of torch reads OMP_NUM_THREADS itself
        sys.modules["torch"].set_num_threads(1)


def run_tasks(
    fn: Callable[[Any], dict],
    tasks: Iterable[Any],
    n_jobs: int = 1,
    backend: str = "local",
    scheduler: Optional[str] = None,
    on_crash: Optional[Callable[[Any, BaseException], dict]] = None,
) -> Iterator[dict]:
    """Yield `fn(task)` for every task, in completion order.

    `fn` should turn bad input into a record itself; if a worker still raises (or dies),
    `on_crash(task, exc)` makes the record so the run goes on.
    """
    tasks = list(tasks)
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}")
    if backend == "dask":
        yield from _run_dask(fn, tasks, scheduler, on_crash)
    elif n_jobs == 1:
        for task in tasks:
            yield _guarded(fn, task, on_crash)
    else:
        yield from _run_pool(fn, tasks, n_jobs, on_crash)


def _guarded(fn, task, on_crash):
    try:
        return fn(task)
    except Exception as e:  # a record of the failure keeps the run alive
        if on_crash is None:
            raise
        return on_crash(task, e)


def _run_pool(fn, tasks, n_jobs, on_crash) -> Iterator[dict]:
    queue, suspects = deque(tasks), deque()
    while queue or suspects:
        if suspects:  # tasks in flight when a worker died: each alone, so the culprit is found
            yield from _run_alone(fn, suspects.popleft(), on_crash)
            continue
        with _pool(n_jobs) as pool:
            inflight = {}
            while queue or inflight:
                while queue and len(inflight) < 2 * n_jobs:
                    task = queue.popleft()
                    inflight[pool.submit(_SingleThreaded(fn), task)] = task
                done, _ = wait(inflight, return_when=FIRST_COMPLETED)
                if any(isinstance(f.exception(), BrokenProcessPool) for f in done):
                    suspects.extend(inflight.values())
                    break
                for fut in done:
                    yield _outcome(fut, inflight.pop(fut), on_crash)


def _run_alone(fn, task, on_crash) -> Iterator[dict]:
    with _pool(1) as pool:
        fut = pool.submit(_SingleThreaded(fn), task)
        wait([fut])
        yield _outcome(fut, task, on_crash)


def _outcome(fut, task, on_crash) -> dict:
    """The future's record, or `on_crash`'s record for a task whose worker raised or died."""
    exc = fut.exception()
    if exc is None:
        return fut.result()
    if on_crash is None:
        raise exc
    if isinstance(exc, BrokenProcessPool):
        exc = RuntimeError(f"the worker process died ({exc})")
    return on_crash(task, exc)


def _pool(n_jobs: int) -> ProcessPoolExecutor:
    # spawn: no inherited threads or locks from the parent (a forked worker can deadlock on them)
    return ProcessPoolExecutor(n_jobs, mp_context=multiprocessing.get_context("spawn"))


class _SingleThreaded:
    """`fn` run in single-threaded mode (a class, so it pickles for process pools and Dask)."""

    def __init__(self, fn):
        self.fn = fn

    def __call__(self, task):
        single_threaded()
        return self.fn(task)


def _run_dask(fn, tasks, scheduler, on_crash) -> Iterator[dict]:
    try:
        from distributed import Client, as_completed
    except ImportError:  # pragma: no cover - dask[distributed] is a dependency
        raise RuntimeError("the dask backend needs `pip install dask[distributed]`") from None
    if not scheduler:
        raise ValueError("--backend dask needs --scheduler tcp://HOST:PORT (start one with `dask scheduler`)")
    client = scheduler if isinstance(scheduler, Client) else Client(scheduler)
    try:
        wrapped = _SingleThreaded(fn)
        futures = {client.submit(wrapped, t, pure=False): t for t in tasks}
        for fut in as_completed(futures):
            try:
                yield fut.result()
            except Exception as e:
                if on_crash is None:
                    raise
                yield on_crash(futures[fut], e)
            finally:
                fut.release()
    finally:
        if client is not scheduler:
            client.close()
