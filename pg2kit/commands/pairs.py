"""`pg2kit pairs`: mine (source, target) pairs of a prepared folder into OUT/pairs.h5, or turn a
Def-GAN annotation CSV into a Def-GAN pairs CSV without any images."""

from __future__ import annotations

from pathlib import Path

import click
import numpy as np

from pg2kit import pairs as P
from pg2kit.commands.common import friendly_errors
from pg2kit.formats import FormatError, read_defgan_annotations, write_pairs_csv

REQUIRED = ("name", "keypoints", "identity")
OPTIONAL = {"camera": -1, "junk": False, "distractor": False}  # value when a shard lacks it

# options that only some protocols read: giving them with another protocol is a user error
PROTOCOL_OPTIONS = {
    "cross_camera": ("pg2", "custom"),
    "test_pairs": ("pg2",),
    "min_keypoints": ("custom",),
    "require_torso": ("custom",),
    "min_pose_diff": ("custom",),
    "max_per_identity": ("custom",),
    "seed": ("pg2", "custom"),
}

EPILOG = """\b
Examples:
  pg2kit pairs data/market --protocol defgan
  pg2kit pairs data/market --protocol pg2 --cross-camera
  pg2kit pairs data/mine --protocol custom --min-keypoints 8 --min-pose-diff 0.05
  pg2kit pairs --from-annotations market-annotation-test.csv --dataset market1501 \\
      --split test --protocol defgan -o market-pairs-test.csv
"""


def _pairs_from_annotations(
    csv_path: Path, dataset: str | None, split: str | None, protocol: str, output: Path | None
) -> None:
    if protocol != "defgan":
        raise click.ClickException("--from-annotations supports --protocol defgan only")
    if dataset not in ("market1501", "deepfashion"):
        raise click.ClickException("--from-annotations needs --dataset market1501 or deepfashion")
    if split is None or output is None:
        raise click.ClickException("--from-annotations needs --split and -o/--output")
    try:
        table = read_defgan_annotations(csv_path)
        pairs = P.defgan_pairs(table.names, table.keypoints, dataset, split)
    except (FormatError, ValueError) as e:
        raise click.ClickException(str(e)) from None
    names = table.names
    if table.dropped:
        click.echo(
            f"note: {table.dropped} keypoints of {csv_path} were non-finite or absurd "
            "(|v| > 1e6) and count as missing",
            err=True,
        )
    write_pairs_csv(output, ((names[a], names[b]) for a, b in pairs.tolist()))
    click.echo(f"{split}: {len(pairs)} pairs from {len(names)} annotation rows -> {output}")


def _no_pairs_reason(f: dict, keep: np.ndarray, protocol: str, opts: dict) -> str:
    """Why a split with samples got no pairs, in words a user can act on."""
    ids = np.asarray(f["identity"])[keep]
    _, per_id = np.unique(ids, return_counts=True) if len(ids) else (None, np.zeros(0, int))
    multi = int((per_id >= 2).sum())
    text = f"{len(f['name'])} samples, {len(per_id)} identities, {multi} with two or more images"
    if multi == 0:
        return text + " (a pair needs two images of one identity)"
    if opts.get("cross_camera"):
        return text + "; no identity has images from two different known cameras (--cross-camera)"
    if protocol == "defgan":
        return text + "; Def-GAN pairs need both shoulders and both hips in both images"
    if protocol == "custom":
        return text + "; the custom filters (--min-keypoints, --require-torso, --min-pose-diff) "
        "removed every pair"
    return text


