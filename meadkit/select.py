"""Structured selection of manifest rows (column in values), never `eval`/`query` on user text."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Iterable, Optional

import pandas as pd

from meadkit.corpus.names import ACTOR_RE, EMOTIONS, LEVELS, VIEWS
from meadkit.manifest import read_table

#: Columns a user may filter on, and the type their values are coerced to.
FILTER_COLUMNS = {
    "actor": str,
    "gender": str,
    "emotion": str,
    "level": int,
    "take": int,
    "view": str,
    "split": str,
    "status": str,
}


#: The values a filter column can take (actor ids are free-form, so a pattern); absent = any value of its type.
FILTER_VALUES = {
    "actor": ACTOR_RE,
    "gender": ("M", "W"),
    "emotion": EMOTIONS,
    "level": LEVELS,
    "view": VIEWS,
    "split": ("train", "val", "test"),
}


class SelectError(ValueError):
    """A filter on an unknown column, or with values of the wrong type or outside what the column can take."""


def load_clips(path: Path | str) -> pd.DataFrame:
    """The clip manifest from a prepared folder OUT, or a Parquet manifest given directly."""
    path = Path(path)
    if path.is_dir():
        path = path / "manifests" / "clips.parquet"
    if not path.exists():
        raise SelectError(f"no clip manifest at {path} (run `meadkit prepare` first)")
    return read_table(path)


def select(df: pd.DataFrame, keep_missing: bool = False, **filters: Optional[Iterable]) -> pd.DataFrame:
    """Rows of `df` where every given column takes one of the given values (None = no filter); with
    `keep_missing`, also rows with no value in a filtered column (e.g. a whole archive's row)."""
    mask = pd.Series(True, index=df.index)
    for column, values in filters.items():
        if values is None:
            continue
        wanted = filter_values(column, values)
        if column not in df.columns:
            raise SelectError(f"the manifest has no {column!r} column")
        mask &= df[column].isin(wanted) | (df[column].isna() if keep_missing else False)
    return df[mask]


def filter_values(column: str, values: Iterable | str | int) -> set:
    """The typed values of one filter; an unknown column or a value it cannot take raises SelectError
    listing what is allowed (so a typo is an error, not an empty selection)."""
    if column not in FILTER_COLUMNS:
        raise SelectError(f"cannot filter on {column!r}; filterable: {', '.join(FILTER_COLUMNS)}")
    values = [values] if isinstance(values, (str, int)) else list(values)
    try:
        wanted = {FILTER_COLUMNS[column](v) for v in values}
    except ValueError:
        raise SelectError(f"{column} values must be {FILTER_COLUMNS[column].__name__}: {values}") from None
    allowed = FILTER_VALUES.get(column)
    if isinstance(allowed, re.Pattern):
        bad = sorted(v for v in wanted if not allowed.match(v))
        what = "M or W and 3 digits, e.g. M003,W009"
    else:
        bad = sorted(v for v in wanted if allowed is not None and v not in allowed)
        what = ", ".join(map(str, allowed or ()))
    if bad:
        raise SelectError(f"unknown {column} {', '.join(map(str, bad))}; allowed: {what}")
    return wanted


def split_csv(text: Optional[str]) -> Optional[list[str]]:
    """'happy,sad' -> ['happy', 'sad']; None or '' -> None (no filter)."""
    if not text:
        return None
    return [t.strip() for t in text.split(",") if t.strip()]


def counts(df: pd.DataFrame) -> pd.DataFrame:
    """Clip counts by emotion x level (rows) and view (columns)."""
    if df.empty:
        return pd.DataFrame()
    return df.pivot_table(index=["emotion", "level"], columns="view", values="take_id", aggfunc="count", fill_value=0)
