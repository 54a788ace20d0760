"""Issue 14, index side: nothing lost, nothing silent (sparse tar members, cut mdat, symlinks out of RAW,
odd frame rates, a RAW that changed under OUT, empty files, OUT inside RAW, known MEAD defects)."""
from __future__ import annotations

import builtins
import dataclasses
import io
import os
import struct
import subprocess
import tarfile
from fractions import Fraction
from pathlib import Path

import imageio_ffmpeg
import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from fakes import SR, tone_audio, tone_video
from meadkit.cli import main
from meadkit.corpus.archive import discover
from meadkit.corpus.names import MEAD_FPS, audio_relpath, video_relpath
from meadkit.media.sources import Source
from meadkit.index import IndexConfig, bmff_truncation, index_corpus
from meadkit.media.audio import write_audio
from meadkit.media.video import VideoWriter

FRONT = video_relpath("M003", "front", "happy", 1, 1)


def _table(raw: Path) -> pd.DataFrame:
    return index_corpus(raw, IndexConfig()).to_pandas()


def _row(df: pd.DataFrame, relpath: str) -> dict:
    (row,) = df[df["relpath"] == relpath].to_dict("records")
    return row


# ---------------------------------------------------------------- 6. GNU sparse members


def _gnu_sparse_header(name: str, stored: bytes, realsize: int) -> bytes:
    """A GNU 'S' (old sparse) header: one data region at offset 0 holding `stored`, the rest a hole."""
    info = tarfile.TarInfo(name)
    info.size, info.type = len(stored), tarfile.GNUTYPE_SPARSE
    buf = bytearray(info.tobuf(tarfile.GNU_FORMAT))
    buf[386:398] = b"%011o\0" % 0
    buf[398:410] = b"%011o\0" % len(stored)
    buf[483:495] = b"%011o\0" % realsize
    buf[148:156] = b" " * 8
    buf[148:156] = b"%06o\0 " % sum(buf[:512])
    return bytes(buf[:512])


def _sparse_tar(path: Path, pax: bool) -> None:
    """video.tar: 001.mp4, a sparse 002.mp4 (GNU 'S' or pax GNU.sparse 1.0), then 003.mp4 and 004.mp4."""
    rel = "M003/video/front/happy/level_1/{:03d}.mp4"
    payload = lambda i: bytes((i * 7 + j) % 251 for j in range(1500 + 100 * i))
    stored = b"x" * 700
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT if pax else tarfile.GNU_FORMAT) as tf:
        for i in (1, 2, 3, 4):
            if i == 2 and pax:
                data = b"1\n0\n700\n".ljust(512, b"\0") + stored
                info = tarfile.TarInfo(rel.format(i))
                info.size = len(data)
                info.pax_headers = {"GNU.sparse.major": "1", "GNU.sparse.minor": "0", "GNU.sparse.name": rel.format(i),
                                    "GNU.sparse.realsize": str(1 << 30)}
                tf.addfile(info, io.BytesIO(data))
            elif i == 2:
                tf.fileobj.write(_gnu_sparse_header(rel.format(i), stored, 1 << 30))
                tf.fileobj.write(stored.ljust(1024, b"\0"))
                tf.offset += 512 + 1024
            else:
                info = tarfile.TarInfo(rel.format(i))
                info.size = len(payload(i))
                tf.addfile(info, io.BytesIO(payload(i)))


@pytest.mark.parametrize("pax", [False, True], ids=["gnu_S", "pax_1.0"])
def test_sparse_member_is_unsafe_and_later_members_are_kept(tmp_path, pax):
    (tmp_path / "M003").mkdir()
    tar = tmp_path / "M003" / "video.tar"
    _sparse_tar(tar, pax)
    entries = {e.relpath.rsplit("/", 1)[-1]: e for e in discover(tmp_path)}
    assert set(entries) == {"001.mp4", "002.mp4", "003.mp4", "004.mp4"}  # nothing after the sparse member is lost
    assert all(entries[n].status == "" for n in ("001.mp4", "003.mp4", "004.mp4"))
    sparse = entries["002.mp4"]
    assert sparse.status == "unsafe" and sparse.source is None
    assert "GNU sparse member" in sparse.error and str(tar) in sparse.error
    with entries["004.mp4"].source.open() as f:
        assert f.read() == bytes((4 * 7 + j) % 251 for j in range(1900))


