"""Issue 14, config and CLI faults: every bad setting or input is one `meadkit: error:`-style line, before any work."""
import errno
import json
import os

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from meadkit.baseline.config import load_config
from meadkit.inputs import pipeline_settings
from meadkit.cli import COMMANDS, main, user_message
from meadkit.commands.options import Jobs
from meadkit.config import ConfigError, load_pipeline
from meadkit.manifest import read_table
from meadkit.shards import ShardConfig


def run(*args, env=None):
    """Invoke meadkit with string arguments (paths allowed)."""
    return CliRunner().invoke(main, [str(a) for a in args], env=env)


def assert_one_line_error(result, *parts, code=2):
    """A clean exit `code` whose stderr names every part on one line, without a traceback."""
    assert isinstance(result.exception, SystemExit) and result.exit_code == code, result.output
    assert "Traceback" not in result.output
    lines = [line for line in result.stderr.splitlines() if all(p in line for p in parts)]
    assert lines, result.stderr


@pytest.fixture
def raw(tmp_path):
    """An (empty) RAW folder: every bad input below must be refused before it is even indexed."""
    d = tmp_path / "raw"
    d.mkdir()
    return d


# ---------------------------------------------------------------- 14: features.n_mfcc and features.context


@pytest.mark.parametrize("override, allowed", [("features.n_mfcc=20", "must be one of 14"),
                                               ("features.context=0", "must be >= 1")])
def test_features_settings_the_pipeline_cannot_honour_are_refused(override, allowed, raw, tmp_path):
    """n_mfcc is fixed (the shards hold 28 values); context is any window length (the Dataset reads it from the
    shard set, the baseline refuses one other than its 30)."""
    key, value = override.split("=")
    with pytest.raises(ConfigError, match=f"{key} = {value}: {allowed}"):
        load_pipeline(overrides=[override])
    result = run("prepare", raw, "-o", tmp_path / "out", "--set", override)
    assert_one_line_error(result, key, value, allowed)
    assert not (tmp_path / "out").exists()


def test_the_accepted_features_values_keep_the_resume_hash():
    assert load_pipeline(overrides=["features.context=30", "features.n_mfcc=14"]).take_hash() == load_pipeline().take_hash()


# ---------------------------------------------------------------- 15: generate uses the shards' settings


@pytest.fixture
def prepared_config(tmp_path):
    """An OUT folder whose config.toml (as `prepare` writes it) has non-default faces and features settings."""
    out = tmp_path / "prepared"
    out.mkdir()
    pipeline = load_pipeline(overrides=["faces.crop_size=192", "faces.margin=0.3", "features.normalize_per_frame=true"])
    (out / "config.toml").write_text("# config hash x\n" + pipeline.to_toml())
    return out


def test_pipeline_settings_are_read_from_the_prepared_folder(prepared_config):
    faces, features = pipeline_settings(prepared_config)
    assert (faces.crop_size, faces.margin, features.normalize_per_frame) == (192, 0.3, True)
    assert pipeline_settings(prepared_config / "config.toml") == (faces, features)


@pytest.fixture
def generate_inputs(tmp_path):
    """(run dir, image, audio) paths that pass generate's option checks."""
    run_dir, image, audio = tmp_path / "run", tmp_path / "face.png", tmp_path / "speech.wav"
    run_dir.mkdir()
    cv2.imwrite(str(image), np.zeros((8, 8, 3), np.uint8))
    audio.write_bytes(b"")
    return run_dir, image, audio


def test_generate_passes_the_prepared_settings_on(generate_inputs, prepared_config, tmp_path, monkeypatch):
    seen = {}

    def capture(*args, **kwargs):
        seen.update(kwargs)
        raise ValueError("stop")

    monkeypatch.setattr("meadkit.commands.generate.generate", capture)
    run_dir, image, audio = generate_inputs
    args = ("generate", run_dir, "--image", image, "--audio", audio, "--emotion", "happy", "-o", tmp_path / "g.mp4")
    run(*args, "--pipeline", prepared_config)
    assert seen["faces_config"].crop_size == 192 and seen["features_config"].normalize_per_frame is True
    without = run(*args)
    assert "--pipeline" in without.stderr  # the defaults are said, not silent


def test_generate_refuses_a_pipeline_folder_without_config(generate_inputs, tmp_path):
    run_dir, image, audio = generate_inputs
    result = run("generate", run_dir, "--image", image, "--audio", audio, "--emotion", "happy", "-o", tmp_path / "g.mp4",
                 "--pipeline", tmp_path)
    assert_one_line_error(result, "no pipeline config", "config.toml")


# ---------------------------------------------------------------- 16: types and ranges, at load


