"""`prepare` end to end on the synthetic corpus: defects become rows, kill -9 + rerun, Dask = local."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from meadkit.atomic import TMP_MARK
from meadkit.cli import main
from meadkit.config import load_pipeline
from meadkit.corpus.synth import read_truth
from meadkit.manifest import read_table
from meadkit.prepare import run_prepare

TIMING = ["sync_s", "features_s", "faces_s", "audio_s", "curation_s", "total_s"]
pytestmark = pytest.mark.slow


def _manifests(out: Path) -> dict[str, pd.DataFrame]:
    m = out / "manifests"
    status = read_table(m / "status.parquet").drop(columns=TIMING)
    return {"clips": read_table(m / "clips.parquet"), "sync": read_table(m / "sync.parquet"), "status": status}


def _assert_same(a: dict, b: dict):
    for name in a:
        pd.testing.assert_frame_equal(a[name], b[name], check_exact=False, rtol=1e-6, obj=name)


@pytest.fixture(scope="module")
def prepared(tiny_corpus, tmp_path_factory):
    raw, truth = tiny_corpus
    out = tmp_path_factory.mktemp("prepared")
    summary = run_prepare(raw, out, load_pipeline(), n_jobs=1, progress=False)
    return raw, truth, out, summary


def test_clean_corpus_all_ok_and_complete(prepared):
    raw, truth_path, out, summary = prepared
    truth = read_truth(truth_path)
    videos = truth[truth["view"].notna() & truth["written"]]
    clips = read_table(out / "manifests" / "clips.parquet")
    assert len(clips) == len(videos)
    assert set(clips["status"]) == {"ok"}, clips[clips.status != "ok"][["take_id", "view", "status", "error"]]
    assert summary.all_ok
    for _, c in clips.iterrows():
        for col in ("crop_video", "faces_npz", "features_npz"):
            assert (out / c[col]).exists()
    # every view of a take is cut to the same window
    assert (clips.groupby("take_id")["n_frames"].nunique() == 1).all()
    assert set(clips["split"]) <= {"train", "val", "test"}
    # [audio] export is off by default: its columns stay null and no audio.wav is written
    assert clips[["audio_wav", "audio_rate", "audio_padded"]].isna().all().all() and not list(out.rglob("audio.wav"))


def test_rerun_skips_finished_takes(prepared):
    raw, _, out, first = prepared
    before = _manifests(out)
    again = run_prepare(raw, out, load_pipeline(), n_jobs=1, progress=False)
    assert again.takes_run == 0 and again.takes_skipped == first.takes_total
    _assert_same(before, _manifests(out))


def test_config_change_redoes_takes(prepared, tmp_path):
    raw, _, out, first = prepared
    other = run_prepare(raw, tmp_path / "o", load_pipeline(overrides=["faces.crop_size=128"]), n_jobs=1, progress=False,
                        actor=[read_table(out / "manifests" / "clips.parquet")["actor"].iloc[0]], emotion=["neutral"])
    assert other.takes_run == other.takes_total > 0
    assert set(read_table(tmp_path / "o" / "manifests" / "clips.parquet")["crop_size"]) == {128}


def test_both_feature_sets_are_written_on_the_synced_grid(prepared, tmp_path):
    """With sets mfcc28 and mel80 a take's features.npz holds both, row for row with the clip's frames; the mfcc28
    rows are those of the default pipeline's."""
    from meadkit.features import load_features
    from meadkit.take import stages_until

    raw, _, out, _ = prepared
    actor = read_table(out / "manifests" / "clips.parquet")["actor"].iloc[0]
    run_prepare(raw, tmp_path / "o", load_pipeline(overrides=["features.sets=mfcc28,mel80"]), n_jobs=1, progress=False,
                stages=stages_until("features"), shards=False, actor=[actor], emotion=["neutral"])
    clips = read_table(tmp_path / "o" / "manifests" / "clips.parquet")
    clips = clips[clips["features_npz"].notna()]
    assert len(clips) and set(clips["feature_sets"]) == {"mfcc28,mel80"} and set(clips["mfcc_recipe"]) == {"mead"}
    default = read_table(out / "manifests" / "clips.parquet").set_index(["take_id", "view"])
    for c in clips.to_dict("records"):
        got = load_features(tmp_path / "o" / c["features_npz"])
        want = load_features(out / default.loc[(c["take_id"], c["view"]), "features_npz"])
        assert got["mel80"].shape == (c["n_frames"], 80) and np.isfinite(got["mel80"]).all()
        np.testing.assert_array_equal(got["mfcc28"], want["mfcc28"])
        assert c["padded_rows"] == got["padded"].sum() and (got["padded"] >= want["padded"]).all()


