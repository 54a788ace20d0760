"""Typed records: row and JSON round trips, schemas derived from the dataclasses, the status reducers, and the
take worker's declared stage list (what `--until` cuts, what each stage fills in)."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pytest

import meadkit.take
from meadkit.curation import CORPUS_COLUMNS
from meadkit.commands.prepare import UNTIL, command, stages_for
from meadkit.config import load_pipeline
from meadkit.corpus.names import MEAD_FPS, TakeKey
from meadkit.records import (
    CLIPS_SCHEMA, RECORDINGS_SCHEMA, SHARED_TYPES, STATUS_SCHEMA, SYNC_SCHEMA, TRUTH_SCHEMA, ClipRow, I16, Labels,
    Outcome, Record, RecordingRow, StatusRow, Str, SyncRow, TakeRecord, TruthRow, clip_outcome, take_outcome,
)
from meadkit.shards import SHARD_INDEX_SCHEMA
from meadkit.sync import TakeSync, ViewSync
from meadkit.take import STAGE_NAMES, STAGES, TASK_INPUTS, TakeTask, check_stages, crashed_record, process_take, stages_until

KEY = TakeKey("M003", "happy", 3, 12)
SCHEMAS = {"recordings": RECORDINGS_SCHEMA, "sync": SYNC_SCHEMA, "clips": CLIPS_SCHEMA, "status": STATUS_SCHEMA,
           "truth": TRUTH_SCHEMA, "shards index": SHARD_INDEX_SCHEMA}


def _recording(view, status="ok", error=None, kind="video") -> RecordingRow:
    return RecordingRow.labelled(Labels.of(KEY, view), kind=kind, relpath=f"M003/{view}/012.mp4", source_path="/raw/x.mp4",
                                 width=64, height=48, fps_num=65521, fps_den=2184, n_frames=30, has_audio=True,
                                 status=status, error=error)


# ---------------------------------------------------------------- rows and schemas


@pytest.mark.parametrize("cls", [RecordingRow, SyncRow, ClipRow, StatusRow, TruthRow])
def test_row_round_trips_through_arrow(cls):
    values = {f.name: _value(t) for f, t in zip(cls.schema(), cls.schema().types)}
    record = cls(**values)
    table = cls.table([record])
    assert table.schema.equals(cls.schema())
    (row,) = table.to_pylist()
    assert cls.from_row(row) == record and list(row) == list(cls.columns())


def _value(t: pa.DataType):
    if pa.types.is_list(t):
        return ["a", "b"] if pa.types.is_string(t.value_type) else [0.5, 1.5]
    if pa.types.is_string(t):
        return "x"
    if pa.types.is_boolean(t):
        return True
    return 0.25 if pa.types.is_floating(t) else 3


def test_from_row_nulls_absent_columns_and_ignores_others():
    row = SyncRow.from_row({"take_id": KEY.id, "view": "front", "not_a_column": 1})
    assert row.take_id == KEY.id and row.view == "front" and row.offset_s is None


def test_table_stores_nan_as_null_and_update_refuses_unknown_columns():
    clip = ClipRow.of(_recording("front")).update(mean_score=np.float32("nan"), found_ratio=float("nan"), jitter=0.5)
    (row,) = ClipRow.table([clip]).to_pylist()
    assert row["mean_score"] is None and row["found_ratio"] is None and row["jitter"] == 0.5
    with pytest.raises(TypeError, match="no column mean_scroe"):
        clip.update(mean_scroe=1.0)


def test_take_record_json_round_trip_turns_numpy_into_numbers():
    clip = ClipRow.of(_recording("front")).update(found_ratio=np.float32(0.75), n_frames=np.int64(20), status="ok")
    sync = SyncRow.labelled(Labels.of(KEY, "front"), offset_s=np.float64(0.125), status="ok")
    record = TakeRecord(KEY.id, "h-sff", "abc", list(STAGE_NAMES), "ok", None, 20, [sync], [clip], {"sync": 0.5, "total": 1.0})
    back = TakeRecord.from_json(record.to_json())
    assert back == TakeRecord(KEY.id, "h-sff", "abc", list(STAGE_NAMES), "ok", None, 20, [sync], [clip], {"sync": 0.5, "total": 1.0})
    assert type(back.clips[0].found_ratio) is float and type(back.clips[0].n_frames) is int
    assert back.status_row() == StatusRow(KEY.id, "ok", None, 1, 1, 20, "h-sff", 0.5, None, None, None, None, 1.0)
    with pytest.raises(TypeError):
        TakeRecord.from_json('{"take_id": "x", "sync": [], "clips": [], "surprise": 1}')


def test_label_columns_are_typed_alike_in_every_table():
    for name, schema in SCHEMAS.items():
        shared = [f for f in schema if f.name in SHARED_TYPES]
        assert {f.name for f in shared} >= {"take_id", "actor", "emotion", "level"} or name == "status", name
        for f in shared:
            assert f.type == SHARED_TYPES[f.name], (name, f.name)
    assert (SHARED_TYPES["level"], SHARED_TYPES["take"], SHARED_TYPES["emotion_label"]) == (pa.int8(), pa.int16(), pa.int8())


def test_a_table_cannot_retype_a_label_column():
    @dataclass
    class Wrong(Record):
        take_id: Str = None
        take: I16 = None
        level: I16 = None

    with pytest.raises(TypeError, match="level is int16, not int8"):
        Wrong.schema()


def test_labels_of_a_take_key_and_labelled_rows_take_only_their_columns():
    labels = Labels.of(KEY, "front")
    assert labels == Labels("M003", "M", "happy", 3, 12, "M003_happy_3_012", "front")
    sync = SyncRow.labelled(labels, status="ok")
    assert (sync.actor, sync.level, sync.take_id, sync.view) == ("M003", 3, KEY.id, "front") and "gender" not in SyncRow.columns()
    assert sync.labels() == dataclasses.replace(labels, gender=None)


# ---------------------------------------------------------------- status reducers

OK, NO_AUDIO, MISSING = Outcome("ok"), Outcome("no_audio", "no audio stream"), Outcome("missing", "no front video")


@pytest.mark.parametrize("index, sync, face, failure, expected", [
    (MISSING, None, None, None, MISSING),  # a file later stages cannot use keeps its index status ...
    (MISSING, None, None, "no usable reference audio", MISSING),  # ... also in a failed take
    (OK, None, None, "no common window: none", Outcome("failed", "no common window: none")),
    (OK, Outcome("ok"), Outcome("ok"), "ValueError: boom", Outcome("failed", "ValueError: boom")),
    (OK, None, None, None, OK),  # nothing ran on it
    (NO_AUDIO, Outcome("ok", "offset from motion"), None, None, Outcome("ok", "offset from motion")),
    (OK, Outcome("unsynced", "no offset"), None, None, Outcome("unsynced", "no offset")),  # not cut: faces did not run
    (OK, Outcome("ok"), Outcome("ok"), None, Outcome("ok")),
    (OK, Outcome("approximate", "median"), Outcome("ok"), None, Outcome("approximate", "median")),  # a weak sync stays
    (OK, Outcome("low_confidence", "weak"), Outcome("ok"), None, Outcome("low_confidence", "weak")),
    (OK, Outcome("ok"), Outcome("partial", "found on 70%"), None, Outcome("partial", "found on 70%")),
    (OK, Outcome("approximate", "median"), Outcome("no_face", "no face"), None, Outcome("no_face", "no face")),
])
def test_clip_outcome(index, sync, face, failure, expected):
    assert clip_outcome(index, sync, face, failure) == expected
    outcomes = {"index": index} | ({"sync": sync} if sync else {}) | ({"faces": face} if face else {})
    clip = ClipRow().settle(outcomes, failure)
    assert (clip.status, clip.error) == expected
    assert (clip.index_status, clip.sync_status, clip.face_status) == (index.status, sync and sync.status, face and face.status)


@pytest.mark.parametrize("statuses, failure, expected", [
    (["ok", "ok"], None, Outcome("ok")),
    (["ok", "missing"], None, Outcome("partial")),
    (["no_face", "missing", "no_face"], None, Outcome("failed", "no view finished: e-missing; e-no_face")),
    (["ok", "ok"], "ValueError: boom", Outcome("failed", "ValueError: boom")),
])
def test_take_outcome(statuses, failure, expected):
    clips = [ClipRow(status=s, error=f"e-{s}") for s in statuses]
    assert take_outcome(clips, failure) == expected


# ---------------------------------------------------------------- the stage list


def test_until_cuts_the_declared_stage_list():
    choices = next(p for p in command.params if p.name == "until").type.choices
    assert tuple(choices) == UNTIL == ("index", "sync", "features", "audio", "faces", "curation", "shards")
    every = ("sync", "features", "audio", "faces", "curation")
    assert {u: stages_for(u) for u in UNTIL} == {
        "index": (), "sync": ("sync",), "features": ("sync", "features"), "audio": ("sync", "features", "audio"),
        "faces": every[:4], "curation": every, "shards": every}
    assert [stages_until(s) for s in STAGE_NAMES] == [STAGE_NAMES[: i + 1] for i in range(len(STAGES))]


def test_every_cut_of_the_list_can_run_and_a_stage_without_its_inputs_cannot():
    for until in UNTIL:
        check_stages(stages_for(until))
    check_stages(("sync", "faces"))
    with pytest.raises(ValueError, match="stage faces needs window"):
        check_stages(("faces",))
    with pytest.raises(ValueError, match="unknown stage shards"):
        check_stages(("sync", "shards"))


def test_stages_declare_the_clip_columns_each_fills_once():
    made = set(TASK_INPUTS)
    for stage in STAGES:
        assert set(stage.needs) <= made, stage.name
        made |= set(stage.makes)
    adds = [c for s in STAGES for c in s.adds]
    assert len(adds) == len(set(adds)) and set(adds) <= set(ClipRow.columns())
    base = set(ClipRow.of(_recording("front")).to_row()) - {k for k, v in ClipRow.of(_recording("front")).to_row().items() if v is None}
    settled = {"status", "error", "index_status", "split", "config_hash"} | set(CORPUS_COLUMNS)
    assert base | settled | set(adds) == set(ClipRow.columns())


def _fake_take(monkeypatch, tmp_path, stages, window: TakeSync) -> TakeTask:
    """A task of two views (front cut to `window`, down not) and a missing one, its stages' work faked."""
    monkeypatch.setattr(meadkit.take, "_reference_audio", lambda ref: (np.zeros(100, np.float32), 100))
    monkeypatch.setattr(meadkit.take, "_sync", lambda *a: window)
    monkeypatch.setattr(meadkit.take, "_features", lambda *a: {"features_npz": "clips/m.npz", "feature_sets": "mfcc28", "mfcc_recipe": "mead",
                                                                "padded_rows": 1, "audio_duration_s": 1.0})
    monkeypatch.setattr(meadkit.take, "_faces", lambda *a: {"face_status": "ok", "face_error": None, "face_frames": 20,
                                                             "found_ratio": 1.0, "crop_size": 64, "crop_video": "v.mp4",
                                                             "head_yaw": 0.0})
    views = [_recording("front"), _recording("down"), _recording("top", "missing", "no top video")]
    return TakeTask(KEY, _recording(None, kind="audio"), views, str(tmp_path), stages, "inputs")


