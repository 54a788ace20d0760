"""`meadkit report`: one self-contained HTML page describing a prepared OUT folder (and a training run).

Built from the manifests, plus a handful of decoded frames for the pictures. Plots are PNGs
drawn with matplotlib's Agg canvas and embedded as `data:` URIs, so the file opens without a
server. A missing manifest or stage makes its section say what is missing instead of failing.
"""
from __future__ import annotations

import base64
import html
import io
import json
import math
from dataclasses import dataclass, field
from datetime import datetime, timezone
from fractions import Fraction
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from meadkit import __version__
from meadkit.atomic import atomic_path
from meadkit.corpus.names import LEVELS, MEAD_FPS, PAPER_EMOTIONS, VIEWS, nominal_levels, nominal_takes
from meadkit.corpus.sources import Source
from meadkit.index import source_of
from meadkit.manifest import read_table
from meadkit.media.probe import MediaError
from meadkit.prepare import USABLE_AUDIO, USABLE_VIDEO

MANIFESTS = ("recordings", "sync", "clips", "status")
#: Nominal takes per actor and view in MEAD (7 emotions x 3 levels x 30 + 40 neutral = 670).
NOMINAL_PER_VIEW = sum(nominal_takes(e) * len(nominal_levels(e)) for e in PAPER_EMOTIONS)
#: At most this many files are listed per problem group (the manifests hold all of them).
MAX_LISTED = 1000
#: At most this many individual values are drawn over each box plot (a random sample beyond).
MAX_POINTS = 2000
#: Actors shown in the contact sheet.
SHEET_ACTORS = 3
#: Takes tried (most ok views first) for the landmark and MFCC pictures before saying none is readable.
PICTURE_TRIES = 10
#: Window frame whose landmarks are drawn (the nearest valid frame to it), about one second in.
LANDMARK_FRAME = 30
DPI = 100


# ---------------------------------------------------------------- HTML and figure helpers


def esc(value) -> str:
    """HTML-escaped text of any value."""
    return html.escape(str(value), quote=True)


def _missing(value) -> bool:
    return value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value))


def _cell(value) -> str:
    if _missing(value):
        return ""
    if isinstance(value, (float, np.floating)):
        return f"{value:.4g}"
    return str(value)


def table_html(df: pd.DataFrame, cls: str = "") -> str:
    """An escaped HTML table of a DataFrame (columns as header, no index); long paths may wrap after '/'."""
    head = "".join(f"<th>{esc(c)}</th>" for c in df.columns)
    body = "".join("<tr>" + "".join(f"<td>{esc(_cell(v)).replace('/', '/<wbr>')}</td>" for v in row) + "</tr>"
                   for row in df.itertuples(index=False))
    return f'<table class="{esc(cls)}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def note(text: str) -> str:
    """An escaped explanatory paragraph (what a section shows, or why it cannot)."""
    return f'<p class="note">{esc(text)}</p>'


def _figure(width: float, height: float) -> Figure:
    return Figure(figsize=(width, height), dpi=DPI, layout="constrained")


