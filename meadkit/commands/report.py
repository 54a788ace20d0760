"""`meadkit report OUT -o report.html [--run RUN]`: one self-contained HTML page about a prepared folder."""
from __future__ import annotations

import click


@click.command()
@click.argument("out", type=click.Path(exists=True, file_okay=False))
@click.option("-o", "--output", "html_path", default="report.html", show_default=True, type=click.Path(dir_okay=False),
              help="HTML file to write (images embedded; opens without a server).")
@click.option("--run", "run_dir", type=click.Path(exists=True, file_okay=False),
              help="A training run folder: adds its loss curves (*.csv, logs/*.csv) and evaluation (eval*.json).")
def command(out, html_path, run_dir):
    """Write an HTML report of a prepared OUT folder: the paper's Table 1 for this corpus, completeness
    heatmaps, every problem with its file and reason, sync and face quality per view, a contact sheet
    of aligned crops, landmarks on source frames, an MFCC plot, and (with --run) training curves.
    Sections whose inputs are missing say so."""
    from meadkit.report import build_report

    path = build_report(out, html_path, run_dir)
    click.echo(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB)")
