"""Training settings of the baseline: one dataclass per TOML table ([train], [classifiers], [a2l], [n2e],
[refine]), read by the pipeline's one loader (`meadkit.config.load_tables`) from `baseline.toml`-style files
(the defaults ship as `meadkit/pipelines/baseline.toml`) with `table.key=value` overrides.

Defaults are sized for a CPU (64x64 crops, small widths); loss weights follow the paper (all 1 except
total variation 1e-5). For a GPU at the paper's scale use e.g. `--size 256 --batch-size 16
--set n2e.width=64 --set refine.width=64 --set refine.d_width=64` (see meadkit/pipelines/baseline.toml).
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Optional

from meadkit.atomic import atomic_path
from meadkit.corpus.names import VIEWS
from meadkit.config import PIPELINES_DIR, load_tables

#: What the classifiers see beside the frame (`classifiers.reference`; see ClassifierConfig).
REFERENCE_INPUTS = ("flow_only", "flow", "difference", "stack", "none")
#: How finely the optical flow is computed (`n2e.flow`; see meadkit.baseline.flow).
FLOW_QUALITIES = ("fine", "medium")
#: Where the audio-to-landmarks network starts the mouth from (`a2l.anchor`; see A2LConfig).
A2L_ANCHORS = ("neutral", "none")


@dataclass(frozen=True)
class TrainConfig:
    """Shared by all stages: image size, batch, device, seed, logging and checkpoint cadence."""

    size: int = field(default=64, metadata={"min": 8, "max": 1024})  # crops are resized (area) from the shard size to size x size; multiple of 8
    batch_size: int = field(default=32, metadata={"min": 1})
    device: str = field(default="auto", metadata={"choices": ("auto", "cpu", "cuda")})  # auto | cpu | cuda
    amp: bool = False  # float16 autocast + grad scaling on CUDA, bfloat16 autocast on CPU (its LSTM in float32: AVX2 CPUs have no bf16 LSTM)
    seed: int = 0
    lr_decay: bool = True  # cosine decay of every learning rate to 0 over each stage's steps
    threads: int = field(default=0, metadata={"min": 0})  # torch CPU threads; 0 = torch's default (use 1 on a busy shared machine)
    views: tuple[str, ...] = field(default=(), metadata={"choices": VIEWS})  # empty = every view in the shards
    log_every: int = field(default=20, metadata={"min": 1})
    val_every: int = field(default=200, metadata={"min": 1})
    val_samples: int = field(default=256, metadata={"min": 0})
    checkpoint_every: int = field(default=200, metadata={"min": 1})


@dataclass(frozen=True)
class ClassifierConfig:
    """Emotion + intensity classifier on real face crops (trained first)."""

    steps: int = field(default=1500, metadata={"min": 0})
    lr: float = field(default=1e-3, metadata={"min": 0.0})
    width: int = field(default=16, metadata={"min": 1})
    augment: bool = True  # random colour and small shift/zoom of the training faces
    #: Of those, the fraction shown in greyscale (a frame and its reference alike; with `augment`)
    grey: float = field(default=0.3, metadata={"min": 0.0, "max": 1.0})
    #: Weight each class of each head by its inverse frame count in the training set (MEAD's neutral has one level
    #: and 40 takes against 3 x 30 for each other emotion; without it neutral was recognised 3.6% of the time).
    balance: bool = True
    #: What the classifier reads: "flow_only" (the optical flow from the actor's neutral frame, the one n2e starts
    #: from, to the frame, computed down to every pixel, and nothing else), "flow" (a coarser flow and the two frames'
    #: difference), "difference" (that difference and the frame), "stack" (the two frames), "none" (the frame alone:
    #: the paper's, which on a few training faces learns the faces). Unseen faces, one seed, the same data and steps:
    #: flow_only 87%, flow 67%, difference 49% (README). A flow-only classifier passes no gradient to the images it
    #: reads, so refine's classifier loss and the perceptual substitute (without VGG16 weights) are off with it.
    reference: str = field(default="flow_only", metadata={"choices": REFERENCE_INPUTS})


@dataclass(frozen=True)
class A2LConfig:
    """Audio-to-landmarks: LSTM(MFCC width 28 -> hidden, layers) + linear to PCA coefficients (paper: 60, 3, Adam 1e-3)."""

    steps: int = field(default=1500, metadata={"min": 0})
    lr: float = field(default=1e-3, metadata={"min": 0.0})
    hidden: int = field(default=60, metadata={"min": 1})
    layers: int = field(default=3, metadata={"min": 1})
    n_coeffs: int = field(default=20, metadata={"min": 1, "max": 74})
    #: Also feed the emotion/intensity one-hots to the linear layer (the static mouth shape of an emotion is
    #: not in the audio); false = the paper's audio-only network.
    use_labels: bool = True
    #: "neutral": also see the mouth+jaw landmarks of the actor's neutral frame (the one n2e starts from; generate
    #: fits them on the photo) and predict the change from them; "none": the corpus mean shape only (the paper's).
    anchor: str = field(default="neutral", metadata={"choices": A2L_ANCHORS})
    fit_samples: int = field(default=4000, metadata={"min": 1})  # training samples used to fit the PCA and the MFCC normalisation


@dataclass(frozen=True)
class N2EConfig:
    """Neutral-to-emotion transformer; losses L1 + perceptual."""

    steps: int = field(default=600, metadata={"min": 0})
    batch_size: int = field(default=16, metadata={"min": 0})  # 0 = train.batch_size; image stages use smaller batches on a CPU
    lr: float = field(default=5e-4, metadata={"min": 0.0})
    width: int = field(default=16, metadata={"min": 1})
    n_res: int = field(default=3, metadata={"min": 0})
    w_l1: float = field(default=1.0, metadata={"min": 0.0})
    w_perceptual: float = field(default=1.0, metadata={"min": 0.0})
    #: Random colour and small shift/zoom of each (neutral, target) pair alike, a fraction `grey` of them in greyscale:
    #: the transform learns expressions, not the few training faces' colours
    augment: bool = True
    grey: float = field(default=0.3, metadata={"min": 0.0, "max": 1.0})
    #: Move the neutral face's pixels by a predicted flow before changing them (see NeutralToEmotion); false = the
    #: paper's transform, which paints the change
    warp: bool = True
    #: With `warp`: weight of an L1 loss between the predicted flow and the optical flow of the real pair (the target
    #: frame read back to its neutral frame, OpenCV's DIS): the flow learns the expression's real moves rather than
    #: the few that pixel L1 finds; 0 = no flow target
    w_flow: float = field(default=1.0, metadata={"min": 0.0})
    #: That optical flow: "medium" (OpenCV's medium preset, at half the crop's resolution) or "fine" (down to every
    #: pixel, as the flow-only classifier reads it; the label-mean medium flow moves a face too little to read)
    flow: str = field(default="fine", metadata={"choices": FLOW_QUALITIES})
    #: With `warp` and a flow-only classifier (classifiers.reference=flow_only): weight of its cross-entropy on the
    #: predicted flow itself (differentiable, where the optical flow of the output images is not)
    w_classifier: float = field(default=1.0, metadata={"min": 0.0})
    #: ...read through smooth noise of this std (flow units, see meadkit.baseline.flow.readback_noise): without it the
    #: warp learns a sub-pixel pattern the classifier reads (80% on unseen faces) and DIS cannot see in the images
    #: (12%); n2e's images with 0.3: 64%, with 0.6: 69%, but after refine (keep loss on) 55% and 39% (one seed)
    flow_noise: float = field(default=0.3, metadata={"min": 0.0})


@dataclass(frozen=True)
class RefineConfig:
    """Refinement U-Net + PatchGAN discriminator; paper loss weights (TV 1e-5, all others 1)."""

    steps: int = field(default=600, metadata={"min": 0})
    batch_size: int = field(default=16, metadata={"min": 0})  # 0 = train.batch_size; image stages use smaller batches on a CPU
    lr: float = field(default=5e-4, metadata={"min": 0.0})
    width: int = field(default=16, metadata={"min": 1})
    d_width: int = field(default=16, metadata={"min": 1})
    w_l1: float = field(default=1.0, metadata={"min": 0.0})
    w_mouth: float = field(default=1.0, metadata={"min": 0.0})
    w_perceptual: float = field(default=1.0, metadata={"min": 0.0})
    w_tv: float = field(default=1e-5, metadata={"min": 0.0})
    w_adv: float = field(default=1.0, metadata={"min": 0.0})
    w_classifier: float = field(default=1.0, metadata={"min": 0.0})
    #: L1 between the output and its input (the neutral-to-emotion face) outside the mouth box: the expression n2e
    #: drew stays where a2l's mouth does not move it (0 = the paper's losses only)
    w_keep: float = field(default=1.0, metadata={"min": 0.0})
    #: Keep refine's output only inside the mouth-and-chin box of the frame's mouth landmarks (feathered) and n2e's
    #: face elsewhere, in training and generation alike, and let the discriminator judge that region alone. On unseen
    #: faces the whole-face refine lost n2e's expression (seed 1, test actors: n2e's frames 80%, refined 49%; pasted
    #: 66%, pasted with the region-only discriminator 71%); false = the paper's whole-face refinement
    paste: bool = True


@dataclass(frozen=True)
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
        return load_config(base=_saved(text))


def _saved(text: str) -> dict:
    """A saved config's tables; one saved before `refine.paste` existed refined the whole face: it reads as false."""
    base = json.loads(text)
    base.get("refine", {}).setdefault("paste", False)
    return base


