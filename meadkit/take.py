"""The take worker: a take's stages run in their declared order, then its record is committed.

`STAGES` declares the per-take stages (sync, features, audio, faces, curation): what each needs, what it makes for later stages,
which clip columns it adds, and its precondition (a take that does not meet it fails with that reason);
`--until` cuts the list (`stages_until`). A worker (`process_take`) syncs the views, computes the audio feature sets once for
the take's window (and, with `[audio] export`, cuts its audio once), runs the faces stage on each view cut to the window, measures
each such view's quality and the take's audio fingerprint (`meadkit.curation`), writes every output under a temporary
name and commits the take's record last (`OUT/state/takes/<take_id>.json`). A bad take becomes a failed record;
a full or read-only disk stops the run (`OutputDiskError`) and records nothing for the take it hit.
"""
from __future__ import annotations

import math
import time
import traceback
from collections import Counter
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Optional, Sequence

from meadkit.atomic import OutputDiskError, atomic_path, disk_error, output_error
from meadkit.corpus.names import VIEW_YAW, TakeKey
from meadkit.records import (USABLE_AUDIO, USABLE_VIDEO, ClipRow, Outcome, RecordingRow, SyncRow, TakeRecord,
                             take_outcome)

if TYPE_CHECKING:
    from meadkit.config import Pipeline
    from meadkit.sync import TakeSync
    from meadkit.timebase import Grid

#: What a take's state holds before any stage runs: its reference audio's row and its usable views' rows.
TASK_INPUTS = ("reference", "usable")


class TakeError(RuntimeError):
    """A take that cannot be processed as a whole (reason in the message)."""


@dataclass(frozen=True)
class Stage:
    """One per-take stage: the state it reads (`needs`) and sets for later stages (`makes`), the clip columns it
    fills (`adds`), why a take cannot run it (`blocked`: a reason, or None) and the step itself (`run`)."""

    name: str
    needs: tuple[str, ...]
    makes: tuple[str, ...]
    adds: tuple[str, ...]
    blocked: Callable[[TakeState], Optional[str]]
    run: Callable[[TakeState], None]


@dataclass
class TakeState:
    """What one take's stages share while it runs: the task, its usable views, what earlier stages made, each
    view's clip row and each stage's outcome per view (reduced into the clip's status at the end)."""

    task: TakeTask
    pipeline: Pipeline
    usable: dict[str, RecordingRow]
    clips: dict[str, ClipRow]
    outcomes: dict[str, dict[str, Outcome]]
    audio: Optional[tuple] = None
    window: Optional[TakeSync] = None
    grid: Optional[Grid] = None
    sync: list[SyncRow] = field(default_factory=list)
    times: Counter = field(default_factory=Counter)
    fingerprint: list = field(default_factory=list)

    @classmethod
    def start(cls, task: TakeTask, pipeline: Pipeline) -> TakeState:
        return cls(task, pipeline, usable={r.view: r for r in task.views if r.status in USABLE_VIDEO},
                   clips={r.view: ClipRow.of(r) for r in task.views},
                   outcomes={r.view: {"index": r.outcome()} for r in task.views})

    @property
    def out(self) -> Path:
        return Path(self.task.out)


def clip_dir(out: Path | str, key: TakeKey) -> Path:
    return Path(out) / "clips" / key.actor / key.id


# ---------------------------------------------------------------- the stages


def _sync_blocked(s: TakeState) -> Optional[str]:
    ref = s.task.reference
    if ref is None or ref.status not in USABLE_AUDIO:
        return "no usable reference audio" + (f": {ref.error}" if ref else "")
    return None if s.usable else "no usable view video"


def _no_window(s: TakeState) -> Optional[str]:
    """Why the take has no synced window with an output frame (features and faces need one), or None."""
    if not s.window.n_frames:
        return f"no common window: {s.window.error}"
    short = s.grid.too_short()
    return f"too_short: {short}" if short else None


