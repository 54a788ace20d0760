"""Train the baseline stage by stage (classifiers -> a2l -> n2e -> refine) with exact resume.

Each stage trains for a number of steps on the train split, validates on a fixed val subset, logs to
RUN/logs/<stage>.csv (and TensorBoard when installed) and checkpoints to RUN/<stage>.pt. Batches are a
pure function of (seed, stage, step), and checkpoints hold model, optimizer, grad-scaler and RNG
states, so a resumed run takes exactly the steps an uninterrupted one would.
"""
from __future__ import annotations

import csv
import logging
import math
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from meadkit import __version__
from meadkit.atomic import atomic_path
from meadkit.baseline import losses as L
from meadkit.baseline.batch import Batch, class_weights, fixed_indices, gather, jitter, make_batch, step_indices
from meadkit.baseline.checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state, stage_path
from meadkit.baseline.config import BaselineConfig
from meadkit.baseline.flow import readback_noise, warp_as_flow, warp_target
from meadkit.baseline.heatmap import landmark_heatmap, refine_frames
from meadkit.baseline.inference import load_classifier, load_n2e, resolve_device
from meadkit.baseline.models import (
    N_EMOTIONS, N_LEVELS, Audio2Landmark, FaceClassifier, NeutralToEmotion, PatchDiscriminator, RefineUNet,
)
from meadkit.baseline.pca import MOUTH_IN_MOUTH_JAW, MOUTH_JAW, fit_pca, from_units, to_units

STAGES = ("classifiers", "a2l", "n2e", "refine")
#: Adam betas of the paper's code (a2l) and of the image networks; the classifiers use Adam's defaults.
BETAS = (0.5, 0.999)
logger = logging.getLogger("meadkit.baseline")


class TrainError(RuntimeError):
    """A training request that cannot proceed (existing run without --resume, empty split, ...)."""


def autocast(device: torch.device, enabled: bool):
    """Mixed precision: float16 on CUDA, bfloat16 on CPU; a no-op when disabled."""
    if not enabled:
        return nullcontext()
    return torch.autocast(device.type, dtype=torch.float16 if device.type == "cuda" else torch.bfloat16)


@dataclass
class Context:
    """What every stage needs: settings, device, data, run folder, log sink."""

    run_dir: Path
    cfg: BaselineConfig
    device: torch.device
    train_set: Sequence[dict]
    val_set: Optional[Sequence[dict]]
    vgg_weights: Optional[Path] = None
    log: Callable[[str], None] = logger.info

    def batch(self, indices: list[int], data: Sequence[dict]) -> Batch:
        return make_batch(gather(data, indices), self.cfg.train.size, self.device)


