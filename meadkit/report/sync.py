"""The sync section: each view's offset on the reference-audio clock and the confidence of its estimate."""
from __future__ import annotations

from meadkit.report.inputs import Inputs, view_order
from meadkit.report.page import img_html, note, table_html
from meadkit.report.per_view import per_view_plot, summary_by_view


def section_sync(inp: Inputs) -> str:
    """Offsets and confidences per view, plotted and summarised."""
    missing = inp.need("sync")
    if missing:
        return missing
    s = inp.sync
    if s.empty or s["offset_s"].notna().sum() == 0:
        return note(f"The sync manifest has {len(s)} rows and no offset: no view was synced.")
    views = view_order(s["view"])
    fig = per_view_plot(s, [("offset_s", "offset (s, reference clock)"), ("confidence", "confidence")], views)
    return (
        note("Offset of each view's video time 0 on the reference-audio clock (t_ref = t_video + offset), and the confidence of its estimate.")
        + img_html(fig, "sync offsets and confidences per view")
        + table_html(summary_by_view(s, views, ["offset_s", "confidence"], ["status", "method"]))
    )
