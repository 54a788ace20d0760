"""Structured selection of manifest rows (column in values; a curation column within bounds; no clip with a given
quality flag), never `eval`/`query` on user text."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Iterable, Mapping, Optional

import numpy as np
import pandas as pd

from meadkit.corpus.names import ACTOR_RE, EMOTIONS, LEVELS, VIEWS
from meadkit.curation import FLAGS, NUMERIC_COLUMNS
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


#: Columns `--min` / `--max` bound: the numeric curation columns, and `abs_<column>` for their absolute value.
BOUND_COLUMNS = NUMERIC_COLUMNS + tuple(f"abs_{c}" for c in NUMERIC_COLUMNS)


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


def select(df: pd.DataFrame, keep_missing: bool = False, minimum: Optional[Mapping[str, float]] = None,
           maximum: Optional[Mapping[str, float]] = None, no_flag: Optional[Iterable[str]] = None,
           **filters: Optional[Iterable]) -> pd.DataFrame:
    """Rows of `df` where every given column takes one of the given values (None = no filter); with
    `keep_missing`, also rows with no value in a filtered column (e.g. a whole archive's row). `minimum` and
    `maximum` bound curation columns ({column: number}, `BOUND_COLUMNS`; a row without a value fails the bound);
    `no_flag` drops rows whose quality_flags hold any of these flags."""
    mask = quality_mask(df, minimum or {}, maximum or {}, no_flag or ())
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


def parse_bound(text: str) -> tuple[str, float]:
    """'sharpness=50' -> ('sharpness', 50.0): a bound column and a number, parsed, never evaluated."""
    column, sep, number = (t.strip() for t in str(text).partition("="))
    _check_bound(column)
    try:
        value = float(number)
    except ValueError:
        value = float("nan")
    if not sep or not np.isfinite(value):
        raise SelectError(f"a bound is COLUMN=NUMBER, e.g. sharpness=50; got {text!r}")
    return column, value


def quality_mask(df: pd.DataFrame, minimum: Mapping[str, float], maximum: Mapping[str, float],
                 no_flag: Iterable[str]) -> pd.Series:
    """Rows within every bound (`select`'s `minimum`, `maximum`) and without any of the `no_flag` flags."""
    mask = pd.Series(True, index=df.index)
    for bounds, keep in ((minimum, np.greater_equal), (maximum, np.less_equal)):
        for column, value in bounds.items():
            mask &= keep(_bound_values(df, column), float(value))
    flags = set(no_flag)
    bad = sorted(flags - set(FLAGS))
    if bad:
        raise SelectError(f"unknown flag {', '.join(bad)}; flags: {', '.join(FLAGS)}")
    if flags:
        have = _column(df, "quality_flags")
        mask &= ~have.map(lambda f: f is not None and bool(flags & set(f)))
    return mask


def _bound_values(df: pd.DataFrame, column: str) -> np.ndarray:
    """A bound column's values as floats (NaN where null), `abs_<column>` as absolute values."""
    _check_bound(column)
    name = column.removeprefix("abs_")
    values = pd.to_numeric(_column(df, name), errors="coerce").to_numpy(np.float64, na_value=np.nan)
    return np.abs(values) if name != column else values


def _check_bound(column: str) -> None:
    """Refuse (one line, listing the allowed) a column that is not a numeric curation column."""
    if column not in BOUND_COLUMNS:
        raise SelectError(f"cannot bound {column!r}; columns: {', '.join(BOUND_COLUMNS)}")


def _column(df: pd.DataFrame, name: str) -> pd.Series:
    if name not in df.columns:
        raise SelectError(f"the manifest has no {name!r} column (prepare it again to add the curation columns)")
    return df[name]


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