class Stage:
    """One training stage: its models and optimizers, a training step and a validation pass."""

    name = ""
    stream = 0  # distinguishes the stages' data orders

    def __init__(self, ctx: Context):
        self.ctx = ctx
        self.models: dict[str, nn.Module] = {}
        self.optimizers: dict[str, torch.optim.Optimizer] = {}
        self.scalers: dict[str, torch.amp.GradScaler] = {}
        self.base_lr: dict[str, float] = {}

    @property
    def amp(self) -> bool:
        return self.ctx.cfg.train.amp

    def add(self, name: str, model: nn.Module, lr: float, betas: tuple[float, float] = BETAS) -> nn.Module:
        model = model.to(self.ctx.device)
        self.models[name] = model
        self.optimizers[name] = torch.optim.Adam(model.parameters(), lr=lr, betas=betas)
        self.base_lr[name] = lr
        self.scalers[name] = torch.amp.GradScaler(self.ctx.device.type, enabled=self.amp and self.ctx.device.type == "cuda")
        return model

    def set_lr(self, step: int, steps: int) -> None:
        """Cosine decay from the base rate to 0 over the stage (a pure function of the step, so resume-safe)."""
        if self.ctx.cfg.train.lr_decay:
            for name, opt in self.optimizers.items():
                for group in opt.param_groups:
                    group["lr"] = self.base_lr[name] * 0.5 * (1 + math.cos(math.pi * step / steps))

    def optimize(self, name: str, loss: torch.Tensor) -> None:
        opt, scaler = self.optimizers[name], self.scalers[name]
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()

    def hparams(self) -> dict:
        return {}

    def prepare(self) -> None:
        """Work done once before the first step of a fresh run (e.g. fitting the PCA)."""

    def train_step(self, b: Batch) -> dict[str, float]:
        raise NotImplementedError

    @torch.no_grad()
    def validate(self, b: Batch) -> dict[str, float]:
        """Metrics on a validation batch, averaged over its samples (or over `_n` of them, when it says so)."""
        raise NotImplementedError

    def state(self, step: int) -> dict:
        return {
            "stage": self.name,
            "step": step,
            "meadkit_version": __version__,
            "config": self.ctx.cfg.to_json(),
            "hparams": self.hparams(),
            "models": {k: m.state_dict() for k, m in self.models.items()},
            "optimizers": {k: o.state_dict() for k, o in self.optimizers.items()},
            "scalers": {k: s.state_dict() for k, s in self.scalers.items()},
            "rng": rng_state(self.ctx.device),
        }

    def load_state(self, ck: dict) -> int:
        for k, m in self.models.items():
            m.load_state_dict(ck["models"][k])
        for k, o in self.optimizers.items():
            o.load_state_dict(ck["optimizers"][k])
        for k, s in self.scalers.items():
            if ck["scalers"].get(k):
                s.load_state_dict(ck["scalers"][k])
        set_rng_state(ck["rng"], self.ctx.device)
        return int(ck["step"])


class ClassifierStage(Stage):
    """Emotion and intensity classifiers on real frames (cross-entropy on both heads)."""

    name, stream = "classifiers", 1

    def __init__(self, ctx: Context):
        super().__init__(ctx)
        c = ctx.cfg.classifiers
        self.net = self.add("classifier", FaceClassifier(c.width, c.reference), c.lr, (0.9, 0.999))
        #: per-class loss weights of each head (`classifiers.balance`), from the training set's labels
        self.weights = {key: class_weights(ctx.train_set, key, n).to(ctx.device) if c.balance else None
                        for key, n in (("emotion", N_EMOTIONS), ("level", N_LEVELS))}

    def hparams(self) -> dict:
        return {"width": self.ctx.cfg.classifiers.width, "reference": self.ctx.cfg.classifiers.reference}

    def train_step(self, b: Batch) -> dict[str, float]:
        self.net.train()
        x = torch.cat([b.frame, b.neutral], 1)  # one colour and shift draw for a frame and its neutral reference
        x = jitter(x, grey=self.ctx.cfg.classifiers.grey) if self.ctx.cfg.classifiers.augment else x
        with autocast(self.ctx.device, self.amp):
            e, lv = self.net(x[:, :3], x[:, 3:])
        loss_e = F.cross_entropy(e.float(), b.emotion, weight=self.weights["emotion"])
        loss_l = F.cross_entropy(lv.float(), b.level, weight=self.weights["level"])
        self.optimize("classifier", loss_e + loss_l)
        return {"loss_emotion": loss_e.item(), "loss_level": loss_l.item()}

    @torch.no_grad()
    def validate(self, b: Batch) -> dict[str, float]:
        self.net.eval()
        e, lv = self.net(b.frame, b.neutral)
        return {"acc_emotion": (e.argmax(1) == b.emotion).float().mean().item(), "acc_level": (lv.argmax(1) == b.level).float().mean().item()}


