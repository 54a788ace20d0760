"""`meadkit sync RAW -o OUT`: index and sync only (the first stages of `prepare`), writing sync.parquet."""
from __future__ import annotations

import click

from meadkit.commands.options import filter_options, filters_from, parallel_options


@click.command()
@click.argument("raw", type=click.Path(exists=True, file_okay=False))
@click.option("-o", "--out", required=True, type=click.Path(file_okay=False), help="Output folder (the same as prepare's).")
@click.option("--set", "overrides", multiple=True, metavar="STAGE.KEY=VALUE", help="Override a setting, e.g. sync.fallback=median.")
@filter_options
@parallel_options
@click.option("--quiet", is_flag=True, help="No progress bar.")
def command(raw, out, overrides, jobs, backend, scheduler, quiet, **kw):
    """Put every view of every take on the reference audio's clock: offsets, confidence, method and the
    common window per (take, view) in OUT/manifests/sync.parquet. Same as `meadkit prepare --until sync`."""
    from meadkit.config import ConfigError, load_pipeline
    from meadkit.prepare import run_prepare
    from meadkit.take import stages_until

    try:
        pipeline = load_pipeline(None, overrides)
        summary = run_prepare(raw, out, pipeline, n_jobs=jobs, backend=backend, scheduler=scheduler, stages=stages_until("sync"),
                              progress=not quiet, **filters_from(kw))
    except ConfigError as e:
        raise click.UsageError(str(e)) from None
    except (RuntimeError, ValueError) as e:
        raise click.ClickException(str(e)) from None
    click.echo(summary.text())
