"""The effective pipeline configuration: stage dataclasses, filled from a TOML file and `--set` overrides.

Each stage owns its config dataclass (e.g. `meadkit.sync.SyncConfig`); a pipeline file has
one table per stage whose keys are that dataclass's fields. The hash of the settings that
change a take's outputs decides which finished takes a rerun may keep.
"""
from __future__ import annotations

import dataclasses
import hashlib
import importlib
import json
import tomllib
from pathlib import Path
from typing import Any, Iterable, Optional

#: Stage name -> "module:ConfigClass". Order is the data-flow order.
STAGES = {
    "index": "meadkit.index:IndexConfig",
    "sync": "meadkit.sync:SyncConfig",
    "faces": "meadkit.faces:FacesConfig",
    "features": "meadkit.features:FeaturesConfig",
    "splits": "meadkit.splits:SplitConfig",
    "shards": "meadkit.shards:ShardConfig",
}
#: Stages whose settings change the per-take outputs (and so the resume hash).
TAKE_STAGES = ("sync", "faces", "features")
#: The pipeline file shipped with the repository (its values equal the dataclass defaults).
DEFAULT_PIPELINE = Path(__file__).resolve().parent.parent / "pipelines" / "default.toml"


class ConfigError(ValueError):
    """A pipeline file or override that does not fit the stage configs; the message says which key."""


def _config_class(stage: str):
    module, cls = STAGES[stage].split(":")
    return getattr(importlib.import_module(module), cls)


@dataclasses.dataclass
class Pipeline:
    """One config object per stage."""

    stages: dict[str, Any]

    def __getattr__(self, name: str) -> Any:
        try:
            return self.__dict__["stages"][name]
        except KeyError:
            raise AttributeError(name) from None

    def as_dict(self) -> dict[str, dict]:
        return {name: _plain(dataclasses.asdict(cfg)) for name, cfg in self.stages.items()}

    def take_hash(self) -> str:
        """Hash of the settings that change per-take outputs (sync, faces, features)."""
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


def read_tables(path: Optional[Path | str] = None, overrides: Iterable[str] = (), base: Optional[dict] = None) -> dict[str, dict]:
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


def load_pipeline(path: Optional[Path | str] = None, overrides: Iterable[str] = ()) -> Pipeline:
    """Read a pipeline TOML (default: the shipped defaults) and apply `stage.key=value` overrides."""
    data = read_tables(path, overrides)
    unknown = set(data) - set(STAGES)
    if unknown:
        raise ConfigError(f"unknown stage table(s) {sorted(unknown)}; known: {list(STAGES)}")
    stages = {}
    for name in STAGES:
        cls = _config_class(name)
        fields = {f.name: f for f in dataclasses.fields(cls)}
        values = data.get(name, {})
        bad = set(values) - set(fields)
        if bad:
            raise ConfigError(f"[{name}] has unknown key(s) {sorted(bad)}; known: {sorted(fields)}")
        try:
            stages[name] = cls(**{k: _coerce(fields[k], v) for k, v in values.items()})
        except (TypeError, ValueError) as e:
            raise ConfigError(f"[{name}]: {e}") from None
    return Pipeline(stages)


def _coerce(field: dataclasses.Field, value: Any) -> Any:
    """TOML arrays become tuples where the default is a tuple (dataclass defaults are immutable)."""
    default = field.default if field.default is not dataclasses.MISSING else None
    if isinstance(value, list) and isinstance(default, tuple):
        return tuple(value)
    if isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value
