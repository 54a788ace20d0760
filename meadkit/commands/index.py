"""`meadkit index RAW -o OUT`: probe every recording of a MEAD download and write `manifests/recordings.parquet`."""
from __future__ import annotations

from pathlib import Path

import click

from meadkit.index import IndexConfig, index_corpus, summarize, write_recordings


@click.command()
@click.argument("raw", type=click.Path(exists=True, path_type=Path))
@click.option("-o", "--out", required=True, type=click.Path(file_okay=False, path_type=Path), help="Output folder.")
@click.option("-j", "--jobs", default=1, show_default=True, help="Parallel processes (-1 = all cores).")
@click.option("--strict", is_flag=True, help="Exit with status 1 if any recording is not 'ok'.")
@click.option("--quiet", is_flag=True, help="No progress bar and no summary.")
@click.option("--short-audio-tolerance", type=float, default=IndexConfig.short_audio_tolerance_s, show_default=True,
              help="Seconds the reference audio may fall short of its views' median video duration.")
def command(raw: Path, out: Path, jobs: int, strict: bool, quiet: bool, short_audio_tolerance: float) -> None:
    """Find every MEAD recording under RAW (a tree, per-actor tars, or both), probe it, and report defects.

    Tars are read in place, never extracted. Writes OUT/manifests/recordings.parquet (one row per
    file, with a status and a readable error) and prints a per-actor summary.
    """
    config = IndexConfig(short_audio_tolerance_s=short_audio_tolerance)
    table = index_corpus(raw, config, n_jobs=jobs, progress=not quiet, exclude=[out])
    path = write_recordings(table, out)
    bad = sum(s != "ok" for s in table.column("status").to_pylist())
    if not quiet:
        click.echo(summarize(table))
        click.echo(f"wrote {path} ({table.num_rows} rows, {bad} not ok)")
    if strict and bad:
        click.echo(f"--strict: {bad} rows are not ok", err=True)
        raise SystemExit(1)
