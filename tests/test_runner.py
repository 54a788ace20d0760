"""The executor: in-process, local processes, and a Dask cluster give the same records."""
import os

import pytest

from meadkit.runner import Executor, _batches

SERIAL, TWO = Executor(n_jobs=1, progress="off"), Executor(n_jobs=2, progress="off")


def _square(task):
    if task == 3:
        raise ValueError("bad input 3")
    return {"task": task, "value": task * task, "threads": os.environ.get("OMP_NUM_THREADS")}


def _crash(task, exc):
    return {"task": task, "error": str(exc)}


def _expected():
    return {t: ({"error": "bad input 3"} if t == 3 else {"value": t * t}) for t in range(6)}


def _check(records):
    got = {r["task"]: r for r in records}
    for t, want in _expected().items():
        assert {k: got[t][k] for k in want} == want


def test_in_process_and_crash_records():
    _check(SERIAL.map(_square, range(6), on_crash=_crash))
    with pytest.raises(ValueError):
        list(SERIAL.map(_square, range(6)))


def test_local_processes_are_single_threaded():
    records = list(TWO.map(_square, range(6), on_crash=_crash))
    _check(records)
    assert {r["threads"] for r in records if "threads" in r} == {"1"}


def _threads(task):
    import cv2

    return cv2.getNumThreads(), os.environ.get("OMP_NUM_THREADS")


def test_every_worker_gets_the_thread_initialiser():
    assert set(TWO.map(_threads, range(8), batch=2)) == {(1, "1")}


def _pools(task):
    import cv2
    from threadpoolctl import threadpool_info

    return cv2.getNumThreads(), tuple(sorted({p["num_threads"] for p in threadpool_info()}))


def test_workers_are_born_single_threaded_and_so_is_the_in_process_path():
    """BLAS/OpenMP pools are sized when a library loads: a worker's must be 1 from its start, and -j 1 in this
    process computes on one thread too, then gives the caller its own settings back."""
    import cv2
    from threadpoolctl import threadpool_info

    before = cv2.getNumThreads(), {p["num_threads"] for p in threadpool_info()}
    assert set(TWO.map(_pools, range(4))) == {(1, (1,))}
    assert set(SERIAL.map(_pools, range(2))) == {(1, (1,))}
    assert (cv2.getNumThreads(), {p["num_threads"] for p in threadpool_info()}) == before


def test_an_exception_raised_in_a_worker_propagates_without_on_crash():
    with pytest.raises(ValueError, match="bad input 3") as info:
        list(TWO.map(_square, range(6)))
    assert any("in the worker process" in note for note in getattr(info.value, "__notes__", []))


class _Warmed:
    """A task function with a warm-up: tasks report whether their process was warmed before them."""

    warmed_in: list = []

    def warm_up(self):
        type(self).warmed_in.append(os.getpid())

    def __call__(self, task):
        return os.getpid(), type(self).warmed_in.count(os.getpid())


def test_the_warm_up_runs_once_per_process_before_its_first_task():
    _Warmed.warmed_in.clear()
    assert set(SERIAL.map(_Warmed(), range(4))) == {(os.getpid(), 1)}
    assert set(SERIAL.map(_Warmed(), range(2))) == {(os.getpid(), 1)}  # this process is warm already
    results = list(TWO.map(_Warmed(), range(16)))
    assert {n for _, n in results} == {1} and os.getpid() not in {pid for pid, _ in results}


@pytest.mark.slow
def test_dask_local_cluster_on_loopback():
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                                  dashboard_address=None) as cluster, distributed.Client(cluster) as client:
        _check(Executor(backend="dask", scheduler=client, progress="off").map(_square, range(6), on_crash=_crash))


def test_dask_needs_a_scheduler():
    with pytest.raises(ValueError, match="scheduler"):
        list(Executor(backend="dask").map(_square, [1]))


@pytest.mark.parametrize("bad", [{"n_jobs": 0}, {"backend": "ssh"}, {"progress": "loud"}])
def test_bad_settings_are_refused(bad):
    with pytest.raises(ValueError):
        Executor(**bad)


def _dies_on_two(task):
    if task == 2:
        os._exit(13)  # a worker that dies without a Python exception (segfault, OOM kill)
    return {"task": task, "value": task * task}


def test_a_dying_worker_only_costs_its_own_task():
    records = {r["task"]: r for r in TWO.map(_dies_on_two, range(7), on_crash=_crash)}
    assert set(records) == set(range(7))
    assert "died" in records[2]["error"]
    assert all(records[t]["value"] == t * t for t in range(7) if t != 2)


def test_batches_give_every_worker_several_calls():
    assert _batches(64, 4, 2) == [list(range(i, i + 4)) for i in range(0, 64, 4)]
    assert _batches(40, 64, 2) == [[i, i + 1] for i in range(0, 40, 2)]  # 40 // (2 * 8) = 2 a batch
    assert _batches(7, 64, 2) == [[i] for i in range(7)]
    assert _batches(0, 64, 2) == []


def test_a_task_that_kills_its_batch_is_narrowed_down_to_itself():
    """Task 2 sits in a batch of 4 ([0, 1, 2, 3]): only it gets the crash record, its batch-mates their results."""
    records = list(TWO.map(_dies_on_two, range(64), on_crash=_crash, batch=4, ordered=True))
    assert [r["task"] for r in records] == list(range(64))
    assert "died" in records[2]["error"]
    assert all(records[t]["value"] == t * t for t in range(64) if t != 2)


