"""The problems section: every manifest row whose status is not ok, grouped by status, with its file and reason."""
from __future__ import annotations

import pandas as pd

from meadkit.report.inputs import Inputs
from meadkit.report.page import esc, note, table_html

#: At most this many files are listed per problem group (the manifests hold all of them).
MAX_LISTED = 1000
#: (manifest, heading, columns listed) for each manifest, in page order.
_SPEC = (
    ("recordings", "Recordings (index)", ["relpath", "member", "kind", "take_id", "view", "error"]),
    ("sync", "Sync (per take and view)", ["take_id", "view", "method", "confidence", "offset_s", "error"]),
    ("clips", "Clips (per take and view)", ["take_id", "view", "source", "error"]),
    ("status", "Takes", ["take_id", "views_ok", "views_total", "error"]),
)


def _problem_groups(df: pd.DataFrame, title: str, columns: list[str]) -> str:
    """One manifest's rows that are not ok, a collapsible table per status (small groups open)."""
    if df.empty:
        return f"<h3>{esc(title)}</h3>" + note("The manifest has no rows.")
    bad = df[df["status"] != "ok"]
    if bad.empty:
        return f"<h3>{esc(title)}</h3>" + note(f"All {len(df)} rows are ok.")
    parts = [f"<h3>{esc(title)}: {len(bad)} of {len(df)} not ok</h3>"]
    cols = [c for c in columns if c in bad.columns]
    for status, group in bad.groupby("status", sort=True):
        shown = group[cols].head(MAX_LISTED).dropna(axis=1, how="all")
        more = f" (first {MAX_LISTED} listed)" if len(group) > MAX_LISTED else ""
        open_ = " open" if len(group) <= 25 else ""
        parts.append(f'<details{open_}><summary><b>{esc(status)}</b>: {len(group)}{esc(more)}</summary>{table_html(shown, "problems")}</details>')
    return "".join(parts)


def section_problems(inp: Inputs) -> str:
    """The rows that are not ok of each manifest, or why a manifest is missing."""
    parts = [note("Every row whose status is not ok, grouped by status, with its file and reason.")]
    for name, title, cols in _SPEC:
        df = getattr(inp, name)
        parts.append(_problem_groups(df, title, cols) if df is not None else f"<h3>{esc(title)}</h3>" + inp.need(name))
    return "".join(parts)
