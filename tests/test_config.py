"""Pipeline config: the shipped TOML equals the defaults, overrides are typed, bad keys are refused."""
import pytest

from meadkit.config import DEFAULT_PIPELINE, ConfigError, load_pipeline, parse_override


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
