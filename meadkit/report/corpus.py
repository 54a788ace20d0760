"""The overview section: the paper's Table 1 for this corpus, per-actor totals and each manifest's statuses."""
from __future__ import annotations

from typing import Optional

import pandas as pd

from meadkit.report.inputs import MANIFESTS, Inputs, usable_videos
from meadkit.report.page import note, table_html


def corpus_table(recordings: pd.DataFrame, clips: Optional[pd.DataFrame] = None) -> dict:
    """The paper's Table 1 columns for this corpus, from the usable view videos of recordings.

    Average duration per actor sums each take's duration (the median over its views) per actor,
    as the paper counts one view's footage; clips counts usable view videos (take x view).
    """
    v = usable_videos(recordings)
    take_s = v.groupby(["actor", "take_id"])["duration_s"].median()
    per_actor = take_s.groupby(level="actor").sum()
    res = v.dropna(subset=["width", "height"])
    res = (res["width"].astype(int).astype(str) + "x" + res["height"].astype(int).astype(str)).value_counts()
    row = {
        "corpus": "this corpus", "avg duration per actor": f"{per_actor.mean() / 60:.2f} min" if len(per_actor) else "—",
        "actors": str(v["actor"].nunique()), "emotions": str(v["emotion"].nunique()), "views": str(v["view"].nunique()),
        "intensities": str(v["level"].nunique()),
        "resolution": ", ".join(res.index[:3]) + (f" (+{len(res) - 3} more)" if len(res) > 3 else "") if len(res) else "—",
        "clips": f"{len(v):,}",
    }
    if clips is not None:
        row["prepared clips (ok)"] = f"{int((clips['status'] == 'ok').sum()):,}"
    return row


def _per_actor(recordings: pd.DataFrame) -> str:
    """A collapsible table of takes, clips, views and minutes per actor ('' without usable videos)."""
    v = usable_videos(recordings)
    if not len(v):
        return ""
    take_s = v.groupby(["actor", "take_id"])["duration_s"].median()
    per = pd.DataFrame({
        "gender": v.groupby("actor")["gender"].first(), "takes": v.groupby("actor")["take_id"].nunique(),
        "clips": v.groupby("actor").size(), "views": v.groupby("actor")["view"].nunique(),
        "minutes": take_s.groupby(level="actor").sum() / 60,
    }).reset_index()
    open_ = " open" if len(per) <= 12 else ""
    return f"<details{open_}><summary><b>Per actor</b> ({len(per)})</summary>{table_html(per)}</details>"


def _status_counts(inp: Inputs) -> str:
    """Rows and status counts of each manifest, or why it is missing."""
    counts = []
    for name in MANIFESTS:
        df = getattr(inp, name)
        if df is None:
            counts.append({"manifest": name, "rows": "", "status": "missing: " + inp.missing[name]})
        else:
            vc = df["status"].value_counts() if "status" in df else pd.Series(dtype=int)
            counts.append({"manifest": name, "rows": len(df), "status": ", ".join(f"{k} {n}" for k, n in vc.items())})
    return "<h3>Status at a glance</h3>" + table_html(pd.DataFrame(counts))


def section_overview(inp: Inputs) -> str:
    """Table 1, the per-actor totals and the status counts of every manifest."""
    if inp.recordings is None:
        return inp.need("recordings") + _status_counts(inp)
    row = corpus_table(inp.recordings, inp.clips)
    return (table_html(pd.DataFrame([row], columns=list(row)), "t1")
            + note("Avg duration per actor: each take's duration (median over its views) summed per actor, "
                   "averaged over actors. Clips: usable view videos (take x view).")
            + _per_actor(inp.recordings) + _status_counts(inp))
