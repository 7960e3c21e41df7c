"""`pg2kit prepare`: a dataset's native layout -> HDF5 shards of images, keypoints and masks."""

from __future__ import annotations

from pathlib import Path

import click

from pg2kit.commands.common import friendly_errors, parse_size

_FILE_SOURCES = ("video", "table")  # SRC may be a file


@click.command(context_settings={"max_content_width": 100})
@click.argument(
    "dataset",
    type=click.Choice(["market1501", "deepfashion", "folder", "synthetic", "video", "table"]),
)
@click.argument("src", required=False, type=click.Path(exists=True, path_type=Path))
@click.option(
    "-o",
    "--out",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    metavar="OUT",
    help="Output folder (shards/, manifest.json, failures.csv).",
)
@click.option(
    "--keypoints",
    "keypoints",
    default="mediapipe",
    show_default=True,
    metavar="mediapipe|FILE.csv|DIR",
    help="Find keypoints with MediaPipe, import a Def-GAN annotation CSV, or import a "
    "folder of OpenPose JSON files (BODY_25 or COCO-18).",
)
@click.option(
    "--size",
    default=None,
    metavar="HxW",
    help="folder/table: output frame (default 256x256); video: output frame (default 128x64); "
    "synthetic: image size (default 128x64, Market; 256x256 for DeepFashion size).",
)
@click.option("--crop176", is_flag=True, help="deepfashion: store the 176-wide crop (x offset 40).")
@click.option(
    "--maps",
    "map_kind",
    type=click.Choice(["disk", "gaussian"]),
    default="disk",
    show_default=True,
    help="Pose map kind: PG2 radius-4 disks or PATN sigma-6 Gaussians.",
)
@click.option(
    "--map-radius",
    type=click.IntRange(1, 32),
    default=4,
    show_default=True,
    metavar="PX",
    help="Disk radius of the PG2 pose maps.",
)
@click.option(
    "--map-sigma",
    type=click.FloatRange(0.5, 64),
    default=6.0,
    show_default=True,
    metavar="PX",
    help="Sigma of the Gaussian pose maps.",
)
@click.option(
    "--mask-radius",
    type=click.IntRange(1, 32),
    default=4,
    show_default=True,
    metavar="PX",
    help="Disk radius of the PG2 body mask (PG2 also used 7 and 8).",
)
@click.option(
    "--store-maps",
    is_flag=True,
    help="Also store the 18-channel pose maps (the trainer can render them itself).",
)
@click.option(
    "--min-visibility",
    type=click.FloatRange(0, 1),
    default=None,
    metavar="P",
    help="mediapipe: keypoint presence threshold (default: the tuned value).",
)
@click.option(
    "--workers",
    type=click.IntRange(1, 256),
    default=2,
    show_default=True,
    metavar="N",
    help="Worker processes.",
)
@click.option(
    "--shard-size",
    type=click.IntRange(1, 1_000_000),
    default=1024,
    show_default=True,
    metavar="N",
    help="Samples per HDF5 shard.",
)
@click.option(
    "--compression",
    type=click.Choice(["auto", "lzf", "gzip1", "gzip4", "none"]),
    default="auto",
    show_default=True,
    help="HDF5 compression; auto = images uncompressed (they barely compress and read fastest), "
    "masks and maps gzip level 1.",
)
@click.option(
    "--test-identities",
    type=click.FloatRange(0, 0.9),
    default=0.0,
    show_default=True,
    metavar="FRAC",
    help="folder: share of identities held out as the test split.",
)
@click.option(
    "--ids",
    "synthetic_ids",
    type=click.IntRange(2, 100_000),
    default=40,
    show_default=True,
    metavar="N",
    help="synthetic: number of identities.",
)
@click.option(
    "--poses",
    "synthetic_poses",
    type=click.IntRange(2, 1000),
    default=8,
    show_default=True,
    metavar="M",
    help="synthetic: poses per identity.",
)
@click.option(
    "--seed", type=int, default=0, show_default=True, metavar="N", help="synthetic: random seed."
)
@click.option(
    "--min-person-px",
    type=click.IntRange(16, 10_000),
    default=None,
    metavar="PX",
    help="folder/table/video: smallest person height accepted (default: pg2kit.persons' 96).",
)
@click.option(
    "--pad",
    type=click.Choice(["constant", "edge", "reflect"]),
    default=None,
    help="folder/table/video: how a crop is filled past the photo edge (default: constant).",
)
@click.option(
    "--allow-cut",
    is_flag=True,
    help="folder/table/video: keep persons cut by the frame edge (half-body photos such as "
    "DeepFashion's) instead of rejecting them; their crop is clipped to the photo.",
)
@click.option(
    "--person-keypoints",
    type=click.Choice(["crop", "roi"]),
    default="crop",
    show_default=True,
    help="folder/table/video: where a detected person's keypoints come from: crop (the full "
    "estimator on the person's crop, which also checks that it is a person) or roi (BlazePose's "
    "landmark model straight on the detector's box, 2.2x faster, lets more non-persons "
    "through). Video frames between detections always use the landmark model.",
)
@click.option(
    "--segment/--no-segment",
    default=None,
    help="folder/table/video: also let MediaPipe's selfie segmentation propose person-shaped "
    "regions where the detector found nobody acceptable (more people found, slower). Default: "
    "on for folder and table, off for video (it lowered track purity).",
)
@click.option(
    "--no-detect",
    is_flag=True,
    help="folder/table: no person detection; crop around the keypoints of the whole photo "
    "(one person per photo assumed).",
)
@click.option(
    "--every",
    type=click.IntRange(1, 10_000),
    default=1,
    show_default=True,
    metavar="N",
    help="video: use every N-th frame.",
)
@click.option(
    "--detect-every",
    type=click.IntRange(1, 1000),
    default=None,
    metavar="K",
    help="video: look for people with the detector on the first of every K sampled frames and "
    "follow each one through the others where its last keypoints say it is (MediaPipe's own "
    "tracking; new people are found up to K-1 frames late). 1: detect in every frame. "
    "Default: 8 // --every (at least 1), a detection every 8 video frames.",
)
@click.option(
    "--follow-views",
    type=click.IntRange(1, 2),
    default=2,
    show_default=True,
    metavar="N",
    help="video: landmark-model runs per person in the frames between detections: 2 (as is "
    "and mirrored, fused and checked against each other) or 1 (as is only: 1.2-1.5x the "
    "frames per second, slightly less accurate keypoints and tracks).",
)
@click.option(
    "--min-track",
    type=click.IntRange(1, 1_000_000),
    default=3,
    show_default=True,
    metavar="K",
    help="video: drop tracks with fewer than K samples.",
)
@click.option(
    "--min-pose-change",
    type=click.FloatRange(0, 1),
    default=0.0,
    show_default=True,
    metavar="D",
    help="video: keep a track's frame only if its keypoints moved by >= D x crop height "
    "(mean) since the last kept one; 0 keeps all.",
)
@click.option(
    "--appearance-split",
    type=click.FloatRange(0, 1),
    default=0.35,
    show_default=True,
    metavar="D",
    help="video: cut a track where the person's colours (body histogram) move farther than D "
    "from the rest of the track, as when the tracker swaps two people who cross; a lone frame "
    "that far off is dropped. 0 never cuts.",
)
@click.option(
    "--appearance-join",
    type=click.FloatRange(0, 1),
    default=0.2,
    show_default=True,
    metavar="D",
    help="video: join a track that ends to one that starts later nearby when their colours "
    "are at most D apart (one person lost and found again). 0 never joins.",
)
@click.option(
    "--max-pixels",
    type=click.IntRange(1, None),
    default=50_000_000,
    show_default=True,
    metavar="N",
    help="Refuse images (and videos) with more pixels than N, read from the header before "
    "decoding.",
)
@click.option(
    "--min-image-px",
    type=click.IntRange(1, 10_000),
    default=32,
    show_default=True,
    metavar="PX",
    help="Refuse images whose shorter side is below PX.",
)
@click.option(
    "--backend",
    type=click.Choice(["loky", "dask", "ray"]),
    default="loky",
    show_default=True,
    help="Where the workers run: local processes, a Dask cluster or a Ray cluster "
    "(same output byte for byte; dask/ray are extras).",
)
@click.option(
    "--scheduler",
    default=None,
    metavar="ADDRESS",
    help="dask: address of an existing scheduler, e.g. tcp://head:8786 (default: a local "
    "cluster of --workers processes).",
)
@click.option(
    "--ray-address",
    default=None,
    metavar="ADDR",
    help="ray: address of an existing Ray cluster (default: a local Ray instance).",
)
@click.option(
    "--retries",
    type=click.IntRange(0, 100),
    default=0,
    show_default=True,
    metavar="N",
    help="Resubmit a failed or lost chunk up to N times.",
)
@click.option("--overwrite", is_flag=True, help="Redo finished shards instead of keeping them.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@friendly_errors
def prepare(dataset, src, out, keypoints, size, crop176, map_kind, map_radius, map_sigma,
            mask_radius, store_maps, min_visibility, workers, shard_size, compression,
            test_identities, synthetic_ids, synthetic_poses, seed, min_person_px, pad, allow_cut,
            person_keypoints, segment, no_detect, every, detect_every, follow_views, min_track,
            min_pose_change, appearance_split, appearance_join, max_pixels, min_image_px, backend, scheduler,
            ray_address, retries, overwrite, quiet):  # fmt: skip
    """Read DATASET from SRC and write training-ready HDF5 shards to OUT.

    DATASET is market1501 (the Market-1501 root), deepfashion (the In-shop root, or a folder of
    flattened names with train.lst/test.lst), folder (SRC/<identity>/*.jpg, your own photos),
    table (a CSV or Parquet file with columns path, identity [, camera, split, frame]), video (a
    video file or a folder of videos: every person tracked, one identity per track) or
    synthetic (built-in figures with true keypoints; no SRC).

    folder, table and video find every person (pg2kit.persons): in a photo the identity person
    is the most prominent one (tallest, then most central); the others, and every person that
    fails a quality gate, are listed in failures.csv with the reason.

    Re-running skips finished shards, so an interrupted run just continues (video: an
    interrupted run starts over; a finished one is reused when nothing changed).

    \b
    Examples:
      pg2kit prepare synthetic -o prepared/synth
      pg2kit prepare market1501 ~/data/Market-1501-v15.09.15 -o prepared/market
      pg2kit prepare market1501 ~/data/Market-1501 -o prepared/market \\
          --keypoints market-annotation-train.csv
      pg2kit prepare deepfashion ~/data/DeepFashion/In-shop -o prepared/fashion --crop176
      pg2kit prepare folder ~/photos -o prepared/mine --size 256x256 --test-identities 0.1
      pg2kit prepare table photos.csv -o prepared/mine
      pg2kit prepare video ~/videos -o prepared/street --every 5 --min-track 4
      pg2kit prepare synthetic -o prepared/synth --backend dask --scheduler tcp://head:8786
    """
    from pg2kit.prepare import PrepareConfig, PrepareError, run_prepare

    if dataset == "synthetic" and src is not None:
        raise click.UsageError("synthetic takes no SRC")
    if dataset != "synthetic" and src is None:
        raise click.UsageError(f"{dataset} needs SRC, the dataset's root folder")
    if src is not None and src.is_file() and dataset not in _FILE_SOURCES:
        raise click.UsageError(f"{dataset} needs a folder as SRC, {src} is a file")
    if dataset == "table" and src is not None and not src.is_file():
        raise click.UsageError(f"table needs a .csv or .parquet file as SRC, {src} is a folder")
    options = {} if min_visibility is None else {"visibility": min_visibility}
    cfg = PrepareConfig(
        dataset=dataset, out=out, src=src, keypoints=keypoints, size=parse_size(size),
        crop176=crop176, map_kind=map_kind, map_radius=map_radius, map_sigma=map_sigma,
        mask_radius=mask_radius, store_maps=store_maps, shard_size=shard_size, workers=workers,
        overwrite=overwrite, compression=compression, estimator_options=options,
        test_identities=test_identities, synthetic_ids=synthetic_ids,
        synthetic_poses=synthetic_poses, seed=seed, min_person_px=min_person_px, pad=pad,
        allow_cut=allow_cut, person_keypoints=person_keypoints, segment=segment,
        detect=not no_detect,
        every=every, detect_every=detect_every, follow_views=follow_views, min_track=min_track,
        min_pose_change=min_pose_change,
        appearance_split=appearance_split,
        appearance_join=appearance_join,
        max_pixels=max_pixels, min_image_px=min_image_px, backend=backend, scheduler=scheduler,
        ray_address=ray_address, retries=retries,
    )  # fmt: skip
    try:
        manifest = run_prepare(cfg, log=click.echo, progress=not quiet)
    except PrepareError as e:
        raise click.ClickException(str(e)) from None
    for split, info in manifest["splits"].items():
        click.echo(f"{split:>8}: {info['count']} samples in {len(info['shards'])} shard(s)"
                   f"  ({info['no_person']} without a person, {info['skipped']} skipped)")  # fmt: skip
    click.echo(f"wrote {out} in {manifest['elapsed_s']:.1f} s; "
               f"{manifest['failures']} failures listed in {out / 'failures.csv'}")  # fmt: skip
