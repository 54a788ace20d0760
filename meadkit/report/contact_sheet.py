"""The contact sheet: the middle frame of one aligned crop per actor, emotion and level, for a few actors of one view."""
from __future__ import annotations

from matplotlib.figure import Figure

from meadkit.corpus.names import LEVELS, PAPER_EMOTIONS, nominal_levels
from meadkit.media.probe import MediaError
from meadkit.report.inputs import Inputs
from meadkit.report.page import is_missing, new_figure

#: Actors shown in the contact sheet.
SHEET_ACTORS = 3


def contact_cells(inp: Inputs, n_actors: int = SHEET_ACTORS) -> tuple[str, dict]:
    """Middle frame (RGB) of one aligned crop per (actor, emotion, level) for a few actors of one view.

    Returns (view, {(actor, emotion, level): image}); the view is `front` if it has crops,
    else the view with the most.
    """
    from meadkit.media.video import iter_frames

    c = inp.ok_clips("crop_video")
    if c.empty:
        return "", {}
    view = "front" if (c["view"] == "front").any() else c["view"].value_counts().index[0]
    c = c[c["view"] == view]
    actors = c.groupby("actor").size().sort_values(ascending=False, kind="stable").index[:n_actors]
    cells = {}
    for (actor, emotion, level), g in c[c["actor"].isin(actors)].groupby(["actor", "emotion", "level"]):
        row = next((r for r in g.sort_values("take").to_dict("records") if inp.exists(r["crop_video"])), None)
        if row is None:
            continue
        n = int(row["n_frames"]) if not is_missing(row["n_frames"]) else 1
        try:
            for frame in iter_frames(inp.output(row["crop_video"]), start=n // 2, count=1, pix_fmt="rgb24"):
                cells[(actor, emotion, int(level))] = frame.image
        except MediaError:  # an unreadable crop leaves its cell grey
            continue
    return view, cells


def contact_sheet(view: str, cells: dict) -> Figure:
    """The cells of `contact_cells` as a grid: emotions down, actor x level across."""
    actors = sorted({a for a, _, _ in cells})
    emotions = [e for e in PAPER_EMOTIONS if any(k[1] == e for k in cells)]
    cols = [(a, lv) for a in actors for lv in LEVELS]
    fig = new_figure(1.1 * len(cols) + 0.8, 1.15 * len(emotions) + 0.6)
    axes = fig.subplots(len(emotions), len(cols), squeeze=False)
    for i, e in enumerate(emotions):
        for j, (a, lv) in enumerate(cols):
            ax = axes[i, j]
            ax.set_xticks([])
            ax.set_yticks([])
            image = cells.get((a, e, lv))
            if image is not None:
                ax.imshow(image)
            else:  # grey: a nominal cell without a crop; blank: not recorded in MEAD (neutral levels 2-3)
                ax.set_facecolor("#dddddd" if lv in nominal_levels(e) else "white")
                for spine in ax.spines.values():
                    spine.set_visible(False)
            if i == 0:
                ax.set_title(f"{a} L{lv}", fontsize=8)
            if j == 0:
                ax.set_ylabel(e, fontsize=8)
    fig.suptitle(f"aligned crops, view {view}: middle frame of the first take per emotion and level (grey: none)", fontsize=9)
    return fig
