"""`pg2kit evaluate`: score generated images against the real targets (SSIM in both conventions,
mask-SSIM, L1, PSNR, IS, mask-IS, FID, LPIPS, pose accuracy), each number with its convention."""

from __future__ import annotations

from pathlib import Path

import click

from pg2kit.commands.common import friendly_errors

EPILOG = """\b
Examples:
  pg2kit evaluate gen/market --real prepared/market
  pg2kit evaluate gen/market --real prepared/market --mask-from source   # PG2's published way
  pg2kit evaluate gen/market --real prepared/market \\
      --inception-weights weights/pt_inception-2015-12-05-6726825d.pth \\
      --lpips-weights weights/alex.pth --alexnet-weights weights/alexnet-owt-7be5be79.pth
  pg2kit evaluate gen/fashion --real prepared/fashion --pad-to-256      # PATN's DeepFashion way
  pg2kit evaluate results/ --real market/bounding_box_test --annotations market-annotation-test.csv

\b
DIR holds <from>___<to>.png files (pg2kit generate) or 5-panel <from>___<to>_vis.png strips
(the generated image is the last panel). Writes DIR/metrics.json, DIR/metrics.md and
DIR/per_pair.csv (or into -o). Weight files are never downloaded: a missing one is named in one
line with where users usually get it, and the other metrics are still computed.
"""


@click.command(epilog=EPILOG, context_settings={"show_default": True})
@click.argument("gen_dir", type=click.Path(path_type=Path), metavar="DIR")
@click.option(
    "--real",
    type=click.Path(path_type=Path),
    required=True,
    metavar="DATA",
    help="A prepared folder, or a folder of real images named as in DIR (then --annotations).",
)
@click.option(
    "--split",
    default=None,
    metavar="SPLIT",
    help="Split of a prepared --real  [default: the one generate.json names, else test]",
)
@click.option(
    "--annotations",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    metavar="FILE.csv",
    help="Def-GAN annotation CSV of a real-image folder (keypoints for the masks).",
)
@click.option(
    "--mask-from",
    type=click.Choice(["target", "source"]),
    default="target",
    help="Whose keypoints make the mask: target (correct) or source (PG2's published figures).",
)
@click.option(
    "--mask-kind",
    type=click.Choice(["pg2", "defgan"]),
    default="pg2",
    help="pg2: PG2 body mask r4; defgan: the Def-GAN/PATN evaluation mask.",
)
@click.option(
    "--pad-to-256",
    is_flag=True,
    help="Pad images white to 256 wide first (PATN's DeepFashion convention; inflates SSIM).",
)
@click.option(
    "--inception-weights",
    type=click.Path(path_type=Path),
    default=None,
    metavar="FILE.pth",
    help="TF-Inception 2015-12-05 port (pt_inception-2015-12-05-6726825d.pth): IS, mask-IS, FID.",
)
@click.option(
    "--lpips-weights",
    type=click.Path(path_type=Path),
    default=None,
    metavar="FILE.pth",
    help="LPIPS linear heads (lpips wheel: weights/v0.1/alex.pth), or a file with heads + AlexNet.",
)
@click.option(
    "--alexnet-weights",
    type=click.Path(path_type=Path),
    default=None,
    metavar="FILE.pth",
    help="torchvision AlexNet weights (alexnet-owt-7be5be79.pth) for LPIPS.",
)
@click.option(
    "--lpips-version", type=click.Choice(["0.1", "0.0"]), default="0.1", help="LPIPS version."
)
@click.option(
    "--fid-reference",
    default=None,
    metavar="SPLIT|FOLDER",
    help="FID reference set: a split of a prepared --real, or a folder of images  [default: train]",
)
@click.option("--is-splits", type=click.IntRange(min=1), default=10, metavar="N", help="IS splits.")
@click.option("--no-pose", is_flag=True, help="Skip pose accuracy (MediaPipe on every image).")
@click.option(
    "--limit", type=click.IntRange(min=1), default=None, metavar="N", help="Only the first N pairs."
)
@click.option(
    "-o",
    "--out",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    metavar="FOLDER",
    help="Where the reports go  [default: DIR]",
)
@click.option(
    "--device", default="auto", metavar="DEV", help="auto (CUDA when there is one), cpu, cuda:N."
)
@click.option("--quiet", is_flag=True, help="No progress bars.")
@friendly_errors
def evaluate(
    gen_dir, real, split, annotations, mask_from, mask_kind, pad_to_256, inception_weights,
    lpips_weights, alexnet_weights, lpips_version, fid_reference, is_splits, no_pose, limit, out,
    device, quiet,
) -> None:  # fmt: skip
    """Score generated images against the real targets; every number names its convention."""
    from pg2kit.evaluate import EvalConfig, markdown_table, write_reports
    from pg2kit.evaluate import evaluate as run_evaluate

    cfg = EvalConfig(
        real=str(real),
        split=split,
        annotations=None if annotations is None else str(annotations),
        mask_from=mask_from,
        mask_kind=mask_kind,
        pad_to_256=pad_to_256,
        inception_weights=None if inception_weights is None else str(inception_weights),
        lpips_weights=None if lpips_weights is None else str(lpips_weights),
        alexnet_weights=None if alexnet_weights is None else str(alexnet_weights),
        lpips_version=lpips_version,
        fid_reference=fid_reference,
        is_splits=is_splits,
        pose=not no_pose,
        limit=limit,
        device=device,
        progress=not quiet,
    )
    result = run_evaluate(gen_dir, cfg)
    paths = write_reports(result, out or gen_dir)
    click.echo(markdown_table(result), nl=False)
    click.echo(f"wrote {', '.join(str(p) for p in paths)}")