@pytest.mark.parametrize("override, allowed", [
    ("faces.crop_size=abc", "must be an integer"),
    ("faces.crop_size=-5", ">= 32"),
    ("faces.crop_size=0", ">= 32"),
    ("faces.detect_every=0", ">= 1"),
    ("sync.rate=-1", ">= 1000"),
    ("shards.size=-1", ">= 8"),
    ("faces.backend=dilb", "one of hybrid, dlib, mesh, fan"),
    ("splits.random_val=2", "<= 1.0"),
    ("features.normalize_per_frame=1", "true or false"),
])
def test_bad_stage_settings_are_refused_at_load_naming_key_value_and_range(override, allowed, raw, tmp_path):
    key, value = override.split("=")
    with pytest.raises(ConfigError, match="must"):
        load_pipeline(overrides=[override])
    for command in ("prepare", "sync"):
        result = run(command, raw, "-o", tmp_path / "out", "--set", override)
        assert_one_line_error(result, key, value, allowed)
    assert not (tmp_path / "out").exists()


def test_a_bad_pipeline_file_is_refused_the_same_way(raw, tmp_path):
    f = tmp_path / "p.toml"
    f.write_text("[faces]\ncrop_size = \"big\"\n")
    assert_one_line_error(run("prepare", raw, "-o", tmp_path / "out", "--pipeline", f), "faces.crop_size", "'big'", "integer")


def test_configs_built_in_code_are_checked_too():
    with pytest.raises(ConfigError, match="shards.size = 0: must be >= 8"):
        ShardConfig(size=0)
    with pytest.raises(ConfigError, match="shards.shard_bytes = -1"):
        ShardConfig(shard_bytes=-1)


def test_shard_size_zero_is_a_usage_error_before_work(prepared, tmp_path):
    out, _ = prepared
    result = run("shard", out, "--size", "0", "-o", tmp_path / "shards")
    assert result.exit_code == 2 and "shards.size = 0" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "shards").exists()


@pytest.mark.parametrize("override, message", [
    ("train.size=abc", "train.size = 'abc': must be an integer"),
    ("train.size=6.5", "train.size = 6.5: must be an integer"),
    ("train.device=tpu", "train.device = 'tpu': must be one of auto, cpu, cuda"),
    ("train.views=front,behind", "train.views = 'behind': must be one of front"),
    ("refine.w_tv=-1", "refine.w_tv = -1.0: must be >= 0.0"),
    ("a2l.layers=0", "a2l.layers = 0: must be >= 1"),
])
def test_baseline_settings_use_the_same_validator(override, message):
    with pytest.raises(ConfigError) as e:
        load_config(None, [override])
    assert message in str(e.value)


# ---------------------------------------------------------------- 17: one line, not a traceback


@pytest.mark.parametrize("err, text", [
    (errno.EROFS, "cannot write /mnt/ro/out: Read-only file system"),
    (errno.EACCES, "cannot write /mnt/ro/out: Permission denied"),
    (errno.ENOENT, "/mnt/ro/out: No such file or directory"),
])
def test_os_errors_on_a_path_become_one_line(err, text):
    assert user_message(OSError(err, os.strerror(err), "/mnt/ro/out")) == text


@pytest.fixture
def blocker(tmp_path):
    """A regular file: a folder cannot be made inside it (stands for an unwritable OUT)."""
    f = tmp_path / "blocker"
    f.write_text("")
    return f


def test_unwritable_outputs_of_select_report_and_synth_are_one_line(prepared, blocker):
    out, _ = prepared
    assert_one_line_error(run("select", out, "-o", blocker / "x.parquet"), "meadkit: error:", str(blocker))
    assert_one_line_error(run("report", out, "-o", blocker / "r.html"), "meadkit: error:", str(blocker))
    assert_one_line_error(run("synth", blocker / "raw", "--actors", "1", "--emotions", "neutral", "--takes", "1", "--views", "front",
                              "--resolution", "160x90", "--seconds", "1"), "meadkit: error:", str(blocker))


def test_read_only_output_is_one_line(prepared, tmp_path, monkeypatch):
    def refuse(*a, **kw):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(tmp_path / "ro" / "report.html"))

    monkeypatch.setattr("meadkit.report.atomic_path", refuse)
    out, _ = prepared
    assert_one_line_error(run("report", out, "-o", tmp_path / "ro" / "report.html"), "cannot write", "Read-only file system")


def test_meta_json_missing_keys_is_one_line(shard_set, tmp_path):
    import shutil

    copy = tmp_path / "shards"
    shutil.copytree(shard_set, copy)
    meta = json.loads((copy / "meta.json").read_text())
    del meta["size"], meta["shards"]
    (copy / "meta.json").write_text(json.dumps(meta))
    (tmp_path / "run").mkdir()
    result = run("train", copy, "-o", tmp_path / "run", "--steps", "1")
    assert isinstance(result.exception, SystemExit) and "size" in result.output and "Traceback" not in result.output