class A2LStage(Stage):
    """Audio-to-landmarks: MSE on PCA coefficients of mouth+jaw landmarks (PCA fitted on train), from the audio, the
    labels and the neutral frame's mouth+jaw (`a2l.anchor`)."""

    name, stream = "a2l", 2

    def __init__(self, ctx: Context):
        super().__init__(ctx)
        c = ctx.cfg.a2l
        n_mfcc = ctx.train_set.mfcc_shape[1]  # the shard set's width
        self.net = self.add("a2l", Audio2Landmark(c.n_coeffs, c.hidden, c.layers, c.use_labels, n_mfcc, anchor=c.anchor), c.lr)

    def hparams(self) -> dict:
        c = self.ctx.cfg.a2l
        return {"n_coeffs": c.n_coeffs, "hidden": c.hidden, "layers": c.layers, "use_labels": c.use_labels, "anchor": c.anchor}

    def prepare(self) -> None:
        """Fit the shape statistics, the PCA (of the shapes, or anchored of their changes from the neutral frames')
        and the MFCC standardisation on (a fixed subset of) the train split."""
        data, size = self.ctx.train_set, self.ctx.cfg.train.size
        idx = fixed_indices(len(data), self.ctx.cfg.a2l.fit_samples, self.ctx.cfg.train.seed)
        shapes, anchors, mfcc, labels = [], [], [], []
        for i in range(0, len(idx), 256):
            b = self.ctx.batch(idx[i : i + 256], data)
            shapes.append(to_units(b.landmarks[b.valid][:, MOUTH_JAW], size))
            anchors.append(to_units(b.neutral_landmarks[b.valid][:, MOUTH_JAW], size))
            labels.append((b.emotion * N_LEVELS + b.level)[b.valid])
            mfcc.append(b.mfcc)
        m, shapes, anchors, labels = torch.cat(mfcc).flatten(0, 1), torch.cat(shapes), torch.cat(anchors), torch.cat(labels)
        if len(shapes) < 2:
            raise TrainError("a2l: fewer than 2 training frames with landmarks")
        flat = shapes.flatten(1)
        self.net.set_mean_shape(flat.mean(0))
        pca = fit_pca(shapes - self.net.start(anchors, len(shapes)), self.ctx.cfg.a2l.n_coeffs)
        # per (emotion, level) mean shape, the global mean where a label is absent: a stronger baseline for evaluate
        counts = torch.bincount(labels, minlength=N_EMOTIONS * N_LEVELS).float()[:, None]
        sums = flat.new_zeros(N_EMOTIONS * N_LEVELS, flat.shape[1]).index_add_(0, labels, flat)
        label_means = torch.where(counts > 0, sums / counts.clamp_min(1), flat.mean(0))
        self.net.set_statistics(pca, m.mean(0), m.std(0), label_means)
        of = "the changes from their neutral frames of " if self.net.anchor == "neutral" else ""
        self.ctx.log(f"a2l: PCA of {of}{len(shapes)} training shapes, {pca.components.shape[0]} components")

    def train_step(self, b: Batch) -> dict[str, float]:
        self.net.train()
        v = b.valid  # frames without landmarks (NaN in the shards) do not teach the mouth, and must not touch the loss
        size = self.ctx.cfg.train.size
        true, neutral = (to_units(lm[v][:, MOUTH_JAW], size) for lm in (b.landmarks, b.neutral_landmarks))
        target = self.net.target(true, neutral)
        with autocast(self.ctx.device, self.amp):
            pred = self.net(b.mfcc, b.emotion, b.level)
        loss = ((pred.float()[v] - target) ** 2).mean() if v.any() else pred.float().sum() * 0.0
        self.optimize("a2l", loss)
        return {"loss_pca": loss.item()}

    @torch.no_grad()
    def validate(self, b: Batch) -> dict[str, float]:
        """Mouth errors over the frames with landmarks (`_n` of them: the average's weight), of a2l and of the mean
        shape; a model whose predictions are NaN reads NaN, not 0."""
        self.net.eval()
        size = self.ctx.cfg.train.size
        v = b.valid
        anchor = to_units(b.neutral_landmarks[v][:, MOUTH_JAW], size)
        pred = from_units(self.net.predict_shape(b.mfcc[v], b.emotion[v], b.level[v], anchor), size)[:, MOUTH_IN_MOUTH_JAW]
        true = b.landmarks[v][:, MOUTH_JAW][:, MOUTH_IN_MOUTH_JAW]
        mean = from_units(self.net.mean_shape(), size)[MOUTH_IN_MOUTH_JAW]
        n = int(v.sum())
        if not n:
            return {"mouth_err_px": 0.0, "mean_shape_err_px": 0.0, "_n": 0}
        return {"mouth_err_px": (pred - true).norm(dim=-1).mean().item(),
                "mean_shape_err_px": (mean - true).norm(dim=-1).mean().item(), "_n": n}


