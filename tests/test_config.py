"""Pipeline config: the shipped TOML equals the defaults, overrides are typed, bad keys are refused, configs are
frozen."""
import configparser
import dataclasses
import json
import tomllib
from pathlib import Path

import pytest

from meadkit.baseline.config import DEFAULT_BASELINE, BaselineConfig, load_config
from meadkit.config import (DEFAULT_PIPELINE, STAGES, ConfigError, Pipeline, load_pipeline, parse_override,
                            recorded_stage)
from meadkit.faces import FacesConfig
from meadkit.features import FeaturesConfig
from meadkit.shards import ShardConfig


def test_shipped_pipeline_equals_dataclass_defaults():
    assert load_pipeline(DEFAULT_PIPELINE).as_dict() == load_pipeline().as_dict()


def test_overrides_are_typed_and_change_the_take_hash():
    base = load_pipeline()
    p = load_pipeline(overrides=["faces.crop_size=192", "features.normalize_per_frame=true", "splits.method=paper"])
    assert p.faces.crop_size == 192 and p.features.normalize_per_frame is True and p.splits.method == "paper"
    assert p.take_hash() != base.take_hash()
    # settings that do not change per-take outputs keep the hash (finished takes are reused)
    assert load_pipeline(overrides=["shards.size=64", "splits.method=paper"]).take_hash() == base.take_hash()


def test_effective_config_round_trips_through_toml(tmp_path):
    p = load_pipeline(overrides=["faces.crop_size=192", "splits.test_actors=['M003']"])
    f = tmp_path / "effective.toml"
    f.write_text(p.to_toml())
    assert load_pipeline(f).as_dict() == p.as_dict()


@pytest.mark.parametrize("bad, match", [
    (["faces.no_such_key=1"], "unknown key"),
    (["nostage.x=1"], "unknown stage"),
    (["crop_size=1"], "stage.key=value"),
    (["splits.method=whatever"], "splits.method = 'whatever': must be one of speakers, paper, random"),
])
def test_bad_settings_are_refused_with_the_key_named(bad, match):
    with pytest.raises(ConfigError, match=match):
        load_pipeline(overrides=bad)


def test_override_values_fall_back_to_strings():
    assert parse_override("faces.backend=fan") == ("faces", "backend", "fan")
    assert parse_override("sync.max_offset_s=1.5") == ("sync", "max_offset_s", 1.5)


def _typed(tables: dict) -> dict:
    """{table: {key: (type, value)}} without the keys whose default is None (TOML has no null)."""
    return {t: {k: (type(v), v) for k, v in keys.items() if v is not None} for t, keys in tables.items()}


@pytest.mark.parametrize("path, defaults", [
    (DEFAULT_PIPELINE, lambda: load_pipeline().as_dict()),
    (DEFAULT_BASELINE, lambda: json.loads(json.dumps(dataclasses.asdict(BaselineConfig())))),  # tuples as lists
])
def test_each_shipped_file_sets_every_field_to_its_default(path, defaults):
    """Key for key, with the same types, in the same table order (the files ship inside the package)."""
    shipped = tomllib.loads(path.read_text())
    assert list(shipped) == list(defaults())
    assert _typed(shipped) == _typed(defaults())


def test_the_shipped_files_are_package_data():
    """`pip install .` (not editable) copies them: setup.cfg's package data of `meadkit` covers both."""
    setup = configparser.ConfigParser()
    setup.read(Path(__file__).resolve().parent.parent / "setup.cfg")
    patterns = [p.strip() for p in setup["options.package_data"]["meadkit"].split(",")]
    package = DEFAULT_PIPELINE.parent.parent
    for path in (DEFAULT_PIPELINE, DEFAULT_BASELINE):
        assert path.is_file() and any(path.relative_to(package).match(p) for p in patterns), path


def test_the_pipeline_has_one_field_per_stage_in_data_flow_order():
    assert [f.name for f in dataclasses.fields(Pipeline)] == list(STAGES)
    p = load_pipeline()
    assert [type(getattr(p, name)).__name__ for name in STAGES] == [v.split(":")[1] for v in STAGES.values()]


@pytest.mark.parametrize("config, key, value", [
    (load_pipeline(), "faces", FacesConfig()),
    (FacesConfig(), "crop_size", 128),
    (FeaturesConfig(), "context", 30),
    (ShardConfig(), "size", 64),
    (load_config(), "train", load_config().train),
    (load_config().refine, "w_tv", 0.0),
])
def test_configs_refuse_mutation(config, key, value):
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(config, key, value)


def test_a_changed_copy_is_checked_like_a_loaded_config():
    assert dataclasses.replace(FacesConfig(), crop_size=128).crop_size == 128
    with pytest.raises(ConfigError, match="faces.crop_size = 8: must be >= 32"):
        dataclasses.replace(FacesConfig(), crop_size=8)


def test_a_recorded_stage_is_read_back_and_checked():
    made_with = load_pipeline(overrides=["features.normalize_per_frame=true"]).to_toml()
    assert recorded_stage(made_with, "features") == FeaturesConfig(normalize_per_frame=True)
    assert recorded_stage(None, "features") == FeaturesConfig()
    with pytest.raises(ConfigError, match="features.context = 0: must be >= 1"):
        recorded_stage("[features]\ncontext = 0\n", "features")