def _window() -> TakeSync:
    return TakeSync(t0_s=0.0, n_frames=20, fps=MEAD_FPS, status="ok", views={
        "front": ViewSync(offset_s=0.0, confidence=0.9, method="audio", status="ok", fps=MEAD_FPS, video_frames=30,
                          start_frame=0, n_frames=20),
        "down": ViewSync(offset_s=0.9, confidence=0.1, method="audio", status="low_confidence", fps=MEAD_FPS,
                         video_frames=30, error="weak; does not cover the window of the other views")})


@pytest.mark.parametrize("until", ["sync", "features", "audio", "faces"])
def test_a_take_fills_only_the_columns_of_the_stages_it_ran(monkeypatch, tmp_path, until):
    task = _fake_take(monkeypatch, tmp_path, stages_for(until), _window())
    record = process_take(task, load_pipeline(overrides=["audio.export=true"]), "h")
    ran = [s for s in STAGES if s.name in stages_for(until)]
    base = set(ClipRow.of(task.views[0]).to_row()) - {k for k, v in ClipRow.of(task.views[0]).to_row().items() if v is None}
    allowed = base | {"status", "error", "index_status"} | {c for s in ran for c in s.adds}
    clips = {c.view: c for c in record.clips}
    for clip in clips.values():
        filled = {k for k, v in clip.to_row().items() if v is not None}
        assert filled <= allowed, (until, filled - allowed)
    assert "face_frames" not in ClipRow.columns() and clips["front"].found_ratio == (1.0 if until == "faces" else None)
    assert (clips["front"].status, clips["front"].face_status) == ("ok", "ok" if until == "faces" else None)
    assert (clips["down"].status, clips["down"].sync_status, clips["down"].face_status) == ("low_confidence", "low_confidence", None)
    assert (clips["top"].status, clips["top"].index_status, clips["top"].sync_status) == ("missing", "missing", None)
    assert record.status == "partial" and record.n_frames == 20 and len(record.sync) == 2
    assert set(record.times) == {"total"} | {s.name for s in ran}
    audio = until in ("audio", "faces")
    assert {c.audio_wav for c in clips.values()} == {f"clips/{KEY.actor}/{KEY.id}/audio.wav" if audio else None}
    assert (tmp_path / "clips" / KEY.actor / KEY.id / "audio.wav").exists() == audio
    assert meadkit.take.load_records(tmp_path) == {KEY.id: record}


