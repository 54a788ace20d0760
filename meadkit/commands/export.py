"""`meadkit export OUT --format webdataset|hf -o DEST|URL [filters] [--shard-bytes 1GB] [--shard-samples N]`."""
from __future__ import annotations

import click

from meadkit.commands.options import filter_options, filters_from


@click.command()
@click.argument("out", type=click.Path(exists=True, file_okay=False))
@click.option("--format", "format_", type=click.Choice(["webdataset", "hf"]), default="webdataset", show_default=True,
              help="webdataset: tar shards of (mp4, npz, json) samples, one per clip; hf: a Parquet dataset for "
                   "Hugging Face `datasets`, DEST/data/<split>.parquet, one row per clip.")
@filter_options
@click.option("--split", "split_", metavar="LIST", multiple=True, help="Keep only these splits: train,val,test (comma separated or repeated).")
@click.option("--shard-bytes", default="1GB", show_default=True, help="Upper bound of one shard's size (e.g. 500MB, 2GiB).")
@click.option("--shard-samples", type=click.IntRange(1), default=10_000, show_default=True, help="Most samples in one shard.")
@click.option("-o", "--out", "dest", required=True, metavar="DEST",
              help="Destination folder, or an fsspec URL (s3://bucket/prefix, gs://...; credentials from the usual "
                   "environment, e.g. AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_ENDPOINT_URL); reruns resume in it.")
@click.option("--overwrite", is_flag=True, help="Replace an export of another selection (or write into a folder holding other data).")
def command(out, format_, shard_bytes, shard_samples, dest, overwrite, **kw):
    """Export the finished clips of OUT (status ok) for other training stacks. WebDataset: shards DEST/mead-%06d.tar,
    one split each, bounded by --shard-bytes and --shard-samples; each sample (key <take_id>_<view>) holds the crop
    video (mp4), its arrays (npz: landmarks, valid, transforms, mfcc; no pickle) and its labels, split, frame rate,
    sync figures and provenance (json). DEST/meta.json lists each split's shards, DEST/index.parquet each sample's.
    Shards appear under their names only when complete (on object storage: each written locally, then uploaded
    whole); a rerun keeps them and writes the rest.

    Hugging Face (--format hf): DEST/data/<split>.parquet, one row per clip with its labels, split, sync figures,
    the crop video's bytes (`video`) and the per-frame arrays as list columns (landmarks, valid, score,
    transform, mfcc, padded); load with datasets.load_dataset("parquet", data_files={"train": "DEST/data/train.parquet"}).

    Example: meadkit export prepared -o wds; then webdataset.WebDataset(meadkit.export.split_urls("wds", "train")).decode()
    (for s3:// or gs://, call meadkit.export.use_fsspec() first: webdataset then streams the shards through fsspec).
    """
    from meadkit.export import ExportConfig, ExportError, export_hf, export_webdataset
    from meadkit.select import SelectError
    from meadkit.shards import parse_bytes
    from meadkit.storage import StorageError

    filters = filters_from(kw)
    try:
        config = ExportConfig(shard_bytes=parse_bytes(shard_bytes), shard_samples=shard_samples)
        if format_ == "hf":
            summary = export_hf(out, dest, overwrite=overwrite, **filters)
        else:
            summary = export_webdataset(out, dest, config, overwrite=overwrite, **filters)
    except (SelectError, ValueError) as e:
        raise click.UsageError(str(e)) from None
    except (ExportError, StorageError) as e:
        raise click.ClickException(str(e)) from None
    per_split = ", ".join(f"{s} {n}" for s, n in sorted(summary.splits.items()))
    click.echo(f"{summary.samples} samples in {summary.shards_written + summary.shards_kept} shard(s) ({per_split}; "
               f"{summary.shards_kept} kept from an earlier run), {summary.bytes / 1e9:.2f} GB -> {dest}")
