"""The curation section: quality measures per view, the flags, the worst clips and the level-order check per actor."""
from __future__ import annotations

import numpy as np
import pandas as pd

from meadkit.report.inputs import Inputs, view_order
from meadkit.report.page import img_html, note, table_html
from meadkit.report.per_view import per_view_plot

#: The measures plotted per view, with their labels.
PLOTTED = [("av_offset_frames", "lip-sync lag (frames, + = video late)"), ("yaw_deg", "yaw (degrees)"),
           ("sharpness", "sharpness"), ("expression_strength", "expression strength")]
#: Clips listed as the worst at most.
WORST = 15


def section_curation(inp: Inputs) -> str:
    """Distributions per view, flag counts per view, the worst clips and the level order per actor."""
    missing = inp.need("clips")
    if missing:
        return missing
    c = inp.clips
    if "quality_flags" not in c.columns or c["quality_flags"].isna().all():
        return note("No clip has curation measures (a manifest of an older meadkit, or prepare --until faces).")
    c = c[c["quality_flags"].notna()].assign(flags=lambda d: d["quality_flags"].map(list))
    views = view_order(c["view"])
    return (
        note("Per-clip quality (manifests/clips.md): lip-sync lag, head pose, crop sharpness and expression strength "
             "per view; flags by the thresholds of [curation].")
        + img_html(per_view_plot(c, PLOTTED, views), "curation measures per view")
        + table_html(flag_counts(c, views))
        + "<h3>Worst clips</h3>" + table_html(worst_clips(c))
        + "<h3>Expression strength by level</h3>"
        + note("Median expression strength per actor, emotion and level; ordered = rises strictly with the level.")
        + table_html(level_table(c))
    )


def flag_counts(c: pd.DataFrame, views: list[str]) -> pd.DataFrame:
    """Per view: its measured clips and how many carry each flag."""
    rows = []
    for view in views:
        d = c[c["view"] == view]
        counts = pd.Series([f for flags in d["flags"] for f in flags], dtype=object).value_counts()
        rows.append({"view": view, "clips": len(d), **counts.to_dict()})
    return pd.DataFrame(rows).fillna(0)


def worst_clips(c: pd.DataFrame) -> pd.DataFrame:
    """The flagged clips with the most flags (then the least sharp), at most WORST."""
    d = c[c["flags"].map(len) > 0].assign(n_flags=lambda x: x["flags"].map(len))
    d = d.sort_values(["n_flags", "sharpness"], ascending=[False, True]).head(WORST)
    cols = ["take_id", "view", "flags", "av_offset_frames", "yaw_deg", "sharpness", "expression_strength"]
    return d[cols].assign(flags=d["flags"].map(", ".join))


def level_table(c: pd.DataFrame) -> pd.DataFrame:
    """Per (actor, emotion) with an emotional level measured: the median strength of each level, and whether
    they rise strictly with it."""
    e = c[(c["emotion"] != "neutral") & c["expression_strength"].notna()]
    if e.empty:
        return pd.DataFrame()
    med = e.groupby(["actor", "emotion", "level"])["expression_strength"].median().unstack("level")
    med.columns = [f"level {lv}" for lv in med.columns]
    ordered = [bool(np.all(np.diff(row.dropna().to_numpy()) > 0)) if row.notna().sum() > 1 else None
               for _, row in med.iterrows()]
    return med.round(4).assign(ordered=ordered).reset_index()
