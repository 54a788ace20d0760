"""`meadkit evaluate RUN SHARDS [--split test] [-o eval.json]`: show what the trained baseline learned."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import click

from meadkit.baseline.checkpoint import CheckpointError
from meadkit.baseline.evaluate import evaluate_run
from meadkit.commands.train import verify_option
from meadkit.shards import ShardError


@click.command()
@click.argument("run", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("shards", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--split", default="test", show_default=True, help="Split of the shard index to evaluate on.")
@click.option("-o", "--out", type=click.Path(dir_okay=False, path_type=Path), help="JSON output [RUN/eval_<split>.json].")
@click.option("--max-samples", default=2000, show_default=True, help="Evaluate a fixed subset of at most this many frames (0 = all).")
@click.option("--device", default="cpu", show_default=True, help="cpu or cuda.")
@verify_option
def command(run: Path, shards: Path, split: str, out: Optional[Path], max_samples: int, device: str, verify: str) -> None:
    """Classifier accuracy on real and generated frames, audio-to-landmark mouth error vs a mean-shape
    baseline, and PSNR/SSIM of generated frames; printed and written as JSON."""
    try:
        metrics = evaluate_run(run, shards, split, out, max_samples, device, verify)
    except (CheckpointError, ShardError, ValueError) as e:
        raise click.ClickException(str(e)) from None
    click.echo(json.dumps(metrics, indent=2, sort_keys=True))
