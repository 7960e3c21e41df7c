"""`pg2kit export`: a prepared folder -> the community's Def-GAN/PATN CSV files (and images)."""

from __future__ import annotations

from pathlib import Path

import click


@click.command(context_settings={"max_content_width": 100})
@click.argument("prepared", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["defgan"]),
    default="defgan",
    show_default=True,
    help="Exchange format to write.",
)
@click.option(
    "-o",
    "--out",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    metavar="DIR",
    help="Folder for the CSV files (created if needed).",
)
@click.option(
    "--images",
    is_flag=True,
    help="Also write every image as DIR/<split>/<name>, the names the CSVs use.",
)
@click.option("--quiet", is_flag=True, help="No progress bar.")
def export(prepared, fmt, out, images, quiet):
    """Write PREPARED's keypoints (and pairs) in the Def-GAN/PATN CSV formats.

    Files: <prefix>-annotation-<split>.csv (name:keypoints_y:keypoints_x) and, after
    `pg2kit pairs`, <prefix>-pairs-<split>.csv (from,to); prefix is market, fashion or the
    dataset name.

    \b
    Examples:
      pg2kit export prepared/market -o defgan/
      pg2kit export prepared/market -o market_data/ --images
    """
    from pg2kit.export import export_defgan
    from pg2kit.shards import SchemaError

    try:
        export_defgan(prepared, out, images=images, log=click.echo, progress=not quiet)
    except SchemaError as e:
        raise click.ClickException(str(e)) from None