def make_perceptual(ctx: Context, classifier: FaceClassifier) -> Optional[L.PerceptualLoss]:
    """VGG16 perceptual loss from --vgg-weights, else the `classifier`-feature substitute, else (a flow-only
    classifier, whose features pass no gradient to the images) none; which one is announced."""
    if ctx.vgg_weights is not None:
        loss = L.PerceptualLoss(vgg=L.load_vgg16(ctx.vgg_weights).to(ctx.device))
        ctx.log(f"perceptual loss: VGG16 features (relu1_2..relu4_3) from {ctx.vgg_weights}")
        return loss
    if not classifier.image_gradient:
        ctx.log("perceptual loss: OFF: no --vgg-weights given, and the flow-only face classifier's features (the "
                "substitute) pass no gradient to the images (classifiers.reference=flow_only)")
        return None
    ctx.log(
        "perceptual loss: no --vgg-weights given, using the SUBSTITUTE: L1 between activations of the "
        "trained face classifier's 4 conv blocks (RUN/classifiers.pt), not VGG16"
    )
    return L.PerceptualLoss(classifier=classifier)


def perceptual_loss(loss: Optional[L.PerceptualLoss], output: torch.Tensor, target: torch.Tensor,
                    neutral: torch.Tensor) -> torch.Tensor:
    """`loss` of output against target (0 when there is none, see make_perceptual)."""
    return loss(output, target, neutral) if loss is not None else output.new_zeros(())


class N2EStage(Stage):
    """Neutral-to-emotion transformer: neutral frame + labels -> the frame with that emotion; L1 + perceptual."""

    name, stream = "n2e", 3

    def __init__(self, ctx: Context):
        super().__init__(ctx)
        c = ctx.cfg.n2e
        self.net = self.add("n2e", NeutralToEmotion(c.width, c.n_res, c.warp), c.lr)
        self.classifier = load_classifier(ctx.run_dir, ctx.device)
        self.perceptual = make_perceptual(ctx, self.classifier)

    def hparams(self) -> dict:
        return {"width": self.ctx.cfg.n2e.width, "n_res": self.ctx.cfg.n2e.n_res, "warp": self.ctx.cfg.n2e.warp}

    def train_step(self, b: Batch) -> dict[str, float]:
        c = self.ctx.cfg.n2e
        self.net.train()
        pair = torch.cat([b.frame, b.neutral], 1)  # one colour and shift draw for the target and its neutral face
        pair = jitter(pair, grey=c.grey) if c.augment else pair
        frame, neutral = pair[:, :3], pair[:, 3:]
        with autocast(self.ctx.device, self.amp):
            out, flow = self.net.transform(neutral, b.emotion, b.level)
            l1 = F.l1_loss(out.float(), frame)
            perc = perceptual_loss(self.perceptual, out, frame, neutral)
        loss, logs = c.w_l1 * l1 + c.w_perceptual * perc, {"l1": l1.item(), "perceptual": perc.item()}
        if flow is not None and c.w_flow > 0:
            limit = 0.95 * self.net.max_flow  # inside tanh's range: a target at the limit would pull it to saturate
            real = warp_target(neutral, frame, c.flow).clamp(-limit, limit)
            loss_flow = F.l1_loss(flow, real) / self.net.max_flow
            loss, logs["flow"] = loss + c.w_flow * loss_flow, loss_flow.item()
        if flow is not None and c.w_classifier > 0 and not self.classifier.image_gradient:
            seen = readback_noise(warp_as_flow(flow), c.flow_noise)
            loss_cls = L.label_loss(*self.classifier.read_flow(seen), b.emotion, b.level)
            loss, logs["classifier"] = loss + c.w_classifier * loss_cls, loss_cls.item()
        self.optimize("n2e", loss)
        return logs

    @torch.no_grad()
    def validate(self, b: Batch) -> dict[str, float]:
        self.net.eval()
        out = self.net(b.neutral, b.emotion, b.level)
        e, lv = self.classifier(out, b.neutral)
        return {"l1": F.l1_loss(out, b.frame).item(), "acc_emotion_generated": (e.argmax(1) == b.emotion).float().mean().item()}


