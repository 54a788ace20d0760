"""Click options shared by several commands (filters, parallelism)."""
from __future__ import annotations

import click

from meadkit.select import split_csv


def filter_options(fn):
    """--actor/--gender/--emotion/--level/--view/--take: comma-separated values, structured filters."""
    for name, what in reversed(
        [
            ("actor", "actor ids, e.g. M003,W009"),
            ("gender", "M or W"),
            ("emotion", "emotion folder names, e.g. happy,sad"),
            ("level", "intensity levels 1-3, e.g. 2,3"),
            ("view", "views, e.g. front,left_30"),
            ("take", "take numbers, e.g. 1,2,3"),
        ]
    ):
        fn = click.option(f"--{name}", f"{name}_", metavar="LIST", help=f"Keep only these {what}.")(fn)
    return fn


def filters_from(kwargs: dict) -> dict:
    """The filter options' values as lists (or None), keyed by manifest column."""
    return {k[:-1]: split_csv(kwargs.pop(k)) for k in list(kwargs) if k.endswith("_") and k[:-1] in
            ("actor", "gender", "emotion", "level", "view", "take", "split", "status")}


def parallel_options(fn):
    """-j/--jobs, --backend, --scheduler."""
    fn = click.option("--scheduler", metavar="ADDR", help="Dask scheduler address (tcp://HOST:8786) for --backend dask.")(fn)
    fn = click.option("--backend", type=click.Choice(["local", "dask"]), default="local", show_default=True,
                      help="local: processes on this machine; dask: tasks on an existing Dask cluster.")(fn)
    fn = click.option("-j", "--jobs", type=int, default=1, show_default=True, help="Parallel worker processes (local backend).")(fn)
    return fn
