"""`prepare`: index -> per take (sync, features, audio, faces, curation: `meadkit.take`) -> manifests (with the
corpus-wide curation checks, `meadkit.curation.corpus`) -> shards, resumable.

The unit of work is a take (`meadkit.take.process_take`), which commits a small JSON record last
(`OUT/state/takes/<take_id>.json`). A rerun keeps takes whose record carries the same config
hash and the same inputs (their recordings rows and file mtimes), so a killed run resumes and ends
with the manifests an uninterrupted run would write. OUT's index is rebuilt when RAW is another
folder or its listing changed (see `meadkit.index.stale_index`). A full or read-only disk stops
the run with one line (`OutputDiskError`) and records nothing for the take it hit.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import sys
import time
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Iterable, Optional

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from meadkit.atomic import output_error, remove_orphans
from meadkit.config import Pipeline
from meadkit.corpus.names import TakeKey
from meadkit.lock import OutputLock
from meadkit.manifest import write_table
from meadkit.records import LABEL_NAMES, ClipRow, RecordingRow, StatusRow, SyncRow, TakeRecord
from meadkit.runner import Executor
from meadkit.splits import assign_splits, read_split_file
from meadkit.take import STAGE_NAMES, TakeJob, TakeTask, check_stages, commit_record, crashed_record, load_records


def take_inputs(rows: Iterable[RecordingRow]) -> str:
    """Hash of a take's recordings rows and the mtimes of their files: what decides whether its record still holds."""
    h = hashlib.sha256()
    for r in rows:
        h.update(json.dumps({k: v for k, v in r.to_row().items() if k != "known"}, sort_keys=True, default=str).encode())
        h.update(str(_mtime(r.source_path)).encode())
    return h.hexdigest()[:16]


def _mtime(path: Optional[str]) -> Optional[int]:
    try:
        return os.stat(path).st_mtime_ns if path else None
    except OSError:
        return None


def make_tasks(recordings: pa.Table, out: Path | str, stages: tuple[str, ...] = STAGE_NAMES, **filters) -> list[TakeTask]:
    """One task per take of the recordings table, after structured filters (see `meadkit.select`); ValueError for
    a choice of stages that cannot run (`meadkit.take.check_stages`)."""
    from meadkit.select import select

    check_stages(stages)
    df = recordings.select(["take_id", "kind", "actor", "gender", "emotion", "level", "take", "view"]).to_pandas()
    df = df[df["take_id"].notna()]
    keep = select(df, **{k: v for k, v in filters.items() if k != "view"})
    by_take: dict[str, list[RecordingRow]] = {}
    for r in map(RecordingRow.from_row, recordings.take(keep.index.to_numpy()).to_pylist()):
        if r.status != "duplicate":  # the copy index kept is used; the other stays in recordings.parquet
            by_take.setdefault(r.take_id, []).append(r)
    views_wanted = set(filters.get("view") or ())
    tasks = []
    for take_id in sorted(by_take):
        group = by_take[take_id]
        ref = next((r for r in group if r.kind == "audio"), None)
        views = sorted((r for r in group if r.kind == "video" and r.view and (not views_wanted or r.view in views_wanted)),
                       key=lambda r: r.view)
        if views:
            inputs = take_inputs(([ref] if ref else []) + views)
            tasks.append(TakeTask(TakeKey.from_id(take_id), ref, views, str(out), tuple(stages), inputs))
    return tasks


def write_manifests(out: Path | str, records: Iterable[TakeRecord], pipeline: Pipeline) -> dict[str, Path]:
    """Rebuild sync, clips and status manifests from take records (sorted, so reruns are identical)."""
    records = sorted(records, key=lambda r: r.take_id)
    mdir = Path(out) / "manifests"
    return {
        "sync": write_table(SyncRow.table(s for r in records for s in r.sync), mdir / "sync.parquet"),
        "clips": write_table(ClipRow.table(_clips(out, records, pipeline)), mdir / "clips.parquet"),
        "status": write_table(StatusRow.table(r.status_row() for r in records), mdir / "status.parquet"),
    }