def _run_sync(s: TakeState) -> None:
    """Offsets of the usable views on the reference audio, the take's window and its output grid (the clips'
    rate and frame count); a take without a window fails."""
    from meadkit.sync import sync_rows
    from meadkit.timebase import output_grid

    s.audio = _reference_audio(s.task.reference)
    s.window, seconds = _timed(_sync, s.task, s.usable, s.audio, s.pipeline)
    s.times["sync"] += seconds
    s.sync = sync_rows(s.task.key, s.window)
    if s.window.n_frames:
        s.grid = output_grid(s.window.t0_s, s.window.n_frames, s.window.fps, s.pipeline.timebase)
    for row in s.sync:
        s.clips[row.view].update(offset_s=row.offset_s, sync_confidence=row.confidence, sync_method=row.method,
                                 t0_s=row.t0_s, start_frame=row.start_frame)
        if row.n_frames is not None and s.grid is not None:
            s.clips[row.view].update(n_frames=s.grid.n_frames, fps_num=s.grid.fps.numerator,
                                     fps_den=s.grid.fps.denominator)
        s.outcomes[row.view]["sync"] = Outcome(row.status, row.error)
    why = _no_window(s)
    if why:
        raise TakeError(why)


def _run_features(s: TakeState) -> None:
    """The take's feature sets, once, on its window; every clip of the take points at them."""
    values, seconds = _timed(_features, s.audio, s.grid, s.pipeline, clip_dir(s.out, s.task.key))
    s.times["features"] += seconds
    for clip in s.clips.values():
        clip.update(**values)


def _run_audio(s: TakeState) -> None:
    """With `[audio] export`: the take's window of the reference audio as audio.wav, once; every clip points at it."""
    if not s.pipeline.audio.export:
        return
    values, seconds = _timed(_clip_audio, s)
    s.times["audio"] += seconds
    for clip in s.clips.values():
        clip.update(**values)


def _run_faces(s: TakeState) -> None:
    """The faces stage on each view cut to the window (a view that is not keeps its sync status and why)."""
    cdir = clip_dir(s.out, s.task.key)
    front_yaw = float("nan")
    for view, row in sorted(s.usable.items(), key=lambda item: item[0] != "front"):  # the front view first
        vs = s.window.views.get(view)
        if vs is None or vs.start_frame is None:
            continue
        least = least_yaw(view, front_yaw, s.pipeline.faces.view_slack)
        face, seconds = _timed(_faces, _source(row), vs, s.grid, s.pipeline, cdir, view, s.out, least)
        s.times["faces"] += seconds
        s.outcomes[view]["faces"] = Outcome(face["face_status"], face["face_error"])
        s.clips[view].update(**{k: v for k, v in face.items() if k in _FACE_COLUMNS})
        if view == "front":
            front_yaw = face["head_yaw"]


def least_yaw(view: str, front_yaw: float, slack: float) -> float:
    """How far a view's face is turned at least (degrees), from the head's yaw in the take's front view (`fit_pose`'s
    sign, NaN where unknown) and the view camera's angle (`VIEW_YAW`, the other sign), less `slack` for the head's
    motion within the take: 0 where the front view gave no pose, or for a view of unknown angle."""
    if view not in VIEW_YAW or not math.isfinite(front_yaw):
        return 0.0
    return max(0.0, abs(front_yaw - VIEW_YAW[view]) - slack)


def _run_curation(s: TakeState) -> None:
    """Each view the faces stage ran on gets its curation measures; the take gets its audio fingerprint."""
    values, seconds = _timed(_curation, s)
    s.times["curation"] += seconds
    for view, row in values.items():
        s.clips[view].update(**row)


