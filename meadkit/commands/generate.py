"""`meadkit generate RUN --image FACE --audio SPEECH --emotion E --level L -o out.mp4`: a talking face from a trained run."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import click
import cv2

from meadkit.baseline.checkpoint import CheckpointError
from meadkit.baseline.config import PIPELINE_FILE
from meadkit.baseline.generate import generate
from meadkit.inputs import pipeline_settings
from meadkit.corpus.names import PAPER_EMOTIONS


@click.command()
@click.argument("run", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--image", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path), help="Face photo.")
@click.option("--audio", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path), help="Speech (.wav, .m4a, ...).")
@click.option("--emotion", required=True, help=f"One of {', '.join(PAPER_EMOTIONS)}.")
@click.option("--level", type=click.IntRange(1, 3), default=3, show_default=True, help="Intensity (neutral always uses 1).")
@click.option("-o", "--out", required=True, type=click.Path(dir_okay=False, path_type=Path), help="Output .mp4.")
@click.option("--size", type=click.IntRange(16, 4096), help="Output frame size, 16-4096 (default: the run's training size).")
@click.option("--device", default="cpu", show_default=True, help="cpu or cuda.")
@click.option("--pipeline", "pipeline_source", type=click.Path(exists=True, path_type=Path),
              help="The prepared OUT folder whose shards trained RUN (its config.toml), or that pipeline TOML: the face "
                   "is cropped and the audio featurized with its [faces] and [features] settings (default: RUN/pipeline.toml, "
                   "which train copies from the shard set).")
def command(run: Path, image: Path, audio: Path, emotion: str, level: int, out: Path, size: Optional[int], device: str,
            pipeline_source: Optional[Path]) -> None:
    """Align the face in --image, predict its mouth from --audio, render it with --emotion/--level at MEAD's
    frame rate and mux the audio into OUT."""
    pipeline_source = pipeline_source or (run / PIPELINE_FILE if (run / PIPELINE_FILE).is_file() else None)
    if pipeline_source:
        faces, features = pipeline_settings(pipeline_source)
    else:
        faces = features = None
        click.echo(f"generate: {run} has no {PIPELINE_FILE} (shards made before meadkit recorded it): default "
                   "[faces]/[features] settings; pass --pipeline OUT if RUN was trained on other ones", err=True)
    img = cv2.imread(str(image), cv2.IMREAD_COLOR)
    if img is None:
        raise click.ClickException(f"cannot read image {image}")
    try:
        res = generate(run, img, audio, emotion, level, out, device=device, out_size=size, faces_config=faces, features_config=features)
    except (CheckpointError, ValueError) as e:  # GenerateError and a bad --device are ValueErrors
        raise click.ClickException(str(e)) from None
    click.echo(f"wrote {res.path}: {res.n_frames} frames {res.size}x{res.size} at {res.fps:.4f} fps, audio {res.audio_duration_s:.3f} s")