def test_the_front_view_runs_first_and_bounds_how_far_the_other_views_faces_are_turned(monkeypatch, tmp_path):
    """The faces stage runs on the front view first; its head yaw and each camera's angle tell the other views how
    far their face is turned at least (so a 60-degree view the mesh misreads as 30 is refused)."""
    from meadkit.take import least_yaw

    cut = dict(confidence=0.9, method="audio", status="ok", fps=MEAD_FPS, video_frames=30, start_frame=0, n_frames=20)
    window = TakeSync(t0_s=0.0, n_frames=20, fps=MEAD_FPS, status="ok",
                      views={v: ViewSync(offset_s=0.0, **cut) for v in ("left_60", "down", "front")})
    task = _fake_take(monkeypatch, tmp_path, STAGE_NAMES, window)
    task = dataclasses.replace(task, views=[_recording("left_60"), _recording("down"), _recording("front")])
    asked = []

    def faces(source, vs, grid, pipeline, cdir, view, out, least):
        asked.append((view, least))
        return {"face_status": "ok", "face_error": None, "found_ratio": 1.0, "head_yaw": -8.0}

    monkeypatch.setattr(meadkit.take, "_faces", faces)
    process_take(task, load_pipeline(), "h")
    assert asked == [("front", 0.0), ("left_60", 53.0), ("down", 0.0)]  # |-8 - 60| - 15 and |-8 - 0| - 15 < 0
    assert least_yaw("right_60", -8.0, 15.0) == 37.0 and least_yaw("right_30", 20.0, 15.0) == 35.0
    assert least_yaw("left_60", float("nan"), 15.0) == 0.0 and least_yaw("side", 5.0, 15.0) == 0.0
    assert least_yaw("left_60", -8.0, 90.0) == 0.0  # slack 90: off