_SYNC_COLUMNS = ("sync_status", "offset_s", "sync_confidence", "sync_method", "t0_s", "start_frame", "n_frames")
_FEATURE_COLUMNS = ("features_npz", "feature_sets", "mfcc_recipe", "padded_rows", "audio_duration_s")
_AUDIO_COLUMNS = ("audio_wav", "audio_rate", "audio_padded")
_FACE_COLUMNS = ("face_backend", "found_ratio", "mean_score", "jitter", "rejected_ratio", "mesh_ratio", "crop_size",
                 "crop_video", "faces_npz")
#: Filled per clip by the curation stage; `expression_strength` and `duplicate_of` by `prepare` after the takes.
_CURATION_COLUMNS = ("av_offset_frames", "av_confidence", "yaw_deg", "pitch_deg", "roll_deg", "pose_range_deg",
                     "sharpness", "exposure", "valid_ratio", "quality_flags")
#: The per-take stages in data-flow order.
STAGES = (
    Stage("sync", needs=TASK_INPUTS, makes=("audio", "window", "sync"), adds=_SYNC_COLUMNS, blocked=_sync_blocked,
          run=_run_sync),
    Stage("features", needs=("audio", "window"), makes=(), adds=_FEATURE_COLUMNS, blocked=_no_window, run=_run_features),
    Stage("audio", needs=("audio", "window"), makes=(), adds=_AUDIO_COLUMNS, blocked=_no_window, run=_run_audio),
    Stage("faces", needs=("usable", "window"), makes=("faces",), adds=("face_status",) + _FACE_COLUMNS,
          blocked=_no_window, run=_run_faces),
    Stage("curation", needs=("audio", "window", "faces"), makes=(), adds=_CURATION_COLUMNS, blocked=_no_window,
          run=_run_curation),
)
STAGE_NAMES = tuple(s.name for s in STAGES)


def stages_until(name: str) -> tuple[str, ...]:
    """The declared stages up to and including `name`."""
    return STAGE_NAMES[: STAGE_NAMES.index(name) + 1]


def check_stages(names: Sequence[str]) -> None:
    """Refuse (ValueError) a choice of stages with an unknown name, or one that leaves out what a chosen stage needs."""
    unknown = sorted(set(names) - set(STAGE_NAMES))
    if unknown:
        raise ValueError(f"unknown stage {', '.join(unknown)}; stages: {', '.join(STAGE_NAMES)}")
    have = set(TASK_INPUTS)
    for stage in (s for s in STAGES if s.name in names):
        missing = [n for n in stage.needs if n not in have]
        if missing:
            raise ValueError(f"stage {stage.name} needs {', '.join(missing)}, made by a stage not chosen")
        have |= set(stage.makes)


@dataclass
class TakeTask:
    """What a worker needs for one take: its recordings rows and where to write."""

    key: TakeKey
    reference: Optional[RecordingRow]
    views: list[RecordingRow]
    out: str
    stages: tuple[str, ...] = STAGE_NAMES
    inputs: str = ""  # `prepare.take_inputs` of the rows: a finished take is redone when its inputs change


@dataclass
class TakeJob:
    """The per-take worker: a callable holding the pipeline config (pickles to processes and Dask)."""

    pipeline: Pipeline
    config_hash: str
    stages: tuple[str, ...] = STAGE_NAMES  # the stages the run's takes go through (what to warm up)

    def __call__(self, task: TakeTask) -> TakeRecord:
        return process_take(task, self.pipeline, self.config_hash)

    def warm_up(self) -> None:
        """What every take loads on first use, loaded once per worker (the runner calls it): librosa's kernels and,
        when the run tracks faces, the face backend (dlib's 100 MB landmark model, mediapipe's graphs: ~2 s), so
        that a worker's first take is not billed for them."""
        from meadkit.features import warm_up

        warm_up(self.pipeline.features)
        if "faces" in self.stages:
            from meadkit.faces import backend_for

            backend_for(self.pipeline.faces)


# ---------------------------------------------------------------- one take