# ---------------------------------------------------------------- 7. mdat of size 0 (to end of file), cut


def _faststart(src: Path, dst: Path) -> Path:
    dst.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-i", str(src), "-c", "copy", "-movflags", "+faststart",
                    str(dst)], check=True)
    return dst


def _zero_size_mdat(path: Path, keep: float) -> None:
    """Set the `mdat` box's size to 0 ('runs to the end of the file') and cut the file to `keep` of its media data."""
    data = bytearray(path.read_bytes())
    at = data.index(b"mdat") - 4
    data[at : at + 4] = struct.pack(">I", 0)
    path.write_bytes(bytes(data[: at + 8 + int((len(data) - at - 8) * keep)]))


def test_zero_size_mdat_that_cannot_hold_its_frames_is_corrupt_and_audio_is_not_blamed(tmp_path):
    raw = tmp_path / "raw"
    tone_audio(raw / audio_relpath("M003", "happy", 1, 1), 2.0)
    tone_video(raw / video_relpath("M003", "down", "happy", 1, 1), 2.0)
    front = _faststart(tone_video(tmp_path / "a.mp4", 10.0), raw / FRONT)  # its header claims 10 s: 5x the take
    assert bmff_truncation(Source(str(front)), None) is None
    _zero_size_mdat(front, keep=1.0)
    assert bmff_truncation(Source(str(front)), None) is None  # size 0 on the last box is legal
    _zero_size_mdat(front, keep=0.3)
    df = _table(raw)
    row = _row(df, FRONT)
    assert row["status"] == "corrupt" and "cannot hold the frames" in row["error"] and row["n_frames"] == 300
    assert set(df["status"]) == {"ok", "corrupt"}  # the good reference audio is not `short_audio`


# ---------------------------------------------------------------- 8. symbolic links in an unpacked tree


def test_links_out_of_raw_are_unsafe_rows_and_never_opened(tmp_path, monkeypatch):
    raw, outside = tmp_path / "raw", tmp_path / "outside"
    good = tone_video(raw / FRONT)
    secret = outside / "etc" / "passwd"
    secret.parent.mkdir(parents=True)
    secret.write_text("root:x:0:0")
    (outside / "etc" / "001.mp4").write_bytes(good.read_bytes())
    (raw / "M003" / "etc").symlink_to(outside / "etc")  # a folder link out of RAW
    (raw / "M003" / "video" / "front" / "happy" / "level_1" / "002.mp4").symlink_to(outside / "etc" / "001.mp4")
    (raw / "M003" / "video" / "front" / "happy" / "level_1" / "003.mp4").symlink_to(good)  # stays inside RAW: followed
    opened = []
    real_open = builtins.open
    monkeypatch.setattr(builtins, "open", lambda f, *a, **k: opened.append(str(f)) or real_open(f, *a, **k))
    res = CliRunner().invoke(main, ["index", str(raw), "-o", str(tmp_path / "out"), "--quiet"])
    assert res.exit_code == 0, res.output
    assert not [p for p in opened if str(outside) in os.path.realpath(p)]
    df = pd.read_parquet(tmp_path / "out" / "manifests" / "recordings.parquet")
    assert len(df) == 4 and not df["relpath"].str.contains("passwd").any()
    links = df[df["status"] == "unsafe"].set_index("relpath")["error"]
    assert set(links.index) == {"M003/etc", FRONT.replace("001", "002")}
    assert all("symbolic link" in e and "outside RAW" in e for e in links)
    assert _row(df, FRONT.replace("001", "003"))["status"] in ("ok", "no_audio")


# ---------------------------------------------------------------- 5. frame rates