def test_a_failed_take_keeps_the_statuses_of_the_stages_that_ran(monkeypatch, tmp_path):
    none = TakeSync(fps=MEAD_FPS, error="no span", views={
        "front": ViewSync(offset_s=5.0, confidence=0.9, method="audio", status="ok", fps=MEAD_FPS, video_frames=30)})
    record = process_take(_fake_take(monkeypatch, tmp_path, STAGE_NAMES, none), load_pipeline(), "h")
    clips = {c.view: c for c in record.clips}
    assert (record.status, record.error, record.n_frames) == ("failed", "no common window: no span", 0)
    assert (clips["front"].status, clips["front"].sync_status, clips["front"].offset_s) == ("failed", "ok", None)
    assert (clips["down"].status, clips["down"].sync_status) == ("failed", None)
    assert clips["top"].status == "missing"


def test_a_crashed_worker_fails_the_usable_views():
    views = [_recording("front"), _recording("top", "missing", "no top video")]
    task = TakeTask(KEY, _recording(None, kind="audio"), views, "/nowhere", ("sync",), "inputs")
    record = crashed_record(task, "h", RuntimeError("the worker process died"))
    assert (record.status, record.error) == ("failed", "worker crashed: RuntimeError: the worker process died")
    assert [(c.status, c.error) for c in record.clips] == [("failed", "worker crashed"), ("missing", "no top video")]
    assert record.stages == ["sync"] and record.sync == [] and record.times == {} and record.n_frames == 0
