"""Curation: each measure on known signals, the flags' thresholds, quality selection, and `prepare` recovering
the synthetic corpus's curation defects (a lagging picture, a blurred view, a copied take, swapped views)."""
from __future__ import annotations

import dataclasses
from fractions import Fraction

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from meadkit.cli import main
from meadkit.config import load_pipeline
from meadkit.corpus.synth import CURATION_LAG_FRAMES, SynthConfig, read_truth, synthesize
from meadkit.curation import FLAGS, CurationConfig
from meadkit.curation.clip import measure_clip, take_envelope
from meadkit.curation.corpus import clip_flags, duplicates, level_order_share
from meadkit.curation.lipsync import av_offset, is_silent
from meadkit.prepare import run_prepare
from meadkit.records import ClipRow
from meadkit.select import SelectError, parse_bound, select

#: One actor, neutral + happy and sad at 3 levels, 4 views, with the curation defects.
CURATION = SynthConfig(actors=1, emotions=("neutral", "happy", "sad"), levels=(1, 2, 3), takes=1, seconds=2.0,
                       views=("front", "left_30", "right_30", "top"), width=480, height=270, seed=7,
                       voice="procedural", curation_defects=True)


def test_av_offset_finds_a_known_lag_with_its_sign():
    rng = np.random.default_rng(0)
    envelope = np.convolve(rng.random(120), np.ones(4) / 4, "same")
    late = np.r_[np.full(3, envelope[0]), envelope[:-3]]  # the mouth moves 3 frames after the sound
    lag, confidence = av_offset(late, envelope)
    assert abs(lag - 3) < 0.2 and confidence > 0.95


def test_silence_and_missing_landmarks_give_nan_and_a_reason():
    envelope, silent = take_envelope((np.zeros(48000, np.float32), 48000), 0.0, 30, Fraction(30))
    assert silent and is_silent(envelope)
    row = measure_clip(None, None, envelope, silent, (480, 270))
    assert row["quality_flags"] == ["no_landmarks", "silent"]
    assert all(np.isnan(row[k]) for k in ("av_offset_frames", "yaw_deg", "sharpness", "exposure"))
    assert row["valid_ratio"] == 0.0


def test_thresholds_make_the_flags():
    cfg = CurationConfig()
    clip = ClipRow(view="left_30", av_offset_frames=2.5, av_confidence=0.9, yaw_deg=-25.0, sharpness=3.0,
                   quality_flags=[])
    assert clip_flags(clip, cfg, {"duplicate": True}) == ["av_offset", "pose_mismatch", "blurry", "duplicate"]
    fine = dataclasses.replace(clip, av_offset_frames=0.4, yaw_deg=24.0, sharpness=40.0)
    assert clip_flags(fine, cfg, {}) == [] and clip_flags(ClipRow(view="front"), cfg, {}) is None


def test_copied_audio_is_a_duplicate_of_the_earlier_take():
    rng = np.random.default_rng(1)
    a, b = list(rng.normal(size=640)), list(rng.normal(size=640))
    found = duplicates({"M003_sad_1_002": a, "M003_sad_1_001": a, "M003_happy_1_001": b, "W009_sad_1_001": a}, 0.97)
    assert found == {"M003_sad_1_002": "M003_sad_1_001"}


def test_select_by_quality_is_structured():
    df = pd.DataFrame({"view": ["front"] * 3, "sharpness": [10.0, 60.0, np.nan],
                       "av_offset_frames": [0.2, -2.0, 0.0], "quality_flags": [[], ["duplicate"], None]})
    assert list(select(df, minimum={"sharpness": 50}).index) == [1]
    assert list(select(df, maximum=dict([parse_bound("abs_av_offset_frames=1")])).index) == [0, 2]
    assert list(select(df, no_flag=["duplicate"]).index) == [0, 2]
    with pytest.raises(SelectError, match="columns: av_offset_frames"):
        parse_bound("__import__('os')=1")
    with pytest.raises(SelectError, match="COLUMN=NUMBER"):
        parse_bound("sharpness=lots")
    with pytest.raises(SelectError, match="flags: " + ", ".join(FLAGS)):
        select(df, no_flag=["ugly"])


@pytest.fixture(scope="module")
def curated(tmp_path_factory):
    """(OUT, clips, truth, summary) of `prepare` on the curation corpus."""
    root = tmp_path_factory.mktemp("curation")
    truth = read_truth(synthesize(root / "raw", CURATION))
    summary = run_prepare(root / "raw", root / "out", load_pipeline(), progress=False, shards=False)
    clips = pd.read_parquet(root / "out" / "manifests" / "clips.parquet")
    return root / "out", clips, truth, summary


