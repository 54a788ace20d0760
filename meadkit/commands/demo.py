"""`meadkit demo [DIR]`: every command on a small built-in synthetic corpus."""
from __future__ import annotations

import click

from meadkit.commands.options import jobs_option


@click.command()
@click.argument("root", default="meadkit-demo", type=click.Path(file_okay=False))
@click.option("--quick", is_flag=True, help="A smaller corpus and a few training steps (about a minute; used by the tests).")
@jobs_option(default=2, what="Worker processes")
def command(root, quick, jobs):
    """Synthesize a small MEAD-shaped corpus in ROOT, prepare it, select and shard it, train the baseline
    briefly, evaluate it, generate a talking-face clip and write the HTML report; print where each output is."""
    from meadkit.cli import main
    from meadkit.demo import run_demo

    def run(args: list[str]) -> None:
        main.main(args=args, prog_name="meadkit", standalone_mode=False)

    try:
        run_demo(root, run, quick=quick, jobs=jobs, echo=click.echo)
    except click.ClickException:
        raise
    except Exception as e:  # a failing step is reported as such, not as a traceback
        raise click.ClickException(f"demo step failed: {type(e).__name__}: {e}") from None