def test_ordered_results_come_in_task_order():
    assert [r["task"] for r in TWO.map(_square, range(20), on_crash=_crash, ordered=True)] == list(range(20))


@pytest.mark.parametrize("n_jobs", [1, 2])
def test_progress_counts_done_and_failed(n_jobs, capsys):
    run = Executor(n_jobs=n_jobs, progress="log")
    list(run.map(_square, range(6), on_crash=_crash, unit="squares", ok=lambda r: "error" not in r))
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("6/6 squares, 1 failed, ")


def test_progress_off_prints_nothing(capsys):
    list(SERIAL.map(_square, range(6), on_crash=_crash))
    assert capsys.readouterr().err == ""


@pytest.mark.slow
def test_shards_are_the_same_serial_and_in_two_processes(prepared, tmp_path):
    from fakes import SIZE
    from meadkit.shards import ShardConfig, build_shards, frame_bytes

    out, _ = prepared
    config = ShardConfig(size=SIZE, shard_bytes=50 * frame_bytes(SIZE))
    serial = build_shards(out, tmp_path / "serial", config)
    parallel = build_shards(out, tmp_path / "two", config, executor=TWO)
    assert len(serial["shards"]) > 1 and serial == parallel


PARENT = """
import sys, time
sys.path.insert(0, {tests!r})
from meadkit.runner import Executor
from test_runner import _note_pid_and_wait
list(Executor(n_jobs=2, progress="off").map(_note_pid_and_wait, [{folder!r}] * 4))
"""


def _note_pid_and_wait(folder):
    import time
    from pathlib import Path

    (Path(folder) / f"{os.getpid()}.pid").touch()
    time.sleep(120)


@pytest.mark.parametrize("sig", ["SIGKILL", "SIGTERM"])
def test_workers_end_with_a_parent_that_is_killed(tmp_path, sig):
    """kill -9 (or SIGTERM) of the process running a pool: its spawned workers, mid-task, end within seconds (they
    used to run on, then wait for work forever, ~1 GB each)."""
    import signal
    import subprocess
    import sys
    import time

    code = PARENT.format(tests=os.path.dirname(__file__), folder=str(tmp_path))
    parent = subprocess.Popen([sys.executable, "-c", code])
    deadline = time.monotonic() + 120
    while len(list(tmp_path.glob("*.pid"))) < 2 and time.monotonic() < deadline and parent.poll() is None:
        time.sleep(0.2)
    workers = [int(p.stem) for p in tmp_path.glob("*.pid")]
    assert len(workers) == 2, "the workers did not start"
    parent.send_signal(getattr(signal, sig))
    parent.wait(10)
    alive = workers
    for _ in range(100):
        alive = [pid for pid in workers if _alive(pid)]
        if not alive:
            break
        time.sleep(0.1)
    assert not alive, f"workers {alive} outlived their parent"


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"  # a zombie has ended (init reaps it)
    except FileNotFoundError:
        return False


def _dies_late_on_one(task):
    import time

    if task == 1:
        time.sleep(0.5)
        os._exit(13)
    return {"task": task, "value": task * task}


def test_a_worker_dying_while_the_caller_is_busy_costs_only_its_task():
    """The caller holds the first result for 2 s while another task's worker dies: the pool is broken by the time
    more tasks are submitted (that submit used to raise BrokenProcessPool out of the run)."""
    import time

    records = {}
    for r in TWO.map(_dies_late_on_one, range(12), on_crash=_crash):
        if not records:
            time.sleep(2)
        records[r["task"]] = r
    assert set(records) == set(range(12)) and "died" in records[1]["error"]
    assert all(records[t]["value"] == t * t for t in range(12) if t != 1)


def _pid(task):
    import time

    time.sleep(0.2)  # long enough that both workers take tasks
    return os.getpid()


def test_a_kept_executor_runs_every_map_in_the_same_workers():
    """Inside `kept()` a run's stages share one set of workers (spawned, imported and warmed once); without it each
    map has its own."""
    with TWO.kept() as workers:
        first, second = set(workers.map(_pid, range(6))), set(workers.map(_pid, range(6)))
        assert len(first) == 2 and second == first and os.getpid() not in first
    assert set(TWO.map(_pid, range(6))).isdisjoint(first)  # the block's workers ended with it
    with SERIAL.kept() as serial:  # nothing to keep at -j 1: the same executor, in this process
        assert serial is SERIAL and set(serial.map(_pid, range(2))) == {os.getpid()}


def test_a_kept_pool_broken_by_a_dying_worker_is_replaced_for_the_next_map():
    with TWO.kept() as workers:
        before = set(workers.map(_pid, range(4)))
        records = {r["task"]: r for r in workers.map(_dies_on_two, range(7), on_crash=_crash)}
        after = set(workers.map(_pid, range(4)))
    assert "died" in records[2]["error"] and all(records[t]["value"] == t * t for t in range(7) if t != 2)
    assert len(after) == 2 and after.isdisjoint(before)


def test_a_map_stopped_early_inside_a_kept_block_leaves_the_next_map_working():
    with TWO.kept() as workers:
        for _ in workers.map(_pid, range(8)):
            break  # the caller stops: the pool's workers are stopped with the map
        assert len(list(workers.map(_square, range(6), on_crash=_crash))) == 6
