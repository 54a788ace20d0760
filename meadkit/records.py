"""Typed rows of meadkit's tables and the take record, with the Arrow schemas derived from them.

Each table is a dataclass whose fields are its columns, in order; a column's Arrow type is written once, in the
field's annotation (`Annotated[..., pa.type]`). The label columns (`Labels`: actor ... view) and `emotion_label`
are typed once here and checked by name in every table that has them, so no table can re-type them.
Also here: which recording statuses later stages can use, and the two status reducers (clip, take).
"""
from __future__ import annotations

import dataclasses
import functools
import json
import math
import numbers
import typing
from dataclasses import dataclass
from typing import Annotated, Iterable, Mapping, NamedTuple, Optional, Self, Sequence

import pyarrow as pa

from meadkit.corpus.names import TakeKey, gender

Str = Annotated[Optional[str], pa.string()]
Bool = Annotated[Optional[bool], pa.bool_()]
I8 = Annotated[Optional[int], pa.int8()]
I16 = Annotated[Optional[int], pa.int16()]
I32 = Annotated[Optional[int], pa.int32()]
I64 = Annotated[Optional[int], pa.int64()]
F32 = Annotated[Optional[float], pa.float32()]
F64 = Annotated[Optional[float], pa.float64()]
StrList = Annotated[Optional[list], pa.list_(pa.string())]
F32List = Annotated[Optional[list], pa.list_(pa.float32())]
#: MEAD's intensity 1-3 and take number, and the paper's emotion index (`names.emotion_label`).
Level = I8
Take = I16
EmotionLabel = I8

#: Recording statuses whose file can be used (the reference audio may be short: features pad it).
USABLE_VIDEO = ("ok", "no_audio")
USABLE_AUDIO = ("ok", "short_audio")


class Record:
    """A typed row of one table: the dataclass fields are its columns, in order, typed by their annotations."""

    @classmethod
    def schema(cls) -> pa.Schema:
        return _schema(cls)

    @classmethod
    def columns(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls))

    @classmethod
    def from_row(cls, row: Mapping) -> Self:
        """The record of a table row (a dict of `pa.Table.to_pylist` or of JSON); absent columns are null."""
        return cls(**{name: row.get(name) for name in cls.columns()})

    @classmethod
    def labelled(cls, labels: Labels, **values) -> Self:
        """A row holding those of `labels`' columns that this table has, and `values`."""
        return cls(**{n: getattr(labels, n) for n in cls.columns() if n in LABEL_NAMES}, **values)

    @classmethod
    def table(cls, records: Iterable[Record]) -> pa.Table:
        """The records as a table of this schema; a NaN float is stored as null (no value)."""
        rows = [{k: None if _is_nan(v) else v for k, v in r.to_row().items()} for r in records]
        return pa.Table.from_pylist(rows, schema=cls.schema())

    def to_row(self) -> dict:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    def labels(self) -> Labels:
        """This row's label columns (null where the table has none, e.g. sync rows' gender)."""
        return Labels(**{n: getattr(self, n, None) for n in LABEL_NAMES})

    def update(self, **values) -> Self:
        """Set columns by name (an unknown name is a TypeError, not a silent new attribute); returns the row."""
        unknown = sorted(set(values) - set(self.columns()))
        if unknown:
            raise TypeError(f"{type(self).__name__} has no column {', '.join(unknown)}")
        for name, value in values.items():
            setattr(self, name, value)
        return self


def _is_nan(value) -> bool:
    return isinstance(value, numbers.Real) and math.isnan(value)


def _arrow_types(cls: type) -> dict[str, pa.DataType]:
    hints = typing.get_type_hints(cls, include_extras=True)
    return {f.name: hints[f.name].__metadata__[0] for f in dataclasses.fields(cls)}


@functools.cache
def _schema(cls: type) -> pa.Schema:
    """`cls`'s Arrow schema; a label column typed otherwise than in `SHARED_TYPES` is a TypeError."""
    types = _arrow_types(cls)
    wrong = [f"{n} is {t}, not {SHARED_TYPES[n]}" for n, t in types.items() if n in SHARED_TYPES and t != SHARED_TYPES[n]]
    if wrong:
        raise TypeError(f"{cls.__name__}: label columns typed apart from meadkit.records.Labels: {'; '.join(wrong)}")
    return pa.schema([pa.field(n, t) for n, t in types.items()])


@dataclass
class Labels(Record):
    """The label key columns of a take's view (or of its reference audio, `view` null)."""

    actor: Str = None
    gender: Str = None
    emotion: Str = None
    level: Level = None
    take: Take = None
    take_id: Str = None
    view: Str = None

    @classmethod
    def of(cls, key: TakeKey, view: Optional[str]) -> Labels:
        return cls(key.actor, gender(key.actor), key.emotion, key.level, key.take, key.id, view)


