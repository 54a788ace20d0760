"""`prepare`: index -> per take (sync, features, faces) -> manifests -> shards, resumable.

The unit of work is a take. A worker syncs its views, computes the MFCC once for the take's
window, runs the faces stage on each view (one decode pass per view), writes every output
under a temporary name, and commits a small JSON record last
(`OUT/state/takes/<take_id>.json`). A rerun keeps takes whose record carries the same config
hash and the same inputs (their recordings rows and file mtimes), so a killed run resumes and ends
with the manifests an uninterrupted run would write. OUT's index is rebuilt when RAW is another
folder or its listing changed (see `meadkit.index.stale_index`). A full or read-only disk stops
the run with one line (`OutputDiskError`) and records nothing for the take it hit.
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
import time
import traceback
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Iterable, Optional

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from meadkit.atomic import OutputDiskError, atomic_path, disk_error, output_error, remove_orphans
from meadkit.config import Pipeline
from meadkit.corpus.names import TakeKey
from meadkit.lock import OutputLock
from meadkit.manifest import write_rows
from meadkit.runner import Executor
from meadkit.splits import assign_splits

#: Recording statuses whose file can be used (the reference audio may be short: features pad it).
USABLE_VIDEO = ("ok", "no_audio")
USABLE_AUDIO = ("ok", "short_audio")
STAGE_ORDER = ("sync", "features", "faces")

CLIPS_SCHEMA = pa.schema(
    [
        ("take_id", pa.string()), ("actor", pa.string()), ("gender", pa.string()), ("emotion", pa.string()),
        ("level", pa.int8()), ("take", pa.int16()), ("view", pa.string()), ("split", pa.string()),
        ("status", pa.string()), ("error", pa.string()),
        ("source", pa.string()), ("width", pa.int32()), ("height", pa.int32()),
        ("fps_num", pa.int32()), ("fps_den", pa.int32()), ("has_audio", pa.bool_()),
        ("offset_s", pa.float64()), ("sync_confidence", pa.float32()), ("sync_method", pa.string()),
        ("t0_s", pa.float64()), ("start_frame", pa.int32()), ("n_frames", pa.int32()),
        ("found_ratio", pa.float32()), ("mean_score", pa.float32()), ("jitter", pa.float32()),
        ("face_backend", pa.string()), ("rejected_ratio", pa.float32()), ("mesh_ratio", pa.float32()),
        ("crop_size", pa.int32()), ("crop_video", pa.string()), ("faces_npz", pa.string()),
        ("mfcc_npz", pa.string()), ("mfcc_recipe", pa.string()), ("padded_rows", pa.int32()),
        ("audio_duration_s", pa.float64()), ("config_hash", pa.string()),
    ]
)
STATUS_SCHEMA = pa.schema(
    [
        ("take_id", pa.string()), ("status", pa.string()), ("error", pa.string()), ("views_ok", pa.int16()),
        ("views_total", pa.int16()), ("n_frames", pa.int32()), ("config_hash", pa.string()),
        ("sync_s", pa.float32()), ("features_s", pa.float32()), ("faces_s", pa.float32()), ("total_s", pa.float32()),
    ]
)


@dataclass
class TakeTask:
    """What a worker needs for one take: its recordings rows (plain dicts) and where to write."""

    key: TakeKey
    reference: Optional[dict]
    views: list[dict]
    out: str
    stages: tuple[str, ...] = STAGE_ORDER
    inputs: str = ""  # `take_inputs` of the rows: a finished take is redone when its inputs change


@dataclass
class TakeJob:
    """The per-take worker: a callable holding the pipeline config (pickles to processes and Dask)."""

    pipeline: Pipeline
    config_hash: str

    def __call__(self, task: TakeTask) -> dict:
        return process_take(task, self.pipeline, self.config_hash)


def clip_dir(out: Path | str, key: TakeKey) -> Path:
    return Path(out) / "clips" / key.actor / key.id


def record_path(out: Path | str, take_id: str) -> Path:
    return Path(out) / "state" / "takes" / f"{take_id}.json"


def process_take(task: TakeTask, pipeline: Pipeline, config_hash: str) -> dict:
    """Run sync, features and faces for one take; write outputs and, last, its record. Never raises."""
    from meadkit.index import source_of

    key, out = task.key, Path(task.out)
    times = Counter()
    record = {"take_id": key.id, "config_hash": config_hash, "inputs": task.inputs, "stages": list(task.stages), "sync": [],
              "clips": []}
    started = time.perf_counter()
    try:
        if task.reference is None or task.reference["status"] not in USABLE_AUDIO:
            raise TakeError("no usable reference audio" + (f": {task.reference['error']}" if task.reference else ""))
        usable = {r["view"]: r for r in task.views if r["status"] in USABLE_VIDEO}
        if not usable:
            raise TakeError("no usable view video")
        audio = _reference_audio(task.reference)
        take_sync, times["sync"] = _timed(_sync, task, usable, audio, pipeline)
        record["sync"] = _jsonable(take_sync_rows(key, take_sync))
        clips = {v: _clip_base(r) for v, r in ((r["view"], r) for r in task.views)}
        for row in record["sync"]:
            clips[row["view"]].update(
                offset_s=row["offset_s"], sync_confidence=row["confidence"], sync_method=row["method"],
                t0_s=row["t0_s"], start_frame=row["start_frame"], n_frames=row["n_frames"],
                status=row["status"], error=row["error"],
            )
        if not take_sync.n_frames:
            raise TakeError(f"no common window: {take_sync.error}")
        cdir = clip_dir(out, key)
        if "features" in task.stages:
            feat, times["features"] = _timed(_features, audio, take_sync, pipeline, cdir)
            for c in clips.values():
                c.update(feat)
        if "faces" in task.stages:
            for view, row in usable.items():
                vs = take_sync.views.get(view)
                if vs is None or vs.start_frame is None:  # not cut to the window: the clip keeps its sync status and why
                    continue
                face, t = _timed(_faces, source_of(row), vs, pipeline, cdir, view, out)
                times["faces"] += t
                if face["status"] == "ok":  # keep a weak sync's status (approximate, low_confidence) on the clip
                    del face["status"], face["error"]
                clips[view].update(face)
        record["clips"] = list(clips.values())
        n_ok = sum(c["status"] == "ok" for c in clips.values())
        record.update(status="ok" if n_ok == len(clips) else ("partial" if n_ok else "failed"),
                      error=None if n_ok else "no view finished: " + "; ".join(sorted({str(c["error"]) for c in clips.values()})))
        record["n_frames"] = int(take_sync.n_frames)
    except Exception as e:  # one bad take must never stop the run, unless OUT cannot be written
        disk = output_error(e, out)
        if disk:
            raise disk from None
        record.update(status="failed", error=_describe(e), n_frames=0)
        record["clips"] = [_clip_base(r) if r["status"] not in USABLE_VIDEO else dict(_clip_base(r), status="failed", error=_describe(e))
                           for r in task.views]
    record["times"] = {k: round(v, 3) for k, v in times.items()} | {"total": round(time.perf_counter() - started, 3)}
    commit_record(out, record)
    return record


class TakeError(RuntimeError):
    """A take that cannot be processed as a whole (reason in the message)."""


def _timed(fn, *args):
    t = time.perf_counter()
    result = fn(*args)
    return result, time.perf_counter() - t


def _reference_audio(reference: dict) -> tuple:
    """The take's reference audio (mono, native rate), decoded once for sync and features."""
    from meadkit.index import source_of
    from meadkit.media.audio import load_audio
    from meadkit.media.probe import MediaError

    try:
        return load_audio(source_of(reference), mono=True)
    except MediaError as e:
        raise TakeError(f"reference audio unreadable: {e}") from None


