"""Run one function over many small tasks: in-process, local processes (joblib/loky) or a Dask cluster.

Workers get a task and return a small JSON-able record; frames never travel. Each worker uses
one thread for BLAS/OpenCV/torch, so parallelism comes from processes. Results arrive as they
finish, so the caller can show progress and commit records one by one.
"""
from __future__ import annotations

import os
from typing import Any, Callable, Iterable, Iterator, Optional

BACKENDS = ("local", "dask")
_THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS", "VECLIB_MAXIMUM_THREADS")


def single_threaded() -> None:
    """Limit this process to one compute thread (OpenCV, torch, BLAS via env for later imports)."""
    for var in _THREAD_VARS:
        os.environ[var] = "1"
    import cv2

    cv2.setNumThreads(1)
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:  # torch is optional for the data stages
        pass


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
        yield from _run_joblib(fn, tasks, n_jobs, on_crash)


def _guarded(fn, task, on_crash):
    try:
        return fn(task)
    except Exception as e:  # a record of the failure keeps the run alive
        if on_crash is None:
            raise
        return on_crash(task, e)


def _run_joblib(fn, tasks, n_jobs, on_crash) -> Iterator[dict]:
    import warnings

    from joblib import Parallel, delayed, parallel_config

    # loky replaces a worker whose memory grew (decoders, model weights); the task is not lost, so the warning is noise
    warnings.filterwarnings("ignore", message="A worker stopped while some jobs were given to the executor")
    with parallel_config(backend="loky", inner_max_num_threads=1):
        results = Parallel(n_jobs=n_jobs, return_as="generator_unordered", batch_size=1, pre_dispatch="2*n_jobs")(
            delayed(_guarded)(_SingleThreaded(fn), t, on_crash) for t in tasks
        )
        yield from results


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
