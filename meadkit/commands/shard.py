"""`meadkit shard OUT [--select subset.parquet | filters] [--size 128] [--shard-bytes 1GB] -o SHARDS`."""
from __future__ import annotations

import sys

import click

from meadkit.commands.options import LocalFolder, filter_options, filters_from, parallel_options


@click.command()
@click.argument("out", type=click.Path(exists=True, file_okay=False))
@click.option("--select", "select_file", type=click.Path(exists=True, dir_okay=False),
              help="Shard only the clips listed in this Parquet file (from `meadkit select` on this OUT: every row must "
                   "be a clip of OUT's manifest, with paths inside OUT).")
@filter_options
@click.option("--split", "split_", metavar="LIST", multiple=True, help="Keep only these splits: train,val,test (comma separated or repeated).")
@click.option("--size", type=int, default=128, show_default=True, help="Side of the square RGB frames stored (pixels).")
@click.option("--shard-bytes", default="1GB", show_default=True, help="Upper bound of one shard's size (e.g. 500MB, 2GiB).")
@parallel_options
@click.option("-o", "--out", "shards_dir", required=True, help="Shard set folder on a local disk (reruns resume in it).",
              type=LocalFolder("ShardDataset memory-maps the .npy files, and the set is swapped in by renames"))
@click.option("--verify", is_flag=True, help="Afterwards, re-read every shard file and check its sha256.")
@click.option("--strict", is_flag=True, help="Exit non-zero if any selected clip could not be sharded.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def command(out, select_file, size, shard_bytes, jobs, backend, scheduler, shards_dir, verify, strict, quiet, **kw):
    """Pack the prepared clips of OUT (aligned crops resized to --size, landmarks, MFCC, labels) into
    memory-mappable shards of bounded size with an index and checksums, for `meadkit.data.ShardDataset`.

    Only clips with status ok are sharded. The new set is built beside SHARDS and replaces it only when
    complete (the old set stays readable until then, also on a full disk); finished shards of an earlier
    run with the same inputs and settings are kept. A second `shard` into the same SHARDS is refused.
    """
    from meadkit.manifest import read_table
    from meadkit.runner import Executor
    from meadkit.select import SelectError, load_clips, select
    from meadkit.shards import ShardConfig, ShardError, build_shards, check_selection, parse_bytes, verify_shards

    filters = filters_from(kw)
    try:
        config = ShardConfig(size=size, shard_bytes=parse_bytes(shard_bytes))
        executor = Executor(jobs, backend, scheduler, "log" if quiet else "bar")
        clips = load_clips(out)
        if select_file:
            chosen = read_table(select_file)
            check_selection(chosen, clips, select_file)
            clips = chosen
        clips = select(clips, status=["ok"], **filters)
        meta = build_shards(out, shards_dir, config, clips, executor)
        if verify:
            verify_shards(shards_dir)
    except (SelectError, ValueError) as e:
        raise click.UsageError(str(e)) from None
    except ShardError as e:
        raise click.ClickException(str(e)) from None
    gb = sum(f["bytes"] for s in meta["shards"] for f in s["files"].values()) / 1e9
    click.echo(f"{meta['n_clips']} clips, {meta['n_frames']} frames in {len(meta['shards'])} shard(s), "
               f"{gb:.2f} GB at {meta['size']}px -> {shards_dir}" + (" (verified)" if verify else ""))
    if meta["n_failed"]:
        click.echo(f"{meta['n_failed']} clip(s) failed; see status/error in {shards_dir}/index.parquet", err=True)
        if strict:
            sys.exit(1)
