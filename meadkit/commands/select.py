"""`meadkit select OUT_OR_MANIFEST [filters] -o subset.parquet`: structured row selection."""
from __future__ import annotations

import click

from meadkit.commands.options import filter_options, filters_from
from meadkit.select import split_csv
from meadkit.splits import METHODS


@click.command()
@click.argument("source", type=click.Path(exists=True))
@filter_options
@click.option("--split", "split_", metavar="LIST", multiple=True, help="Keep only these splits: train,val,test (comma separated or repeated).")
@click.option("--split-method", type=click.Choice(METHODS),
              help="Recompute the split column with this preset before filtering (default: keep the manifest's; "
                   "see `[splits]` in the README): speakers, paper, mead-4, sequences, random, or file (--split-file).")
@click.option("--split-file", type=click.Path(dir_okay=False), help="With --split-method file: a take_id,split CSV.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of --split-method mead-4, sequences and random.")
@click.option("--export", "export", type=click.Path(dir_okay=False),
              help="Write the selected takes' split assignment as a take_id,split CSV (read back with "
                   "--set splits.method=file --set splits.file=CSV), so a split is reproduced exactly.")
@click.option("--status", "status_", metavar="LIST", default="ok", show_default=True, help="Keep only these statuses ('' for all).")
@click.option("--min", "minimum", metavar="COLUMN=NUMBER", multiple=True,
              help="Keep only clips whose curation column is at least NUMBER (repeatable), e.g. sharpness=50; "
                   "abs_<column> bounds the absolute value. A clip without a value is dropped.")
@click.option("--max", "maximum", metavar="COLUMN=NUMBER", multiple=True,
              help="Keep only clips whose curation column is at most NUMBER (repeatable), e.g. abs_av_offset_frames=1.")
@click.option("--no-flag", "no_flag", metavar="LIST", multiple=True,
              help="Drop clips with any of these quality flags (comma separated or repeated), e.g. duplicate,blurry.")
@click.option("-o", "--out", type=click.Path(dir_okay=False), help="Write the selected rows here (Parquet).")
def command(source, split_method, split_file, seed, export, minimum, maximum, no_flag, out, **kw):
    """Select clips from a prepared OUT folder (or a clips Parquet file) by actor, gender, emotion,
    level, view, take, split and status, and by quality (curation columns, flags); print counts by
    emotion x level x view."""
    from meadkit.manifest import write_table
    from meadkit.select import SelectError, counts, load_clips, parse_bound, select
    from meadkit.splits import SplitConfig, SplitFileError, assign_splits, write_split_file

    try:
        df = load_clips(source)
        if split_method:
            df["split"] = assign_splits(df, SplitConfig(method=split_method, seed=seed, file=split_file or ""))
        bounds = [dict(parse_bound(t) for t in given) for given in (minimum, maximum)]
        flags = [f for text in no_flag for f in split_csv(text) or ()]
        df = select(df, minimum=bounds[0], maximum=bounds[1], no_flag=flags, **filters_from(kw))
    except (SelectError, SplitFileError) as e:
        raise click.UsageError(str(e)) from None
    click.echo(f"{len(df)} clips, {df['take_id'].nunique() if len(df) else 0} takes")
    if len(df):
        click.echo(counts(df).to_string())
    if out:
        import pyarrow as pa

        write_table(pa.Table.from_pandas(df.reset_index(drop=True), preserve_index=False), out)
        click.echo(f"wrote {out}")
    if export:
        click.echo(f"wrote the split of {write_split_file(df, export)} takes to {export}")
