"""The effective pipeline configuration: stage dataclasses, filled from a TOML file and `--set` overrides.

Each stage owns its frozen config dataclass (e.g. `meadkit.sync.SyncConfig`); a pipeline file has
one table per stage whose keys are that dataclass's fields. `load_tables` is the one loader of every meadkit
config file (the pipeline's and the baseline's): values are checked on load against the field's annotation and
its metadata (`{"min": .., "max": .., "choices": (..)}`) by `check_value`, the one validator. The files shipped
with the package (`meadkit/pipelines/`) hold the defaults. The hash of the settings that
change a take's outputs decides which finished takes a rerun may keep.
"""
from __future__ import annotations

import dataclasses
import hashlib
import importlib
import json
import tomllib
import types
import typing
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Optional

if TYPE_CHECKING:
    from meadkit.clip_audio import AudioConfig
    from meadkit.curation import CurationConfig
    from meadkit.faces import FacesConfig
    from meadkit.features import FeaturesConfig
    from meadkit.index import IndexConfig
    from meadkit.shards import ShardConfig
    from meadkit.splits import SplitConfig
    from meadkit.sync import SyncConfig
    from meadkit.timebase import TimebaseConfig

#: Stage name -> "module:ConfigClass" (imported when a pipeline is loaded: the stage modules import this one).
#: Order is the data-flow order, that of Pipeline's fields.
STAGES = {
    "index": "meadkit.index:IndexConfig",
    "sync": "meadkit.sync:SyncConfig",
    "timebase": "meadkit.timebase:TimebaseConfig",
    "faces": "meadkit.faces:FacesConfig",
    "features": "meadkit.features:FeaturesConfig",
    "audio": "meadkit.clip_audio:AudioConfig",
    "curation": "meadkit.curation:CurationConfig",
    "splits": "meadkit.splits:SplitConfig",
    "shards": "meadkit.shards:ShardConfig",
}
#: Stages whose settings change the per-take outputs (and so the resume hash).
TAKE_STAGES = ("sync", "timebase", "faces", "features", "audio")
#: The config files shipped inside the package (their values equal the dataclass defaults).
PIPELINES_DIR = Path(__file__).with_name("pipelines")
DEFAULT_PIPELINE = PIPELINES_DIR / "default.toml"
#: Named pipelines shipped with the package (`--profile NAME`): each file sets only what differs from the defaults.
PROFILES = {"mead-paper": DEFAULT_PIPELINE, "talking-head-25": PIPELINES_DIR / "talking-head-25.toml",
            "emote-style": PIPELINES_DIR / "emote-style.toml"}


class ConfigError(ValueError):
    """A config file or override that does not fit the config dataclasses; the message says which key."""


def _config_class(stage: str) -> type:
    module, cls = STAGES[stage].split(":")
    return getattr(importlib.import_module(module), cls)


@dataclasses.dataclass(frozen=True)
class Pipeline:
    """One config object per stage (field names are the STAGES keys, in their order)."""

    index: IndexConfig
    sync: SyncConfig
    timebase: TimebaseConfig
    faces: FacesConfig
    features: FeaturesConfig
    audio: AudioConfig
    curation: CurationConfig
    splits: SplitConfig
    shards: ShardConfig

    def as_dict(self) -> dict[str, dict]:
        return {f.name: _plain(dataclasses.asdict(getattr(self, f.name))) for f in dataclasses.fields(self)}

    def take_hash(self) -> str:
        """Hash of the settings that change per-take outputs (TAKE_STAGES)."""
        d = {k: v for k, v in self.as_dict().items() if k in TAKE_STAGES}
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]

    def to_toml(self) -> str:
        """The effective config as TOML text (saved beside the outputs)."""
        lines = []
        for name, values in self.as_dict().items():
            lines.append(f"[{name}]")
            lines += [f"{k} = {_toml_value(v)}" for k, v in values.items() if v is not None]
            lines.append("")
        return "\n".join(lines)


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "numerator") and not isinstance(value, (int, float, bool)):
        return f"{value.numerator}/{value.denominator}"
    return value


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    return json.dumps(str(v))