def process_take(task: TakeTask, pipeline: Pipeline, config_hash: str) -> TakeRecord:
    """Run the task's stages in declared order; write outputs and, last, the record. Raises only OutputDiskError."""
    state, started, failure = TakeState.start(task, pipeline), time.perf_counter(), None
    try:
        for stage in (s for s in STAGES if s.name in task.stages):
            why = stage.blocked(state)
            if why:
                raise TakeError(why)
            stage.run(state)
    except Exception as e:  # one bad take must never stop the run, unless OUT cannot be written
        disk = output_error(e, state.out)
        if disk:
            raise disk from None
        failure = _describe(e)
    record = _take_record(state, config_hash, failure, time.perf_counter() - started)
    commit_record(state.out, record)
    return record


def _take_record(s: TakeState, config_hash: str, failure: Optional[str], seconds: float) -> TakeRecord:
    """The record of a finished (or failed) take; a failed take's clips keep only what the index gave them."""
    clips = [(s.clips[r.view] if failure is None else ClipRow.of(r)).settle(s.outcomes[r.view], failure)
             for r in s.task.views]
    status, error = take_outcome(clips, failure)
    times = {k: round(v, 3) for k, v in s.times.items()} | {"total": round(seconds, 3)}
    return TakeRecord(s.task.key.id, config_hash, s.task.inputs, list(s.task.stages), status, error,
                      0 if failure else int(s.grid.n_frames), s.sync, clips, times, [] if failure else s.fingerprint)


def crashed_record(task: TakeTask, config_hash: str, exc: BaseException) -> TakeRecord:
    """The record of a take whose worker raised past `process_take` or died: its usable views failed."""
    clips = [ClipRow.of(r).settle({"index": r.outcome()}, "worker crashed") for r in task.views]
    status, error = take_outcome(clips, f"worker crashed: {_describe(exc)}")
    return TakeRecord(task.key.id, config_hash, task.inputs, list(task.stages), status, error, 0, [], clips, {})


def _source(row: RecordingRow):
    """Where a recording's bytes are (`meadkit.index.source_of` of its row)."""
    from meadkit.index import source_of

    return source_of(row.to_row())


def _timed(fn, *args):
    t = time.perf_counter()
    result = fn(*args)
    return result, time.perf_counter() - t


def _reference_audio(reference: RecordingRow, mono: bool = True) -> tuple:
    """The take's reference audio at its native rate: mono, decoded once for sync, features and mono clip audio
    (all channels for stereo clip audio)."""
    from meadkit.media.audio import load_audio
    from meadkit.media.probe import MediaError

    try:
        return load_audio(_source(reference), mono=mono)
    except MediaError as e:
        raise TakeError(f"reference audio unreadable: {e}") from None


def _sync(task: TakeTask, usable: dict[str, RecordingRow], audio: tuple, pipeline: Pipeline) -> TakeSync:
    from meadkit.index import source_of
    from meadkit.media.probe import Probe
    from meadkit.sync import sync_take

    ref, rows = task.reference.to_row(), {v: r.to_row() for v, r in usable.items()}  # one dict per row for both
    views = {v: (source_of(r), Probe.from_row(r)) for v, r in rows.items()}
    return sync_take(source_of(ref), Probe.from_row(ref), views, pipeline.sync, ref_audio=audio)


def _features(audio: tuple, grid: Grid, pipeline: Pipeline, cdir: Path) -> dict:
    """Compute and write the take's features.npz (every configured set, a row per output frame); its clip columns."""
    from meadkit.features import compute_features, feature_row, save_features

    audio, sr = audio
    result = compute_features(audio, sr, grid.t0_s, grid.n_frames, grid.fps, pipeline.features)
    path = cdir / "features.npz"
    save_features(result, path)
    row = feature_row(result)
    return {
        "features_npz": str(path.relative_to(cdir.parents[2])), "feature_sets": row["feature_sets"],
        "mfcc_recipe": row["recipe"], "padded_rows": row["padded_rows"], "audio_duration_s": row["audio_duration_s"],
    }