def _sync(task: TakeTask, usable: dict, audio: tuple, pipeline: Pipeline):
    from meadkit.index import source_of
    from meadkit.media.probe import Probe
    from meadkit.sync import sync_take

    views = {v: (source_of(r), Probe.from_row(r)) for v, r in usable.items()}
    return sync_take(source_of(task.reference), Probe.from_row(task.reference), views, pipeline.sync, ref_audio=audio)


def take_sync_rows(key: TakeKey, take_sync) -> list[dict]:
    from meadkit.sync import sync_rows

    return sync_rows(key, take_sync)


def _features(audio: tuple, take_sync, pipeline: Pipeline, cdir: Path) -> dict:
    from meadkit.features import compute_features, feature_row, save_features

    audio, sr = audio
    result = compute_features(audio, sr, take_sync.t0_s, take_sync.n_frames, take_sync.fps, pipeline.features)
    path = cdir / "mfcc.npz"
    save_features(result, path)
    row = feature_row(result)
    return {
        "mfcc_npz": str(path.relative_to(cdir.parents[2])), "mfcc_recipe": row["recipe"],
        "padded_rows": row["padded_rows"], "audio_duration_s": row["audio_duration_s"],
    }


def _faces(source, view_sync, pipeline: Pipeline, cdir: Path, view: str, out: Path) -> dict:
    from meadkit.faces import process_view

    video, arrays = cdir / f"{view}.mp4", cdir / f"{view}.faces.npz"
    res = process_view(source, view_sync.start_frame, view_sync.n_frames, video, arrays, pipeline.faces)
    ok = res.status in ("ok", "partial")  # partial views keep their outputs; the status says why they are not ok
    return {
        "status": res.status, "error": res.error, "found_ratio": res.found_ratio, "mean_score": res.mean_score,
        "jitter": res.jitter, "face_backend": res.backend, "rejected_ratio": res.rejected,
        "mesh_ratio": res.mesh_ratio, "crop_size": pipeline.faces.crop_size,
        "crop_video": str(video.relative_to(out)) if ok else None, "faces_npz": str(arrays.relative_to(out)) if ok else None,
    }


