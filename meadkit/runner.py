"""The one place work is run: a stage's tasks in this process, in local worker processes, or on a Dask cluster.

A stage gives an `Executor` a picklable function and its tasks; the executor yields the results (in completion
or in task order), drives one progress display, runs every worker single-threaded (BLAS/OpenCV/torch:
parallelism comes from processes), and turns a task that raised, or whose worker died, into the stage's own
crash record. Workers return small records; frames never travel.

Local workers are spawned (no inherited threads or locks) and live for the whole map, or for every map run
inside `Executor.kept()` (a run of several stages spawns, imports and warms its workers once). Small tasks travel in
batches. A worker that dies (segfault, out of memory) breaks the pool: the batches in flight are split into
single tasks and run again, and a single task in flight then is rerun alone in a fresh process, so only the
task that kills a process alone gets a crash record.
"""
from __future__ import annotations

import atexit
import contextlib
import multiprocessing
import multiprocessing.connection
import os
import sys
import threading
import traceback
from collections import deque
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Iterable, Iterator, Optional

from meadkit.progress import PROGRESS_MODES, Progress

BACKENDS = ("local", "dask")
_THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS", "VECLIB_MAXIMUM_THREADS")

#: A task's crash handler: (task, exception) -> the record the stage keeps for it.
OnCrash = Callable[[Any, BaseException], Any]
#: Retries a batch that failed as a whole (True), or declines (False: its task gets the crash record).
_Retry = Callable[[list, BaseException], bool]


class WorkerDied(RuntimeError):
    """A task's worker process died without a Python exception (segfault, out of memory, os._exit)."""


def single_threaded() -> None:
    """Limit this process to one compute thread (OpenCV, torch, BLAS via env for later imports)."""
    for var in _THREAD_VARS:
        os.environ[var] = "1"
    import cv2

    cv2.setNumThreads(1)
    if "torch" in sys.modules:  # a later import of torch reads OMP_NUM_THREADS itself
        sys.modules["torch"].set_num_threads(1)


@contextlib.contextmanager
def _workers_born_single_threaded() -> Iterator[None]:
    """While open, processes started from this one get one-thread BLAS/OpenMP settings in their environment from
    birth: a worker's imports (numpy, OpenCV, mediapipe) size their thread pools before any initialiser could run,
    and pools sized to the machine made every local worker's faces stage ~1.7x dearer per frame."""
    saved = {v: os.environ.get(v) for v in _THREAD_VARS}
    os.environ.update({v: "1" for v in _THREAD_VARS})
    try:
        yield
    finally:
        for var, value in saved.items():
            if value is None:
                os.environ.pop(var, None)
            else:
                os.environ[var] = value


@contextlib.contextmanager
def one_compute_thread() -> Iterator[None]:
    """One compute thread in this process while open (BLAS/OpenMP pools already loaded, OpenCV, torch), as a local
    worker has; the caller's settings come back after. -j 1 then means one core, as it does for the workers."""
    import cv2
    from threadpoolctl import threadpool_limits

    torch = sys.modules.get("torch")
    cv_threads, torch_threads = cv2.getNumThreads(), torch.get_num_threads() if torch else None
    cv2.setNumThreads(1)
    if torch:
        torch.set_num_threads(1)
    try:
        with threadpool_limits(limits=1), _workers_born_single_threaded():
            yield
    finally:
        cv2.setNumThreads(cv_threads)
        if torch:
            torch.set_num_threads(torch_threads)