LABEL_NAMES = Labels.columns()
#: Columns typed alike in every table that has them.
SHARED_TYPES = _arrow_types(Labels) | {"emotion_label": EmotionLabel.__metadata__[0]}


def shared_fields(*names: str) -> list[pa.Field]:
    """Arrow fields of shared columns, for a schema not derived from a record (the shard index)."""
    return [pa.field(n, SHARED_TYPES[n]) for n in names]


class Outcome(NamedTuple):
    """What a stage (or the index) says of one clip, or the take says of itself: a status and why (null for ok)."""

    status: str
    error: Optional[str] = None


@dataclass
class RecordingRow(Labels):
    """One row of recordings.parquet (`meadkit.index`): a file found under RAW (its labels first), probed, with its
    status."""

    kind: Str = None
    relpath: Str = None
    source_path: Str = None
    member: Str = None
    member_offset: I64 = None
    member_size: I64 = None
    size_bytes: I64 = None
    container: Str = None
    video_codec: Str = None
    width: I32 = None
    height: I32 = None
    fps_num: I64 = None
    fps_den: I64 = None
    n_frames: I64 = None
    duration_s: F64 = None
    video_start_s: F64 = None
    has_audio: Bool = None
    audio_codec: Str = None
    sample_rate: I32 = None
    channels: I16 = None
    audio_duration_s: F64 = None
    audio_start_s: F64 = None
    status: Str = None
    error: Str = None
    known: Str = None

    def outcome(self) -> Outcome:
        return Outcome(self.status, self.error)


@dataclass
class SyncRow(Record):
    """One row of sync.parquet (`meadkit.sync.sync_rows`): a view's offset on the reference clock and its window."""

    actor: Str = None
    emotion: Str = None
    level: Level = None
    take: Take = None
    take_id: Str = None
    view: Str = None
    offset_s: F64 = None
    offset_frames: F64 = None
    confidence: F32 = None
    method: Str = None
    t0_s: F64 = None
    start_frame: I32 = None
    n_frames: I32 = None
    fps_num: I32 = None
    fps_den: I32 = None
    video_frames: I32 = None
    status: Str = None
    error: Str = None


@dataclass
class ClipRow(Record):
    """One row of clips.parquet: a (take, view) with what each stage found and made. `status` and `error` are the
    per-stage statuses reduced by `clip_outcome`; a stage's status column is null where it did not run."""

    take_id: Str = None
    actor: Str = None
    gender: Str = None
    emotion: Str = None
    level: Level = None
    take: Take = None
    view: Str = None
    split: Str = None
    status: Str = None
    error: Str = None
    index_status: Str = None
    sync_status: Str = None
    face_status: Str = None
    source: Str = None
    width: I32 = None
    height: I32 = None
    fps_num: I32 = None
    fps_den: I32 = None
    has_audio: Bool = None
    offset_s: F64 = None
    sync_confidence: F32 = None
    sync_method: Str = None
    t0_s: F64 = None
    start_frame: I32 = None
    n_frames: I32 = None
    found_ratio: F32 = None
    mean_score: F32 = None
    jitter: F32 = None
    face_backend: Str = None
    rejected_ratio: F32 = None
    mesh_ratio: F32 = None
    crop_size: I32 = None
    crop_video: Str = None
    faces_npz: Str = None
    features_npz: Str = None
    feature_sets: Str = None
    mfcc_recipe: Str = None
    padded_rows: I32 = None
    audio_duration_s: F64 = None
    audio_wav: Str = None
    audio_rate: I32 = None
    audio_padded: I32 = None
    av_offset_frames: F32 = None
    av_confidence: F32 = None
    yaw_deg: F32 = None
    pitch_deg: F32 = None
    roll_deg: F32 = None
    pose_range_deg: F32 = None
    sharpness: F32 = None
    exposure: F32 = None
    valid_ratio: F32 = None
    expression_strength: F32 = None
    duplicate_of: Str = None
    quality_flags: StrList = None
    config_hash: Str = None

    @classmethod
    def of(cls, rec: RecordingRow) -> ClipRow:
        """A view's clip before any take stage: its labels and the probe's columns."""
        return cls.labelled(rec.labels(), source=rec.relpath, width=rec.width, height=rec.height, fps_num=rec.fps_num,
                            fps_den=rec.fps_den, has_audio=rec.has_audio)

    def settle(self, outcomes: Mapping[str, Outcome], failure: Optional[str]) -> ClipRow:
        """Set the stage status columns from `outcomes` (by stage: index, sync, faces) and, by `clip_outcome`,
        the clip's status and error; returns the row."""
        index, sync, face = outcomes["index"], outcomes.get("sync"), outcomes.get("faces")
        self.index_status = index.status
        self.sync_status = sync.status if sync else None
        self.face_status = face.status if face else None
        self.status, self.error = clip_outcome(index, sync, face, failure)
        return self