def img_html(fig: Figure, alt: str) -> str:
    """The figure as an embedded PNG `<img>`."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    data = base64.b64encode(buf.getvalue()).decode("ascii")
    return f'<figure><img alt="{esc(alt)}" src="data:image/png;base64,{data}"><figcaption>{esc(alt)}</figcaption></figure>'


def _view_order(views) -> list[str]:
    present = {v for v in views if isinstance(v, str)}
    return [v for v in VIEWS if v in present] + sorted(present - set(VIEWS))


def _fps(row) -> Fraction:
    num, den = row.get("fps_num"), row.get("fps_den")
    return MEAD_FPS if _missing(num) or _missing(den) or not den else Fraction(int(num), int(den))


def usable_videos(recordings: pd.DataFrame) -> pd.DataFrame:
    """The view videos of a take that later stages can use (status ok or no_audio)."""
    r = recordings
    return r[(r["kind"] == "video") & r["status"].isin(USABLE_VIDEO) & r["take_id"].notna()]


def _records(df: pd.DataFrame) -> list[dict]:
    return df.astype(object).where(df.notna(), None).to_dict("records")


# ---------------------------------------------------------------- inputs


@dataclass
class Inputs:
    """The manifests of one OUT folder (None where absent or unreadable, with the reason)."""

    out: Path
    recordings: Optional[pd.DataFrame] = None
    sync: Optional[pd.DataFrame] = None
    clips: Optional[pd.DataFrame] = None
    status: Optional[pd.DataFrame] = None
    missing: dict = field(default_factory=dict)  # manifest name -> why it is not loaded

    @classmethod
    def load(cls, out: Path | str) -> "Inputs":
        inputs = cls(Path(out))
        for name in MANIFESTS:
            path = inputs.out / "manifests" / f"{name}.parquet"
            if not path.exists():
                inputs.missing[name] = f"{path} does not exist"
                continue
            try:
                setattr(inputs, name, read_table(path))
            except Exception as e:  # an unreadable manifest is reported, not fatal
                inputs.missing[name] = f"{path} cannot be read: {type(e).__name__}: {e}"
        return inputs

    def need(self, *names: str) -> Optional[str]:
        """Why a section cannot be drawn (a note), or None if these manifests are present."""
        gone = [f"{n}: {self.missing[n]}" for n in names if getattr(self, n) is None]
        return None if not gone else note("Not available — " + "; ".join(gone) + ".")

    def ok_clips(self, column: str) -> pd.DataFrame:
        """Clips with status ok that name an output in `column` (a path relative to OUT)."""
        c = self.clips
        return c[(c["status"] == "ok") & c[column].notna()]

    def exists(self, relpath: str) -> bool:
        return (self.out / relpath).is_file()


def _takes_by_views(clips: pd.DataFrame) -> list[str]:
    """Take ids, those with the most rows (ok views) first, then by id."""
    counts = clips.groupby("take_id").size().rename("n").reset_index()
    return list(counts.sort_values(["n", "take_id"], ascending=[False, True], kind="stable")["take_id"])


# ---------------------------------------------------------------- Table 1 and completeness


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
    found, nominal = grid["found"], grid["nominal"]
    ratio = (found / nominal).to_numpy(float)
    rows, cols = found.shape
    height = max(2.8, 1.4 + 0.3 * rows)
    fig = _figure(max(5.0, 1.6 + 0.45 * cols), height)
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


# ---------------------------------------------------------------- sections


def section_overview(inp: Inputs) -> str:
    parts = []
    if inp.recordings is not None:
        row = corpus_table(inp.recordings, inp.clips)
        parts.append(table_html(pd.DataFrame([row], columns=list(row)), "t1"))
        parts.append(note("Avg duration per actor: each take's duration (median over its views) summed per actor, "
                          "averaged over actors. Clips: usable view videos (take x view)."))
        v = usable_videos(inp.recordings)
        if len(v):
            take_s = v.groupby(["actor", "take_id"])["duration_s"].median()
            per = pd.DataFrame({
                "gender": v.groupby("actor")["gender"].first(), "takes": v.groupby("actor")["take_id"].nunique(),
                "clips": v.groupby("actor").size(), "views": v.groupby("actor")["view"].nunique(),
                "minutes": take_s.groupby(level="actor").sum() / 60,
            }).reset_index()
            open_ = " open" if len(per) <= 12 else ""
            parts.append(f"<details{open_}><summary><b>Per actor</b> ({len(per)})</summary>{table_html(per)}</details>")
    else:
        parts.append(inp.need("recordings"))
    counts = []
    for name in MANIFESTS:
        df = getattr(inp, name)
        if df is None:
            counts.append({"manifest": name, "rows": "", "status": "missing: " + inp.missing[name]})
        else:
            vc = df["status"].value_counts() if "status" in df else pd.Series(dtype=int)
            counts.append({"manifest": name, "rows": len(df), "status": ", ".join(f"{k} {n}" for k, n in vc.items())})
    parts.append("<h3>Status at a glance</h3>" + table_html(pd.DataFrame(counts)))
    return "".join(parts)


def section_completeness(inp: Inputs) -> str:
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


def _problem_groups(df: pd.DataFrame, title: str, columns: list[str]) -> str:
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
    spec = [
        ("recordings", "Recordings (index)", ["relpath", "member", "kind", "take_id", "view", "error"]),
        ("sync", "Sync (per take and view)", ["take_id", "view", "method", "confidence", "offset_s", "error"]),
        ("clips", "Clips (per take and view)", ["take_id", "view", "source", "error"]),
        ("status", "Takes", ["take_id", "views_ok", "views_total", "error"]),
    ]
    parts = [note("Every row whose status is not ok, grouped by status, with its file and reason.")]
    for name, title, cols in spec:
        df = getattr(inp, name)
        parts.append(_problem_groups(df, title, cols) if df is not None else f"<h3>{esc(title)}</h3>" + inp.need(name))
    return "".join(parts)


def _per_view_plot(df: pd.DataFrame, metrics: list[tuple[str, str]], views: list[str]) -> Figure:
    """Box plot with the individual values per view, one panel per metric."""
    fig = _figure(4.2 * len(metrics), 3.2)
    axes = fig.subplots(1, len(metrics), squeeze=False)[0]
    rng = np.random.default_rng(0)
    for ax, (col, label) in zip(axes, metrics):
        for i, view in enumerate(views):
            d = pd.to_numeric(df.loc[df["view"] == view, col], errors="coerce").dropna().to_numpy(float)
            if len(d):
                ax.boxplot([d], positions=[i], widths=0.5, showfliers=False)
                shown = d if len(d) <= MAX_POINTS else rng.choice(d, MAX_POINTS, replace=False)
                ax.scatter(i + rng.uniform(-0.15, 0.15, len(shown)), shown, s=10 if len(shown) < 200 else 3,
                           alpha=0.6 if len(shown) < 200 else 0.25, color="tab:blue", lw=0)
        ax.set_xticks(range(len(views)), views, rotation=30, fontsize=8)
        ax.set_xlim(-0.6, len(views) - 0.4)
        ax.set_title(label, fontsize=10)
        ax.grid(axis="y", alpha=0.3)
    return fig


def _summary_by_view(df: pd.DataFrame, views: list[str], metrics: list[str], counts: list[str]) -> pd.DataFrame:
    rows = []
    for view in views:
        d = df[df["view"] == view]
        row = {"view": view, "rows": len(d)}
        for c in counts:
            row[c] = ", ".join(f"{k} {n}" for k, n in d[c].value_counts().items())
        for m in metrics:
            x = pd.to_numeric(d[m], errors="coerce").dropna()
            row[f"{m} median"] = x.median() if len(x) else None
            row[f"{m} min"] = x.min() if len(x) else None
            row[f"{m} max"] = x.max() if len(x) else None
        rows.append(row)
    return pd.DataFrame(rows)


def section_sync(inp: Inputs) -> str:
    missing = inp.need("sync")
    if missing:
        return missing
    s = inp.sync
    if s.empty or s["offset_s"].notna().sum() == 0:
        return note(f"The sync manifest has {len(s)} rows and no offset: no view was synced.")
    views = _view_order(s["view"])
    fig = _per_view_plot(s, [("offset_s", "offset (s, reference clock)"), ("confidence", "confidence")], views)
    return (
        note("Offset of each view's video time 0 on the reference-audio clock (t_ref = t_video + offset), and the confidence of its estimate.")
        + img_html(fig, "sync offsets and confidences per view")
        + table_html(_summary_by_view(s, views, ["offset_s", "confidence"], ["status", "method"]))
    )


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
        n = int(row["n_frames"]) if not _missing(row["n_frames"]) else 1
        try:
            for frame in iter_frames(Source(str(inp.out / row["crop_video"])), start=n // 2, count=1, pix_fmt="rgb24"):
                cells[(actor, emotion, int(level))] = frame.image
        except MediaError:  # an unreadable crop leaves its cell grey
            continue
    return view, cells


def _contact_sheet(view: str, cells: dict) -> Figure:
    actors = sorted({a for a, _, _ in cells})
    emotions = [e for e in PAPER_EMOTIONS if any(k[1] == e for k in cells)]
    cols = [(a, lv) for a in actors for lv in LEVELS]
    fig = _figure(1.1 * len(cols) + 0.8, 1.15 * len(emotions) + 0.6)
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


#: Point ranges of the 68-point scheme joined by lines when drawing (closed = loop).
_LANDMARK_PATHS = ((0, 17, False), (17, 22, False), (22, 27, False), (27, 31, False), (31, 36, False),
                   (36, 42, True), (42, 48, True), (48, 60, True), (60, 68, True))


@dataclass
class LandmarkFrame:
    """One source frame of a view with the landmarks fitted on it."""

    take_id: str
    view: str
    frame_index: int  # index in the view's source video
    window_index: int  # index in the synced window (row of landmarks_src)
    image: np.ndarray  # RGB
    points: np.ndarray  # (68, 2) source pixels


def landmark_frames(inp: Inputs, take_id: Optional[str] = None) -> list[LandmarkFrame]:
    """For one take (default: of the first few with the most ok views, the first that gives frames),
    each ok view's source frame `start_frame + k` with `landmarks_src[k]`, k the valid frame nearest
    LANDMARK_FRAME."""
    c = inp.ok_clips("faces_npz")
    for take in [take_id] if take_id else _takes_by_views(c)[:PICTURE_TRIES]:
        frames = _take_landmark_frames(inp, c[c["take_id"] == take])
        if frames:
            return frames
    return []


def _take_landmark_frames(inp: Inputs, clips: pd.DataFrame) -> list[LandmarkFrame]:
    from meadkit.media.video import iter_frames

    rec = inp.recordings
    rec = rec[rec["take_id"].isin(clips["take_id"]) & (rec["kind"] == "video") & rec["status"].isin(USABLE_VIDEO)
              & rec["source_path"].notna()]
    frames = []
    for row in _records(clips):
        take_id = row["take_id"]
        src = rec[(rec["take_id"] == take_id) & (rec["view"] == row["view"])]
        if src.empty or _missing(row["start_frame"]) or not inp.exists(row["faces_npz"]):
            continue
        with np.load(inp.out / row["faces_npz"], allow_pickle=False) as z:
            valid, points = z["valid"].astype(bool), z["landmarks_src"]
        if not valid.any():
            continue
        idx = np.flatnonzero(valid)
        k = int(idx[np.argmin(np.abs(idx - min(LANDMARK_FRAME, len(valid) // 2)))])
        index = int(row["start_frame"]) + k
        try:
            for frame in iter_frames(source_of(_records(src)[0]), start=index, count=1, pix_fmt="rgb24"):
                frames.append(LandmarkFrame(take_id, row["view"], index, k, frame.image, points[k]))
        except MediaError:  # an unreadable source leaves its view out of the picture
            continue
    order = {v: i for i, v in enumerate(_view_order([f.view for f in frames]))}
    return sorted(frames, key=lambda f: order[f.view])


def _landmark_figure(frames: list[LandmarkFrame]) -> Figure:
    cols = min(4, len(frames))
    rows = math.ceil(len(frames) / cols)
    fig = _figure(3.2 * cols, 3.4 * rows)
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax in axes[len(frames):]:
        ax.set_axis_off()
    for ax, f in zip(axes, frames):
        h, w = f.image.shape[:2]
        ax.imshow(f.image)
        p = f.points
        for a, b, closed in _LANDMARK_PATHS:
            seg = p[a:b]
            if closed:
                seg = np.vstack([seg, seg[:1]])
            ax.plot(seg[:, 0], seg[:, 1], "-", color="lime", lw=0.8)
        ax.scatter(p[:, 0], p[:, 1], s=4, color="red", zorder=3)
        lo, hi = p.min(axis=0), p.max(axis=0)
        pad = 0.6 * float(max(hi - lo))
        ax.set_xlim(max(0.0, lo[0] - pad), min(float(w), hi[0] + pad))
        ax.set_ylim(min(float(h), hi[1] + pad), max(0.0, lo[1] - pad))
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(f"{f.view}: frame {f.frame_index} (window {f.window_index})", fontsize=8)
    fig.suptitle(f"68 landmarks on the source video, take {frames[0].take_id} (zoomed on the face)", fontsize=9)
    return fig


def section_faces(inp: Inputs) -> str:
    missing = inp.need("clips")
    if missing:
        return missing
    c = inp.clips
    done = c[c["found_ratio"].notna()]
    if done.empty:
        return note(f"No clip has face results ({len(c)} clips; statuses: "
                    + ", ".join(f"{k} {n}" for k, n in c["status"].value_counts().items())
                    + "). The faces stage did not run (prepare --until sync/features) or failed on every clip.")
    views = _view_order(done["view"])
    metrics = [("found_ratio", "face found ratio"), ("mean_score", "mean detection/fit score"), ("jitter", "landmark jitter")]
    parts = [
        img_html(_per_view_plot(done, metrics, views), "faces: found ratio, score and jitter per view"),
        table_html(_summary_by_view(done, views, [m for m, _ in metrics], ["status"])),
    ]
    view, cells = contact_cells(inp)
    parts.append("<h3>Contact sheet</h3>")
    parts.append(img_html(_contact_sheet(view, cells), f"contact sheet of aligned crops ({view})") if cells
                 else note("No aligned crop video found (no clip with status ok and an existing crop_video)."))
    parts.append("<h3>Landmarks on the source frames</h3>")
    if inp.recordings is None:
        parts.append(inp.need("recordings"))
    else:
        frames = landmark_frames(inp)
        parts.append(img_html(_landmark_figure(frames), "landmarks drawn on one source frame per view") if frames
                     else note(f"No source frame could be drawn ({PICTURE_TRIES} takes tried): no ok clip with an existing faces "
                               "file, a valid landmark frame and a readable source video listed in recordings."))
    return "".join(parts)


def audio_take(inp: Inputs) -> Optional[dict]:
    """The clips row whose MFCC is plotted: of the first takes with the most ok views, the first whose file exists."""
    c = inp.ok_clips("mfcc_npz")
    path = dict(zip(c["take_id"], c["mfcc_npz"]))
    for take_id in _takes_by_views(c)[:PICTURE_TRIES]:
        if inp.exists(path[take_id]):
            return _records(c[c["take_id"] == take_id])[0]
    return None


def _audio_figure(take_id: str, mfcc: np.ndarray, padded: np.ndarray, t0: float, fps: float, wave) -> Figure:
    """The reference waveform (min/max envelope) over the MFCC rows, both on the reference clock."""
    t_end = t0 + len(mfcc) / fps
    fig = _figure(11, 5.2 if wave is not None else 3.4)
    axes = fig.subplots(2 if wave is not None else 1, 1, sharex=True, squeeze=False)[:, 0]
    if wave is not None:
        samples, sr = wave
        step = max(1, len(samples) // 4000)
        n = len(samples) // step * step
        env = samples[:n].reshape(-1, step)
        t = (np.arange(env.shape[0]) * step + step / 2) / sr
        axes[0].fill_between(t, env.min(axis=1), env.max(axis=1), color="tab:blue", lw=0)
        axes[0].axvspan(t0, t_end, color="orange", alpha=0.2, label="synced window")
        axes[0].set_ylabel("reference audio")
        axes[0].legend(loc="upper right", fontsize=8)
        axes[0].set_title(f"take {take_id}: reference audio ({sr} Hz) and MFCC rows of the synced window", fontsize=10)
    ax = axes[-1]
    std = mfcc.std(axis=0, keepdims=True)
    z = (mfcc - mfcc.mean(axis=0, keepdims=True)) / np.where(std > 0, std, 1)
    half = 0.5 / fps
    ax.imshow(z.T, aspect="auto", origin="lower", cmap="coolwarm", vmin=-3, vmax=3, interpolation="nearest",
              extent=(t0 - half, t_end - half, -0.5, mfcc.shape[1] - 0.5))
    ax.axhline(mfcc.shape[1] / 2 - 0.5, color="black", lw=0.6)
    for i in np.flatnonzero(padded):
        ax.axvspan(t0 + i / fps - half, t0 + i / fps + half, color="grey", alpha=0.5, lw=0)
    ax.set_xlim(min(0.0, t0 - half), max(t_end, len(wave[0]) / wave[1] if wave is not None else t_end))
    ax.set_ylabel("coefficient (MFCC | deltas)")
    ax.set_xlabel("time on the reference clock (s)")
    if wave is None:
        ax.set_title(f"take {take_id}: MFCC rows of the synced window", fontsize=10)
    return fig


def section_audio(inp: Inputs) -> str:
    missing = inp.need("clips")
    if missing:
        return missing
    row = audio_take(inp)
    if row is None:
        return note(f"No MFCC file found (no clip with status ok names an mfcc_npz that exists; {PICTURE_TRIES} takes tried): "
                    "the features stage did not run or failed.")
    with np.load(inp.out / row["mfcc_npz"], allow_pickle=False) as z:
        mfcc, padded = z["mfcc"], z["padded"].astype(bool)
    fps = float(_fps(row))
    t0 = float(row["t0_s"]) if not _missing(row["t0_s"]) else 0.0
    parts, wave = [], None
    ref = None if inp.recordings is None else inp.recordings[
        (inp.recordings["take_id"] == row["take_id"]) & (inp.recordings["kind"] == "audio")
        & inp.recordings["status"].isin(USABLE_AUDIO) & inp.recordings["source_path"].notna()]
    if ref is None or ref.empty:
        parts.append(note("The take's reference audio is not listed in recordings: waveform not shown."))
    else:
        from meadkit.media.audio import load_audio

        try:
            wave = load_audio(source_of(_records(ref)[0]), mono=True)
        except MediaError as e:
            parts.append(note(f"Reference audio cannot be decoded: {e}"))
    fig = _audio_figure(row["take_id"], mfcc, padded, t0, fps, wave)
    parts.insert(0, note(f"{len(mfcc)} rows x {mfcc.shape[1]} coefficients at {fps:.4f} rows/s, window from {t0:.3f} s; "
                         f"{int(padded.sum())} padded rows shaded grey; each coefficient standardised for display."))
    parts.append(img_html(fig, f"MFCC and waveform of take {row['take_id']}"))
    return "".join(parts)


_STEP_COLUMNS = ("step", "global_step", "iteration", "iter", "epoch")
#: At most this many metrics are plotted per loss log.
MAX_CURVES = 24


def long_metrics(df: pd.DataFrame) -> pd.DataFrame:
    """A loss log as long rows (step, split, metric, value).

    Accepts the baseline's long format (columns step, split, metric, value) and wide logs
    (a step column and one numeric column per metric); without a step column the row number is used.
    """
    step = next((c for c in _STEP_COLUMNS if c in df.columns), None)
    if {"metric", "value"} <= set(df.columns):
        out = df.assign(split=df["split"] if "split" in df.columns else "")[[c for c in (step,) if c] + ["split", "metric", "value"]]
    else:
        numeric = [c for c in df.columns if c != step and pd.api.types.is_numeric_dtype(df[c])]
        out = df.assign(split="").melt(id_vars=[c for c in (step, "split") if c], value_vars=numeric, var_name="metric")
    out = out.rename(columns={step: "step"}) if step else out.assign(step=out.groupby("metric").cumcount())
    out["value"] = pd.to_numeric(out["value"], errors="coerce")
    return out.dropna(subset=["value"])[["step", "split", "metric", "value"]]


def _loss_figure(name: str, log: pd.DataFrame) -> Figure:
    metrics = list(dict.fromkeys(log["metric"]))[:MAX_CURVES]
    ncol = min(3, len(metrics))
    nrow = math.ceil(len(metrics) / ncol)
    fig = _figure(4 * ncol, 2.6 * nrow)
    axes = fig.subplots(nrow, ncol, squeeze=False).ravel()
    for ax in axes[len(metrics):]:
        ax.set_axis_off()
    for ax, metric in zip(axes, metrics):
        for split, g in log[log["metric"] == metric].groupby("split", sort=True):
            ax.plot(g["step"], g["value"], lw=1, marker="." if len(g) < 30 else None, label=split or None)
        values = log.loc[log["metric"] == metric, "value"]
        if values.min() > 0 and values.max() > 100 * values.min():  # losses spanning decades
            ax.set_yscale("log")
        if log.loc[log["metric"] == metric, "split"].nunique() > 1:
            ax.legend(fontsize=7)
        ax.set_title(metric, fontsize=9)
        ax.set_xlabel("step", fontsize=8)
        ax.grid(alpha=0.3)
    fig.suptitle(name, fontsize=10)
    return fig


def flatten_numbers(data, prefix: str = "") -> list[tuple[str, object]]:
    """(dotted key, value) for every number, string or short list of numbers in a JSON document."""
    out = []
    if isinstance(data, dict):
        for k, v in data.items():
            out += flatten_numbers(v, f"{prefix}.{k}" if prefix else str(k))
    elif isinstance(data, list) and data and all(isinstance(v, (dict, list)) for v in data):
        for i, v in enumerate(data):
            out += flatten_numbers(v, f"{prefix}[{i}]")
    elif isinstance(data, list):
        nums = all(isinstance(v, (int, float)) for v in data)
        out.append((prefix, ", ".join(_cell(v) for v in data) if len(data) <= 12 or not nums
                    else f"{len(data)} values, mean {np.mean(data):.4g}"))
    else:
        out.append((prefix, data))
    return out


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _breakdown_figure(data: dict) -> Optional[Figure]:
    """Grouped bars of the evaluation's top-level dicts of numbers (e.g. accuracy per emotion)."""
    groups = {k: v for k, v in data.items() if isinstance(v, dict) and len(v) > 1 and all(_number(x) for x in v.values())}
    if not groups:
        return None
    keys = list(dict.fromkeys(k for g in groups.values() for k in g))
    keys = [e for e in PAPER_EMOTIONS if e in keys] + [k for k in keys if k not in PAPER_EMOTIONS]
    fig = _figure(max(7.0, 0.5 * len(keys) * len(groups) ** 0.5 + 5), 3.2)
    ax = fig.add_subplot()
    width = 0.8 / len(groups)
    for i, (name, g) in enumerate(groups.items()):
        ax.bar(np.arange(len(keys)) + (i - (len(groups) - 1) / 2) * width, [g.get(k, np.nan) for k in keys], width, label=name)
    ax.set_xticks(range(len(keys)), keys, rotation=30, fontsize=8)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.grid(axis="y", alpha=0.3)
    return fig


