"""The faces section: found ratio, score and jitter per view, the contact sheet of crops, and landmarks on source frames."""
from __future__ import annotations

from meadkit.report.contact_sheet import contact_cells, contact_sheet
from meadkit.report.inputs import PICTURE_TRIES, Inputs, view_order
from meadkit.report.landmarks import landmark_figure, landmark_frames
from meadkit.report.page import img_html, note, table_html
from meadkit.report.per_view import per_view_plot, summary_by_view


def _pictures(inp: Inputs) -> str:
    """The contact sheet and the landmark picture, or why each cannot be drawn."""
    view, cells = contact_cells(inp)
    parts = ["<h3>Contact sheet</h3>",
             img_html(contact_sheet(view, cells), f"contact sheet of aligned crops ({view})") if cells
             else note("No aligned crop video found (no clip with status ok and an existing crop_video)."),
             "<h3>Landmarks on the source frames</h3>"]
    if inp.recordings is None:
        return "".join(parts) + inp.need("recordings")
    frames = landmark_frames(inp)
    parts.append(img_html(landmark_figure(frames), "landmarks drawn on one source frame per view") if frames
                 else note(f"No source frame could be drawn ({PICTURE_TRIES} takes tried): no ok clip with an existing faces "
                           "file, a valid landmark frame and a readable source video listed in recordings."))
    return "".join(parts)


def section_faces(inp: Inputs) -> str:
    """Face quality per view, then the pictures; says so when no clip has face results."""
    missing = inp.need("clips")
    if missing:
        return missing
    c = inp.clips
    done = c[c["found_ratio"].notna()]
    if done.empty:
        return note(f"No clip has face results ({len(c)} clips; statuses: "
                    + ", ".join(f"{k} {n}" for k, n in c["status"].value_counts().items())
                    + "). The faces stage did not run (prepare --until sync/features) or failed on every clip.")
    views = view_order(done["view"])
    metrics = [("found_ratio", "face found ratio"), ("mean_score", "mean detection/fit score"), ("jitter", "landmark jitter")]
    return (img_html(per_view_plot(done, metrics, views), "faces: found ratio, score and jitter per view")
            + table_html(summary_by_view(done, views, [m for m, _ in metrics], ["status"]))
            + _pictures(inp))
