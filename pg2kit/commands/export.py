"""`pg2kit export`: a prepared folder -> the layouts other pose-transfer code reads."""

from __future__ import annotations

from pathlib import Path

import click

from pg2kit.commands.common import friendly_errors, one_line, parse_size

_FORMATS = ("defgan", "patn-resize", "openpose-json", "pidm", "pcdms", "controlnet")


@click.command(context_settings={"max_content_width": 100})
@click.argument("prepared", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option(
    "--format",
    "fmt",
    type=click.Choice(_FORMATS),
    default="defgan",
    show_default=True,
    help="Layout to write (docs/formats.md says which code reads each, and its frame).",
)
@click.option(
    "-o",
    "--out",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    metavar="DIR",
    help="Output folder (created if needed); nothing is written outside it.",
)
@click.option(
    "--images",
    is_flag=True,
    help="defgan, patn-resize, openpose-json: also write the images (the other formats always do).",
)
@click.option(
    "--size",
    "sizes",
    multiple=True,
    metavar="HxW",
    help="pidm: one LMDB per size (repeatable; default 256x256). controlnet: size of the "
    "images and skeletons (default the stored frame).",
)
@click.option(
    "--caption",
    default="a photo of a person",
    show_default=True,
    help="controlnet: the text of every metadata row; {identity}, {split}, {name} are filled in.",
)
@click.option("--quiet", is_flag=True, help="No progress bars.")
@friendly_errors
def export(prepared, fmt, out, images, sizes, caption, quiet):
    """Write PREPARED (after `pg2kit pairs` for pair files) in another code base's layout.

    \b
    defgan         <prefix>-annotation-<split>.csv, <prefix>-pairs-<split>.csv (stored frame)
    patn-resize    fasion-resize-annotation/pairs-<split>.csv, 176-wide frame (PATN, DPTN, CFLD)
    openpose-json  keypoints/<split>/<stem>_keypoints.json (OpenPose COCO-18 x, y, c)
    pidm           <H>-<W>/ LMDB, pose/**.txt, <split>_pairs.txt (PIDM, NTED)
    pcdms          train_all_png/, normalized_pose_txt/, openpose_all_img/, <split>_data.json
    controlnet     <split>/images, <split>/conditioning_images, <split>/metadata.jsonl

    Re-running the same export into the same folder resumes (finished files are kept).

    \b
    Examples:
      pg2kit export prepared/market -o defgan/
      pg2kit export prepared/market -o market_data/ --images
      pg2kit export prepared/fashion --format patn-resize -o fashion_data/ --images
      pg2kit export prepared/market --format openpose-json -o openpose/
      pg2kit export prepared/fashion --format pidm -o pidm_data/ --size 256x256 --size 512x512
      pg2kit export prepared/fashion --format pcdms -o pcdms_data/
      pg2kit export prepared/market --format controlnet -o cn/ --size 512x256
    """
    from pg2kit.export import export as run_export

    try:
        size_list = [parse_size(s) for s in sizes]
    except click.BadParameter as e:
        raise click.BadParameter(str(e.message), param_hint="--size") from None
    try:
        run_export(prepared, out, fmt, images=images, sizes=size_list or None, caption=caption,
                   log=click.echo, progress=not quiet)  # fmt: skip
    except (ValueError, OSError) as e:
        text = one_line(e)
        if text is None:
            raise
        raise click.ClickException(text) from None