class RefineStage(Stage):
    """Refinement U-Net on the n2e output + lower-face heatmap, against a PatchGAN (LSGAN) discriminator."""

    name, stream = "refine", 4

    def __init__(self, ctx: Context):
        super().__init__(ctx)
        c = ctx.cfg.refine
        self.net = self.add("refine", RefineUNet(c.width), c.lr)
        self.disc = self.add("discriminator", PatchDiscriminator(c.d_width), c.lr)
        self.n2e = load_n2e(ctx.run_dir, ctx.device)
        self.classifier = load_classifier(ctx.run_dir, ctx.device)
        self.perceptual = make_perceptual(ctx, self.classifier)
        if not self.classifier.image_gradient:
            ctx.log("refine: classifier loss OFF: the flow-only face classifier passes no gradient to the images "
                    "(classifiers.reference=flow_only); refine.w_classifier is not used")

    def hparams(self) -> dict:
        return {"width": self.ctx.cfg.refine.width, "d_width": self.ctx.cfg.refine.d_width}

    def _inputs(self, b: Batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """n2e's coarse faces, the frames' mouth+jaw landmarks (pixels) and their heatmap."""
        with torch.no_grad(), autocast(self.ctx.device, self.amp):
            coarse = self.n2e(b.neutral, b.emotion, b.level).float()
        mouth_jaw = b.landmarks[:, MOUTH_JAW]
        return coarse, mouth_jaw, landmark_heatmap(mouth_jaw, self.ctx.cfg.train.size)

    def train_step(self, b: Batch) -> dict[str, float]:
        c, dev = self.ctx.cfg.refine, self.ctx.device
        self.net.train()
        self.disc.train()
        coarse, mouth_jaw, hm = self._inputs(b)
        with autocast(dev, self.amp):
            out, region = refine_frames(self.net, coarse, hm, mouth_jaw, c.paste)
            # with paste the discriminator judges the painted region alone: n2e's face outside it is not refine's to fix
            weight = 1.0 if region is None else region
            real, fake = b.frame * weight, out * weight
            d_loss = L.lsgan_discriminator(self.disc(real, hm).float(), self.disc(fake.detach(), hm).float())
        self.optimize("discriminator", d_loss)
        with autocast(dev, self.amp):
            adv = L.lsgan_generator(self.disc(fake, hm).float())
            perc = perceptual_loss(self.perceptual, out, b.frame, b.neutral)
            cls = (L.classifier_loss(self.classifier, out, b.neutral, b.emotion, b.level) if self.classifier.image_gradient
                   else out.new_zeros(()))
        out = out.float()
        l1 = F.l1_loss(out, b.frame)
        box = L.mouth_mask(b.landmarks[:, 48:68], out.shape[-1])
        mouth, keep = L.masked_l1(out, b.frame, box), L.masked_l1(out, coarse, 1 - box)
        tv = L.total_variation(out)
        g_loss = (c.w_l1 * l1 + c.w_mouth * mouth + c.w_perceptual * perc + c.w_tv * tv + c.w_adv * adv + c.w_classifier * cls
                  + c.w_keep * keep)
        self.optimize("refine", g_loss)
        return {"l1": l1.item(), "mouth_l1": mouth.item(), "keep": keep.item(), "perceptual": perc.item(), "tv": tv.item(),
                "adv": adv.item(), "classifier": cls.item(), "d": d_loss.item()}

    @torch.no_grad()
    def validate(self, b: Batch) -> dict[str, float]:
        self.net.eval()
        coarse, mouth_jaw, hm = self._inputs(b)
        out, _ = refine_frames(self.net, coarse, hm, mouth_jaw, self.ctx.cfg.refine.paste)
        e, _ = self.classifier(out, b.neutral)
        mouth = L.masked_l1(out, b.frame, L.mouth_mask(b.landmarks[:, 48:68], out.shape[-1]))
        return {"l1": F.l1_loss(out, b.frame).item(), "mouth_l1": mouth.item(), "acc_emotion_generated": (e.argmax(1) == b.emotion).float().mean().item()}


STAGE_CLASSES = {cls.name: cls for cls in (ClassifierStage, A2LStage, N2EStage, RefineStage)}


class MetricLog:
    """Long-format CSV log (step, split, metric, value) per stage, plus TensorBoard when it is installed."""

    def __init__(self, path: Path, resume_step: int):
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        rows = []
        if path.exists() and resume_step > 0:  # drop rows written after the checkpoint we resume from
            with open(path, newline="") as f:
                rows = [r for r in csv.reader(f)][1:]
            rows = [r for r in rows if int(r[0]) <= resume_step]
        with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
            csv.writer(f).writerows([["step", "split", "metric", "value"], *rows])
        self.file = open(path, "a", newline="")
        self.writer = csv.writer(self.file)
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(path.parent / "tensorboard" / path.stem))
        except ImportError:
            self.tb = None

    def write(self, step: int, split: str, metrics: dict[str, float]) -> None:
        for k, v in metrics.items():
            self.writer.writerow([step, split, k, f"{v:.6g}"])
            if self.tb is not None:
                self.tb.add_scalar(f"{split}/{k}", v, step)
        self.file.flush()

    def close(self) -> None:
        self.file.close()
        if self.tb is not None:
            self.tb.close()