def section_training(run: Optional[Path]) -> str:
    if run is None:
        return note("No training run given (meadkit report OUT -o report.html --run RUN adds loss curves and evaluation).")
    run = Path(run)
    if not run.is_dir():
        return note(f"Training run folder {run} does not exist.")
    parts = ["<h3>Loss curves</h3>"]
    csvs = sorted(run.glob("*.csv")) + sorted(run.glob("logs/*.csv"))
    if not csvs:
        parts.append(note(f"No loss log (*.csv or logs/*.csv) in {run}."))
    for p in csvs:
        name = str(p.relative_to(run))
        try:
            log = long_metrics(pd.read_csv(p))
        except (OSError, ValueError, pd.errors.ParserError) as e:
            parts.append(note(f"{name} cannot be read: {e}"))
            continue
        parts.append(img_html(_loss_figure(name, log), f"loss curves from {name}") if len(log) else note(f"{name} has no numeric values."))
    parts.append("<h3>Evaluation</h3>")
    evals = sorted(run.glob("eval*.json"))
    if not evals:
        parts.append(note(f"No eval*.json in {run} (run meadkit evaluate)."))
    for p in evals:
        try:
            data = json.loads(p.read_text())
        except (OSError, ValueError) as e:
            parts.append(note(f"{p.name} cannot be read: {e}"))
            continue
        parts.append(f"<h4>{esc(p.name)}</h4>" + table_html(pd.DataFrame(flatten_numbers(data), columns=["key", "value"])))
        fig = _breakdown_figure(data) if isinstance(data, dict) else None
        if fig is not None:
            parts.append(img_html(fig, f"{p.name}: per-class figures"))
    return "".join(parts)


