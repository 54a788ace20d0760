"""What the report reads: the manifests of one OUT folder, and the rows and files its pictures are drawn from.

The only module of the report that knows the pipeline's statuses and how a manifest row names its media.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Optional

import pandas as pd

from meadkit.corpus.names import MEAD_FPS, VIEWS
from meadkit.media.sources import Source
from meadkit.index import source_of
from meadkit.manifest import read_table
from meadkit.records import USABLE_AUDIO, USABLE_VIDEO
from meadkit.report.page import is_missing, note

MANIFESTS = ("recordings", "sync", "clips", "status")
#: Takes tried (most ok views first) for the landmark and MFCC pictures before saying none is readable.
PICTURE_TRIES = 10


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
        """Read every manifest of OUT that exists and parses, noting why each other one is not there."""
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
        """Whether the pipeline's output file at this path relative to OUT exists."""
        return (self.out / relpath).is_file()

    def output(self, relpath: str) -> Source:
        """A media file the pipeline wrote under OUT, to decode."""
        return Source(str(self.out / relpath))


def usable_videos(recordings: pd.DataFrame) -> pd.DataFrame:
    """The view videos of a take that later stages can use (status ok or no_audio)."""
    r = recordings
    return r[(r["kind"] == "video") & r["status"].isin(USABLE_VIDEO) & r["take_id"].notna()]


def source_videos(recordings: pd.DataFrame, take_ids: pd.Series) -> pd.DataFrame:
    """The usable view videos of these takes that name their source file."""
    v = usable_videos(recordings)
    return v[v["take_id"].isin(take_ids) & v["source_path"].notna()]


def reference_audio(recordings: pd.DataFrame, take_id: str) -> pd.DataFrame:
    """The take's usable reference-audio rows that name their source file."""
    r = recordings
    return r[(r["take_id"] == take_id) & (r["kind"] == "audio") & r["status"].isin(USABLE_AUDIO) & r["source_path"].notna()]


def first_source(rows: pd.DataFrame) -> Source:
    """The source media of the first recordings row (a file, or a member of an archive)."""
    return source_of(records(rows)[0])


def records(df: pd.DataFrame) -> list[dict]:
    """The rows as dicts, missing values as None."""
    return df.astype(object).where(df.notna(), None).to_dict("records")


def view_order(views) -> list[str]:
    """The distinct views in MEAD's order, then any others by name."""
    present = {v for v in views if isinstance(v, str)}
    return [v for v in VIEWS if v in present] + sorted(present - set(VIEWS))


def frame_rate(row) -> Fraction:
    """A manifest row's frame rate, MEAD's nominal rate where it names none."""
    num, den = row.get("fps_num"), row.get("fps_den")
    return MEAD_FPS if is_missing(num) or is_missing(den) or not den else Fraction(int(num), int(den))


def takes_by_views(clips: pd.DataFrame) -> list[str]:
    """Take ids, those with the most rows (ok views) first, then by id."""
    counts = clips.groupby("take_id").size().rename("n").reset_index()
    return list(counts.sort_values(["n", "take_id"], ascending=[False, True], kind="stable")["take_id"])