def _defects(clips: pd.DataFrame, truth: pd.DataFrame) -> pd.Series:
    """The truth's defects of each clip (by take and the view whose file it is)."""
    video = truth[truth.kind == "video"].assign(path_view=lambda t: t.relpath.str.split("/").str[2])
    by = {(r.take_id, r.path_view): r.defects for r in video.itertuples()}
    return pd.Series([by.get((r.take_id, r.view), []) for r in clips.itertuples()], index=clips.index)


@pytest.mark.slow
def test_prepare_recovers_each_curation_defect(curated):
    out, clips, truth, _ = curated
    defects = _defects(clips, truth)
    flags = clips.quality_flags.map(set)
    lagged = clips[defects.map(lambda d: "av_lag" in d)]
    assert len(lagged) == 1 and abs(lagged.av_offset_frames.iloc[0] - CURATION_LAG_FRAMES) <= 1
    assert "av_offset" in flags[lagged.index[0]]
    assert all("blurry" in flags[i] for i in clips.index[defects.map(lambda d: "blurred" in d)])
    swapped = clips.index[defects.map(lambda d: "swapped_view" in d)]
    assert len(swapped) == 2 and all("pose_mismatch" in flags[i] for i in swapped)
    copies = clips[defects.map(lambda d: "duplicate" in d)]
    assert len(copies) == 4 and copies.duplicate_of.notna().all() and all("duplicate" in flags[i] for i in copies.index)
    clean = flags[defects.map(len) == 0]
    false = {"av_offset", "pose_mismatch", "blurry", "duplicate", "no_landmarks", "silent", "level_order",
             "weak_expression"}  # faces of ~30 px between the eyes are too small to judge expressions on
    assert not any(f & false for f in clean), clean[clean.map(lambda f: bool(f & false))]


@pytest.mark.slow
def test_curation_columns_are_measured_and_timed(curated):
    out, clips, _, _ = curated
    assert clips.valid_ratio.min() > 0.9 and clips.sharpness.notna().all() and clips.expression_strength.notna().all()
    status = pd.read_parquet(out / "manifests" / "status.parquet")
    assert status.curation_s.notna().all() and status.curation_s.sum() < 0.1 * status.total_s.sum()


#: One actor's front view at 960x540: at 480x270 (inter-ocular ~30 px) the levels' landmark changes are about a
#: pixel, under tracking noise (the curation corpus orders 2 of its 4 pairs); at 960x540 they are tracked.
LEVELS = SynthConfig(actors=1, emotions=("neutral", "happy", "sad", "angry"), levels=(1, 2, 3), takes=1, seconds=2.0,
                     views=("front",), width=960, height=540, seed=3, voice="procedural")


@pytest.mark.slow
def test_expression_strength_orders_the_levels(tmp_path):
    synthesize(tmp_path / "raw", LEVELS)
    run_prepare(tmp_path / "raw", tmp_path / "out", load_pipeline(), progress=False, shards=False)
    clips = pd.read_parquet(tmp_path / "out" / "manifests" / "clips.parquet")
    assert level_order_share([ClipRow.from_row(r) for r in clips.to_dict("records")]) >= 0.9
    assert not clips.quality_flags.map(lambda f: "level_order" in f).any()


@pytest.mark.slow
def test_select_command_bounds_and_refuses(curated):
    out, clips, _, _ = curated
    res = CliRunner().invoke(main, ["select", str(out), "--status", "", "--min", "sharpness=15", "--no-flag", "duplicate"])
    assert res.exit_code == 0, res.output
    kept = ((clips.sharpness >= 15) & ~clips.quality_flags.map(lambda f: "duplicate" in f)).sum()
    assert res.output.startswith(f"{kept} clips")
    bad = CliRunner().invoke(main, ["select", str(out), "--max", "offset_s=1"])
    assert bad.exit_code != 0 and "cannot bound 'offset_s'; columns: av_offset_frames" in bad.output


@pytest.mark.slow
def test_the_report_has_a_curation_section(curated):
    from meadkit.report import render_report

    html = render_report(curated[0])
    section = html[html.index('<section id="curation">'):]
    section = section[: section.index("</section>")]
    assert "Worst clips" in section and "av_offset" in section and "could not be built" not in section