@dataclass(frozen=True)
class Executor:
    """How tasks run: `n_jobs` local processes (1 = in this process, no pool), or a Dask cluster at `scheduler`
    (an address or a `distributed.Client`) with `backend='dask'`; progress shown as `progress` says
    ('bar', 'log' lines, or 'off')."""

    n_jobs: int = 1
    backend: str = "local"
    scheduler: Any = None
    progress: str = "bar"
    kept_pool: Optional["_KeptPool"] = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, not {self.backend!r}")
        if self.backend == "dask" and not self.scheduler:
            raise ValueError("--backend dask needs --scheduler tcp://HOST:PORT (start one with `dask scheduler`)")
        if isinstance(self.n_jobs, bool) or not isinstance(self.n_jobs, int) or self.n_jobs < 1:
            raise ValueError(f"n_jobs must be a number of processes >= 1, not {self.n_jobs!r}")
        if self.progress not in PROGRESS_MODES:
            raise ValueError(f"progress must be one of {PROGRESS_MODES}, not {self.progress!r}")

    @contextlib.contextmanager
    def kept(self) -> Iterator["Executor"]:
        """This executor, with one set of local workers kept for every map run with it inside the block (closed on
        leaving it): each worker's imports, models and warm-ups are paid once per run, not once per stage. Other
        backends and -j 1 have nothing to keep: they get this executor as it is."""
        if self.backend != "local" or self.n_jobs == 1 or self.kept_pool is not None:
            yield self
            return
        pool = _KeptPool(self.n_jobs, held=True)
        try:
            yield replace(self, kept_pool=pool)
        finally:
            pool.close()

    def map(self, fn: Callable[[Any], Any], tasks: Iterable[Any], *, on_crash: Optional[OnCrash] = None,
            label: str = "", unit: str = "tasks", ok: Optional[Callable[[Any], bool]] = None, batch: int = 1,
            ordered: bool = False) -> Iterator[Any]:
        """Yield `fn(task)` for every task, in completion order (or in task order with `ordered`, each as soon as
        the ones before it are in).

        `fn` should turn bad input into a result itself; a task that still raises, or whose worker dies, gets
        `on_crash(task, exc)`, called in this process (without it, the exception propagates). Up to `batch` tasks
        go to a worker per call (fewer when there are few tasks, so every worker gets some 8 calls). The progress
        display is labelled `label`, counts `unit`, and counts a result as failed when `ok(result)` is false.
        """
        tasks = list(tasks)
        with Progress(len(tasks), unit, self.progress, label) as bar:
            pairs = self._pairs(fn, tasks, on_crash, batch)
            try:
                counted = _counted(pairs, bar, ok)
                yield from _in_order(counted) if ordered else (result for _, result in counted)
            finally:
                pairs.close()  # stops the workers now, also when the caller stops early

    def _pairs(self, fn, tasks: list, on_crash: Optional[OnCrash], batch: int) -> Iterator[tuple[int, Any]]:
        """(task position, result) of every task, in completion order."""
        if self.backend == "local" and self.n_jobs == 1:
            return _in_process(fn, tasks, on_crash)
        batches = _batches(len(tasks), batch, self.n_jobs)
        if self.backend == "dask":
            return _run_dask(_Worker(fn), tasks, batches, self.scheduler, on_crash)
        return _run_pool(_Worker(fn), tasks, batches, self.kept_pool or _KeptPool(self.n_jobs), on_crash)


def _counted(pairs: Iterator[tuple[int, Any]], bar: Progress, ok: Optional[Callable[[Any], bool]]) -> Iterator[tuple[int, Any]]:
    """The pairs as they come, each counted on `bar` (as failed when `ok(result)` is false)."""
    for i, result in pairs:
        bar.update(ok is None or bool(ok(result)))
        yield i, result


def _in_order(pairs: Iterator[tuple[int, Any]]) -> Iterator[Any]:
    """The results of (position, result) pairs in position order, each as soon as all before it are in."""
    waiting, upto = {}, 0
    for i, result in pairs:
        waiting[i] = result
        while upto in waiting:
            yield waiting.pop(upto)
            upto += 1