#: Table name -> its dataclass (BaselineConfig's fields).
_TABLES = {f.name: f.default_factory for f in dataclasses.fields(BaselineConfig)}
#: The baseline config file shipped inside the package (its values equal the dataclass defaults).
DEFAULT_BASELINE = PIPELINES_DIR / "baseline.toml"


def load_config(path: Optional[Path | str] = None, overrides: Iterable[str] = (), base: Optional[dict] = None) -> BaselineConfig:
    """Read a baseline TOML (else start from `base`, else the defaults) and apply `table.key=value` overrides;
    unknown tables or keys and bad values raise ConfigError."""
    return BaselineConfig(**load_tables(_TABLES, "baseline", path, overrides, base))


#: The effective config of a run, saved in the run folder so later stages and resumes reuse it.
RUN_CONFIG = "config.json"


def run_config(run_dir: Path | str, path: Optional[Path | str] = None, overrides: Iterable[str] = ()) -> BaselineConfig:
    """A run's config: `path` if given, else the run's saved config.json, else the defaults; then overrides."""
    saved = Path(run_dir) / RUN_CONFIG
    base = _saved(saved.read_text()) if path is None and saved.exists() else None
    return load_config(path, overrides, base)


def save_run_config(run_dir: Path | str, cfg: BaselineConfig) -> None:
    """Write the run's effective config (JSON), atomically."""
    with atomic_path(Path(run_dir) / RUN_CONFIG) as tmp:
        Path(tmp).write_text(json.dumps(dataclasses.asdict(cfg), indent=2, sort_keys=True) + "\n")


#: The pipeline config a training run keeps beside its checkpoints (from its shard set's meta.json).
PIPELINE_FILE = "pipeline.toml"


def save_pipeline(run_dir: Path | str, text: Optional[str]) -> Optional[Path]:
    """Write the pipeline config a shard set recorded (its meta.json's `pipeline`) to RUN/pipeline.toml (None if
    the set has none)."""
    if not text:
        return None
    path = Path(run_dir) / PIPELINE_FILE
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return path