def _pairs_of_folder(root: Path, dataset: str | None, protocol: str, opts: dict) -> None:
    from pg2kit.shards import (
        MissingDatasetError,
        list_splits,
        read_split_fields,
        shard_attrs,
        write_pairs,
    )

    splits = list_splits(root)  # a damaged folder: PreparedError, one line (friendly_errors)
    result: dict[str, np.ndarray] = {}
    kinds: dict[str, str] = {}
    empty: dict[str, str] = {}
    for split in splits:
        f = read_split_fields(root, split, REQUIRED)
        n = len(f["name"])
        if n == 0:
            result[split] = np.zeros((0, 2), np.int64)
            continue
        attrs = shard_attrs(root, split)
        for key, default in OPTIONAL.items():  # every schema-1 shard has them; be lenient
            try:
                f[key] = read_split_fields(root, split, [key])[key]
            except MissingDatasetError:
                f[key] = np.full(n, default)
        kind = dataset or str(attrs.get("dataset", "other"))
        kinds[split] = kind
        names = [str(n) for n in f["name"]]
        keep = ~(f["junk"].astype(bool) | f["distractor"].astype(bool))
        if opts.get("cross_camera") and not (np.asarray(f["camera"])[keep] >= 0).any():
            raise click.ClickException(
                f"split {split}: --cross-camera needs camera numbers, but every sample's camera "
                f"is unknown (-1; photos in folders carry none); leave out --cross-camera"
            )
        try:
            if protocol == "defgan":
                if kind in ("market1501", "deepfashion"):
                    pairs = P.defgan_pairs(names, f["keypoints"], kind, split)
                else:  # folder/video identity (a video track is its own identity), no junk rule
                    pairs = P.defgan_pairs(names, f["keypoints"], "other", split, f["identity"])
            elif protocol == "pg2":
                cap = opts["test_pairs"] if split == "test" and opts["test_pairs"] > 0 else None
                pairs = P.pg2_pairs(
                    f["identity"], f["camera"], opts["cross_camera"], cap, opts["seed"], keep
                )
            else:
                pairs = P.custom_pairs(
                    f["identity"],
                    f["keypoints"],
                    f["camera"],
                    height=float(attrs.get("frame_height", 1.0)),
                    min_keypoints=opts["min_keypoints"],
                    require_torso=opts["require_torso"],
                    min_pose_diff=opts["min_pose_diff"],
                    cross_camera=opts["cross_camera"],
                    max_per_identity=opts["max_per_identity"] or None,
                    seed=opts["seed"],
                    keep=keep,
                )
        except ValueError as e:
            raise click.ClickException(f"split {split}: {e}") from None
        result[split] = pairs
        n_ids = len(np.unique(np.asarray(f["identity"])[np.unique(pairs)])) if len(pairs) else 0
        click.echo(f"{split}: {len(pairs)} pairs over {n_ids} identities ({len(names)} samples)")
        if len(pairs) == 0:
            empty[split] = _no_pairs_reason(f, keep, protocol, opts)
    if empty and ("train" in empty or not any(len(p) for p in result.values())):
        split = "train" if "train" in empty else next(iter(empty))
        raise click.ClickException(
            f"split {split}: no pairs: {empty[split]}; nothing written (train would fail)"
        )
    for split, reason in empty.items():
        click.echo(f"warning: split {split}: no pairs: {reason}", err=True)
    params = {"dataset": kinds, **(opts if protocol != "defgan" else {})}
    path = write_pairs(root, result, protocol, params)
    click.echo(f"wrote {path}")