def _batches(n: int, batch: int, n_jobs: int) -> list[list[int]]:
    """Positions 0..n-1 in batches of up to `batch`, small enough that each of `n_jobs` workers gets some 8."""
    step = max(1, min(batch, n // (n_jobs * 8)))
    return [list(range(i, min(i + step, n))) for i in range(0, n, step)]


def _crash(on_crash: Optional[OnCrash], task, exc: BaseException):
    if on_crash is None:
        raise exc
    return on_crash(task, exc)


def _guarded(fn, task, on_crash: Optional[OnCrash]):
    try:
        return fn(task)
    except Exception as e:  # a record of the failure keeps the run alive
        return _crash(on_crash, task, e)


_WARM: set = set()


def _warmed(fn) -> None:
    """Call `fn.warm_up()`, if it has one, once per process and kind of `fn`: what its tasks load on first use,
    so that cost is not billed to the first task. A warm-up that fails is ignored: the tasks meet it again."""
    kind = type(fn)
    if kind not in _WARM and hasattr(fn, "warm_up"):
        try:
            fn.warm_up()
        except Exception:
            pass
    _WARM.add(kind)


def _in_process(fn, tasks: list, on_crash: Optional[OnCrash]) -> Iterator[tuple[int, Any]]:
    with one_compute_thread():
        _warmed(fn)
        for i, task in enumerate(tasks):
            yield i, _guarded(fn, task, on_crash)


class _Worker:
    """`fn` over a batch of tasks in a worker, single-threaded: (True, result) or (False, exception) per task, so
    an exception is its own task's alone (a class, so it pickles for process pools and Dask)."""

    def __init__(self, fn):
        self.fn = fn

    def __call__(self, batch: list) -> list[tuple[bool, Any]]:
        single_threaded()
        _warmed(self.fn)
        out = []
        for task in batch:
            try:
                out.append((True, self.fn(task)))
            except Exception as e:
                e.add_note("in the worker process:\n" + traceback.format_exc())  # the traceback does not travel
                out.append((False, e))
        return out


def _finished(batch: list[int], outcomes: Optional[list], exc: Optional[BaseException], tasks: list,
              on_crash: Optional[OnCrash], retry: Optional[_Retry]) -> Iterator[tuple[int, Any]]:
    """The pairs of a finished batch: each task's outcome; or, when the batch failed as a whole (`exc`: its worker
    died, or its results could not travel back), nothing if `retry` takes it back, else its task's crash record."""
    if exc is None:
        for i, (ok, value) in zip(batch, outcomes):
            yield i, value if ok else _crash(on_crash, tasks[i], value)
    elif retry is None or not retry(batch, exc):
        if isinstance(exc, BrokenProcessPool):
            exc = WorkerDied(f"the worker process died ({exc})")
        yield batch[0], _crash(on_crash, tasks[batch[0]], exc)


def _pool(n_jobs: int) -> ProcessPoolExecutor:
    """Spawned workers (no inherited threads or locks: a forked worker can deadlock on them), single-threaded from
    their start (run them under `_workers_born_single_threaded`, so their imports see it too), that end with the
    process that started them."""
    return ProcessPoolExecutor(n_jobs, mp_context=multiprocessing.get_context("spawn"), initializer=_worker_started)


class _KeptPool:
    """A local pool that outlives the round that started it: the next round (of this map or a later one) takes it
    over, unless a worker died in it or its map stopped early; then it is shut down, and the next round spawns a
    fresh one."""

    def __init__(self, n_jobs: int, held: bool = False):
        self.n_jobs, self.held, self._pool = n_jobs, held, None  # held: an `Executor.kept()` block closes it

    def get(self) -> ProcessPoolExecutor:
        if self._pool is None:
            self._pool = _pool(self.n_jobs)
        return self._pool

    def close(self) -> None:
        """Stop the workers (after the tasks they are running; queued ones are cancelled)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None


def _worker_started() -> None:
    """A pool worker's initialiser: one compute thread, and a thread that ends the worker as soon as its parent is
    gone. Without it a parent killed (kill -9, SIGTERM, an out-of-memory kill) left its spawned workers running
    their takes and then waiting for work forever (~1 GB each); what a worker was writing is under a temporary name,
    which the next run removes."""
    single_threaded()
    parent = multiprocessing.parent_process()
    if parent is not None:
        threading.Thread(target=_exit_with, args=(parent.sentinel,), name="meadkit-parent-watch", daemon=True).start()
    atexit.register(_leave_without_teardown)


def _leave_without_teardown() -> None:
    """A worker's last act once the pool lets it go: its results were sent (synchronously) and its files closed, so
    it exits at once instead of tearing its models down object by object (mediapipe's graphs, dlib's trees: ~0.4 s
    that every run's end waited for)."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def _exit_with(sentinel: int) -> None:
    multiprocessing.connection.wait([sentinel])  # ready once the parent process has ended
    os._exit(1)


def _run_pool(worker: _Worker, tasks: list, batches: list[list[int]], kept: _KeptPool,
              on_crash: Optional[OnCrash]) -> Iterator[tuple[int, Any]]:
    """The batches through `kept`'s pool, which is closed after unless an `Executor.kept()` block holds it."""
    queue, alone = deque(batches), deque()
    try:
        with _workers_born_single_threaded():
            while queue or alone:
                if alone:  # a task in flight when a worker died: alone, so only the one that kills a process is recorded
                    yield from _run_alone(worker, tasks, alone.popleft(), on_crash)
                else:
                    yield from _pool_round(worker, tasks, queue, alone, kept, on_crash)
    finally:
        if not kept.held:
            kept.close()


def _pool_round(worker: _Worker, tasks: list, queue: deque, alone: deque, kept: _KeptPool,
                on_crash: Optional[OnCrash]) -> Iterator[tuple[int, Any]]:
    """Queued batches through `kept`'s pool until none is left or a worker dies: then every batch in flight fails,
    a batch of several is split into single tasks (queued first) and a single task goes to `alone`; the pool is
    shut down then, and when its map stops early, and kept for the next round when every batch came back."""

    def retry(batch: list[int], exc: BaseException) -> bool:
        if len(batch) > 1:
            queue.extendleft([i] for i in reversed(batch))
            return True
        if isinstance(exc, BrokenProcessPool):
            alone.append(batch)
            return True
        return False

    pool, inflight, n_jobs, every_batch_back = kept.get(), {}, kept.n_jobs, False
    try:
        while queue or inflight:
            while queue and len(inflight) < 2 * n_jobs:
                try:
                    inflight[pool.submit(worker, [tasks[i] for i in queue[0]])] = queue[0]
                except BrokenProcessPool:  # a worker died since the last wait: its future, in flight, tells which
                    break
                queue.popleft()
            if not inflight:
                return
            done, _ = wait(inflight, return_when=FIRST_COMPLETED)
            broken = any(isinstance(f.exception(), BrokenProcessPool) for f in done)
            if broken:
                done = wait(inflight).done  # a dead worker ends every future in flight
            for fut in done:
                exc = fut.exception()
                yield from _finished(inflight.pop(fut), None if exc else fut.result(), exc, tasks, on_crash, retry)
            if broken:
                return
        every_batch_back = True
    finally:
        if not every_batch_back:
            kept.close()


def _run_alone(worker: _Worker, tasks: list, batch: list[int], on_crash: Optional[OnCrash]) -> Iterator[tuple[int, Any]]:
    """One task in a fresh process of its own; if that one dies too, the task gets its crash record."""
    with _pool(1) as pool:
        fut = pool.submit(worker, [tasks[i] for i in batch])
        exc = fut.exception()
    yield from _finished(batch, None if exc else fut.result(), exc, tasks, on_crash, None)


def _run_dask(worker: _Worker, tasks: list, batches: list[list[int]], scheduler,
              on_crash: Optional[OnCrash]) -> Iterator[tuple[int, Any]]:
    """Batches as Dask tasks; a batch of several that fails as a whole (its worker died) is resubmitted task by task."""
    try:
        from distributed import Client, as_completed
    except ImportError:  # pragma: no cover - dask[distributed] is a dependency
        raise RuntimeError("the dask backend needs `pip install dask[distributed]`") from None
    client = scheduler if isinstance(scheduler, Client) else Client(scheduler)
    pending, batch_of = as_completed(), {}

    def submit(batch: list[int]) -> None:
        fut = client.submit(worker, [tasks[i] for i in batch], pure=False)
        batch_of[fut] = batch
        pending.add(fut)

    def retry(batch: list[int], exc: BaseException) -> bool:
        if len(batch) == 1:
            return False
        for i in batch:
            submit([i])
        return True

    try:
        for batch in batches:
            submit(batch)
        for fut in pending:
            try:
                outcomes, exc = fut.result(), None
            except Exception as e:
                outcomes, exc = None, e
            fut.release()
            yield from _finished(batch_of.pop(fut), outcomes, exc, tasks, on_crash, retry)
    finally:
        if client is not scheduler:
            client.close()
