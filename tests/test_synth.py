"""The synthetic corpus matches its ground truth: layout, streams, rates, offsets, landmarks, defects."""
from __future__ import annotations

import dataclasses
import hashlib
import tarfile
from fractions import Fraction
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from scipy import signal

from meadkit.corpus.names import MEAD_FPS, BadName, parse_path
from meadkit.corpus.sources import Source
from meadkit.corpus.synth import (
    DEFECT_KINDS, SynthConfig, read_truth, synthesize, truth_landmarks, truth_mouth_open,
)
from meadkit.corpus.synth_face import EXPRESSIONS, FaceModel, base_photo, expression_landmarks, inter_ocular, make_identity
from meadkit.media.audio import load_audio
from meadkit.media.probe import MediaError, probe
from meadkit.media.video import iter_frames

SR = 48000


def _files(raw: Path) -> set[str]:
    return {p.relative_to(raw).as_posix() for p in raw.rglob("*") if p.is_file()}


def _lag(ref: np.ndarray, view: np.ndarray) -> int:
    """Samples by which the view track starts after the reference (its offset)."""
    c = signal.correlate(view, ref, mode="full", method="fft")
    return (len(ref) - 1) - int(np.argmax(c))


def _dlib():
    import dlib

    from meadkit.corpus.synth_face import _predictor_path

    return dlib.get_frontal_face_detector(), dlib.shape_predictor(_predictor_path("shape_predictor_68_face_landmarks.dat"))


# --- the clean corpus -------------------------------------------------------------------------

def test_layout_parses_and_matches_truth(tiny_corpus):
    raw, truth = tiny_corpus
    df = read_truth(truth)
    assert df.written.all() and (df.defects.map(len) == 0).all()
    assert _files(raw) == set(df.relpath)
    assert not any(p.name.startswith(".") or "meadkit-tmp" in p.name for p in raw.rglob("*"))
    for r in df.itertuples():
        name = parse_path(r.relpath)
        assert (name.actor, name.emotion, name.level, name.take) == (r.actor, r.emotion, r.level, r.take)
        assert name.view == (r.view if r.kind == "video" else None)
        assert name.key.id == r.take_id
    assert set(df.actor) == {"M003", "W009"} and set(df.emotion) == {"neutral", "happy", "sad"}
    assert set(df[df.emotion == "neutral"].level) == {1}
    assert truth.parent != raw and not str(truth).startswith(str(raw) + "/")


def test_streams_rates_and_frame_counts_match_truth(tiny_corpus):
    raw, truth = tiny_corpus
    df = read_truth(truth)
    for r in df[df.kind == "video"].itertuples():
        src = Source(str(raw / r.relpath))
        p = probe(src)
        assert (p.video_codec, p.width, p.height) == ("h264", r.width, r.height)
        assert Fraction(p.fps_num, p.fps_den) == MEAD_FPS == Fraction(int(r.fps_num), int(r.fps_den))
        frames = list(iter_frames(src))
        assert len(frames) == r.n_frames == p.n_frames
        assert frames[-1].time_s == pytest.approx((r.n_frames - 1) / float(MEAD_FPS), abs=1e-4)
        assert p.has_audio and p.sample_rate == SR and p.audio_codec == "aac"
        assert p.audio_duration_s == pytest.approx(r.duration_s, abs=0.03)
    for r in df[df.kind == "audio"].itertuples():
        p = probe(Source(str(raw / r.relpath)))
        assert (p.video_codec, p.sample_rate, p.channels) == (None, SR, 2)
        assert p.audio_duration_s == pytest.approx(r.n_samples / SR, abs=0.002)
        views = df[(df.take_id == r.take_id) & (df.kind == "video")]
        assert ((views.duration_s - r.duration_s).abs() < 0.5).all()  # no view looks short
        assert (views.offset_s.abs() <= 0.5).all() and views.offset_s.nunique() == len(views)


def test_offsets_are_visible_in_the_audio(tiny_corpus):
    raw, truth = tiny_corpus
    df = read_truth(truth)
    for r in df[df.kind == "audio"].itertuples():
        ref, _ = load_audio(Source(str(raw / r.relpath)))
        for v in df[(df.take_id == r.take_id) & (df.kind == "video")].itertuples():
            track, sr = load_audio(Source(str(raw / v.relpath)))
            assert abs(_lag(ref, track) - v.offset_s * sr) <= 2, (v.take_id, v.view)


