"""`meadkit train SHARDS -o RUN`: train the paper's baseline (classifiers -> a2l -> n2e -> refine) from shards."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import click

from meadkit.baseline.batch import open_split
from meadkit.baseline.checkpoint import CheckpointError
from meadkit.baseline.config import run_config, save_pipeline, save_run_config
from meadkit.baseline.losses import VGGWeightsError
from meadkit.baseline.train import STAGES, TrainError, train
from meadkit.config import ConfigError
from meadkit.shards import VERIFY_MODES, ShardError

#: `--verify` of train and evaluate.
verify_option = click.option(
    "--verify", type=click.Choice(VERIFY_MODES), default="full", show_default=True,
    help="Check SHARDS before reading: full = every sha256 (remembered in SHARDS/verified.json by file size and mtime, "
         "so later runs re-hash only changed files), size = byte sizes only, none = no check. NaN/inf values read "
         "are refused in every mode.")


@click.command()
@click.argument("shards", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("-o", "--out", "run", required=True, type=click.Path(file_okay=False, path_type=Path), help="Run folder (checkpoints, logs).")
@click.option("--stage", type=click.Choice([*STAGES, "all"]), default="all", show_default=True,
              help="Stage to train; 'all' runs classifiers, a2l, n2e, refine in order.")
@click.option("--steps", type=int, help="Total steps of each trained stage (default: the config's).")
@click.option("--epochs", type=float, help="Train each stage this many passes over the train split instead.")
@click.option("--batch-size", type=int, help="Samples per step of every stage [train/n2e/refine.batch_size: 32/16/16].")
@click.option("--size", type=int, help="Face size the networks see, multiple of 8 [train.size, 64].")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), help="[train.device, auto]")
@click.option("--amp", is_flag=True, default=None, help="Mixed precision (fp16 on CUDA, bf16 on CPU).")
@click.option("--resume", is_flag=True, help="Continue the stages' checkpoints in RUN (exactly where they stopped).")
@click.option("--seed", type=int, help="[train.seed, 0]")
@click.option("--config", "config_path", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Baseline TOML (see meadkit/pipelines/baseline.toml); default: RUN's saved config, else built-in defaults.")
@click.option("--set", "overrides", multiple=True, metavar="TABLE.KEY=VALUE", help="Override one setting, e.g. refine.w_tv=1e-4.")
@click.option("--vgg-weights", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="torchvision-format VGG16 state dict for the perceptual loss (else a substitute is used, see the log).")
@verify_option
def command(shards: Path, run: Path, stage: str, steps: Optional[int], epochs: Optional[float], batch_size: Optional[int],
            size: Optional[int], device: Optional[str], amp: Optional[bool], resume: bool, seed: Optional[int],
            config_path: Optional[Path], overrides: tuple[str, ...], vgg_weights: Optional[Path], verify: str) -> None:
    """Train the baseline from SHARDS (train split; val split monitors) into RUN.

    Writes RUN/<stage>.pt checkpoints (safe torch format), RUN/logs/<stage>.csv, RUN/train.log and
    RUN/config.json (the effective settings, reused by later stages and --resume) and RUN/pipeline.toml (the
    prepare settings that made SHARDS, so `generate` crops and featurizes as training did).
    """
    cli = [f"train.{k}={v!r}" if isinstance(v, str) else f"train.{k}={str(v).lower()}"
           for k, v in (("batch_size", batch_size), ("size", size), ("device", device), ("amp", amp), ("seed", seed)) if v is not None]
    if batch_size is not None:
        cli += [f"n2e.batch_size={batch_size}", f"refine.batch_size={batch_size}"]
    try:
        cfg = run_config(run, config_path, [*overrides, *cli])
        train_set = open_split(shards, "train", cfg, verify)
        val_set = open_split(shards, "val", cfg, verify)  # a full check is cached by then: only stats
        run.mkdir(parents=True, exist_ok=True)
        save_run_config(run, cfg)
        save_pipeline(run, train_set.meta.get("pipeline"))
        with open(run / "train.log", "a") as logfile:
            def log(msg: str) -> None:
                click.echo(msg)
                logfile.write(msg + "\n")
                logfile.flush()

            log(f"train: {len(train_set)} train samples, {len(val_set)} val samples from {shards}")
            results = train(run, cfg, train_set, val_set, STAGES if stage == "all" else (stage,), resume, steps, epochs, vgg_weights, log)
    except (TrainError, ConfigError, CheckpointError, ShardError, VGGWeightsError) as e:
        raise click.ClickException(str(e)) from None
    for name, metrics in results.items():
        if metrics:
            click.echo(f"{name}: " + " ".join(f"{k}={v:.4g}" for k, v in metrics.items()))