def clip_outcome(index: Outcome, sync: Optional[Outcome], face: Optional[Outcome], failure: Optional[str]) -> Outcome:
    """A clip's status and error from its stages': a file later stages cannot use keeps its index status; a failed
    take (`failure`, its reason) fails its other views; else the faces stage's unless ok (a weak sync's approximate
    or low_confidence stays), then the sync stage's, then the index's."""
    if index.status not in USABLE_VIDEO:
        return index
    if failure is not None:
        return Outcome("failed", failure)
    if face is not None and face.status != "ok":
        return face
    return sync or index


def take_outcome(clips: Sequence[ClipRow], failure: Optional[str]) -> Outcome:
    """A take's status: failed with `failure` if it failed as a whole; else ok when every clip is, partial when
    some are, failed (with the clips' reasons) when none is."""
    if failure is not None:
        return Outcome("failed", failure)
    n_ok = sum(c.status == "ok" for c in clips)
    if n_ok == len(clips):
        return Outcome("ok")
    if n_ok:
        return Outcome("partial")
    return Outcome("failed", "no view finished: " + "; ".join(sorted({str(c.error) for c in clips})))


@dataclass
class StatusRow(Record):
    """One row of status.parquet: a take's status, its views and the seconds each stage took."""

    take_id: Str = None
    status: Str = None
    error: Str = None
    views_ok: I16 = None
    views_total: I16 = None
    n_frames: I32 = None
    config_hash: Str = None
    sync_s: F32 = None
    features_s: F32 = None
    faces_s: F32 = None
    audio_s: F32 = None
    curation_s: F32 = None
    total_s: F32 = None


@dataclass
class TakeRecord:
    """A take's committed result (`OUT/state/takes/<take_id>.json`): its sync rows, clips, status and timings.
    A rerun keeps it while `config_hash` and `inputs` (a hash of its recordings rows and files) still match."""

    take_id: str
    config_hash: str
    inputs: str
    stages: list[str]
    status: str
    error: Optional[str]
    n_frames: int
    sync: list[SyncRow]
    clips: list[ClipRow]
    times: dict[str, float]
    fingerprint: list = dataclasses.field(default_factory=list)  # the reference audio's (`meadkit.curation.clip`)

    @property
    def views_ok(self) -> int:
        return sum(c.status == "ok" for c in self.clips)

    def to_json(self) -> str:
        """The record as JSON (numpy scalars as plain numbers)."""
        return json.dumps(dataclasses.asdict(self), default=lambda v: v.item() if hasattr(v, "item") else str(v))

    @classmethod
    def from_json(cls, text: str) -> TakeRecord:
        """The record of `to_json`'s text; raises ValueError, KeyError or TypeError for anything else."""
        d = json.loads(text)
        return cls(**d | {"sync": [SyncRow.from_row(r) for r in d["sync"]], "clips": [ClipRow.from_row(c) for c in d["clips"]]})

    def status_row(self) -> StatusRow:
        t = self.times
        return StatusRow(self.take_id, self.status, self.error, self.views_ok, len(self.clips), self.n_frames, self.config_hash,
                         t.get("sync"), t.get("features"), t.get("faces"), t.get("audio"), t.get("curation"),
                         t.get("total"))


@dataclass
class TruthRow(Record):
    """One row of a synthetic corpus's truth table (`meadkit.corpus.synth`): each (take, view) video, each take's
    reference audio (view null) and stray file, as written or deliberately left out. Landmarks: per frame 68
    (x, y) in source pixels, flattened (n_frames * 136); mouth_open: per frame speech opening 0..1."""

    kind: Str = None  # video | audio | stray
    actor: Str = None
    gender: Str = None
    emotion: Str = None
    emotion_label: EmotionLabel = None
    level: Level = None
    take: Take = None
    take_id: Str = None
    photo: Str = None  # the photo the actor's face is made from (a built-in name or an image's stem)
    view: Str = None
    relpath: Str = None  # MEAD path rooted at the actor, as written (e.g. with video/1/)
    archive: Str = None  # with --tar: the tar holding it, relative to the corpus root
    member: Str = None  # with --tar: its member name in that tar
    written: Bool = None
    offset_s: F64 = None
    n_frames: I32 = None
    fps_num: I32 = None
    fps_den: I32 = None
    duration_s: F64 = None
    has_audio: Bool = None
    sample_rate: I32 = None
    channels: I16 = None
    n_samples: I64 = None
    width: I32 = None
    height: I32 = None
    speech_start_s: F64 = None  # reference clock
    speech_end_s: F64 = None
    defects: StrList = None
    landmarks: F32List = None
    mouth_open: F32List = None


RECORDINGS_SCHEMA = RecordingRow.schema()
SYNC_SCHEMA = SyncRow.schema()
CLIPS_SCHEMA = ClipRow.schema()
STATUS_SCHEMA = StatusRow.schema()
TRUTH_SCHEMA = TruthRow.schema()
