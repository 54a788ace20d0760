"""The task runner: in-process, local processes, and a Dask cluster give the same records."""
import os

import pytest

from meadkit.runner import run_tasks


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
    _check(run_tasks(_square, range(6), n_jobs=1, on_crash=_crash))
    with pytest.raises(ValueError):
        list(run_tasks(_square, range(6), n_jobs=1))


def test_local_processes_are_single_threaded():
    records = list(run_tasks(_square, range(6), n_jobs=2, on_crash=_crash))
    _check(records)
    assert {r["threads"] for r in records if "threads" in r} == {"1"}


@pytest.mark.slow
def test_dask_local_cluster_on_loopback():
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                                  dashboard_address=None) as cluster, distributed.Client(cluster) as client:
        _check(run_tasks(_square, range(6), backend="dask", scheduler=client, on_crash=_crash))


def test_dask_needs_a_scheduler():
    with pytest.raises(ValueError, match="scheduler"):
        list(run_tasks(_square, [1], backend="dask"))


def _dies_on_two(task):
    if task == 2:
        os._exit(13)  # a worker that dies without a Python exception (segfault, OOM kill)
    return {"task": task, "value": task * task}


def test_a_dying_worker_only_costs_its_own_task():
    records = {r["task"]: r for r in run_tasks(_dies_on_two, range(7), n_jobs=2, on_crash=_crash)}
    assert set(records) == set(range(7))
    assert "died" in records[2]["error"]
    assert all(records[t]["value"] == t * t for t in range(7) if t != 2)
