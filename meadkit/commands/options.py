"""Click options shared by several commands (filters, parallelism, local output folders)."""
from __future__ import annotations

import os

import click

from meadkit.select import FILTER_COLUMNS, SelectError, filter_values, split_csv

#: The filter options of `filter_options`, with what their help says they take.
FILTERS = (
    ("actor", "actor ids, e.g. M003,W009"),
    ("gender", "M or W"),
    ("emotion", "emotion folder names, e.g. happy,sad"),
    ("level", "intensity levels 1-3, e.g. 2,3"),
    ("view", "views, e.g. front,left_30"),
    ("take", "take numbers, e.g. 1,2,3"),
)


def filter_options(fn):
    """--actor/--gender/--emotion/--level/--view/--take: comma-separated values, repeatable, structured filters."""
    for name, what in reversed(FILTERS):
        fn = click.option(f"--{name}", f"{name}_", metavar="LIST", multiple=True,
                          help=f"Keep only these {what} (comma separated or repeated).")(fn)
    return fn


def filters_from(kwargs: dict) -> dict:
    """The filter options' values as lists (or None), keyed by manifest column, each value checked (see
    `meadkit.select.filter_values`): a value no clip can have is a usage error before any work."""
    filters = {}
    for key in [k for k in kwargs if k.endswith("_") and k[:-1] in FILTER_COLUMNS]:
        given = kwargs.pop(key)
        texts = (given,) if isinstance(given, str) or given is None else given  # repeatable options give tuples
        values = [v for text in texts for v in split_csv(text) or ()]
        try:
            filters[key[:-1]] = sorted(str(v) for v in filter_values(key[:-1], values)) if values else None
        except SelectError as e:
            raise click.UsageError(str(e)) from None
    return filters


class LocalFolder(click.Path):
    """An output folder on this machine's disk: a URL (s3://, gs://) is refused with what to do instead."""

    def __init__(self, why: str):
        super().__init__(file_okay=False)
        self.why = why

    def convert(self, value, param, ctx):
        from meadkit.storage import is_url

        if is_url(value):
            self.fail(f"{value}: must be a local folder ({self.why}); for object storage use `meadkit export` "
                      "(WebDataset or hf) with s3://... or gs://..., or copy the folder up afterwards", param, ctx)
        return super().convert(value, param, ctx)


class Jobs(click.ParamType):
    """-j N: N >= 1 worker processes, or 0 = one per CPU core; always converted to a count >= 1."""

    name = "N"

    def convert(self, value, param, ctx):
        n = value if isinstance(value, int) else click.INT.convert(value, param, ctx)
        if n < 0:
            self.fail(f"{n}: use a number of workers >= 1, or 0 for all {os.cpu_count()} cores", param, ctx)
        return n or os.cpu_count() or 1


def jobs_option(default: int = 1, what: str = "Parallel worker processes"):
    """The one -j/--jobs option of every command: N >= 1 workers, or 0 = all cores."""
    return click.option("-j", "--jobs", type=Jobs(), default=default, show_default=True, help=f"{what}; 0 = all cores.")


def parallel_options(fn):
    """-j/--jobs, --backend, --scheduler."""
    fn = click.option("--scheduler", metavar="ADDR", help="Dask scheduler address (tcp://HOST:8786) for --backend dask.")(fn)
    fn = click.option("--backend", type=click.Choice(["local", "dask"]), default="local", show_default=True,
                      help="local: processes on this machine; dask: tasks on an existing Dask cluster.")(fn)
    return jobs_option(what="Parallel worker processes (local backend)")(fn)
