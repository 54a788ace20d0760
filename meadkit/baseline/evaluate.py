"""Evaluate a trained run on a shard split: does the baseline show it learned?

- classifiers' emotion / intensity accuracy on real frames, per emotion and per level, and the confusion matrices
  (rows: the true class, columns: the predicted one), so a class that fails does not hide in an average;
- the same classifiers on frames generated for the same labels from the actor's neutral frame and the
  sample's audio (the paper's real-vs-generated check: 86.29% vs 86.26%);
- audio-to-landmark mouth error against a mean-shape baseline (the training PCA mean), against the training mean
  shape of the sample's (emotion, level) — the stronger baseline when a2l sees the labels — and against the mouth of
  the actor's neutral frame itself (where a2l with `anchor="neutral"` starts from: it must beat it too);
- PSNR / SSIM of generated vs real frames.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from meadkit.atomic import atomic_path
from meadkit.baseline.batch import Batch, fixed_indices, gather, make_batch, open_split, to_uint8
from meadkit.baseline.inference import TrainedBaseline, load_run
from meadkit.baseline.pca import MOUTH_IN_MOUTH_JAW, MOUTH_JAW, from_units
from meadkit.baseline.models import N_EMOTIONS, N_LEVELS
from meadkit.corpus.names import PAPER_EMOTIONS
from meadkit.shards import verify_for_reading


class _Confusion:
    """Counts of (true, predicted) class pairs: overall and per-class accuracy, and the matrix itself."""

    def __init__(self, n: int):
        self.m = np.zeros((n, n), np.int64)

    def add(self, pred: torch.Tensor, true: torch.Tensor) -> None:
        np.add.at(self.m, (true.cpu().numpy(), pred.cpu().numpy()), 1)

    def overall(self) -> float:
        return float(np.trace(self.m) / max(self.m.sum(), 1))

    def per_class(self, names: Sequence[str]) -> dict[str, float]:
        """Accuracy of each class present (its diagonal count over its row)."""
        rows = self.m.sum(1)
        return {name: float(self.m[k, k] / rows[k]) for k, name in enumerate(names) if rows[k]}

    def as_json(self, names: Sequence[str]) -> dict:
        """The matrix with its labels: rows are the true class, columns the predicted one (frame counts)."""
        return {"labels": list(names), "matrix": self.m.tolist()}


LEVEL_NAMES = tuple(f"level_{k + 1}" for k in range(N_LEVELS))


class _Tally:
    """evaluate's running sums over batches: accuracies, mouth errors against both baselines, PSNR / SSIM."""

    def __init__(self, model: TrainedBaseline):
        self.model = model
        self.real_e, self.gen_e = _Confusion(N_EMOTIONS), _Confusion(N_EMOTIONS)
        self.real_l, self.gen_l = _Confusion(N_LEVELS), _Confusion(N_LEVELS)
        self.real_e_at = [_Confusion(N_EMOTIONS) for _ in range(N_LEVELS)]  # emotion accuracy at each level
        self.err, self.base_err, self.label_err, self.n_lm, self.psnr, self.ssim = 0.0, 0.0, 0.0, 0, [], []
        self.neutral_err, self.n_neutral = 0.0, 0  # over the frames whose neutral frame has landmarks too
        self.mean_px = from_units(model.a2l.mean_shape(), model.size)[MOUTH_IN_MOUTH_JAW]
        self.label_px = from_units(model.a2l.label_mean_shapes.view(N_EMOTIONS, N_LEVELS, -1, 2), model.size)[:, :, MOUTH_IN_MOUTH_JAW]

    def add(self, b: Batch) -> None:
        """Score one Batch: classify its real frames, generate its frames from the neutral ones and the audio."""
        model = self.model
        pe, pl = model.classify(b.frame, b.neutral)
        self.real_e.add(pe, b.emotion)
        self.real_l.add(pl, b.level)
        for level, acc in enumerate(self.real_e_at):
            acc.add(pe[b.level == level], b.emotion[b.level == level])
        mouth_jaw = model.mouth_jaw(b.mfcc, b.emotion, b.level, b.neutral_landmarks)
        gen = model.render(model.transform(b.neutral, b.emotion, b.level), mouth_jaw)
        ge, gl = model.classify(gen, b.neutral)
        self.gen_e.add(ge, b.emotion)
        self.gen_l.add(gl, b.level)
        v = b.valid
        true = b.landmarks[:, MOUTH_JAW][:, MOUTH_IN_MOUTH_JAW][v]
        self.err += (mouth_jaw[:, MOUTH_IN_MOUTH_JAW][v] - true).norm(dim=-1).mean(1).sum().item()
        self.base_err += (self.mean_px - true).norm(dim=-1).mean(1).sum().item()
        self.label_err += (self.label_px[b.emotion[v], b.level[v]] - true).norm(dim=-1).mean(1).sum().item()
        self.n_lm += int(b.valid.sum())
        both = torch.isfinite(b.neutral_landmarks).flatten(1).all(1)[v]
        own = b.neutral_landmarks[:, MOUTH_JAW][:, MOUTH_IN_MOUTH_JAW][v][both]
        self.neutral_err += (own - true[both]).norm(dim=-1).mean(1).sum().item()
        self.n_neutral += int(both.sum())
        for g, r in zip(to_uint8(gen).permute(0, 2, 3, 1).cpu().numpy(), to_uint8(b.frame).permute(0, 2, 3, 1).cpu().numpy()):
            self.psnr.append(peak_signal_noise_ratio(r, g, data_range=255))
            self.ssim.append(structural_similarity(r, g, channel_axis=-1, data_range=255))

    def metrics(self) -> dict:
        model = self.model
        mouth_err = self.err / max(self.n_lm, 1)
        mean_err = self.base_err / max(self.n_lm, 1)
        real_acc, gen_acc = self.real_e.overall(), self.gen_e.overall()
        return {
            "size": model.size,
            "emotion_accuracy_real": real_acc,
            "emotion_accuracy_generated": gen_acc,
            "generated_to_real_ratio": gen_acc / real_acc if real_acc else None,
            "intensity_accuracy_real": self.real_l.overall(),
            "intensity_accuracy_generated": self.gen_l.overall(),
            "emotion_accuracy_real_per_emotion": self.real_e.per_class(PAPER_EMOTIONS),
            "emotion_accuracy_generated_per_emotion": self.gen_e.per_class(PAPER_EMOTIONS),
            "emotion_accuracy_real_per_level": {name: acc.overall() for name, acc in zip(LEVEL_NAMES, self.real_e_at)
                                                if acc.m.sum()},
            "intensity_accuracy_real_per_level": self.real_l.per_class(LEVEL_NAMES),
            "emotion_confusion_real": self.real_e.as_json(PAPER_EMOTIONS),
            "emotion_confusion_generated": self.gen_e.as_json(PAPER_EMOTIONS),
            "intensity_confusion_real": self.real_l.as_json(LEVEL_NAMES),
            "a2l_mouth_error_px": mouth_err,
            "mean_shape_mouth_error_px": mean_err,
            "a2l_error_reduction": 1 - mouth_err / mean_err if mean_err else None,
            "a2l_uses_labels": model.a2l.use_labels,
            "label_mean_shape_mouth_error_px": self.label_err / max(self.n_lm, 1),
            "a2l_anchor": model.a2l.anchor,
            "neutral_frame_mouth_error_px": self.neutral_err / self.n_neutral if self.n_neutral else None,
            "a2l_error_reduction_vs_neutral_frame": 1 - mouth_err * self.n_neutral / self.neutral_err if self.neutral_err else None,
            "a2l_mouth_error_frac_of_crop": mouth_err / model.size,
            "n_landmark_frames": self.n_lm,
            "psnr_db": float(np.mean(self.psnr)),
            "ssim": float(np.mean(self.ssim)),
        }