# ---------------------------------------------------------------- page


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0 auto;max-width:1200px;padding:0 16px 40px;color:#222}
h1{margin-top:24px}h2{border-bottom:2px solid #ddd;padding-bottom:4px;margin-top:36px}
nav a{margin-right:14px}table{border-collapse:collapse;margin:8px 0;font-size:13px}
th,td{border:1px solid #ccc;padding:3px 8px;text-align:left;vertical-align:top}th{background:#f3f3f3}
table.problems td{font-family:ui-monospace,Menlo,monospace;font-size:12px}
table.t1 tr:first-child td{font-weight:600}
.note{color:#555;font-size:14px}.error{color:#a00}img{max-width:100%;height:auto}
figure{margin:10px 0}figcaption{font-size:12px;color:#666}details{margin:6px 0}
"""


def _guard(fn: Callable[..., str], *args) -> str:
    """A section's HTML, or a readable error in its place (one broken section must not lose the page)."""
    try:
        return fn(*args)
    except Exception as e:  # reported on the page, the rest of the report still builds
        return f'<p class="error">This section could not be built: {esc(type(e).__name__)}: {esc(e)}</p>'


def render_report(out_dir: Path | str, run_dir: Optional[Path | str] = None) -> str:
    """The report's HTML text for a prepared OUT folder (and optionally a training run folder)."""
    inp = Inputs.load(out_dir)
    sections = [
        ("overview", "Corpus (the paper's Table 1)", _guard(section_overview, inp)),
        ("completeness", "Completeness", _guard(section_completeness, inp)),
        ("problems", "Problems", _guard(section_problems, inp)),
        ("sync", "Sync", _guard(section_sync, inp)),
        ("faces", "Faces", _guard(section_faces, inp)),
        ("audio", "Audio", _guard(section_audio, inp)),
        ("training", "Training", _guard(section_training, Path(run_dir) if run_dir else None)),
    ]
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    nav = "".join(f'<a href="#{sid}">{esc(title)}</a>' for sid, title, _ in sections)
    body = "".join(f'<section id="{sid}"><h2>{esc(title)}</h2>{content}</section>' for sid, title, content in sections)
    return (
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>meadkit report: {esc(Path(out_dir).name)}</title>'
        f"<style>{_CSS}</style></head><body><h1>meadkit report</h1>"
        f'<p class="note">Prepared folder {esc(Path(out_dir).resolve())}'
        + (f"; training run {esc(Path(run_dir).resolve())}" if run_dir else "")
        + f"; generated {esc(when)} by meadkit {esc(__version__)}.</p><nav>{nav}</nav>{body}</body></html>"
    )


class ReportError(ValueError):
    """A folder the report cannot be about (nothing of `meadkit prepare` in it)."""


def build_report(out_dir: Path | str, html_path: Path | str, run_dir: Optional[Path | str] = None) -> Path:
    """Write the self-contained HTML report of a prepared OUT folder to `html_path` (atomically); a folder
    without any manifest raises ReportError (an empty report would only hide a wrong path)."""
    if not any((Path(out_dir) / "manifests" / f"{name}.parquet").exists() for name in MANIFESTS):
        raise ReportError(f"{out_dir} is not a prepared folder: no manifests/{{{','.join(MANIFESTS)}}}.parquet (run `meadkit prepare` first)")
    text = render_report(out_dir, run_dir)
    with atomic_path(html_path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(html_path)