def _window(s: TakeState) -> tuple[float, int, Fraction]:
    """The take's output grid (t0_s on the reference clock, frames, fps): where the audio and curation stages read it."""
    return s.grid.t0_s, s.grid.n_frames, s.grid.fps


def _clip_audio(s: TakeState) -> dict:
    """Cut and write the take's audio.wav (the stereo reference decoded here when `channels` = 2); its clip columns."""
    from meadkit.clip_audio import as_channels, cut_window, write_wav

    cfg = s.pipeline.audio
    samples, sr = s.audio if cfg.channels == 1 else _reference_audio(s.task.reference, mono=False)
    clip = cut_window(as_channels(samples, cfg.channels), sr, *_window(s), cfg.rate)
    path = clip_dir(s.out, s.task.key) / "audio.wav"
    write_wav(clip, path)
    return {"audio_wav": str(path.relative_to(s.out)), "audio_rate": clip.rate, "audio_padded": clip.padded}


def _faces(source, view_sync, grid: Grid, pipeline: Pipeline, cdir: Path, view: str, out: Path,
           least: float) -> dict:
    """Run the faces stage on one view's window, written on the take's grid, for a face turned at least `least`
    degrees: `FaceResult.as_row` (face_status, face_error, quality), the head's yaw, the crop size and the output
    paths (null unless written)."""
    from meadkit.faces import process_view

    video, arrays = cdir / f"{view}.mp4", cdir / f"{view}.faces.npz"
    res = process_view(source, view_sync.start_frame, view_sync.n_frames, video, arrays, pipeline.faces,
                       out_fps=grid.fps, least_yaw=least)
    ok = res.status in ("ok", "partial")  # partial views keep their outputs; the status says why they are not ok
    return res.as_row() | {
        "head_yaw": res.head_yaw, "crop_size": pipeline.faces.crop_size, "crop_video": str(video.relative_to(out)) if ok else None,
        "faces_npz": str(arrays.relative_to(out)) if ok else None,
    }


def _curation(s: TakeState) -> dict[str, dict]:
    """The take's fingerprint (set on the state) and, by view the faces stage ran on, its curation columns."""
    from meadkit.curation.clip import fingerprint, measure_clip, take_envelope

    envelope, silent = take_envelope(s.audio, *_window(s))
    s.fingerprint = fingerprint(s.audio)
    values = {}
    for view, row in s.usable.items():
        if "faces" not in s.outcomes[view]:
            continue
        clip = s.clips[view]
        npz, video = (s.out / p if p else None for p in (clip.faces_npz, clip.crop_video))
        values[view] = measure_clip(npz, video, envelope, silent, (row.width, row.height))
    return values


def _describe(e: BaseException) -> str:
    if isinstance(e, TakeError):
        return str(e)
    tb = traceback.extract_tb(e.__traceback__)
    where = f" at {Path(tb[-1].filename).name}:{tb[-1].lineno}" if tb else ""
    return f"{type(e).__name__}: {e}{where}"


# ---------------------------------------------------------------- committed records


def record_path(out: Path | str, take_id: str) -> Path:
    return Path(out) / "state" / "takes" / f"{take_id}.json"


def commit_record(out: Path | str, record: TakeRecord) -> None:
    """Write a take's record atomically: the take counts as finished only once this exists (any OSError: OUT's)."""
    path = record_path(out, record.take_id)
    try:
        with atomic_path(path) as tmp:
            tmp.write_text(record.to_json())
    except OSError as e:
        raise OutputDiskError(e.errno, disk_error(e, path)) from None


def load_records(out: Path | str) -> dict[str, TakeRecord]:
    """All committed take records under OUT, by take id (unreadable ones are ignored, so redone)."""
    records = {}
    for p in sorted((Path(out) / "state" / "takes").glob("*.json")):
        try:
            records[p.stem] = TakeRecord.from_json(p.read_text())
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return records