@torch.no_grad()
def evaluate(
    model: TrainedBaseline,
    data: Sequence[dict],
    max_samples: int = 2000,
    batch_size: int = 64,
    seed: int = 0,
    device: torch.device | str = "cpu",
) -> dict:
    """Metrics of `model` on up to `max_samples` samples of `data` (a fixed subset spread over the set; 0 = all)."""
    if len(data) == 0:
        raise ValueError("no samples to evaluate")
    device = torch.device(device)
    idx = fixed_indices(len(data), max_samples or len(data), seed)
    tally = _Tally(model)
    for i in range(0, len(idx), batch_size):
        tally.add(make_batch(gather(data, idx[i : i + batch_size]), model.size, device))
    return {"n_samples": len(idx), "n_available": len(data), **tally.metrics()}


def write_report(metrics: dict, path: Path | str) -> None:
    """Write metrics as JSON, atomically."""
    with atomic_path(path) as tmp:
        Path(tmp).write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n")


def evaluate_run(run_dir: Path | str, shards_dir: Path | str, split: str = "test", out: Optional[Path | str] = None,
                 max_samples: int = 2000, device: str = "cpu", verify: str = "full") -> dict:
    """Load a run and its split of the shards (checked as `verify_for_reading` says), evaluate, and write JSON
    to `out` (default RUN/eval_<split>.json)."""
    verify_for_reading(shards_dir, verify)
    model = load_run(run_dir, device)
    data = open_split(shards_dir, split, model.config, verify="none")  # checked above, before the model loads
    metrics = {"run": str(run_dir), "shards": str(shards_dir), "split": split, **evaluate(model, data, max_samples, device=device)}
    write_report(metrics, out or Path(run_dir) / f"eval_{split}.json")
    return metrics
