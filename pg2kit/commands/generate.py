"""`pg2kit generate`: run a trained model on the pairs of a prepared folder, or put the person of
one photo into a new pose. Thin wrapper over pg2kit.generate (torch imported when it runs)."""

from __future__ import annotations

import json
from pathlib import Path

import click

from pg2kit.commands.common import friendly_errors

EPILOG = """\b
Examples:
  pg2kit generate runs/market prepared/market -o gen/market            # test pairs of pairs.h5
  pg2kit generate runs/market prepared/market -o gen/market --strips \\
      --pairs market-pairs-test.csv                                    # community pairs, strips
  pg2kit generate runs/market/checkpoints/ckpt-0060000.pt prepared/market -o gen/pg2 \\
      --quantise truncate --limit 100                                  # PG2's quantisation
  pg2kit generate runs/own --source me.jpg --pose dance.jpg -o me_dancing.png
  pg2kit generate runs/own --source me.jpg --pose pose_keypoints.json -o out.png --strip
  pg2kit generate runs/market --source a.png --pose market-annotation-test.csv:0002_c1s1_000451_03.jpg -o out.png

\b
RUN is a run folder (its newest checkpoint is used) or a checkpoint file. Pairs mode writes
OUT/<from>___<to>.png per pair (names as stored, extension included), with --strips also the
5-panel <from>___<to>_vis.png (source | source pose | target | target pose | generated) that the
Def-GAN/PATN metric scripts read, with --coarse G1's output <from>___<to>_coarse.png, and
OUT/generate.json. Files already there are skipped, so an interrupted run resumes.
"""


@click.command(epilog=EPILOG, context_settings={"show_default": True})
@click.argument("run", type=click.Path(path_type=Path), metavar="RUN|CKPT")
@click.argument("data", type=click.Path(path_type=Path), required=False, metavar="[DATA]")
@click.option(
    "-o",
    "--out",
    type=click.Path(path_type=Path),
    required=True,
    metavar="PATH",
    help="Output folder (pairs mode) or PNG file (--source mode).",
)
@click.option("--split", default="test", metavar="SPLIT", help="Split of DATA whose pairs to run.")
@click.option(
    "--pairs",
    "pairs_csv",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    metavar="FILE.csv",
    help="Community pairs CSV (header from,to), matched by name in --split; default: pairs.h5.",
)
@click.option("--strips", is_flag=True, help="Also write the 5-panel <from>___<to>_vis.png.")
@click.option("--coarse", is_flag=True, help="Also write G1's output <from>___<to>_coarse.png.")
@click.option(
    "--quantise",
    type=click.Choice(["round", "truncate"]),
    default="round",
    help="Float -> uint8: round to nearest, or truncate as PG2's test script did.",
)
@click.option(
    "--batch-size",
    type=click.IntRange(min=1),
    default=None,
    metavar="N",
    help="Pairs per batch (default: 32 on a GPU, 4 on the CPU, where large batches were slower).",
)
@click.option(
    "--limit", type=click.IntRange(min=1), default=None, metavar="N", help="Only the first N pairs."
)
@click.option(
    "--device", default="auto", metavar="DEV", help="auto (CUDA when there is one), cpu, cuda:N."
)
@click.option(
    "--source",
    "source_photo",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    metavar="PHOTO",
    help="One photo: its person (cropped as `prepare folder` does) is put into --pose.",
)
@click.option(
    "--pose",
    default=None,
    metavar="TARGET",
    help="With --source: a photo (pose estimated), an OpenPose .json, or FILE.csv:NAME (Def-GAN row).",
)
@click.option(
    "--source-keypoints",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    metavar="FILE.json",
    help="With --source: the photo's keypoints as OpenPose JSON instead of estimating them.",
)
@click.option("--strip", is_flag=True, help="With --source: also write OUT_vis.png.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@friendly_errors
def generate(
    run, data, out, split, pairs_csv, strips, coarse, quantise, batch_size, limit, device,
    source_photo, pose, source_keypoints, strip, quiet,
) -> None:  # fmt: skip
    """Generate a person in new poses with a trained PG2 checkpoint (G1 then G2)."""
    from pg2kit.generate import generate_one, generate_pairs, load_generator

    if source_photo is not None:
        if pose is None:
            raise click.UsageError("--source needs --pose TARGET")
        if data is not None:
            raise click.UsageError("give either DATA (pairs mode) or --source/--pose, not both")
        gen = load_generator(run, device)
        info = generate_one(gen, source_photo, pose, out, source_keypoints, quantise, strip)
        click.echo(f"wrote {', '.join(info['written'])} (checkpoint {gen.path}, step {gen.step})")
        return
    if data is None:
        raise click.UsageError("give DATA (a prepared folder) or --source PHOTO --pose TARGET")
    gen = load_generator(run, device)
    if batch_size is None:
        batch_size = 4 if gen.device.type == "cpu" else 32
    summary = generate_pairs(
        gen, data, out, split, pairs_csv, strips, coarse, quantise, batch_size, limit, not quiet
    )
    click.echo(
        f"{summary['pairs']} pairs -> {out} ({summary['generated_now']} generated, "
        f"{summary['skipped_existing']} already there) in {summary['seconds']:.1f} s on "
        f"{summary['device']}; checkpoint step {summary['step']}"
        + ("" if summary["stage2"] else " (stage I only: G1 output)")
    )
    if not quiet:
        click.echo(json.dumps({k: summary[k] for k in ("quantise", "split", "pairs_csv")}))