def _clip_base(row: dict) -> dict:
    return {
        "take_id": row["take_id"], "actor": row["actor"], "gender": row["gender"], "emotion": row["emotion"],
        "level": row["level"], "take": row["take"], "view": row["view"], "status": row["status"], "error": row["error"],
        "source": row["relpath"], "width": row.get("width"), "height": row.get("height"),
        "fps_num": row.get("fps_num"), "fps_den": row.get("fps_den"), "has_audio": row.get("has_audio"),
    }


def _describe(e: BaseException) -> str:
    if isinstance(e, TakeError):
        return str(e)
    tb = traceback.extract_tb(e.__traceback__)
    where = f" at {Path(tb[-1].filename).name}:{tb[-1].lineno}" if tb else ""
    return f"{type(e).__name__}: {e}{where}"


def _jsonable(rows: list[dict]) -> list[dict]:
    return json.loads(json.dumps(rows, default=lambda v: v.item() if hasattr(v, "item") else str(v)))


def commit_record(out: Path | str, record: dict) -> None:
    """Write a take's record atomically: the take counts as finished only once this exists (any OSError: OUT's)."""
    path = record_path(out, record["take_id"])
    try:
        with atomic_path(path) as tmp:
            tmp.write_text(json.dumps(record, default=str))
    except OSError as e:
        raise OutputDiskError(e.errno, disk_error(e, path)) from None


def take_inputs(rows: Iterable[dict]) -> str:
    """Hash of a take's recordings rows and the mtimes of their files: what decides whether its record still holds."""
    h = hashlib.sha256()
    for r in rows:
        h.update(json.dumps({k: v for k, v in r.items() if k != "known"}, sort_keys=True, default=str).encode())
        h.update(str(_mtime(r.get("source_path"))).encode())
    return h.hexdigest()[:16]


def _mtime(path: Optional[str]) -> Optional[int]:
    try:
        return os.stat(path).st_mtime_ns if path else None
    except OSError:
        return None


def load_records(out: Path | str) -> dict[str, dict]:
    """All committed take records under OUT, by take id (unreadable ones are ignored, so redone)."""
    records = {}
    for p in sorted((Path(out) / "state" / "takes").glob("*.json")):
        try:
            records[p.stem] = json.loads(p.read_text())
        except (OSError, json.JSONDecodeError):
            continue
    return records


def make_tasks(recordings: pa.Table, out: Path | str, stages: tuple[str, ...] = STAGE_ORDER, **filters) -> list[TakeTask]:
    """One task per take of the recordings table, after structured filters (see `meadkit.select`).

    Rows travel as plain Python values from Arrow (ints stay ints, nulls are None).
    """
    from meadkit.select import select

    df = recordings.select(["take_id", "kind", "actor", "gender", "emotion", "level", "take", "view"]).to_pandas()
    df = df[df["take_id"].notna()]
    keep = select(df, **{k: v for k, v in filters.items() if k != "view"})
    rows = recordings.take(keep.index.to_numpy()).to_pylist()
    by_take: dict[str, list[dict]] = {}
    for r in rows:
        if r["status"] != "duplicate":  # the copy index kept is used; the other stays in recordings.parquet
            by_take.setdefault(r["take_id"], []).append(r)
    views_wanted = set(filters.get("view") or ())
    tasks = []
    for take_id in sorted(by_take):
        group = by_take[take_id]
        ref = next((r for r in group if r["kind"] == "audio"), None)
        views = sorted((r for r in group if r["kind"] == "video" and r["view"] and (not views_wanted or r["view"] in views_wanted)),
                       key=lambda r: r["view"])
        if views:
            tasks.append(TakeTask(TakeKey.from_id(take_id), ref, views, str(out), stages, take_inputs([ref] + views)))
    return tasks


