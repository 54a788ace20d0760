"""The completeness section: takes found against MEAD's nominal counts, as actor x view and actor x emotion/level heatmaps."""
from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from meadkit.corpus.names import PAPER_EMOTIONS, VIEWS, nominal_levels, nominal_takes
from meadkit.report.inputs import Inputs, usable_videos
from meadkit.report.page import img_html, new_figure, note

#: Nominal takes per actor and view in MEAD (7 emotions x 3 levels x 30 + 40 neutral = 670).
NOMINAL_PER_VIEW = sum(nominal_takes(e) * len(nominal_levels(e)) for e in PAPER_EMOTIONS)


def completeness(recordings: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Takes found against nominal, per actor x view and per actor x (emotion, level), on usable view videos.

    Returns `(by_view, by_emotion_level)`; each has columns ("found", cell) and ("nominal", cell).
    """
    actors = sorted(recordings["actor"].dropna().unique())
    v = usable_videos(recordings)
    views = list(VIEWS) + sorted(set(v["view"].dropna()) - set(VIEWS))
    per_view = v.groupby(["actor", "view"])["take_id"].nunique().unstack().reindex(index=actors, columns=views).fillna(0).astype(int)
    cells = [(e, lv) for e in PAPER_EMOTIONS for lv in nominal_levels(e)]
    found = v.groupby(["actor", "emotion", "level"])["take_id"].nunique()
    per_el = pd.DataFrame(
        [[int(found.get((a, e, lv), 0)) for e, lv in cells] for a in actors],
        index=pd.Index(actors, name="actor"), columns=[f"{e} {lv}" for e, lv in cells],
    )
    nominal_view = pd.DataFrame(NOMINAL_PER_VIEW, index=per_view.index, columns=per_view.columns)
    nominal_el = pd.DataFrame([[nominal_takes(e) for e, _ in cells]] * len(actors), index=per_el.index, columns=per_el.columns)
    return (pd.concat({"found": per_view, "nominal": nominal_view}, axis=1),
            pd.concat({"found": per_el, "nominal": nominal_el}, axis=1))


def _heatmap(grid: pd.DataFrame, title: str) -> Figure:
    """Found / nominal as colour, with the number of takes found written in the cells."""
    found, nominal = grid["found"], grid["nominal"]
    ratio = (found / nominal).to_numpy(float)
    rows, cols = found.shape
    height = max(2.8, 1.4 + 0.3 * rows)
    fig = new_figure(max(5.0, 1.6 + 0.45 * cols), height)
    ax = fig.add_subplot()
    im = ax.imshow(ratio, vmin=0, vmax=1, cmap="RdYlGn", aspect="auto", interpolation="nearest")
    ax.set_xticks(range(cols), found.columns, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(rows), found.index, fontsize=8)
    small = rows * cols <= 400  # large grids: only the incomplete cells are numbered
    for (i, j), n in np.ndenumerate(found.to_numpy()):
        if small or ratio[i, j] < 1:
            t = ax.text(j, i, str(n), ha="center", va="center", fontsize=6 if cols > 12 else 8,
                        color="black" if 0.25 < ratio[i, j] < 0.8 else "white")
            t.set_in_layout(False)
    ax.set_title(title + ("" if small else "; numbers on incomplete cells"), fontsize=10)
    fig.colorbar(im, ax=ax, label="found / nominal", aspect=20 * height / 2.8, pad=0.02)
    return fig


def section_completeness(inp: Inputs) -> str:
    """The two completeness heatmaps, or why they cannot be drawn."""
    missing = inp.need("recordings")
    if missing:
        return missing
    if inp.recordings["actor"].dropna().empty:
        return note("No recording has a recognised actor: nothing to count.")
    by_view, by_el = completeness(inp.recordings)
    return (
        note("Takes with a usable video (status ok or no_audio) against MEAD's nominal counts "
             f"({NOMINAL_PER_VIEW} takes per actor and view; per emotion and level: "
             f"{nominal_takes('happy')}, {nominal_takes('neutral')} for neutral). Numbers are takes found.")
        + img_html(_heatmap(by_view, f"takes found per actor x view (colour: found / {NOMINAL_PER_VIEW})"),
                   "completeness: actor x view")
        + img_html(_heatmap(by_el, "takes found per actor x emotion/level (any view)"), "completeness: actor x emotion/level")
    )
