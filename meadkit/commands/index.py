"""`meadkit index RAW -o OUT`: probe every recording of a MEAD download and write `manifests/recordings.parquet`."""
from __future__ import annotations

from pathlib import Path

import click

from meadkit.commands.options import jobs_option
from meadkit.index import RECORDINGS_PATH, IndexConfig, check_out_of_raw, index_into, summarize
from meadkit.lock import OutputLock
from meadkit.runner import Executor


@click.command()
@click.argument("raw", type=click.Path(exists=True, path_type=Path))
@click.option("-o", "--out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Output folder (not RAW itself; one inside RAW is skipped while indexing).")
@jobs_option(what="Parallel probing processes")
@click.option("--strict", is_flag=True, help="Exit with status 1 if any recording is not 'ok'.")
@click.option("--quiet", is_flag=True, help="No progress bar and no summary.")
@click.option("--short-audio-tolerance", type=float, default=IndexConfig.short_audio_tolerance_s, show_default=True,
              help="Seconds the reference audio may fall short of its views' median video duration.")
def command(raw: Path, out: Path, jobs: int, strict: bool, quiet: bool, short_audio_tolerance: float) -> None:
    """Find every MEAD recording under RAW (a tree, per-actor tars, or both), probe it, and report defects.

    Tars are read in place, never extracted; symbolic links are followed only inside RAW. Writes
    OUT/manifests/recordings.parquet (one row per file, with a status, a readable error, and the
    known release defect it matches) and OUT/state/raw.json (which RAW was indexed, so `prepare`
    reindexes when RAW changes), and prints a per-actor summary. Holds OUT's lock, so it cannot
    run while a `prepare` writes the same OUT.
    """
    try:
        note = check_out_of_raw(raw, out)
    except ValueError as e:
        raise click.ClickException(str(e)) from None
    if note and not quiet:
        click.echo(note, err=True)
    config = IndexConfig(short_audio_tolerance_s=short_audio_tolerance)
    with OutputLock(out):
        table = index_into(raw, out, config, executor=Executor(jobs, progress="off" if quiet else "bar"))
    bad = sum(s != "ok" for s in table.column("status").to_pylist())
    if not quiet:
        click.echo(summarize(table))
        click.echo(f"wrote {out / RECORDINGS_PATH} ({table.num_rows} rows, {bad} not ok)")
    if strict and bad:
        click.echo(f"--strict: {bad} rows are not ok", err=True)
        raise SystemExit(1)