def write_manifests(out: Path | str, records: Iterable[dict], pipeline: Pipeline) -> dict[str, Path]:
    """Rebuild sync, clips and status manifests from take records (sorted, so reruns are identical)."""
    from meadkit.sync import SYNC_SCHEMA

    records = sorted(records, key=lambda r: r["take_id"])
    mdir = Path(out) / "manifests"
    clips = pd.DataFrame([c for r in records for c in r["clips"]], columns=CLIPS_SCHEMA.names)
    clips = clips.sort_values(["take_id", "view"], kind="stable").reset_index(drop=True)
    clips["split"] = assign_splits(clips, pipeline.splits) if len(clips) else pd.Series(dtype="string")
    hashes = {r["take_id"]: r["config_hash"] for r in records}
    clips["config_hash"] = clips["take_id"].map(hashes)
    status_rows = [
        {
            "take_id": r["take_id"], "status": r["status"], "error": r.get("error"), "n_frames": r.get("n_frames", 0),
            "views_ok": sum(c["status"] == "ok" for c in r["clips"]), "views_total": len(r["clips"]),
            "config_hash": r["config_hash"], "sync_s": r["times"].get("sync"), "features_s": r["times"].get("features"),
            "faces_s": r["times"].get("faces"), "total_s": r["times"].get("total"),
        }
        for r in records
    ]
    return {
        "sync": write_rows([s for r in records for s in r["sync"]], SYNC_SCHEMA, mdir / "sync.parquet"),
        "clips": write_rows(clips.astype(object).where(clips.notna(), None).to_dict("records"), CLIPS_SCHEMA, mdir / "clips.parquet"),
        "status": write_rows(status_rows, STATUS_SCHEMA, mdir / "status.parquet"),
    }


@dataclass
class PrepareSummary:
    """What a prepare run did, for the closing summary and the exit code."""

    takes_total: int = 0
    takes_skipped: int = 0
    takes_run: int = 0
    take_status: Counter = field(default_factory=Counter)
    clip_status: Counter = field(default_factory=Counter)
    recording_status: Counter = field(default_factory=Counter)
    frames: int = 0
    seconds: float = 0.0
    manifests: dict = field(default_factory=dict)

    @property
    def all_ok(self) -> bool:
        return set(self.take_status) <= {"ok"} and set(self.clip_status) <= {"ok"} and set(self.recording_status) <= {"ok"}

    def text(self) -> str:
        rate = self.frames / self.seconds if self.seconds else 0.0
        lines = [
            f"takes: {self.takes_total} ({self.takes_run} run, {self.takes_skipped} already done)",
            "take status: " + _fmt(self.take_status),
            "clip status: " + _fmt(self.clip_status),
            "recording status: " + _fmt(self.recording_status),
            f"time: {self.seconds:.1f} s, {self.frames} view-frames processed this run ({rate:.1f} frames/s)",
        ]
        lines += [f"{name}: {path}" for name, path in self.manifests.items()]
        return "\n".join(lines)


def _fmt(c: Counter) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(c.items())) or "none"


def run_prepare(
    raw: Path | str,
    out: Path | str,
    pipeline: Pipeline,
    n_jobs: int = 1,
    backend: str = "local",
    scheduler=None,
    stages: tuple[str, ...] = STAGE_ORDER,
    reindex: bool = False,
    progress: bool = True,
    shards: bool = True,
    **filters,
) -> PrepareSummary:
    """The whole job on one machine or a Dask cluster; see the module docstring. `stages=()` stops after the index.

    Raises ValueError for OUT == RAW, OutputBusy if another run holds OUT, OutputDiskError when OUT cannot be written.
    """
    from meadkit.index import check_out_of_raw

    out = Path(out)
    started = time.perf_counter()
    executor = Executor(n_jobs, backend, scheduler, "bar" if progress else "log")
    note = check_out_of_raw(raw, out)
    if note:
        _say(note)
    with OutputLock(out):
        try:
            summary = _prepare_locked(raw, out, pipeline, executor, stages, reindex, shards, filters)
        except OSError as e:
            err = output_error(e, out)
            if err is None:
                raise
            raise err from None
    summary.seconds = time.perf_counter() - started
    return summary


