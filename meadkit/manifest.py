"""Parquet manifests: atomic write and read of typed tables (any Parquet reader can use them)."""
from __future__ import annotations

from pathlib import Path
from typing import Iterable, Mapping

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from meadkit.atomic import atomic_path


def to_table(rows: Iterable[Mapping], schema: pa.Schema) -> pa.Table:
    """Build a table with exactly `schema`'s columns and types from dict-like rows."""
    rows = list(rows)
    return pa.Table.from_pylist([{f.name: r.get(f.name) for f in schema} for r in rows], schema=schema)


def write_table(table: pa.Table, path: Path | str) -> Path:
    """Write `table` to `path` atomically (zstd-compressed Parquet)."""
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, compression="zstd")
    return Path(path)


def write_rows(rows: Iterable[Mapping], schema: pa.Schema, path: Path | str) -> Path:
    """`write_table(to_table(rows, schema), path)`."""
    return write_table(to_table(rows, schema), path)


def read_table(path: Path | str) -> pd.DataFrame:
    """Read a manifest into pandas with nullable dtypes kept as Arrow-backed where needed."""
    return pq.read_table(path).to_pandas()