def _clips(out: Path | str, records: list[TakeRecord], pipeline: Pipeline) -> list[ClipRow]:
    """Every record's clips by (take_id, view), with the split of `[splits]`, the take's config hash and the
    corpus-wide curation columns and flags (`meadkit.curation.corpus.curate`)."""
    from meadkit.curation.corpus import curate

    clips = sorted(((c, r.config_hash) for r in records for c in r.clips), key=lambda ch: (ch[0].take_id, ch[0].view))
    labels = pd.DataFrame([c.labels().to_row() for c, _ in clips], columns=list(LABEL_NAMES))
    splits = assign_splits(labels, pipeline.splits)
    rows = [dataclasses.replace(c, split=split, config_hash=h) for (c, h), split in zip(clips, splits)]
    return curate(out, rows, {r.take_id: r.fingerprint for r in records}, pipeline.curation)


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
    stages: tuple[str, ...] = STAGE_NAMES,
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
    with OutputLock(out), executor.kept() as workers:  # one set of workers for the index, the takes and the shards
        try:
            summary = _prepare_locked(raw, out, pipeline, workers, stages, reindex, shards, filters)
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
    if "faces" in stages:  # before the index: a corpus's index is minutes of work
        _check_face_backend(pipeline, executor)
    config_hash = pipeline.take_hash() + "-" + "".join(s[0] for s in stages)
    (out / "config.toml").write_text(f"# config hash {config_hash}\n" + pipeline.to_toml())
    recordings = _current_index(raw, out, pipeline, executor, reindex)
    summary.recording_status = Counter(selected_recordings(recordings, filters)["status"])
    summary.manifests = {"recordings": out / RECORDINGS_PATH}
    if not stages:
        return summary
    tasks = make_tasks(recordings, out, stages, **filters)
    if pipeline.splits.method == "file":  # a split file that misses a take, or names one RAW lacks: before any work
        read_split_file(pipeline.splits.file, [t.key.id for t in tasks], known=recordings.column("take_id").to_pylist())
    done = load_records(out)
    todo = [t for t in tasks if not _still_valid(done.get(t.key.id), config_hash, t.inputs)]
    summary.takes_total, summary.takes_run = len(tasks), len(todo)
    summary.takes_skipped = len(tasks) - len(todo)

    def crashed(task: TakeTask, exc: BaseException) -> TakeRecord:
        disk = output_error(exc, out)
        if disk:  # a full or read-only disk: stop, and record nothing for this take
            raise disk from None
        record = crashed_record(task, config_hash, exc)
        commit_record(out, record)
        return record

    for record in executor.map(TakeJob(pipeline, config_hash, tuple(stages)), todo, on_crash=crashed, label="prepare", unit="takes",
                               ok=lambda r: r.status == "ok"):
        done[record.take_id] = record
        summary.frames += record.n_frames * record.views_ok
    wanted = {t.key.id for t in tasks}
    records = [r for k, r in done.items() if k in wanted]
    summary.manifests |= write_manifests(out, records, pipeline)
    summary.take_status = Counter(r.status for r in records)
    summary.clip_status = Counter(c.status for r in records for c in r.clips)
    if shards and "faces" in stages and "features" in stages:
        summary.manifests["shards"] = _shards(out, pipeline, executor)
    return summary


def _still_valid(record: Optional[TakeRecord], config_hash: str, inputs: str) -> bool:
    """A committed take record holds if it was made with the same settings from the same rows and files."""
    return record is not None and record.config_hash == config_hash and record.inputs == inputs


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


def _check_face_backend(pipeline: Pipeline, executor: Executor) -> None:
    """Fail before any take if the face backend cannot load where the takes run (e.g. FAN weights absent offline):
    in each local worker (which keeps it for its takes: the loads run side by side) or on the Dask cluster."""
    from meadkit.faces import FaceBackendUnavailable

    try:
        for _ in replace(executor, progress="off").map(load_face_backend, [pipeline.faces] * executor.n_jobs):
            pass
    except FaceBackendUnavailable as e:
        raise RuntimeError(f"face backend {pipeline.faces.backend!r} unavailable: {e}") from None


def load_face_backend(config) -> str:
    """Load the face backend `config` names in this process, where it stays for the takes; its name."""
    from meadkit.faces import backend_for

    return backend_for(config).name


def _shards(out: Path, pipeline: Pipeline, executor: Executor) -> str:
    """Default shards of every ok clip in OUT/shards; a corpus with no usable clip gets a note, not a crash (a full
    disk or another shard run raises: the manifests are written, and the old shard set is intact)."""
    from meadkit.shards import NoClipsError, build_shards

    try:
        meta = build_shards(out, out / "shards", pipeline.shards, executor=executor)
    except NoClipsError as e:
        return f"not written: {e}"
    return f"{out / 'shards'} ({meta['n_clips']} clips, {meta['n_frames']} frames, {len(meta['shards'])} shard(s))"