def test_dlib_finds_the_true_landmarks_on_front_frames(tiny_corpus):
    raw, truth = tiny_corpus
    df = read_truth(truth)
    detect, predict = _dlib()
    errors = []
    for r in df[(df.kind == "video") & (df.view == "front")].itertuples():
        lm = truth_landmarks(truth, r.take_id, "front")
        assert lm.shape == (r.n_frames, 68, 2)
        for f in iter_frames(Source(str(raw / r.relpath)), start=10, count=1):
            rgb = f.image[:, :, ::-1].copy()
            dets = detect(rgb, 1)
            assert len(dets) == 1, r.take_id
            pts = np.array([[p.x, p.y] for p in predict(rgb, dets[0]).parts()], np.float32)
            errors.append(np.linalg.norm(pts - lm[f.index], axis=1).mean() / inter_ocular(lm[f.index]))
    assert np.median(errors) < 0.08 and max(errors) < 0.15, errors


def test_mouth_cavity_is_drawn_where_the_truth_says(tiny_corpus):
    """Pixels inside the true inner-lip polygon are dark exactly when the true mouth is open."""
    import cv2

    raw, truth = tiny_corpus
    df = read_truth(truth)
    r = df[(df.kind == "video") & (df.view == "front") & (df.emotion == "happy")].iloc[0]
    lm = truth_landmarks(truth, r.take_id, "front")
    gap = lm[:, [65, 66, 67], 1].mean(1) - lm[:, [61, 62, 63], 1].mean(1)
    inside, cheek = [], []
    for f in iter_frames(Source(str(raw / r.relpath))):
        grey = cv2.cvtColor(f.image, cv2.COLOR_BGR2GRAY)
        mask = np.zeros_like(grey)
        cv2.fillPoly(mask, [np.round(lm[f.index, 60:68]).astype(np.int32)], 1)
        cv2.fillPoly(mask, [np.round(lm[f.index, 60:65]).astype(np.int32)], 0)  # skip the teeth band
        inside.append(grey[mask.astype(bool)].mean() if mask.any() else np.nan)
        cheek.append(grey[int(lm[f.index, 29, 1]), int(lm[f.index, 2, 0] + lm[f.index, 29, 0]) // 2])
    inside, cheek = np.array(inside), np.array(cheek, float)
    wide = gap > 4
    assert wide.sum() >= 5
    assert np.nanmean(inside[wide]) < 0.6 * cheek[wide].mean()


def test_audio_predicts_the_lips(tiny_corpus):
    """The view's own audio envelope follows the true mouth opening frame by frame."""
    raw, truth = tiny_corpus
    df = read_truth(truth)
    for r in df[(df.kind == "video") & (df.view == "left_30")].itertuples():
        audio, sr = load_audio(Source(str(raw / r.relpath)))
        opening = truth_mouth_open(truth, r.take_id, "left_30")
        hop = sr / float(MEAD_FPS)
        rms = np.array([np.sqrt(np.mean(audio[int(i * hop): int((i + 1) * hop)] ** 2)) for i in range(r.n_frames)])
        lm = truth_landmarks(truth, r.take_id, "left_30")
        gap = lm[:, 66, 1] - lm[:, 62, 1]
        assert np.corrcoef(rms, opening)[0, 1] > 0.6
        assert np.corrcoef(gap, opening)[0, 1] > 0.9


def test_views_are_distinct_perspectives(tiny_corpus):
    _, truth = tiny_corpus
    df = read_truth(truth)
    tid = df[df.kind == "audio"].take_id.iloc[0]
    lm = {v: truth_landmarks(truth, tid, v) for v in ("front", "left_30", "right_30", "top")}
    width = {v: np.ptp(x[:, :17, 0], axis=1).mean() for v, x in lm.items()}
    height = {v: (x[:, 8, 1] - x[:, 27, 1]).mean() for v, x in lm.items()}
    assert 0.75 < width["left_30"] / width["front"] < 0.95 and 0.75 < width["right_30"] / width["front"] < 0.95
    assert 0.8 < height["top"] / height["front"] < 0.97
    # the far side of a turned face is compressed: left and right views mirror each other
    half = lambda x: (x[:, 27, 0] - x[:, 0, 0]).mean() / (x[:, 16, 0] - x[:, 27, 0]).mean()  # noqa: E731
    assert (half(lm["left_30"]) - 1) * (half(lm["right_30"]) - 1) < 0
    # slow head motion: landmarks move, but by less than 2% of the frame width per frame
    step = np.abs(np.diff(lm["front"][:, 30, 0]))
    assert np.ptp(lm["front"][:, 30, 0]) > 1 and step.max() < 0.02 * 480


# --- expressions (no video needed) -------------------------------------------------------------

def test_expressions_are_graded_and_distinct():
    face = FaceModel(make_identity(np.random.default_rng(0), 0), 1.0)
    iod = face.iod
    shifts = {}
    for emo in EXPRESSIONS:
        mags = []
        for level in (1, 2, 3):
            lm, jaw = expression_landmarks(face.neutral, emo, level)
            mags.append(np.linalg.norm(lm - face.neutral, axis=1).sum() / iod + jaw)
            shifts[emo, level] = face.target(emo, level, 0.0)
        if emo == "neutral":
            assert mags == [0, 0, 0]
        else:
            assert 0 < mags[0] < mags[1] < mags[2], emo
    strong = [e for e in EXPRESSIONS]
    for i, a in enumerate(strong):
        for b in strong[i + 1:]:
            d = np.linalg.norm(shifts[a, 3] - shifts[b, 3], axis=1).max() / iod
            assert d > 0.05, (a, b)


def test_emotions_are_learnable_across_identities_and_speech():
    """A nearest-centroid classifier on landmark shifts, trained on two actors, labels two unseen actors
    correctly at levels 2 and 3 while they speak (mouth opening varies)."""
    rng = np.random.default_rng(1)
    faces = [FaceModel(make_identity(np.random.default_rng(10 + i), i), 1.0) for i in range(4)]

    def feats(face, emo, level):
        x = face.target(emo, level, float(rng.uniform(0, 1))) - face.neutral
        return np.delete(x, np.r_[5:12, 48:68], axis=0).ravel() / face.iod  # drop speech-driven jaw/mouth

    emos = list(EXPRESSIONS)
    centroids = np.array([np.mean([feats(f, e, lv) for f in faces[:2] for lv in (2, 3) for _ in range(5)], 0) for e in emos])
    for f in faces[2:]:
        for e in emos:
            for lv in (2, 3):
                guess = emos[int(np.argmin(np.linalg.norm(centroids - feats(f, e, lv), axis=1)))]
                assert guess == e, (e, lv, guess)


def test_rendered_face_lands_on_its_landmarks():
    """The warp puts the photo's features where the target landmarks say (dlib agrees on the render)."""
    import dlib

    face = FaceModel(make_identity(np.random.default_rng(3), 1), 2.0)
    detect, predict = _dlib()
    for emo in ("neutral", "surprised", "contempt"):
        target = face.target(emo, 3, 0.0)
        bgra = face.render(target)
        rgb = np.ascontiguousarray(bgra[:, :, 2::-1])
        dets = detect(rgb, 0)
        assert len(dets) >= 1
        pts = np.array([[p.x, p.y] for p in predict(rgb, dets[0]).parts()], np.float32)
        err = np.linalg.norm(pts - target, axis=1).mean() / face.iod
        assert err < 0.1, (emo, err)
    photo, lm = base_photo()
    assert photo.shape[2] == 3 and lm.shape == (68, 2) and isinstance(dets[0], dlib.rectangle)


# --- determinism and the CLI --------------------------------------------------------------------

SMALL = SynthConfig(actors=1, emotions=("happy",), levels=(2,), takes=1, seconds=1.0, views=("front", "down"),
                    width=160, height=90, seed=5, voice="procedural")


def _digest(raw: Path) -> dict[str, str]:
    return {p: hashlib.sha256((raw / p).read_bytes()).hexdigest() for p in sorted(_files(raw))}


def test_same_seed_same_corpus_other_seed_differs(tmp_path):
    t1 = synthesize(tmp_path / "a", SMALL)
    t2 = synthesize(tmp_path / "b", SMALL)
    t3 = synthesize(tmp_path / "c", dataclasses.replace(SMALL, seed=6))
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")
    pd.testing.assert_frame_equal(pd.read_parquet(t1), pd.read_parquet(t2))
    assert _digest(tmp_path / "a") != _digest(tmp_path / "c")
    assert not np.allclose(read_truth(t1).offset_s.fillna(0), read_truth(t3).offset_s.fillna(0))


def test_cli_writes_corpus_and_truth(tmp_path):
    from meadkit.commands.synth import command

    out = tmp_path / "corpus"
    res = CliRunner().invoke(command, [str(out), "--actors", "W021", "--emotions", "neutral", "--takes", "1",
                                       "--seconds", "1", "--views", "front", "--resolution", "160x90", "--seed", "2"])
    assert res.exit_code == 0, res.output
    assert "ground truth" in res.output
    truth = tmp_path / "corpus.truth.parquet"
    df = read_truth(truth)
    assert set(df.relpath) == _files(out) == {"W021/audio/neutral/level_1/001.m4a", "W021/video/front/neutral/level_1/001.mp4"}
    bad = CliRunner().invoke(command, [str(out), "--emotions", "joy"])
    assert bad.exit_code != 0 and "choose from" in bad.output
    assert CliRunner().invoke(command, ["--help"]).exit_code == 0


def test_bad_config_is_refused_with_a_reason(tmp_path):
    with pytest.raises(ValueError, match="unknown emotions"):
        synthesize(tmp_path, dataclasses.replace(SMALL, emotions=("joy",)))
    with pytest.raises(ValueError, match="actor ids"):
        synthesize(tmp_path, dataclasses.replace(SMALL, actors=("M003", "bob")))
    with pytest.raises(ValueError, match="defects need"):
        synthesize(tmp_path, dataclasses.replace(SMALL, defects=True))


# --- defects ------------------------------------------------------------------------------------

def _only(df: pd.DataFrame, kind: str) -> pd.DataFrame:
    return df[df.defects.map(lambda d: kind in d)]


def test_each_defect_is_where_the_truth_says(tiny_defects_corpus):
    raw, truth = tiny_defects_corpus
    df = read_truth(truth)
    on_disk = _files(raw)
    assert set(df[df.written].relpath) == on_disk
    kinds = {k for d in df.defects for k in d}
    assert kinds == set(DEFECT_KINDS) - {"corrupt_tar"}

    r = _only(df, "no_audio").squeeze()
    p = probe(Source(str(raw / r.relpath)))
    assert not p.has_audio and not r.has_audio and p.n_frames == r.n_frames

    r = _only(df, "truncated").squeeze()
    with pytest.raises(MediaError):
        probe(Source(str(raw / r.relpath)))

    r = _only(df, "missing_view").squeeze()
    assert not r.written and r.relpath not in on_disk
    assert (df[(df.take_id == r.take_id) & (df.kind == "video")].written.sum()) == len(df.view.dropna().unique()) - 1

    miss = _only(df, "missing_take")
    assert len(miss) == 1 + df.view.dropna().nunique() and miss.take_id.nunique() == 1
    assert not miss.written.any() and not (set(miss.relpath) & on_disk)
    parsed = [parse_path(f) for f in on_disk if not f.endswith(".txt")]
    assert miss.take_id.iloc[0] not in {n.key.id for n in parsed}

    extra = _only(df, "extra_level")
    assert extra.actor.nunique() == 1 and (extra.kind == "video").all()
    for rel in extra[extra.written].relpath:
        assert "/video/1/" in rel and parse_path(rel).view in rel

    r = _only(df, "short_audio").squeeze()
    p = probe(Source(str(raw / r.relpath)))
    views = df[(df.take_id == r.take_id) & (df.kind == "video")]
    assert p.audio_duration_s == pytest.approx(r.duration_s, abs=0.002)
    assert (views.duration_s > p.audio_duration_s + 0.5).all()

    r = _only(df, "stray_file").squeeze()
    assert r.relpath in on_disk
    with pytest.raises(BadName):
        parse_path(r.relpath)

    # everything else is clean, and at least one whole take is
    clean = df[(df.defects.map(len) == 0)]
    assert (clean.kind == "audio").sum() >= 1 and clean.written.all()
    for c in clean[clean.kind == "video"].itertuples():
        assert probe(Source(str(raw / c.relpath))).has_audio


def test_tar_corpus_members_and_corrupt_tar(tiny_tar_corpus):
    raw, truth = tiny_tar_corpus
    df = read_truth(truth)
    assert _files(raw) == set(df.archive.dropna())
    assert {"M003/video.tar", "M003/audio.tar", "W009_video.tar", "W009_audio.tar"} == set(df.archive.dropna())
    bad = _only(df, "corrupt_tar").squeeze()
    for archive, rows in df[df.written].groupby("archive"):
        members = {}
        try:
            with tarfile.open(raw / archive) as tf:
                for m in tf:
                    members[m.name] = m
        except tarfile.ReadError:
            assert archive == bad.archive
        assert set(rows.member) == set(members)
        actor = rows.actor.iloc[0]
        for r in rows.itertuples():
            assert r.member.startswith(("video/", "audio/", f"{actor}/"))
            name = parse_path(r.member, actor_hint=actor) if r.kind != "stray" else None
            if name is not None:
                assert name.key.id == r.take_id
            m = members[r.member]
            src = Source(str(raw / archive), r.member, m.offset_data, m.size)
            if r.kind == "stray" or "truncated" in r.defects:
                continue
            if r.member == bad.member and archive == bad.archive:
                with pytest.raises(MediaError):
                    probe(src)
            else:
                assert probe(src).has_audio == r.has_audio


def test_pack_tars_equals_synthesizing_tars(tmp_path):
    from meadkit.corpus.synth import pack_tars

    cfg = dataclasses.replace(SMALL, emotions=("neutral", "happy", "sad"), views=("front", "down", "top"), defects=True)
    direct = synthesize(tmp_path / "direct", dataclasses.replace(cfg, tar=True))
    packed = pack_tars(tmp_path / "folder", synthesize(tmp_path / "folder", cfg), tmp_path / "packed")
    assert _digest(tmp_path / "direct") == _digest(tmp_path / "packed")
    assert _files(tmp_path / "direct") == {"M003/video.tar", "M003/audio.tar"}
    pd.testing.assert_frame_equal(pd.read_parquet(direct), pd.read_parquet(packed))
    assert "corrupt_tar" in {k for d in read_truth(direct).defects for k in d}


@pytest.mark.slow
def test_parallel_jobs_write_the_same_corpus(tmp_path):
    one = synthesize(tmp_path / "one", SMALL)
    two = synthesize(tmp_path / "two", dataclasses.replace(SMALL, jobs=2, actors=1))
    assert _digest(tmp_path / "one") == _digest(tmp_path / "two")
    pd.testing.assert_frame_equal(pd.read_parquet(one), pd.read_parquet(two))


def test_espeak_voice_is_placed_on_the_clock_and_drives_the_mouth(tmp_path, monkeypatch):
    """With an `espeak-ng` on PATH (here a stand-in writing a 22.05 kHz wav of two 2.5 Hz syllable bursts),
    voice='auto' uses it: resampled to 48 kHz, starting at start_s, mouth opening = its envelope."""
    import os
    import sys

    from meadkit.corpus.synth_voice import speech

    fake = tmp_path / "espeak-ng"
    fake.write_text(
        f"#!{sys.executable}\n"
        "import sys, numpy as np, soundfile as sf\n"
        "sr = 22050; t = np.arange(int(0.8 * sr)) / sr\n"
        "env = np.clip(np.sin(2 * np.pi * 2.5 * t), 0, None)\n"
        "sf.write(sys.argv[sys.argv.index('-w') + 1], (0.3 * env * np.sin(2 * np.pi * 150 * t)).astype('float32'), sr)\n"
    )
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    sp = speech("auto", 3.0, 0.25, 2.5, SR, 120.0, False, "happy", 1.0, np.random.default_rng(0), t0=-0.5)
    assert len(sp.samples) == 3 * SR
    t = -0.5 + np.arange(len(sp.samples)) / SR
    loud = np.abs(sp.samples) > 0.01
    assert t[loud].min() == pytest.approx(0.25, abs=0.01) and t[loud].max() < 0.25 + 0.8
    assert sp.opening_at(np.array([0.35]))[0] > 0.5 > sp.opening_at(np.array([0.0, 0.65, 1.5])).max()
    procedural = speech("procedural", 3.0, 0.25, 2.5, SR, 120.0, False, "happy", 1.0, np.random.default_rng(0), t0=-0.5)
    assert not np.allclose(procedural.samples, sp.samples)
