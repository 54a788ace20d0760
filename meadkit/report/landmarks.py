"""The landmark picture: the 68 fitted points drawn on one decoded source frame per view of a take."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from meadkit.media.probe import MediaError
from meadkit.report.inputs import PICTURE_TRIES, Inputs, first_source, records, source_videos, takes_by_views, view_order
from meadkit.report.page import is_missing, panel_grid

#: Window frame whose landmarks are drawn (the nearest valid frame to it), about one second in.
LANDMARK_FRAME = 30
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
    for take in [take_id] if take_id else takes_by_views(c)[:PICTURE_TRIES]:
        frames = _take_landmark_frames(inp, c[c["take_id"] == take])
        if frames:
            return frames
    return []


def _take_landmark_frames(inp: Inputs, clips: pd.DataFrame) -> list[LandmarkFrame]:
    """The landmark frame of each of these clips (one take) that has a source video, a valid frame and decodes."""
    from meadkit.media.video import iter_frames

    rec = source_videos(inp.recordings, clips["take_id"])
    frames = []
    for row in records(clips):
        take_id = row["take_id"]
        src = rec[(rec["take_id"] == take_id) & (rec["view"] == row["view"])]
        if src.empty or is_missing(row["start_frame"]) or not inp.exists(row["faces_npz"]):
            continue
        with np.load(inp.out / row["faces_npz"], allow_pickle=False) as z:
            valid, points = z["valid"].astype(bool), z["landmarks_src"]
        if not valid.any():
            continue
        idx = np.flatnonzero(valid)
        k = int(idx[np.argmin(np.abs(idx - min(LANDMARK_FRAME, len(valid) // 2)))])
        index = int(row["start_frame"]) + k
        try:
            for frame in iter_frames(first_source(src), start=index, count=1, pix_fmt="rgb24"):
                frames.append(LandmarkFrame(take_id, row["view"], index, k, frame.image, points[k]))
        except MediaError:  # an unreadable source leaves its view out of the picture
            continue
    order = {v: i for i, v in enumerate(view_order([f.view for f in frames]))}
    return sorted(frames, key=lambda f: order[f.view])


def landmark_figure(frames: list[LandmarkFrame]) -> Figure:
    """The frames side by side, each zoomed on its face, with the points and the scheme's contours."""
    fig, axes = panel_grid(len(frames), 4, 3.2, 3.4)
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