def test_a_rate_far_from_mead_is_flagged_and_sync_keeps_the_mead_rate_view(tmp_path):
    from meadkit.media.probe import Probe
    from meadkit.sync import sync_take

    raw = tmp_path / "raw"
    odd = tone_video(raw / video_relpath("M003", "down", "happy", 1, 1), fps=Fraction(25))
    mead = tone_video(raw / FRONT, fps=Fraction(1000000, 33333))
    ref = tone_audio(raw / audio_relpath("M003", "happy", 1, 1))
    df = _table(raw)
    row = _row(df, video_relpath("M003", "down", "happy", 1, 1))
    assert row["status"] == "odd_rate" and "25/1 is far from MEAD's 65521/2184 and 1000000/33333" in row["error"]
    assert _row(df, FRONT)["status"] == "ok"
    probes = {r["relpath"]: Probe.from_row(r) for r in index_corpus(raw).to_pylist()}
    for order in (("down", "front"), ("front", "down")):  # a 1:1 tie keeps the MEAD-rate view whichever comes first
        paths = {"down": odd, "front": mead}
        views = {v: (Source(str(paths[v])), probes[str(paths[v].relative_to(raw))]) for v in order}
        ts = sync_take(Source(str(ref)), probes[str(ref.relative_to(raw))], views)
        assert ts.fps == Fraction(1000000, 33333)
        assert ts.views["down"].status == "unusable" and "differs from the take's" in ts.views["down"].error
        assert ts.views["front"].status == "ok"


# ---------------------------------------------------------------- 18. empty files, OUT vs RAW, known release defects


def test_empty_file_says_so_and_known_release_defects_are_marked(tmp_path):
    raw = tmp_path / "raw"
    empty = raw / video_relpath("M003", "down", "happy", 1, 1)
    empty.parent.mkdir(parents=True)
    empty.write_bytes(b"")
    tone_video(raw / FRONT)
    quiet = video_relpath("M041", "front", "sad", 2, 21)
    tone_video(raw / quiet, audio=False)
    df = _table(raw)
    assert (_row(df, str(empty.relative_to(raw)))["status"], _row(df, str(empty.relative_to(raw)))["error"]) == \
        ("corrupt", "empty file (0 bytes)")
    row = _row(df, quiet)
    assert row["status"] == "no_audio" and row["known"].startswith("the released mp4 has no audio stream (source: ")
    assert df[df["relpath"] != quiet]["known"].isna().all()


def test_out_equal_to_raw_is_refused_and_out_inside_raw_is_skipped_with_a_note(tmp_path):
    raw = tmp_path / "raw"
    tone_video(raw / FRONT)
    for command in ("index", "prepare"):
        res = CliRunner().invoke(main, [command, str(raw), "-o", str(raw), "--quiet"])
        assert res.exit_code == 1 and "Traceback" not in res.output
        assert res.output.strip().splitlines() == [f"Error: the output folder is the raw folder ({os.path.realpath(raw)}): "
                                                   "give -o a folder outside RAW"]
    res = CliRunner().invoke(main, ["index", str(raw), "-o", str(raw / "out")])
    assert res.exit_code == 0 and "lies inside RAW; it is skipped" in res.output
    assert pd.read_parquet(raw / "out" / "manifests" / "recordings.parquet")["relpath"].tolist() == [FRONT]


def test_an_unwritable_out_is_one_line(tmp_path, monkeypatch):
    import errno

    import meadkit.index

    raw = tmp_path / "raw"
    tone_video(raw / FRONT)

    def read_only(table, out):
        raise OSError(errno.EROFS, "Read-only file system", str(out / "manifests" / "recordings.parquet"))

    monkeypatch.setattr(meadkit.index, "write_recordings", read_only)
    for command in ("index", "prepare"):
        res = CliRunner().invoke(main, [command, str(raw), "-o", str(tmp_path / "out"), "--quiet", "--until", "index"][
            : 5 if command == "index" else 7])
        assert res.exit_code == 2 and "Traceback" not in res.output, res.output
        assert res.output.strip().splitlines() == [f"meadkit: error: cannot write {tmp_path / 'out'}/manifests/"
                                                   "recordings.parquet: Read-only file system"]


# ---------------------------------------------------------------- prepare: a small corpus synced only (fast)


