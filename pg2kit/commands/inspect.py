"""`pg2kit inspect`: print a prepared folder's manifest and write pictures of its contents."""

from __future__ import annotations

from pathlib import Path

import click

from pg2kit.commands.common import friendly_errors


@click.command(context_settings={"max_content_width": 100})
@click.argument("prepared", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option(
    "-n",
    "--samples",
    type=click.IntRange(1, 200),
    default=12,
    show_default=True,
    metavar="N",
    help="Records on the contact sheet.",
)
@click.option(
    "--seed", type=int, default=0, show_default=True, metavar="N", help="Which records are sampled."
)
@click.option("--no-pictures", is_flag=True, help="Print the table only.")
@friendly_errors
def inspect(prepared, samples, seed, no_pictures):
    """Show what PREPARED holds: a table of the manifest and a contact sheet PNG.

    The contact sheet (PREPARED/inspect/contact_sheet.png) shows sampled records as image,
    skeleton overlay in OpenPose colours, pose map and body mask. For video data it also
    writes the track sheet (PREPARED/inspect/tracks.png: one row per track, its crops over
    time). After `pg2kit pairs` it also writes the pair report (pairs per identity, pose
    differences, sample pairs).

    \b
    Example:
      pg2kit inspect prepared/market -n 24
    """
    from pg2kit.report import contact_sheet, has_tracks, manifest_table, track_sheet
    from pg2kit.shards import PAIRS, load_manifest

    manifest = load_manifest(prepared)  # a damaged folder: one line (friendly_errors)
    click.echo(manifest_table(manifest))
    if no_pictures:
        return
    sheet = contact_sheet(
        prepared, prepared / "inspect" / "contact_sheet.png", n=samples, seed=seed
    )
    click.echo(f"contact sheet: {sheet}")
    if has_tracks(prepared, manifest):
        click.echo(f"track sheet: {track_sheet(prepared, prepared / 'inspect' / 'tracks.png')}")
    if (prepared / PAIRS).exists():
        from pg2kit.pair_report import pair_report

        for path in pair_report(prepared, prepared / "inspect", seed=seed):
            click.echo(f"pair report: {path}")
