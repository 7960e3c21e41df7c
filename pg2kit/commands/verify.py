"""`pg2kit verify`: full check of a prepared folder (every shard's sha256, datasets, names, pairs)."""

from __future__ import annotations

from pathlib import Path

import click

from pg2kit.commands.common import friendly_errors


@click.command(context_settings={"max_content_width": 100})
@click.argument("prepared", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--quiet", is_flag=True, help="No progress bar; print only problems and the verdict.")
@friendly_errors
def verify(prepared, quiet):
    """Check every file of PREPARED against its manifest; exit code 1 if anything is wrong.

    Reads every shard in full and compares its sha256 with manifest.json, checks the done
    markers, the datasets (dtypes, shapes, sample counts), every file name (plain names only),
    and pairs.h5 (made for these shards, pair ids inside their split). Prints one line per
    problem, naming the file. Every other command does the cheap part of these checks (sizes,
    markers, datasets, ids) each time it opens the folder.

    \b
    Examples:
      pg2kit verify prepared/market
      pg2kit verify prepared/market --quiet && pg2kit train prepared/market -o runs/m
    """
    from pg2kit.atomic import human_bytes
    from pg2kit.shards import verify as verify_folder

    report = verify_folder(prepared, progress=not quiet)
    for problem in report.problems:
        click.echo(f"problem: {problem}", err=True)
    if report.problems:
        raise click.ClickException(
            f"{prepared}: {len(report.problems)} problem(s) found; see the lines above"
        )
    click.echo(
        f"{prepared}: OK ({report.shards} shards, {report.samples} samples, "
        f"{human_bytes(report.bytes)} checked, {report.pairs} pairs)"
    )