def _take(raw: Path, actor: str, take: int, views=("front", "down"), seconds: float = 1.0) -> None:
    """One take of `actor` (happy, level 1): reference audio and `views`, all with the same noise as sound."""
    noise = (0.1 * np.random.default_rng(take).standard_normal(int(seconds * SR))).astype(np.float32)
    ref = raw / audio_relpath(actor, "happy", 1, take)
    ref.parent.mkdir(parents=True, exist_ok=True)
    write_audio(str(ref), noise, SR)
    for view in views:
        path = raw / video_relpath(actor, view, "happy", 1, take)
        path.parent.mkdir(parents=True, exist_ok=True)
        with VideoWriter(str(path), MEAD_FPS, 64, 48, audio=(noise, SR)) as w:
            for i in range(int(seconds * float(MEAD_FPS))):
                w.write(np.full((48, 64, 3), (i * 9) % 256, np.uint8))


def _prepare(raw: Path, out: Path, **kw):
    from meadkit.config import load_pipeline
    from meadkit.prepare import run_prepare

    return run_prepare(raw, out, load_pipeline(), stages=("sync",), progress=False, shards=False, **kw)


def _notes(capsys) -> list[str]:
    """meadkit's own stderr lines (not the progress log)."""
    return [line for line in capsys.readouterr().err.splitlines() if line.startswith("meadkit:")]


def test_prepare_on_another_or_changed_raw_reindexes_and_loses_nothing(tmp_path, capsys):
    raw1, raw2, out = tmp_path / "raw1", tmp_path / "raw2", tmp_path / "out"
    _take(raw1, "M003", 1)
    for take in (1, 2, 3):
        _take(raw2, "M003", take)
    assert _prepare(raw1, out).takes_total == 1
    assert "reindexing" not in capsys.readouterr().err  # a first index is not news
    s = _prepare(raw2, out)
    assert _notes(capsys) == [
        f"meadkit: reindexing {raw2}: {out} was indexed from {os.path.realpath(raw1)}, not {os.path.realpath(raw2)}"]
    assert (s.takes_total, s.takes_run) == (3, 3)
    clips = pd.read_parquet(out / "manifests" / "clips.parquet")
    assert len(clips) == 6 and clips["source"].str.startswith("M003/video/").all()
    s = _prepare(raw2, out)  # nothing changed: nothing redone, no reindex
    assert (s.takes_run, s.takes_skipped, _notes(capsys)) == (0, 3, [])
    _take(raw2, "M003", 4)
    s = _prepare(raw2, out)
    assert "changed since it was indexed (9 files then, 12 now)" in _notes(capsys)[0] and (s.takes_total, s.takes_run) == (4, 1)  # the old takes stay valid
    assert len(pd.read_parquet(out / "manifests" / "clips.parquet")) == 8


def test_index_takes_the_output_lock(tmp_path):
    from meadkit.lock import OutputLock

    raw, out = tmp_path / "raw", tmp_path / "out"
    tone_video(raw / FRONT)
    assert CliRunner().invoke(main, ["index", str(raw), "-o", str(out), "--quiet"]).exit_code == 0
    before = (out / "manifests" / "recordings.parquet").stat().st_mtime_ns
    with OutputLock(out):  # a prepare running on OUT
        res = CliRunner().invoke(main, ["index", str(raw), "-o", str(out), "--quiet"])
    assert res.exit_code != 0 and "Traceback" not in res.output and "another meadkit process is writing" in res.output
    assert (out / "manifests" / "recordings.parquet").stat().st_mtime_ns == before


def test_until_index_touches_no_take_and_strict_sees_only_selected_rows(tmp_path, monkeypatch):
    import meadkit.take

    raw, out = tmp_path / "raw", tmp_path / "out"
    _take(raw, "M003", 1)
    bad = raw / video_relpath("W009", "front", "happy", 1, 1)
    bad.parent.mkdir(parents=True)
    bad.write_bytes(b"\0" * 100)
    monkeypatch.setattr(meadkit.take, "process_take", lambda *a: pytest.fail("--until index ran a take"))
    run = lambda *args: CliRunner().invoke(main, ["prepare", str(raw), "-o", str(out), "--quiet", "--until", "index", *args])
    res = run("--actor", "M003", "--strict")
    assert res.exit_code == 0, res.output
    assert not (out / "state" / "takes").exists() and (out / "manifests" / "recordings.parquet").exists()
    assert "recording status: ok 3\n" in res.output
    res = run("--strict")
    assert res.exit_code == 1 and "corrupt 1" in res.output


