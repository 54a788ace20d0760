"""The index stage: every file becomes a row with the right status; cross-file checks; the manifest's schema; the CLI."""
from __future__ import annotations

import subprocess
import tarfile
from pathlib import Path

import imageio_ffmpeg
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from fakes import SR, tone_audio, tone_video
from meadkit.cli import main
from meadkit.corpus.names import MEAD_FPS, audio_relpath, video_relpath
from meadkit.media.sources import Source
from meadkit.index import (
    IndexConfig, bmff_truncation, index_corpus, source_of, summarize, take_counts, take_gaps, take_sources,
)
from meadkit.media.probe import Probe, probe
from meadkit.records import RECORDINGS_SCHEMA



def _tar(path: Path, files: dict[str, Path]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w") as tf:
        for name, src in files.items():
            tf.add(src, arcname=name)
    return path


def _build(root: Path, scratch: Path) -> dict[tuple, str]:
    """A small MEAD download with one of each defect; returns {(take_id, slot): expected non-ok status}."""
    expected = {}
    # M003: a tree, views front+down, happy/1 takes 1,2,3,4,6 (5 is a numbering gap), neutral/1 takes 1,2.
    for emotion, takes in (("happy", (1, 2, 3, 4, 6)), ("neutral", (1, 2))):
        for take in takes:
            tone_audio(root / audio_relpath("M003", emotion, 1, take), 0.15 if (emotion, take) == ("happy", 6) else 1.2)
            for view in ("front", "down"):
                if (emotion, take, view) == ("happy", 2, "down"):
                    continue
                tone_video(root / video_relpath("M003", view, emotion, 1, take), audio=(emotion, take, view) != ("happy", 3, "front"))
    expected[("M003_happy_1_002", "down")] = "missing"
    expected[("M003_happy_1_003", "front")] = "no_audio"
    expected[("M003_happy_1_006", "audio")] = "short_audio"
    cut = root / video_relpath("M003", "down", "happy", 1, 4)
    cut.write_bytes(cut.read_bytes()[: cut.stat().st_size // 2])
    expected[("M003_happy_1_004", "down")] = "corrupt"
    (root / "M003" / "notes.txt").write_text("stray")
    (root / "M003" / "video" / "front" / "happy" / "level_1" / "Thumbs.db").write_bytes(b"\0" * 10)
    expected[("M003/notes.txt", None)] = expected[("M003/video/front/happy/level_1/Thumbs.db", None)] = "unrecognized"
    # The same neutral take's audio again, in a root-level M003_audio.tar: a duplicate.
    _tar(root / "M003_audio.tar", {"audio/neutral/level_1/001.m4a": root / audio_relpath("M003", "neutral", 1, 1)})
    expected[("M003_neutral_1_001", "audio", "dup")] = "duplicate"
    # W021: the extra `video/1/` level (fine).
    for take in (1, 2):
        tone_video(root / "W021" / "video" / "1" / "front" / "neutral" / "level_1" / f"{take:03d}.mp4")
        tone_audio(root / audio_relpath("W021", "neutral", 1, take))
    # M005: per-actor tars read in place.
    v = {f"video/front/sad/level_2/{t:03d}.mp4": tone_video(scratch / f"M005_{t}.mp4") for t in (1, 2)}
    a = {f"audio/sad/level_2/{t:03d}.m4a": tone_audio(scratch / f"M005_{t}.m4a") for t in (1, 2)}
    _tar(root / "M005" / "video.tar", v)
    _tar(root / "M005" / "audio.tar", a)
    # M007: a video.tar that breaks off inside its second member.
    v = {f"video/left_30/angry/level_3/{t:03d}.mp4": tone_video(scratch / f"M007_{t}.mp4") for t in (1, 2, 3)}
    a = {f"audio/angry/level_3/{t:03d}.m4a": tone_audio(scratch / f"M007_{t}.m4a") for t in (1, 2, 3)}
    vt = _tar(root / "M007" / "video.tar", v)
    _tar(root / "M007" / "audio.tar", a)
    with tarfile.open(vt) as tf:
        second = tf.getmembers()[1]
    vt.write_bytes(vt.read_bytes()[: second.offset_data + second.size // 2])
    expected[("M007_angry_3_002", "left_30")] = "corrupt"
    expected[("M007_angry_3_003", "left_30")] = "missing"
    expected[("M007/video.tar", "archive")] = "corrupt"
    return expected


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("raw")
    expected = _build(root, tmp_path_factory.mktemp("scratch"))
    return root, expected


@pytest.fixture(scope="module")
def table(corpus):
    return index_corpus(corpus[0], IndexConfig())


def _non_ok(df: pd.DataFrame) -> dict[tuple, str]:
    out = {}
    for r in df[df["status"] != "ok"].itertuples():
        if r.kind == "archive":
            out[(r.relpath, "archive")] = r.status
        elif r.status == "duplicate":
            out[(r.take_id, r.view if isinstance(r.view, str) else "audio", "dup")] = r.status
        elif isinstance(r.take_id, str):
            out[(r.take_id, r.view if isinstance(r.view, str) else "audio")] = r.status
        else:
            out[(r.relpath, None)] = r.status
    return out


def test_every_defect_has_its_status_and_nothing_else_is_flagged(corpus, table):
    df = table.to_pandas()
    assert _non_ok(df) == corpus[1]
    assert df.loc[df["status"] != "ok", "error"].map(lambda e: isinstance(e, str) and len(e) > 10).all()
    assert df.loc[df["status"] == "ok", "error"].isna().all()
    ok = df[df["status"] == "ok"]
    assert set(ok["actor"]) == {"M003", "W021", "M005", "M007"}
    assert (ok.loc[ok["kind"] == "video", ["fps_num", "fps_den"]].values == [65521, 2184]).all()
    assert (ok.loc[ok["kind"] == "video", "width"] == 64).all() and (ok["sample_rate"] == SR).all()
    assert (ok.loc[ok["kind"] == "video", "n_frames"] == round(1.2 * MEAD_FPS)).all()
    w021 = df[df["actor"] == "W021"]
    assert set(w021["view"].dropna()) == {"front"} and w021["relpath"].str.contains("/video/1/").sum() == 2
    tar_rows = df[df["member"].notna() & (df["status"] == "ok")]
    assert len(tar_rows) == 4 + 1 + 3  # M005 video+audio, M007 video 001, M007 audio
    corrupt = df[(df["take_id"] == "M003_happy_1_004") & (df["view"] == "down")].iloc[0]
    assert "truncated" in corrupt["error"]


def test_duplicates_keep_one_usable_copy_first(table):
    df = table.to_pandas()
    dup = df[df["take_id"].eq("M003_neutral_1_001") & df["kind"].eq("audio")]
    assert list(dup["status"]) == ["ok", "duplicate"]  # the used copy sorts first
    assert dup.iloc[0]["member"] is None or pd.isna(dup.iloc[0]["member"])  # the plain file is preferred over the tar
    assert str(dup.iloc[0]["source_path"]) in dup.iloc[1]["error"]


def test_gaps_and_counts(table):
    assert [g.id for g in take_gaps(table)] == ["M003_happy_1_005"]
    c = take_counts(table).set_index(["actor", "slot"])
    assert c.loc[("M003", "front"), "found"] == 7 and c.loc[("M003", "front"), "usable"] == 7
    assert c.loc[("M003", "down"), "found"] == 6 and c.loc[("M003", "down"), "usable"] == 5
    assert c.loc[("M003", "audio"), "found"] == 7
    assert c.loc[("M007", "left_30"), "found"] == 2 and c.loc[("M007", "left_30"), "usable"] == 1
    assert (c["nominal"] == 670).all()
    text = summarize(table)
    assert "numbering gaps (1): happy/1/005" in text
    assert "M007/video.tar: corrupt" in text and "front 7 (7)" in text and "down 6 (5)" in text


def test_short_audio_tolerance_is_configurable(corpus):
    df = index_corpus(corpus[0], IndexConfig(short_audio_tolerance_s=1.2)).to_pandas()
    assert "short_audio" not in set(df["status"])


@pytest.mark.slow
def test_parallel_run_gives_the_same_table(corpus, table):
    from meadkit.runner import Executor

    assert index_corpus(corpus[0], IndexConfig(), executor=Executor(n_jobs=2, progress="off")).equals(table)


def test_tar_members_probe_like_the_files_they_came_from(corpus, table, tmp_path):
    df = table.to_pandas()
    row = df[(df["take_id"] == "M005_sad_2_001") & (df["view"] == "front")].iloc[0]
    src = source_of(row)
    assert src.in_archive and src.path.endswith("M005/video.tar")
    with src.open() as f:
        (tmp_path / "x.mp4").write_bytes(f.read())
    assert probe(Source(str(tmp_path / "x.mp4"))) == probe(src)
    srcs = take_sources(table)
    assert set(srcs["M005_sad_2_001"]) == {"front", "audio"}
    assert set(srcs["M003_happy_1_004"]) == {"front", "audio"}  # the truncated down view is not usable
    assert set(srcs["M003_happy_1_006"]) == {"front", "down", "audio"}  # short audio is still usable


def test_truncation_is_found_even_with_the_index_at_the_front(tmp_path):
    src = tone_video(tmp_path / "a.mp4", seconds=2.0)
    fast = tmp_path / "fast.mp4"
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-i", str(src), "-c", "copy", "-movflags", "+faststart", str(fast)], check=True)
    assert bmff_truncation(Source(str(fast)), None) is None
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(fast.read_bytes()[: fast.stat().st_size - 2000])
    probe(Source(str(cut)))  # headers alone look fine ...
    assert "truncated: box 'mdat'" in bmff_truncation(Source(str(cut)), None)  # ... but the data is cut


def _hostile(root: Path, scratch: Path) -> None:
    good = tone_video(scratch / "g.mp4")
    with tarfile.open(root / "M009_video.tar", "w") as tf:
        for name in ("../../escape.mp4", "/tmp/meadkit_index_abs.mp4"):
            info = tf.gettarinfo(good, arcname="x")
            info.name = name
            with open(good, "rb") as f:
                tf.addfile(info, f)
        for kind, name in ((tarfile.SYMTYPE, "video/front/happy/level_1/001.mp4"), (tarfile.LNKTYPE, "video/front/happy/level_1/002.mp4")):
            info = tarfile.TarInfo(name)
            info.type, info.linkname = kind, "../../../etc/passwd"
            tf.addfile(info)
    (root / "README.txt").write_text("stray")


def test_hostile_tar_writes_nothing_outside_out_and_is_unsafe(tmp_path):
    raw, out = tmp_path / "a" / "b" / "raw", tmp_path / "a" / "b" / "out"
    raw.mkdir(parents=True)
    _hostile(raw, tmp_path / "scratch")
    before = {p for p in tmp_path.rglob("*")}
    res = CliRunner().invoke(main, ["index", str(raw), "-o", str(out), "--quiet"])
    assert res.exit_code == 0, res.output
    written = {p for p in tmp_path.rglob("*")} - before
    assert written and all(p == out or out in p.parents for p in written)
    assert not Path("/tmp/meadkit_index_abs.mp4").exists()
    df = pd.read_parquet(out / "manifests" / "recordings.parquet")
    assert sorted(df["status"]) == ["unrecognized"] + ["unsafe"] * 4
    assert df["error"].str.len().gt(10).all()
    res = CliRunner().invoke(main, ["index", str(raw), "-o", str(out), "--strict", "--quiet"])
    assert res.exit_code == 1 and "5 rows are not ok" in res.output


def test_manifest_reads_with_pyarrow_and_pandas_and_keeps_its_schema(corpus, tmp_path):
    out = tmp_path / "out"
    res = CliRunner().invoke(main, ["index", str(corpus[0]), "-o", str(out), "-j", "1"])
    assert res.exit_code == 0, res.output
    assert "M003 (M)" in res.output and "wrote" in res.output
    path = out / "manifests" / "recordings.parquet"
    t = pq.read_table(path)
    assert t.schema.equals(RECORDINGS_SCHEMA, check_metadata=False)
    assert set(Probe.__dataclass_fields__) <= set(t.schema.names)  # every probe field is a column
    df = pd.read_parquet(path)
    assert len(df) == t.num_rows and df["status"].eq("ok").sum() > 20
    # A download where every row is an error still gives the same typed columns.
    raw2 = tmp_path / "raw2"
    raw2.mkdir()
    _hostile(raw2, tmp_path / "scratch")
    res = CliRunner().invoke(main, ["index", str(raw2), "-o", str(tmp_path / "out2"), "--quiet"])
    t2 = pq.read_table(tmp_path / "out2" / "manifests" / "recordings.parquet")
    assert t2.schema.equals(RECORDINGS_SCHEMA, check_metadata=False)
    assert not any(str(f.type) == "null" for f in t2.schema)
    (tmp_path / "empty").mkdir()
    empty = index_corpus(tmp_path / "empty")
    assert empty.num_rows == 0 and empty.schema.equals(RECORDINGS_SCHEMA)
    assert "0 files" in summarize(empty)


def test_clean_corpus_in_tree_and_in_tars_is_all_ok(tmp_path):
    tree = tmp_path / "tree"
    for take in (1, 2):
        tone_audio(tree / audio_relpath("W009", "fear", 2, take))
        for view in ("front", "top", "right_60"):
            tone_video(tree / video_relpath("W009", view, "fear", 2, take))
    tars = tmp_path / "tars"
    _tar(tars / "W009_video.tar", {p.relative_to(tree / "W009").as_posix(): p for p in (tree / "W009" / "video").rglob("*.mp4")})
    _tar(tars / "W009_audio.tar", {p.relative_to(tree / "W009").as_posix(): p for p in (tree / "W009" / "audio").rglob("*.m4a")})
    a = index_corpus(tree).to_pandas()
    b = index_corpus(tars).to_pandas()
    for df in (a, b):
        assert len(df) == 8 and df["status"].eq("ok").all()
        assert sorted(df["relpath"]) == sorted(p.relative_to(tree).as_posix() for p in tree.rglob("*.*"))
    probe_cols = ["n_frames", "duration_s", "fps_num", "audio_duration_s", "sample_rate"]
    pd.testing.assert_frame_equal(a[probe_cols], b[probe_cols])


# ---------------------------------------------------------------- the synthetic corpus (issue 2) and its truth

_STATUS_OF_DEFECT = {"missing_view": "missing", "no_audio": "no_audio", "truncated": "corrupt", "corrupt_tar": "corrupt",
                     "short_audio": "short_audio", "stray_file": "unrecognized"}


def _expected_from_truth(truth: pd.DataFrame) -> tuple[dict, set]:
    """{(take_id or relpath, slot): status} of every file the truth says is defective, and the missing takes."""
    expected, gone = {}, set()
    for r in truth.itertuples():
        kinds = [k for k in r.defects if k != "extra_level"]  # the extra `video/1/` level is legal
        if "missing_take" in kinds:
            gone.add((r.actor, r.emotion, int(r.level)))
        elif kinds and r.kind == "stray":
            expected[(r.relpath, None)] = "unrecognized"
        elif kinds:
            (status,) = {_STATUS_OF_DEFECT[k] for k in kinds}
            expected[(r.take_id, r.view if isinstance(r.view, str) else "audio")] = status
    return expected, gone


@pytest.mark.slow
@pytest.mark.parametrize("fixture", ["tiny_defects_corpus", "tiny_tar_corpus"])
def test_synthetic_defects_show_up_and_nothing_else(request, fixture):
    from meadkit.corpus.synth import read_truth
    from meadkit.index import absent_cells

    raw, truth_path = request.getfixturevalue(fixture)
    truth = read_truth(truth_path)
    expected, gone = _expected_from_truth(truth)
    assert set(_STATUS_OF_DEFECT.values()) <= set(expected.values()) and gone  # every defect kind is in the corpus
    table = index_corpus(raw)
    df = table.to_pandas()
    assert {k: v for k, v in _non_ok(df).items() if k[1] != "archive"} == expected
    archives = df[df["kind"] == "archive"]
    if "corrupt_tar" in {d for ds in truth["defects"] for d in ds}:
        (bad_tar,) = truth.loc[truth["defects"].map(lambda d: "corrupt_tar" in d), "archive"]
        assert list(archives["relpath"]) == [bad_tar] and (archives["status"] == "corrupt").all()
    else:
        assert archives.empty
    assert set(absent_cells(table)) == gone and take_gaps(table) == []
    written = truth[truth["written"] & (truth["kind"] != "stray")]
    ok = df[df["status"].isin(["ok", "no_audio", "short_audio"])]
    assert len(ok) + sum(v == "corrupt" for v in expected.values()) == len(written)
    assert set(df.loc[df["relpath"].str.contains("/video/1/"), "status"]) <= {"ok", "corrupt"}


@pytest.mark.slow
def test_clean_synthetic_corpus_is_all_ok_and_matches_the_truth(tiny_corpus):
    from meadkit.corpus.synth import read_truth

    raw, truth_path = tiny_corpus
    truth = read_truth(truth_path).assign(slot=lambda t: t["view"].fillna("audio"))
    df = index_corpus(raw).to_pandas().assign(slot=lambda t: t["view"].fillna("audio"))
    assert (df["status"] == "ok").all() and df["error"].isna().all()
    assert len(df) == len(truth) == truth["written"].sum()
    m = df.merge(truth, on=["take_id", "slot"], suffixes=("", "_true"), validate="one_to_one")
    assert len(m) == len(df)
    v = m[m["kind"] == "video"]
    assert (v["n_frames"] == v["n_frames_true"]).all()
    assert (v[["fps_num", "fps_den", "width", "height"]].values == v[["fps_num_true", "fps_den_true", "width_true", "height_true"]].values).all()
    assert (v["has_audio"] == v["has_audio_true"]).all() and (v["channels"] == v["channels_true"]).all()
    a = m[m["kind"] == "audio"]
    assert (a["sample_rate"] == a["sample_rate_true"]).all() and (a["channels"] == a["channels_true"]).all()
    assert np.allclose(a["audio_duration_s"], a["duration_s_true"], atol=0.03)
    c = take_counts(df)
    want = truth.groupby(["actor", "slot"])["take_id"].nunique()
    assert dict(zip(zip(c["actor"], c["slot"]), c["found"])) == want.to_dict()


def _crash_on_002(entry):
    """A probe whose worker dies on any take 002 (stands in for FFmpeg crashing on a hostile file)."""
    import os

    from meadkit.index import probe_entry

    if entry.relpath.endswith("/002.mp4"):
        os._exit(11)
    return probe_entry(entry)


@pytest.mark.slow
def test_a_file_that_kills_its_worker_becomes_a_corrupt_row(tmp_path):
    from meadkit.corpus.archive import discover
    from meadkit.index import _probe_all
    from meadkit.runner import Executor

    for take in (1, 2):
        tone_video(tmp_path / video_relpath("M003", "front", "happy", 1, take), seconds=0.5)
    rows = _probe_all(discover(tmp_path), Executor(n_jobs=2, progress="off"), probe=_crash_on_002)
    assert [r["take"] for r in rows] == [1, 2]
    assert [r["status"] for r in rows] == ["ok", "corrupt"]
    assert "crashed the worker" in rows[1]["error"] and rows[1]["source_path"].endswith("002.mp4")


def test_trailing_padding_is_not_truncation(tmp_path):
    src = tone_video(tmp_path / "a.mp4", seconds=0.5)
    padded = tmp_path / "padded.mp4"
    padded.write_bytes(src.read_bytes() + b"\0" * 700)
    assert bmff_truncation(Source(str(padded)), None) is None
    padded.write_bytes(src.read_bytes() + b"junk")
    assert bmff_truncation(Source(str(padded)), None) is None