def _validate(stage: Stage, ctx: Context) -> dict[str, float]:
    data = ctx.val_set
    idx = fixed_indices(len(data), ctx.cfg.train.val_samples, ctx.cfg.train.seed + 1)
    sums: dict[str, float] = {}
    n = 0
    for i in range(0, len(idx), ctx.cfg.train.batch_size):
        chunk = idx[i : i + ctx.cfg.train.batch_size]
        metrics = stage.validate(ctx.batch(chunk, data))
        w = metrics.pop("_n", len(chunk))  # a stage that scores only some samples says how many
        n += w
        for k, v in metrics.items():
            sums[k] = sums.get(k, 0.0) + v * w
    return {k: v / max(n, 1) for k, v in sums.items()}


def run_stage(name: str, ctx: Context, steps: int, resume: bool = False) -> dict[str, float]:
    """Train one stage up to `steps` total steps (continuing a checkpoint with `resume`); returns last val metrics."""
    cfg, path = ctx.cfg.train, stage_path(ctx.run_dir, name)
    if path.exists() and not resume:
        raise TrainError(f"{path} exists: pass --resume to continue it, or use a new run folder")
    cls = STAGE_CLASSES[name]
    batch_size = batch_size_of(ctx.cfg, name)
    torch.manual_seed(cfg.seed * 100 + cls.stream)
    stage = cls(ctx)
    start = 0
    if path.exists():
        start = stage.load_state(load_checkpoint(path, ctx.device))
        ctx.log(f"{name}: resuming at step {start}")
    else:
        stage.prepare()
    if start >= steps:
        ctx.log(f"{name}: already trained {start} >= {steps} steps")
        return {}
    log = MetricLog(ctx.run_dir / "logs" / f"{name}.csv", start)
    sums: dict[str, float] = {}
    val: dict[str, float] = {}
    t0, n_done = time.perf_counter(), 0
    t_start = t0
    try:
        for step in range(start, steps):
            b = ctx.batch(step_indices(len(ctx.train_set), batch_size, cfg.seed, cls.stream, step), ctx.train_set)
            stage.set_lr(step, steps)
            for k, v in stage.train_step(b).items():
                sums[k] = sums.get(k, 0.0) + v
            n_done += 1
            done = step + 1
            if done % cfg.log_every == 0 or done == steps:
                avg = {k: v / n_done for k, v in sums.items()}
                log.write(done, "train", avg)
                rate = n_done / (time.perf_counter() - t0)
                ctx.log(f"{name} step {done}/{steps} " + " ".join(f"{k}={v:.4g}" for k, v in avg.items()) + f" ({rate:.1f} steps/s)")
                sums, n_done, t0 = {}, 0, time.perf_counter()
            if ctx.val_set is not None and len(ctx.val_set) and (done % cfg.val_every == 0 or done == steps):
                val = _validate(stage, ctx)
                log.write(done, "val", val)
                ctx.log(f"{name} val @ {done}: " + " ".join(f"{k}={v:.4g}" for k, v in val.items()))
            if done % cfg.checkpoint_every == 0 or done == steps:
                save_checkpoint(path, stage.state(done))
    finally:
        log.close()
    ctx.log(f"{name}: {steps - start} steps in {time.perf_counter() - t_start:.1f} s")
    return val