def _task(tmp_path: Path, stages=("sync",)):
    from meadkit.prepare import make_tasks

    raw = tmp_path / "raw"
    _take(raw, "M003", 1)
    (task,) = make_tasks(index_corpus(raw), tmp_path / "out", stages)
    return task


def test_no_common_window_is_the_reason_and_a_view_without_window_skips_faces(tmp_path, monkeypatch):
    import meadkit.take
    from meadkit.config import load_pipeline
    from meadkit.sync import TakeSync, ViewSync
    from meadkit.take import process_take

    none = TakeSync(fps=MEAD_FPS, error="the reference audio and the views share no common time span", views={
        "front": ViewSync(offset_s=5.0, confidence=0.9, method="audio", status="ok", fps=MEAD_FPS, video_frames=30),
        "down": ViewSync(offset_s=5.0, confidence=0.9, method="audio", status="ok", fps=MEAD_FPS, video_frames=30)})
    monkeypatch.setattr(meadkit.take, "_reference_audio", lambda ref: (np.zeros(SR, np.float32), SR))
    monkeypatch.setattr(meadkit.take, "_sync", lambda *a: none)
    task = _task(tmp_path, ("sync", "faces"))
    record = dataclasses.asdict(process_take(task, load_pipeline(), "h"))
    why = "no common window: the reference audio and the views share no common time span"
    assert (record["status"], record["error"]) == ("failed", why)
    assert [(c["status"], c["error"]) for c in record["clips"]] == [("failed", why)] * 2
    assert len(record["sync"]) == 2  # the per-view sync results are kept
    window = TakeSync(t0_s=0.0, n_frames=20, fps=MEAD_FPS, status="ok", views={
        "front": ViewSync(offset_s=0.0, confidence=0.9, method="audio", status="ok", fps=MEAD_FPS, video_frames=30,
                          start_frame=0, n_frames=20),
        "down": ViewSync(offset_s=0.9, confidence=0.1, method="audio", status="low_confidence", fps=MEAD_FPS, video_frames=30,
                         error="confidence 0.10 < 0.4; does not cover the window of the other views")})
    faced = []
    monkeypatch.setattr(meadkit.take, "_sync", lambda *a: window)
    monkeypatch.setattr(meadkit.take, "_faces", lambda src, vs, grid, p, cdir, view, out, least: faced.append(view) or {"face_status": "ok", "face_error": None, "head_yaw": 0.0})
    record = dataclasses.asdict(process_take(task, load_pipeline(), "h"))
    assert faced == ["front"]
    clips = {c["view"]: c for c in record["clips"]}
    assert clips["down"]["status"] == "low_confidence" and "does not cover the window" in clips["down"]["error"]
    assert clips["front"]["status"] == "ok" and record["status"] == "partial"


def test_a_full_disk_stops_the_run_with_one_line_and_the_take_is_redone(tmp_path, monkeypatch):
    import errno

    import meadkit.take

    raw, out = tmp_path / "raw", tmp_path / "out"
    for take in (1, 2, 3):
        _take(raw, "M003", take)
    real_sync, synced = meadkit.take._sync, []

    def full_on_take_2(task, *args):
        synced.append(task.key.take)
        if task.key.take == 2:
            raise OSError(errno.ENOSPC, "No space left on device", str(out / "clips" / "M003" / task.key.id / "front.mp4"))
        return real_sync(task, *args)

    monkeypatch.setattr(meadkit.take, "_sync", full_on_take_2)
    res = CliRunner().invoke(main, ["prepare", str(raw), "-o", str(out), "--quiet", "--until", "sync"])
    assert res.exit_code == 2 and "Traceback" not in res.output and synced == [1, 2]  # stopped: take 3 never started
    (line,) = [x for x in res.output.splitlines() if x.startswith("meadkit:")]
    assert line.startswith(f"meadkit: error: no space left on device while writing {out}/clips/M003/M003_happy_1_002/front.mp4: ")
    assert sorted(p.stem for p in (out / "state" / "takes").glob("*.json")) == ["M003_happy_1_001"]
    monkeypatch.setattr(meadkit.take, "_sync", real_sync)
    s = _prepare(raw, out)
    assert (s.takes_run, s.takes_skipped, s.take_status["ok"]) == (2, 1, 3)
