"""Training settings of the baseline: one dataclass per TOML table ([train], [classifiers], [a2l], [n2e],
[refine]), read from `pipelines/baseline.toml`-style files with `table.key=value` overrides.

Defaults are sized for a CPU (64x64 crops, small widths); loss weights follow the paper (all 1 except
total variation 1e-5). For a GPU at the paper's scale use e.g. `--size 256 --batch-size 16
--set n2e.width=64 --set refine.width=64 --set refine.d_width=64` (see pipelines/baseline.toml).
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Optional

from meadkit.atomic import atomic_path
from meadkit.config import ConfigError, read_tables


@dataclass
class TrainConfig:
    """Shared by all stages: image size, batch, device, seed, logging and checkpoint cadence."""

    size: int = 64  # crops are resized (area) from the shard size to size x size; multiple of 8
    batch_size: int = 32
    device: str = "auto"  # auto | cpu | cuda
    amp: bool = False  # float16 autocast + grad scaling on CUDA, bfloat16 autocast on CPU
    seed: int = 0
    lr_decay: bool = True  # cosine decay of every learning rate to 0 over each stage's steps
    threads: int = 0  # torch CPU threads; 0 = torch's default (use 1 on a busy shared machine)
    views: tuple[str, ...] = ()  # empty = every view in the shards
    log_every: int = 20
    val_every: int = 200
    val_samples: int = 256
    checkpoint_every: int = 200


@dataclass
class ClassifierConfig:
    """Emotion + intensity classifier on real face crops (trained first)."""

    steps: int = 1500
    lr: float = 1e-3
    width: int = 16
    augment: bool = True  # random colour and small shift/zoom of the training faces


@dataclass
class A2LConfig:
    """Audio-to-landmarks: LSTM(28 -> hidden, layers) + linear to PCA coefficients (paper: 60, 3, Adam 1e-3)."""

    steps: int = 1500
    lr: float = 1e-3
    hidden: int = 60
    layers: int = 3
    n_coeffs: int = 20
    #: Also feed the emotion/intensity one-hots to the linear layer (the static mouth shape of an emotion is
    #: not in the audio); false = the paper's audio-only network.
    use_labels: bool = True
    fit_samples: int = 4000  # training samples used to fit the PCA and the MFCC normalisation


@dataclass
class N2EConfig:
    """Neutral-to-emotion transformer; losses L1 + perceptual."""

    steps: int = 600
    batch_size: int = 16  # 0 = train.batch_size; image stages use smaller batches on a CPU
    lr: float = 5e-4
    width: int = 16
    n_res: int = 3
    w_l1: float = 1.0
    w_perceptual: float = 1.0


@dataclass
class RefineConfig:
    """Refinement U-Net + PatchGAN discriminator; paper loss weights (TV 1e-5, all others 1)."""

    steps: int = 600
    batch_size: int = 16  # 0 = train.batch_size; image stages use smaller batches on a CPU
    lr: float = 5e-4
    width: int = 16
    d_width: int = 16
    w_l1: float = 1.0
    w_mouth: float = 1.0
    w_perceptual: float = 1.0
    w_tv: float = 1e-5
    w_adv: float = 1.0
    w_classifier: float = 1.0


@dataclass
class BaselineConfig:
    """The whole training configuration."""

    train: TrainConfig = field(default_factory=TrainConfig)
    classifiers: ClassifierConfig = field(default_factory=ClassifierConfig)
    a2l: A2LConfig = field(default_factory=A2LConfig)
    n2e: N2EConfig = field(default_factory=N2EConfig)
    refine: RefineConfig = field(default_factory=RefineConfig)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "BaselineConfig":
        return config_from_dict(json.loads(text))


def config_from_dict(data: dict) -> BaselineConfig:
    """Build a BaselineConfig from {table: {key: value}}; unknown tables or keys raise ConfigError."""
    tables = {f.name: f.default_factory for f in dataclasses.fields(BaselineConfig)}
    unknown = set(data) - set(tables)
    if unknown:
        raise ConfigError(f"unknown table(s) {sorted(unknown)}; known: {list(tables)}")
    built = {}
    for name, factory in tables.items():
        default = factory()
        fields = {f.name for f in dataclasses.fields(default)}
        values = data.get(name, {})
        bad = set(values) - fields
        if bad:
            raise ConfigError(f"[{name}] has unknown key(s) {sorted(bad)}; known: {sorted(fields)}")
        coerced = {}
        for key, value in values.items():
            ref = getattr(default, key)
            if isinstance(ref, tuple):
                value = tuple(value) if isinstance(value, (list, tuple)) else tuple(str(value).split(","))
            elif isinstance(ref, bool):
                if not isinstance(value, bool):
                    raise ConfigError(f"[{name}] {key} must be true or false, got {value!r}")
            elif isinstance(ref, (int, float)):
                if isinstance(value, bool) or not isinstance(value, (int, float)) or (isinstance(ref, int) and not isinstance(value, int)):
                    raise ConfigError(f"[{name}] {key} must be a {type(ref).__name__}, got {value!r}")
                value = type(ref)(value)
            coerced[key] = value
        built[name] = dataclasses.replace(default, **coerced)
    return BaselineConfig(**built)


def load_config(path: Optional[Path | str] = None, overrides: Iterable[str] = (), base: Optional[dict] = None) -> BaselineConfig:
    """Read a baseline TOML (else start from `base`, else the defaults) and apply `table.key=value` overrides."""
    return config_from_dict(read_tables(path, overrides, base))


#: The effective config of a run, saved in the run folder so later stages and resumes reuse it.
RUN_CONFIG = "config.json"


def run_config(run_dir: Path | str, path: Optional[Path | str] = None, overrides: Iterable[str] = ()) -> BaselineConfig:
    """A run's config: `path` if given, else the run's saved config.json, else the defaults; then overrides."""
    saved = Path(run_dir) / RUN_CONFIG
    base = json.loads(saved.read_text()) if path is None and saved.exists() else None
    return load_config(path, overrides, base)


def save_run_config(run_dir: Path | str, cfg: BaselineConfig) -> None:
    """Write the run's effective config (JSON), atomically."""
    with atomic_path(Path(run_dir) / RUN_CONFIG) as tmp:
        Path(tmp).write_text(json.dumps(dataclasses.asdict(cfg), indent=2, sort_keys=True) + "\n")