def parse_override(text: str) -> tuple[str, str, Any]:
    """`faces.crop_size=192` -> ("faces", "crop_size", 192). Values are TOML literals, else strings."""
    key, sep, raw = text.partition("=")
    stage, dot, field = key.strip().partition(".")
    if not sep or not dot or not field:
        raise ConfigError(f"--set expects stage.key=value, got {text!r}")
    try:
        value = tomllib.loads(f"v = {raw.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw.strip()
    return stage, field, value


def _read_tables(path: Optional[Path | str], overrides: Iterable[str], base: Optional[dict]) -> dict[str, dict]:
    """The tables of a TOML file (else a copy of `base`, else none) with `table.key=value` overrides applied."""
    data: dict[str, dict] = {k: dict(v) for k, v in (base or {}).items()}
    if path is not None:
        try:
            data = tomllib.loads(Path(path).read_text())
        except (OSError, tomllib.TOMLDecodeError) as e:
            raise ConfigError(f"cannot read config {path}: {e}") from None
    for text in overrides:
        table, key, value = parse_override(text)
        data.setdefault(table, {})[key] = value
    return data


def load_tables(tables: dict[str, type], kind: str, path: Optional[Path | str] = None, overrides: Iterable[str] = (),
                base: Optional[dict] = None) -> dict[str, Any]:
    """The one loader of meadkit's config files: one `tables[name]` instance per table, read from a TOML file
    (else from `base` {table: {key: value}}, else the defaults) with `table.key=value` overrides applied. Unknown
    tables (named as `kind` tables), unknown keys and bad values raise ConfigError."""
    data = _read_tables(path, overrides, base)
    unknown = set(data) - set(tables)
    if unknown:
        raise ConfigError(f"unknown {kind} table(s) {sorted(unknown)}; known: {list(tables)}")
    return {name: build_table(cls, name, data.get(name, {})) for name, cls in tables.items()}


def load_pipeline(path: Optional[Path | str] = None, overrides: Iterable[str] = (), profile: Optional[str] = None
                  ) -> Pipeline:
    """Read a pipeline TOML, or a named profile (default: the built-in defaults), and apply `stage.key=value`
    overrides."""
    if profile is not None:
        if path is not None:
            raise ConfigError("give a profile or a pipeline file, not both")
        path = profile_path(profile)
    return Pipeline(**load_tables({name: _config_class(name) for name in STAGES}, "stage", path, overrides))


def profile_path(name: str) -> Path:
    """The file of a named profile; ConfigError listing the profiles for another name."""
    if name not in PROFILES:
        raise ConfigError(f"unknown profile {name!r}; profiles: {', '.join(PROFILES)}")
    return PROFILES[name]


def recorded_tables(text: Optional[str]) -> dict[str, dict]:
    """The tables of pipeline TOML text recorded beside outputs (a shard set's meta.json keeps the text that made
    its clips), unchecked; none where nothing was recorded."""
    try:
        return tomllib.loads(text or "")
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"the recorded pipeline config is not TOML: {e}") from None


def recorded_stage(text: Optional[str], stage: str) -> Any:
    """One stage's config from recorded pipeline TOML text (`recorded_tables`), checked as on load; the stage's
    defaults where nothing was recorded."""
    return build_table(_config_class(stage), stage, recorded_tables(text).get(stage, {}))


def build_table(cls: type, table: str, values: dict) -> Any:
    """One config dataclass from a TOML table: unknown keys, wrong types and out-of-range values raise ConfigError
    naming `table.key`. The one loader of every config (pipeline stages and baseline tables)."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    bad = set(values) - set(fields)
    if bad:
        raise ConfigError(f"[{table}] has unknown key(s) {sorted(bad)}; known: {sorted(fields)}")
    hints = typing.get_type_hints(cls)
    checked = {k: check_value(f"{table}.{k}", hints[k], fields[k].metadata, v) for k, v in values.items()}
    try:
        return cls(**checked)
    except ConfigError:
        raise
    except (TypeError, ValueError) as e:
        raise ConfigError(f"[{table}]: {e}") from None


def check_fields(obj: Any, table: str) -> None:
    """Check every field of a config instance against its annotation and metadata (for `__post_init__`, so a
    config built in code, e.g. from a CLI option, is refused the same way as one loaded from TOML)."""
    hints = typing.get_type_hints(type(obj))
    for f in dataclasses.fields(obj):
        check_value(f"{table}.{f.name}", hints[f.name], f.metadata, getattr(obj, f.name))


def check_value(key: str, hint: Any, meta: Any, value: Any) -> Any:
    """`value` converted to the annotated type (int -> float, list or 'a,b' -> tuple) and checked against the field
    metadata `min`, `max` (inclusive) and `choices` (each item of a tuple); else ConfigError naming key, value, allowed."""
    args = typing.get_args(hint)
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        if value is None:
            return None
        hint = next(a for a in args if a is not type(None))
    value = _as_type(key, hint, value)
    for item in value if isinstance(value, tuple) else (value,):  # a tuple's limits apply to each item
        if "choices" in meta and item not in meta["choices"]:
            raise ConfigError(f"{key} = {item!r}: must be one of {', '.join(map(str, meta['choices']))}")
        if "min" in meta and item < meta["min"]:
            raise ConfigError(f"{key} = {item!r}: must be >= {meta['min']}")
        if "max" in meta and item > meta["max"]:
            raise ConfigError(f"{key} = {item!r}: must be <= {meta['max']}")
    return value


def _as_type(key: str, hint: Any, value: Any) -> Any:
    """`value` as `hint` (bool, int, float, str or tuple[X, ...]), without lossy conversions."""
    if typing.get_origin(hint) is tuple:
        items = tuple(value) if isinstance(value, (list, tuple)) else tuple(t.strip() for t in str(value).split(",") if t.strip())
        return tuple(_as_type(key, typing.get_args(hint)[0], v) for v in items)
    ok = {
        bool: isinstance(value, bool),
        int: isinstance(value, int) and not isinstance(value, bool),
        float: isinstance(value, (int, float)) and not isinstance(value, bool),
        str: isinstance(value, str),
    }
    if not ok.get(hint, True):
        raise ConfigError(f"{key} = {value!r}: must be {_TYPE_WORDS[hint]}")
    return float(value) if hint is float else value


_TYPE_WORDS = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}