def test_generate_negative_size_is_a_usage_error(generate_inputs, tmp_path):
    run_dir, image, audio = generate_inputs
    result = run("generate", run_dir, "--image", image, "--audio", audio, "--emotion", "happy", "-o", tmp_path / "g.mp4", "--size", "-8")
    assert_one_line_error(result, "--size", "-8")
    assert not (tmp_path / "g.mp4").exists()


# ---------------------------------------------------------------- 18: filters, report, -j


@pytest.mark.parametrize("option, value, allowed", [
    ("--emotion", "joyful", "happy"),
    ("--view", "behind", "left_30"),
    ("--actor", "X12", "M003"),
    ("--level", "5", "1, 2, 3"),
    ("--split", "tst", "train, val, test"),
    ("--gender", "F", "M, W"),
])
def test_unknown_filter_values_are_errors_listing_what_is_allowed(option, value, allowed, prepared, raw, tmp_path):
    out, _ = prepared
    assert_one_line_error(run("select", out, option, value), value, allowed)
    if option != "--split":
        assert_one_line_error(run("prepare", raw, "-o", tmp_path / "o", option, value), value, allowed)
        assert not (tmp_path / "o").exists()


def test_a_repeated_filter_keeps_every_value(prepared, tmp_path):
    out, clips = prepared
    result = run("select", out, "--actor", "M003", "--actor", "W009", "--emotion", "happy,sad", "--emotion", "neutral",
                 "-o", tmp_path / "s.parquet")
    assert result.exit_code == 0, result.output
    got = read_table(tmp_path / "s.parquet")
    assert set(got["actor"]) == {"M003", "W009"} & set(clips["actor"]) and len(set(got["actor"])) == 2
    assert set(got["emotion"]) == {"happy", "sad", "neutral"} & set(clips["emotion"])


def test_report_of_an_unprepared_folder_is_an_error_and_writes_nothing(tmp_path):
    result = run("report", tmp_path, "-o", tmp_path / "r.html")
    assert_one_line_error(result, "not a prepared folder", "meadkit prepare")
    assert not (tmp_path / "r.html").exists()


def test_jobs_has_one_meaning_everywhere(raw, tmp_path):
    assert Jobs().convert("0", None, None) == os.cpu_count() and Jobs().convert("3", None, None) == 3
    for command in (["prepare", raw, "-o", tmp_path / "o"], ["sync", raw, "-o", tmp_path / "o"],
                    ["synth", tmp_path / "o"], ["demo", tmp_path / "o"]):
        assert_one_line_error(run(*command, "-j", "-1"), "-1", "0 for all")
    assert not (tmp_path / "o").exists()
    for command in ("prepare", "sync", "shard", "synth", "demo"):
        assert "0 = all cores" in " ".join(run(command, "--help").output.split())


# ---------------------------------------------------------------- the guard


def test_debug_shows_the_traceback_and_bugs_keep_theirs(tmp_path, monkeypatch):
    assert not isinstance(run("report", tmp_path, env={"MEADKIT_DEBUG": "1"}).exception, SystemExit)
    monkeypatch.setattr("meadkit.report.build_report", lambda *a: {}["bug"])
    assert isinstance(run("report", tmp_path).exception, KeyError)


def test_every_command_refuses_a_bad_input_without_a_traceback(prepared, raw, blocker, generate_inputs, tmp_path):
    out, _ = prepared
    run_dir, image, audio = generate_inputs
    bad = {
        "synth": ["synth", blocker / "raw", "--actors", "1", "--emotions", "neutral", "--views", "front", "--takes", "1"],
        "index": ["index", raw, "-o", tmp_path / "o", "--short-audio-tolerance", "-1"],
        "sync": ["sync", raw, "-o", tmp_path / "o", "--set", "sync.rate=-1"],
        "prepare": ["prepare", raw, "-o", tmp_path / "o", "--set", "faces.crop_size=abc"],
        "select": ["select", out, "--emotion", "joyful"],
        "shard": ["shard", out, "--size", "0", "-o", tmp_path / "o"],
        "export": ["export", out, "--shard-bytes", "lots", "-o", tmp_path / "o"],
        "train": ["train", tmp_path, "-o", tmp_path / "o", "--set", "train.size=abc"],
        "evaluate": ["evaluate", run_dir, tmp_path],
        "generate": ["generate", run_dir, "--image", image, "--audio", audio, "--emotion", "happy", "-o", tmp_path / "g.mp4", "--size", "-8"],
        "report": ["report", tmp_path, "-o", tmp_path / "r.html"],
        "demo": ["demo", tmp_path / "o", "-j", "-1"],
    }
    assert set(bad) == set(COMMANDS)
    for name, args in bad.items():
        result = run(*args)
        assert isinstance(result.exception, SystemExit) and result.exit_code in (1, 2), (name, result.output)
        assert "Traceback" not in result.output and "rror" in result.output, (name, result.output)
    assert not (tmp_path / "o").exists()