@click.command("pairs", epilog=EPILOG)
@click.argument(
    "out", required=False, metavar="[OUT]", type=click.Path(file_okay=False, path_type=Path)
)
@click.option(
    "--protocol",
    type=click.Choice(["defgan", "pg2", "custom"]),
    default="defgan",
    show_default=True,
    metavar="defgan|pg2|custom",
    help="Pair rule: Def-GAN/PATN (torso present, permutations; Market test sampled to 12,000), "
    "PG2 (all same-identity pairs; test capped), or custom filters.",
)
@click.option(
    "--from-annotations",
    "annotations",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    metavar="FILE.csv",
    show_default=True,
    help="Def-GAN annotation CSV to pair without images (instead of OUT); needs --dataset, "
    "--split and -o.",
)
@click.option(
    "--dataset",
    type=click.Choice(["market1501", "deepfashion", "other"]),
    default=None,
    show_default=True,
    metavar="market1501|deepfashion|other",
    help="Naming of the file names; with OUT it overrides the shards' `dataset` attribute.",
)
@click.option(
    "--split",
    type=click.Choice(["train", "test"]),
    default=None,
    show_default=True,
    metavar="train|test",
    help="Split of the --from-annotations file (Market test is sampled to 12,000 pairs).",
)
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    show_default=True,
    metavar="PAIRS.csv",
    help="Pairs CSV (header from,to) written with --from-annotations.",
)
@click.option(
    "--cross-camera",
    is_flag=True,
    default=False,
    show_default=True,
    help="pg2/custom: only pairs whose cameras differ; an error when every camera is unknown "
    "(-1, e.g. photo folders).",
)
@click.option(
    "--test-pairs",
    type=click.IntRange(min=0),
    default=P.PG2_TEST_PAIRS,
    show_default=True,
    metavar="N",
    help="pg2: seeded random cap on the test split's pairs (0 = all).",
)
@click.option(
    "--min-keypoints",
    type=click.IntRange(0, 18),
    default=4,
    show_default=True,
    metavar="K",
    help="custom: images need at least K present keypoints.",
)
@click.option(
    "--require-torso/--no-require-torso",
    default=True,
    show_default=True,
    help="custom: images need both shoulders and both hips.",
)
@click.option(
    "--min-pose-diff",
    type=click.FloatRange(min=0),
    default=0.0,
    show_default=True,
    metavar="D",
    help="custom: minimum mean distance of shared keypoints, as a fraction of image height.",
)
@click.option(
    "--max-per-identity",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    metavar="N",
    help="custom: seeded random cap on the pairs of each identity (0 = all).",
)
@click.option(
    "--seed",
    type=int,
    default=0,
    show_default=True,
    metavar="N",
    help="Seed of the pg2/custom random choices (Def-GAN's sampling is fixed by its protocol).",
)
@friendly_errors
def pairs(
    out: Path | None,
    protocol: str,
    annotations: Path | None,
    dataset: str | None,
    split: str | None,
    output: Path | None,
    cross_camera: bool,
    test_pairs: int,
    min_keypoints: int,
    require_torso: bool,
    min_pose_diff: float,
    max_per_identity: int,
    seed: int,
) -> None:
    """Mine (source, target) pairs of the prepared folder OUT into OUT/pairs.h5.

    Pairs join two images of one identity (a video track is its own identity, so video pairs
    stay within their track). A train split without any pair is an error (exit code 1, nothing
    written) that says why; another split without pairs is a warning.
    """
    ctx = click.get_current_context()
    for name, protocols in PROTOCOL_OPTIONS.items():
        given = ctx.get_parameter_source(name) == click.core.ParameterSource.COMMANDLINE
        if given and protocol not in protocols:
            flag = "--" + name.replace("_", "-")
            raise click.ClickException(f"{flag} goes with --protocol {' or '.join(protocols)}")
    if annotations is not None:
        if out is not None:
            raise click.ClickException("give either OUT or --from-annotations, not both")
        _pairs_from_annotations(annotations, dataset, split, protocol, output)
        return
    if out is None:
        raise click.ClickException("missing OUT (a prepared folder) or --from-annotations FILE")
    if split is not None or output is not None:
        raise click.ClickException("--split and -o/--output go with --from-annotations only")
    opts = {
        "cross_camera": cross_camera,
        "test_pairs": test_pairs,
        "min_keypoints": min_keypoints,
        "require_torso": require_torso,
        "min_pose_diff": min_pose_diff,
        "max_per_identity": max_per_identity,
        "seed": seed,
    }
    if protocol == "pg2":
        opts = {k: opts[k] for k in ("cross_camera", "test_pairs", "seed")}
    _pairs_of_folder(out, dataset, protocol, opts)