def test_defects_become_status_rows_and_strict_fails(tiny_defects_corpus, tmp_path):
    raw, truth_path = tiny_defects_corpus
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["prepare", str(raw), "-o", str(out), "--quiet"])
    assert result.exit_code == 0, result.output
    truth = read_truth(truth_path)
    rec = read_table(out / "manifests" / "recordings.parquet")
    clips = read_table(out / "manifests" / "clips.parquet")
    flagged = truth[truth["defects"].map(len) > 0]
    for _, t in flagged.iterrows():
        kinds = set(t["defects"])
        if kinds <= {"extra_level", "missing_take"}:
            continue  # an extra folder level is parsed fine; a wholly missing take leaves no trace but a gap
        same_file = (rec.relpath == t.relpath) | ((rec.take_id == t.take_id) & (rec.view.fillna("") == (t.view if isinstance(t.view, str) else "")))
        rows = pd.concat([rec[same_file][["status", "error"]], clips[(clips.take_id == t.take_id) & (clips.view == t.view)][["status", "error"]]])
        assert (rows["status"] != "ok").any(), f"defect {kinds} at {t.take_id}/{t.view} not reported"
        assert rows.loc[rows.status != "ok", "error"].notna().all()
    clean = truth[(truth["defects"].map(len) == 0) & truth["view"].notna() & truth["written"]]
    bad_takes = set(flagged["take_id"])
    good = clips[~clips.take_id.isin(bad_takes)]
    assert len(good) and set(good["status"]) == {"ok"}
    assert set(clean[~clean.take_id.isin(bad_takes)]["take_id"]) <= set(good["take_id"])
    strict = CliRunner().invoke(main, ["prepare", str(raw), "-o", str(out), "--quiet", "--strict"])
    assert strict.exit_code == 1


def test_kill_minus_nine_then_rerun_equals_uninterrupted(tiny_corpus, prepared, tmp_path):
    raw, _ = tiny_corpus
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "meadkit", "prepare", str(raw), "-o", str(out), "--quiet", "-j", "2", "--until", "curation"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    records = out / "state" / "takes"
    deadline = time.time() + 300
    while time.time() < deadline and len(list(records.glob("*.json"))) < 2:
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    finished_before = len(list(records.glob("*.json")))
    assert finished_before >= 2
    rerun = subprocess.run(cmd, capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr
    assert not list(out.rglob(f"*{TMP_MARK}*"))
    _assert_same(_manifests(prepared[2]), _manifests(out))


def test_dask_cluster_gives_the_same_manifests(tiny_corpus, prepared, tmp_path):
    distributed = pytest.importorskip("distributed")
    raw, _ = tiny_corpus
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, host="127.0.0.1", dashboard_address=None) as cluster:
        run_prepare(raw, tmp_path / "d", load_pipeline(), backend="dask", scheduler=cluster.scheduler_address,
                    progress=False, stages=("sync", "features", "audio", "faces", "curation"))
    _assert_same(_manifests(prepared[2]), _manifests(tmp_path / "d"))


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_a_face_backend_that_cannot_load_stops_the_run_before_the_index(tiny_corpus, tmp_path, monkeypatch, jobs):
    """The check runs where the takes will (at -j 2: in the workers, which keep the backend); the worker's error
    comes back as the run's one line, before any file is probed."""
    raw, _ = tiny_corpus
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    out = tmp_path / "out"
    r = CliRunner().invoke(main, ["prepare", str(raw), "-o", str(out), "--quiet", "-j", jobs, "--set", "faces.backend=fan",
                                  "--set", f"faces.weights_dir={tmp_path / 'no-weights'}"])
    assert r.exit_code == 1 and "face backend 'fan' unavailable" in r.output and "2DFAN" in r.output, r.output
    assert "Traceback" not in r.output
    assert not (out / "manifests" / "recordings.parquet").exists() and not list(out.glob("state/takes/*.json"))


def test_a_worker_warms_up_the_face_backend_only_when_its_takes_track_faces():
    from meadkit.faces.backends import get_backend
    from meadkit.take import TakeJob

    pipeline = load_pipeline(None)
    get_backend.cache_clear()
    TakeJob(pipeline, "h", ("sync", "features")).warm_up()
    assert get_backend.cache_info().currsize == 0  # a run that stops before faces does not load it
    TakeJob(pipeline, "h", ("sync", "features", "faces")).warm_up()
    assert get_backend.cache_info().currsize == 1
    hits = get_backend.cache_info().hits
    get_backend(pipeline.faces)  # the first take finds it loaded
    assert get_backend.cache_info().hits == hits + 1
