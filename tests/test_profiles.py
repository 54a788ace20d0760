"""Named profiles (`--profile NAME`): shipped pipeline files, overridable with --set, refused when unknown."""
from __future__ import annotations

from fractions import Fraction

import pytest
from click.testing import CliRunner

from meadkit.cli import main
from meadkit.config import PROFILES, ConfigError, load_pipeline


def test_profiles_give_the_recipes_they_name():
    paper, th25, emote = (load_pipeline(profile=p) for p in ("mead-paper", "talking-head-25", "emote-style"))
    assert paper == load_pipeline()
    assert th25.timebase.rate(Fraction(65521, 2184)) == 25 and th25.faces.crop == "tube" and th25.faces.crop_size == 256
    assert th25.faces.keep_mesh and th25.faces.backend == "hybrid"  # 68 points and the 478-point mesh
    assert th25.features.sets == ("mfcc28", "mel80") and th25.features.context == 25
    assert th25.features.widths == {"mfcc28": 28, "mel80": 80}
    assert emote.timebase.fps == "25" and emote.faces.crop == "box" and emote.faces.crop_size == 384
    assert (emote.faces.scale, emote.faces.shift_y) == (1.35, -0.1)
    assert all(path.is_file() for path in PROFILES.values())


def test_set_overrides_a_profile_and_a_profile_excludes_a_pipeline_file(tmp_path):
    assert load_pipeline(overrides=["faces.crop_size=224"], profile="emote-style").faces.crop_size == 224
    with pytest.raises(ConfigError, match="not both"):
        load_pipeline(tmp_path / "x.toml", profile="emote-style")


def test_an_unknown_profile_is_one_line_before_any_work(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    r = CliRunner().invoke(main, ["prepare", str(raw), "-o", str(tmp_path / "out"), "--profile", "fomm"])
    assert r.exit_code == 2 and "Traceback" not in r.output
    assert "unknown profile 'fomm'; profiles: mead-paper, talking-head-25, emote-style" in r.output
    assert not (tmp_path / "out").exists()


def test_the_talking_head_profiles_export_16k_mono_audio():
    for name in ("talking-head-25", "emote-style"):
        audio = load_pipeline(profile=name).audio
        assert (audio.export, audio.rate, audio.channels, audio.format) == (True, 16000, 1, "wav")
    assert not load_pipeline(profile="mead-paper").audio.export


@pytest.mark.slow
def test_talking_head_25_prepares_and_shards_its_whole_recipe(tiny_corpus, tmp_path):
    """One take through the profile: 25 fps clips, the 16 kHz wav, mfcc28 + mel80, tube crops, shards whose samples
    carry both sets as 25-row windows."""
    import numpy as np
    import soundfile as sf

    from meadkit.data import ShardDataset
    from meadkit.manifest import read_table
    from meadkit.prepare import run_prepare

    raw, _ = tiny_corpus
    run_prepare(raw, tmp_path, load_pipeline(profile="talking-head-25"), n_jobs=1, progress=False, emotion="happy",
                actor="M003")
    clips = read_table(tmp_path / "manifests" / "clips.parquet")
    ok = clips[clips.status == "ok"]
    assert len(ok) == 4 and (ok.fps_num == 25).all() and (ok.fps_den == 1).all()
    c = ok.iloc[0]
    info = sf.info(str(tmp_path / c.audio_wav))
    assert (info.samplerate, info.channels, info.subtype) == (16000, 1, "PCM_16")
    assert info.frames == round(c.n_frames / 25 * 16000)
    with np.load(tmp_path / c.features_npz) as f:
        assert f["mfcc28"].shape == (c.n_frames, 28) and f["mel80"].shape == (c.n_frames, 80)
    with np.load(tmp_path / c.faces_npz) as z:
        assert (z["segment"] >= 0).all() and len(z["segment"]) == c.n_frames
    sample = ShardDataset(tmp_path / "shards")[0]
    assert tuple(sample["mfcc"].shape) == (25, 28) and tuple(sample["mel80"].shape) == (25, 80)