def _prepare_locked(raw, out: Path, pipeline: Pipeline, executor: Executor, stages: tuple[str, ...], reindex: bool,
                    shards: bool, filters: dict) -> PrepareSummary:
    """`run_prepare` once OUT's lock is held."""
    from meadkit.index import RECORDINGS_PATH

    summary = PrepareSummary()
    remove_orphans(out)
    if "faces" in stages:
        _check_face_backend(pipeline)
    config_hash = pipeline.take_hash() + "-" + "".join(s[0] for s in stages)
    (out / "config.toml").write_text(f"# config hash {config_hash}\n" + pipeline.to_toml())
    recordings = _current_index(raw, out, pipeline, executor, reindex)
    summary.recording_status = Counter(selected_recordings(recordings, filters)["status"])
    summary.manifests = {"recordings": out / RECORDINGS_PATH}
    if not stages:
        return summary
    tasks = make_tasks(recordings, out, stages, **filters)
    done = load_records(out)
    todo = [t for t in tasks if not _still_valid(done.get(t.key.id), config_hash, t.inputs)]
    summary.takes_total, summary.takes_run = len(tasks), len(todo)
    summary.takes_skipped = len(tasks) - len(todo)

    def crashed(task: TakeTask, exc: BaseException) -> dict:
        disk = output_error(exc, out)
        if disk:  # a full or read-only disk: stop, and record nothing for this take
            raise disk from None
        record = {"take_id": task.key.id, "config_hash": config_hash, "inputs": task.inputs, "status": "failed",
                  "error": f"worker crashed: {_describe(exc)}", "n_frames": 0, "sync": [], "times": {}, "stages": list(stages),
                  "clips": [dict(_clip_base(r), status="failed", error="worker crashed") for r in task.views]}
        commit_record(out, record)
        return record

    for record in executor.map(TakeJob(pipeline, config_hash), todo, on_crash=crashed, label="prepare", unit="takes",
                               ok=lambda r: r["status"] == "ok"):
        done[record["take_id"]] = record
        summary.frames += record.get("n_frames", 0) * sum(c["status"] == "ok" for c in record["clips"])
    wanted = {t.key.id for t in tasks}
    records = [r for k, r in done.items() if k in wanted]
    summary.manifests |= write_manifests(out, records, pipeline)
    summary.take_status = Counter(r["status"] for r in records)
    summary.clip_status = Counter(c["status"] for r in records for c in r["clips"])
    if shards and "faces" in stages and "features" in stages:
        summary.manifests["shards"] = _shards(out, pipeline, executor)
    return summary


def _still_valid(record: Optional[dict], config_hash: str, inputs: str) -> bool:
    """A committed take record holds if it was made with the same settings from the same rows and files."""
    return bool(record) and record.get("config_hash") == config_hash and record.get("inputs") == inputs


def _current_index(raw, out: Path, pipeline: Pipeline, executor: Executor, reindex: bool) -> pa.Table:
    """OUT's recordings table, rebuilt first if asked, absent, or not of RAW as it is now (which is said in one line)."""
    from meadkit.index import RECORDINGS_PATH, index_into, raw_fingerprint, stale_index

    fingerprint = raw_fingerprint(raw, [out])  # one walk of RAW, for the check and for the new index's record
    why = stale_index(out, fingerprint)
    if not (reindex or why):
        return pq.read_table(out / RECORDINGS_PATH)
    if why and (out / RECORDINGS_PATH).exists():
        _say(f"reindexing {raw}: {why}")
    if executor.progress == "log":  # --quiet: log lines for the takes and shards; the index stays silent
        executor = replace(executor, progress="off")
    return index_into(raw, out, pipeline.index, executor=executor, fingerprint=fingerprint)


def selected_recordings(recordings: pa.Table, filters: dict) -> pd.DataFrame:
    """The recordings rows a filtered run is about: each given filter matches, or the row has no value in that
    column (a whole archive, the reference audio for --view), so `--actor X --strict` ignores other actors' files."""
    from meadkit.select import select

    return select(recordings.to_pandas(), keep_missing=True, **filters)


def _say(line: str) -> None:
    print(f"meadkit: {line}", file=sys.stderr)


def _check_face_backend(pipeline: Pipeline) -> None:
    """Fail before any work if the face backend cannot load (e.g. FAN weights absent offline)."""
    from meadkit.faces import FaceBackendUnavailable, backend_for

    try:
        backend_for(pipeline.faces)
    except FaceBackendUnavailable as e:
        raise RuntimeError(f"face backend {pipeline.faces.backend!r} unavailable: {e}") from None


def _shards(out: Path, pipeline: Pipeline, executor: Executor) -> str:
    """Default shards of every ok clip in OUT/shards; a corpus with no usable clip gets a note, not a crash (a full
    disk or another shard run raises: the manifests are written, and the old shard set is intact)."""
    from meadkit.shards import NoClipsError, build_shards

    try:
        meta = build_shards(out, out / "shards", pipeline.shards, executor=executor)
    except NoClipsError as e:
        return f"not written: {e}"
    return f"{out / 'shards'} ({meta['n_clips']} clips, {meta['n_frames']} frames, {len(meta['shards'])} shard(s))"
