"""`meadkit prepare RAW -o OUT`: the whole pipeline, parallel and resumable."""
from __future__ import annotations

import sys

import click

from meadkit.commands.options import LocalFolder, filter_options, filters_from, parallel_options
from meadkit.take import STAGE_NAMES, stages_until

#: `--until`'s choices: the index alone, each per-take stage of `meadkit.take.STAGES`, or all and the shards.
UNTIL = ("index", *STAGE_NAMES, "shards")


def stages_for(until: str) -> tuple[str, ...]:
    """The per-take stages `--until` runs: none for index, every one for shards, else the declared list up to it."""
    return () if until == "index" else STAGE_NAMES if until == "shards" else stages_until(until)


@click.command()
@click.argument("raw", type=click.Path(exists=True, file_okay=False))
@click.option("-o", "--out", required=True, type=LocalFolder("prepare renames files into place, locks it and "
              "memory-maps its shards"), help="Output folder on a local disk (created; reruns resume in it).")
@click.option("--pipeline", "pipeline_file", type=click.Path(exists=True, dir_okay=False),
              help="Pipeline TOML with one table per stage (default: built-in defaults = meadkit/pipelines/default.toml).")
@click.option("--profile", type=str, metavar="NAME", help="A named pipeline shipped with meadkit: mead-paper (the "
              "default: the paper's recipe), talking-head-25 (25 fps, 16 kHz wav, tube crops, mfcc28 + mel80) or "
              "emote-style (25 fps, EMOTE's 1.35 / -0.1 landmark boxes at 384); see meadkit/pipelines/.")
@click.option("--set", "overrides", multiple=True, metavar="STAGE.KEY=VALUE", help="Override one setting, e.g. faces.crop_size=192 (repeatable).")
@filter_options
@parallel_options
@click.option("--until", type=click.Choice(UNTIL), default="shards", show_default=True,
              help="Stop after this stage (index: only write OUT/manifests/recordings.parquet; no take is touched).")
@click.option("--reindex", is_flag=True, help="Probe RAW again even if OUT's index is current (it is rebuilt anyway, "
              "with a one-line note, when RAW is another folder or its files changed since).")
@click.option("--strict", is_flag=True, help="Exit non-zero if any selected file, take or clip is not ok "
              "(with filters, only the files of the selected actors/emotions/... count).")
@click.option("--quiet", is_flag=True, help="No progress bar: a log line every minute instead.")
def command(raw, out, pipeline_file, profile, overrides, jobs, backend, scheduler, until, reindex, strict, quiet, **kw):
    """Index RAW (a MEAD tree and/or per-actor tars), then per take: sync the views to the reference
    audio, compute 28-dim MFCC per video frame, with `--set audio.export=true` write the window's
    audio (clips/ACTOR/TAKE/audio.wav), detect/track/align faces; write manifests under OUT/manifests
    and shards under OUT/shards.

    Work is per take, in parallel; every output is written under a temporary name and renamed, and a
    take's record is committed last, so a killed run resumes where it stopped (rerun the same command).
    Bad files become status rows with a reason; the run goes on. A full or read-only OUT stops the run
    with one line, and the take it hit is redone by the rerun.
    """
    from meadkit.config import ConfigError, load_pipeline
    from meadkit.prepare import run_prepare

    try:
        pipeline = load_pipeline(pipeline_file, overrides, profile)
    except ConfigError as e:
        raise click.UsageError(str(e)) from None
    try:
        summary = run_prepare(raw, out, pipeline, n_jobs=jobs, backend=backend, scheduler=scheduler, stages=stages_for(until),
                              reindex=reindex, progress=not quiet, shards=until == "shards", **filters_from(kw))
    except (RuntimeError, ValueError) as e:
        raise click.ClickException(str(e)) from None
    click.echo(summary.text())
    if strict and not summary.all_ok:
        sys.exit(1)