def batch_size_of(cfg: BaselineConfig, stage: str) -> int:
    """A stage's batch size: its own `batch_size` when set (> 0), else train.batch_size."""
    return getattr(getattr(cfg, stage), "batch_size", 0) or cfg.train.batch_size


def steps_for(cfg: BaselineConfig, stage: str, n_train: int, steps: Optional[int], epochs: Optional[float]) -> int:
    """A stage's step count: --steps, else --epochs x batches per epoch, else the config's value."""
    if steps is not None:
        return steps
    if epochs is not None:
        return max(1, math.ceil(epochs * max(1, n_train // batch_size_of(cfg, stage))))
    return getattr(cfg, stage).steps


def train(
    run_dir: Path | str,
    cfg: BaselineConfig,
    train_set: Sequence[dict],
    val_set: Optional[Sequence[dict]] = None,
    stages: Sequence[str] = STAGES,
    resume: bool = False,
    steps: Optional[int] = None,
    epochs: Optional[float] = None,
    vgg_weights: Optional[Path | str] = None,
    log: Callable[[str], None] = logger.info,
) -> dict[str, dict[str, float]]:
    """Train the given stages in order into `run_dir`; returns each stage's last validation metrics."""
    if len(train_set) == 0:
        raise TrainError("the train split is empty")
    if cfg.train.size % 8:
        raise TrainError(f"size must be a multiple of 8, got {cfg.train.size}")
    bad = [s for s in stages if s not in STAGES]
    if bad:
        raise TrainError(f"unknown stage(s) {bad}; known: {list(STAGES)}")
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    try:
        device = resolve_device(cfg.train.device)
    except ValueError as e:
        raise TrainError(str(e)) from None
    if cfg.train.threads > 0:
        torch.set_num_threads(cfg.train.threads)
    if cfg.train.amp and device.type == "cpu":
        log("--amp on CPU: bfloat16 autocast (float16 + grad scaling is used on CUDA)")
    ctx = Context(run_dir, cfg, device, train_set, val_set, Path(vgg_weights) if vgg_weights else None, log)
    if not val_set:
        log("no validation samples: training without monitoring")
    results = {}
    for name in [s for s in STAGES if s in stages]:
        n = steps_for(cfg, name, len(train_set), steps, epochs)
        log(f"stage {name}: {n} steps, batch {batch_size_of(cfg, name)}, size {cfg.train.size}, device {device}")
        results[name] = run_stage(name, ctx, n, resume)
    return results
