"""`pg2kit prepare`: raw dataset -> persons -> keypoints -> body masks (and pose maps) -> shards.

The pipeline, one stage per concern:

1. an **adapter** (pg2kit/datasets/*) lists records: one raw image each (synthetic figures too);
2. a **person finder** turns a loaded image into one stored-frame crop per person it keeps
   (`WholeImage` for ready-made crops, `KeypointCrop` around imported keypoints,
   `DetectedPersons` with pg2kit.persons for own photos and video frames);
3. a **keypoint source** (pg2kit/keypoint_sources.py) gives the keypoints: the estimator in the
   worker, a file made elsewhere, or the truth of synthetic figures;
4. masks (and pose maps) are drawn and samples go into HDF5 shards with done markers, then
   OUT/failures.csv and OUT/manifest.json (docs/schema.md) are written.

`run_prepare` = `plan_prepare` (scan, keypoint lookup, which shards are still to do) +
`run_plan` (workers; each shard written as soon as its chunks are back) + `write_summary`.
Safe to interrupt and re-run: finished shards are kept.
"""

from __future__ import annotations

import csv
import io
import math
import os
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pg2kit import __version__, shards
from pg2kit.atomic import write_text
from pg2kit.keypoints import NUM_KEYPOINTS, present

DATASETS = ("market1501", "deepfashion", "folder", "synthetic", "video", "table")
META_FIELDS = ("camera", "sequence", "frame", "junk", "distractor")
META_DTYPES = {"camera": np.int16, "sequence": np.int16, "frame": np.int32, "junk": bool}
META_DTYPES["distractor"] = bool
# Settings that change what a shard holds: a finished shard made with others is not reused.
SHARD_PARAMS = ("dataset", "keypoints", "map_kind", "map_radius", "map_sigma", "mask_radius")
SHARD_PARAMS += ("store_maps", "size", "crop176", "shard_size", "compression", "pad")
SHARD_PARAMS += ("min_person_px", "max_pixels", "min_image_px", "every", "min_track")
SHARD_PARAMS += ("min_pose_change",)


class PrepareError(RuntimeError):
    """A problem with the whole run (bad layout, mismatched settings, nothing usable)."""


@dataclass
class PrepareConfig:
    dataset: str
    out: Path
    src: Path | None = None
    keypoints: str = "mediapipe"  # 'mediapipe', a Def-GAN CSV file, or a folder of OpenPose JSON
    size: tuple[int, int] | None = None  # folder/table/video: output H x W; synthetic: image H x W
    crop176: bool = False  # deepfashion: store the 176-wide crop (x offset 40)
    map_kind: str = "disk"
    map_radius: int = 4
    map_sigma: float = 6.0
    mask_radius: int = 4
    store_maps: bool = False
    shard_size: int = 1024
    chunk_size: int = 32  # images per worker task
    workers: int = 2
    overwrite: bool = False
    compression: str = "auto"  # images uncompressed, masks/maps gzip level 1
    estimator_options: dict[str, Any] = field(default_factory=dict)
    test_identities: float = 0.0  # folder/table/video: share of identities held out as 'test'
    synthetic_ids: int = 40
    synthetic_poses: int = 8
    seed: int = 0
    # person finding (folder, table, video)
    pad: str | None = None  # crop padding past the photo edge; None = pg2kit.persons' default
    min_person_px: int | None = None  # None = pg2kit.persons' default
    detect: bool = True  # find persons with pg2kit.persons (else: crop around the keypoints)
    allow_cut: bool = False  # keep persons cut by the frame edge (half-body photos)
    # where a detected person's keypoints come from (pg2kit.persons.FinderConfig.keypoints):
    # "crop" (the estimator on the person's crop) or "roi" (the landmark model on the detector's
    # ROI); video frames between detections always use the landmark model (follow_in_frames)
    person_keypoints: str = "crop"
    # also propose persons from MediaPipe's selfie segmentation where the detector found nobody
    # acceptable (pg2kit.persons.FinderConfig.segment_tiles); False: the detector alone. None:
    # on for photos (folder, table), off for video, where it lowered track purity on the tune
    # videos (bench/multiperson.py; BENCHMARKS.md)
    segment: bool | None = None
    # input limits (checked from the file header before decoding)
    max_pixels: int = 50_000_000
    min_image_px: int = 32
    # video
    every: int = 1
    # video: detect on the first of every K sampled frames, follow each person through the rest;
    # None = max(1, 8 // every): a detection at least every 8 video frames (see key_every)
    detect_every: int | None = None
    min_track: int = 3
    min_pose_change: float = 0.0
    # video: landmark-model runs per followed person in the frames between detections: 2 (as
    # is and mirrored, fused, with the views-agree gate; the default) or 1 (as is only:
    # 1.2-1.5x the throughput, slightly lower keypoint agreement on street people and track
    # purity; BENCHMARKS.md)
    follow_views: int = 2
    # video: cut a track where the person's colours move farther than this from the track's
    # (pg2kit.tracking.split_by_appearance), and join tracks whose colours are at most this far
    # apart (join_tracks); 0 turns either off. Chosen on the tune videos of
    # bench/multiperson.py (BENCHMARKS.md)
    appearance_split: float = 0.35
    appearance_join: float = 0.2
    # where the work runs (pg2kit.parallel)
    backend: str = "loky"
    scheduler: Any = None  # a Dask scheduler address, or (Python API) a dask.distributed.Client
    ray_address: str | None = None
    retries: int = 0

    @property
    def key_every(self) -> int:
        """Video: detect on the first of every this many sampled frames (`detect_every`, or by
        default every 8 video frames: following people across larger steps lost samples and
        split tracks, BENCHMARKS.md)."""
        if self.detect_every is not None:
            return max(1, int(self.detect_every))
        return max(1, 8 // max(1, int(self.every)))

    def shard_params(self) -> dict[str, Any]:
        d = {k: getattr(self, k) for k in SHARD_PARAMS}  # not asdict: `scheduler` may be a Client
        d["size"] = list(self.size) if self.size else None
        if self.keypoints not in ("mediapipe", "synthetic"):
            d["keypoints"] = str(Path(self.keypoints).resolve())
        out = {k: d[k] for k in SHARD_PARAMS}
        if self.allow_cut:  # only when set, so outputs prepared before the option still match
            out["allow_cut"] = True
        if self.dataset == "video" and self.key_every != 1:  # likewise
            out["detect_every"] = self.key_every
        if self.dataset == "video":  # video folders made before these are not resumed
            out["appearance_split"] = self.appearance_split
            out["appearance_join"] = self.appearance_join
        if self.dataset == "video" and self.follow_views != 2:  # only when set, as above
            out["follow_views"] = self.follow_views
        if self.person_keypoints != "crop":  # likewise: roi keypoints are other samples
            out["person_keypoints"] = self.person_keypoints
        if self.segment is not None and self.segment != self.segment_default:  # likewise
            out["segment"] = self.segment
        return out

    @property
    def segment_default(self) -> bool:
        return self.dataset != "video"

    @property
    def segments(self) -> bool:
        """Whether segmentation proposals are on (the option, else the dataset's default)."""
        return self.segment_default if self.segment is None else self.segment


# ---------------------------------------------------------------- person finders


@dataclass
class Found:
    """One person's sample in the stored frame, with where it came from in the source."""

    image: np.ndarray
    keypoints: np.ndarray
    scores: np.ndarray
    box: np.ndarray  # float32 (4,) x0, y0, x1, y1 in source-image pixels
    score: float  # detector score; NaN when no detector ran
    track: int = -1
    name: str | None = None  # overrides the record's name (several persons per record)
    identity: str | None = None
    frame: int | None = None
    appearance: np.ndarray | None = None  # video: pg2kit.tracking.appearance, made in the worker


def _whole_box(image: np.ndarray, source_size: tuple[int, int] | None) -> np.ndarray:
    w, h = source_size or (image.shape[1], image.shape[0])
    return np.array([0, 0, w, h], np.float32)


class WholeImage:
    """The image is one person's crop already (Market, DeepFashion, synthetic): keypoints of the
    whole image, fitted into the stored frame by the adapter."""

    def __init__(self, adapter: Any, score: float = math.nan):
        self.adapter = adapter
        self.score = score

    def find(self, image, record, keypoints_fn, source_size=None):
        kp, sc = keypoints_fn(image)
        out, kp, sc = self.adapter.finalize(image, kp, sc)
        return [Found(out, kp, sc, _whole_box(image, source_size), self.score)], []


class KeypointCrop:
    """One person per photo, cropped around its keypoints (imported ones, or the estimator's
    on the whole photo when person detection is off)."""

    def __init__(self, adapter: Any):
        self.adapter = adapter

    def find(self, image, record, keypoints_fn, source_size=None):
        kp, sc = keypoints_fn(image)
        out, kp, sc, box = self.adapter.crop(image, kp, sc)
        if source_size is not None and source_size != (image.shape[1], image.shape[0]):
            box = box * np.float32(source_size[0] / image.shape[1])  # the adapter shrank it
        return [Found(out, kp, sc, box, math.nan)], []


class DetectedPersons:
    """Every person found by pg2kit.persons; the identity person of a photo is kept
    (`choose_identity_person`), the others and each gate rejection are reported as skipped."""

    def __init__(self, size: tuple[int, int], pad: str | None, options: dict[str, Any]):
        self.size = tuple(size)
        self.pad = pad
        self.options = options

    def finder(self):
        from pg2kit.keypoint_sources import worker_person_finder

        return worker_person_finder(self.options)

    def find(self, image, record, keypoints_fn, source_size=None):
        from pg2kit.persons import choose_identity_person

        persons = self.finder()(image)
        if not persons:
            raise ValueError("no person found")
        good = [i for i, p in enumerate(persons) if p.reason is None]
        pick = choose_identity_person(persons, image.shape[:2]) if good else None
        skipped = []
        for i, p in enumerate(persons):
            if i == pick:
                continue
            why = (
                p.reason
                or "not the identity person (choose_identity_person: larger and more central wins)"
            )
            skipped.append(f"person {i + 1} of {len(persons)} at {_box_text(p.box)}: {why}")
        if pick is None:
            return [], skipped
        p = persons[pick]
        return [self.sample(image, p)], skipped

    def sample(self, image, p, **extra) -> Found:
        from pg2kit.persons import crop_person

        kw = {} if self.pad is None else {"pad": self.pad}
        crop, to_crop = crop_person(image, p.box, self.size, **kw)
        kp = to_crop(p.keypoints)
        sc = np.where(kp[:, 0] >= 0, np.asarray(p.scores, np.float32), 0).astype(np.float32)
        return Found(crop, kp, sc, np.asarray(p.box, np.float32), float(p.score), **extra)


def _box_text(box) -> str:
    x0, y0, x1, y1 = (int(round(float(v))) for v in box)
    return f"({x0},{y0})-({x1},{y1})"


# ---------------------------------------------------------------- worker side


@dataclass
class Job:
    """Everything a worker needs besides its records (picklable, light)."""

    adapter: Any
    finder: Any
    source: Any  # worker-side keypoint source; None when keypoints come with the records
    frame: tuple[int, int, int]
    map_kind: str
    map_radius: int
    map_sigma: float
    mask_radius: int
    store_maps: bool
    max_pixels: int | None
    min_image_px: int | None


@dataclass
class ChunkResult:
    arrays: dict[str, Any]
    failures: list[tuple[str, str]]
    no_person: int
    bad_coordinates: int = 0


def process_chunk(tasks: list[tuple[Any, Any]], job: Job) -> ChunkResult:
    """Load, find persons and keypoints, draw masks for (record, given keypoints) tasks."""
    import cv2

    from pg2kit.imageio import check_image_size

    found: list[tuple[Any, Found]] = []
    failures: list[tuple[str, str]] = []
    for record, given in tasks:
        try:
            size = None
            if record.path is not None:
                size = check_image_size(record.path, job.max_pixels, job.min_image_px)
            image = job.adapter.load(record)

            def keypoints_fn(im, record=record, given=given):
                return given if given is not None else job.source(im, record)

            persons, skipped = job.finder.find(image, record, keypoints_fn, size)
        except (ValueError, OSError, cv2.error) as e:  # ImageError, NoPersonError, bad frames
            failures.append((record.rel_path, _one_line(e)))
            continue
        failures += [(record.rel_path, reason) for reason in skipped]
        for f in persons:
            if f.image.shape[:2] != tuple(job.frame[:2]):
                failures.append((record.rel_path, f"image is {f.image.shape[1]}x{f.image.shape[0]}"
                                 f" after loading, expected {job.frame[1]}x{job.frame[0]}"))  # fmt: skip
                continue
            found.append((record, f))
    return ChunkResult(sample_arrays(found, job), failures, _no_person(found))


def _no_person(found) -> int:
    return sum(1 for _, f in found if not present(f.keypoints).any())


def sample_arrays(found: list[tuple[Any, Found]], job: Job) -> dict[str, Any]:
    """The shard datasets of a list of (record, sample)."""
    from pg2kit import maps
    from pg2kit.datasets.base import printable_text

    h, w = job.frame[:2]
    n = len(found)
    kp_arr = (np.stack([np.asarray(f.keypoints, np.float32) for _, f in found]) if n
              else np.zeros((0, NUM_KEYPOINTS, 2), np.float32))  # fmt: skip
    arrays: dict[str, Any] = {
        "image": np.stack([f.image for _, f in found]) if n else np.zeros((0, h, w, 3), np.uint8),
        "keypoints": kp_arr,
        "scores": (
            np.stack([np.asarray(f.scores, np.float32) for _, f in found])
            if n
            else np.zeros((0, NUM_KEYPOINTS), np.float32)
        ),  # fmt: skip
        "mask": maps.body_masks(kp_arr, h, w, radius=job.mask_radius),
    }
    if job.store_maps:
        pm = maps.pose_maps(kp_arr, h, w, kind=job.map_kind, radius=job.map_radius,
                            sigma=job.map_sigma)  # fmt: skip
        arrays["pose_map"] = pm.astype(np.uint8 if job.map_kind == "disk" else np.float16)
    arrays["name"] = [printable_text(f.name or r.name) for r, f in found]
    arrays["identity"] = [printable_text(f.identity or r.identity) for r, f in found]
    arrays["source_path"] = [printable_text(r.rel_path) for r, _ in found]
    for key in META_FIELDS:
        default = False if META_DTYPES[key] is bool else -1
        vals = [getattr(r, key, default) for r, _ in found]
        if key == "frame":
            vals = [
                f.frame if f.frame is not None else v for (_, f), v in zip(found, vals, strict=True)
            ]
        arrays[key] = np.array(vals, META_DTYPES[key])
    arrays["source_box"] = (np.stack([np.asarray(f.box, np.float32) for _, f in found]) if n
                            else np.zeros((0, 4), np.float32))  # fmt: skip
    arrays["track"] = np.array([f.track for _, f in found], np.int32)
    arrays["detector_score"] = np.array([f.score for _, f in found], np.float32)
    return arrays


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split()) or type(e).__name__


# ---------------------------------------------------------------- parent side: plan


def make_adapter(cfg: PrepareConfig) -> Any:
    if cfg.dataset == "synthetic":
        from pg2kit.datasets.synthetic import Synthetic

        return Synthetic(num_identities=cfg.synthetic_ids, num_poses=cfg.synthetic_poses,
                         size=cfg.size or (128, 64), seed=cfg.seed)  # fmt: skip
    if cfg.dataset == "market1501":
        from pg2kit.datasets.market1501 import Market1501

        return Market1501()
    if cfg.dataset == "deepfashion":
        from pg2kit.datasets.deepfashion import DeepFashion

        return DeepFashion(crop176=cfg.crop176)
    pad = cfg.pad or _default_pad()
    if cfg.dataset == "folder":
        from pg2kit.datasets.folder import Folder

        return Folder(size=cfg.size or (256, 256), test_identities=cfg.test_identities,
                      pad=pad, seed=cfg.seed)  # fmt: skip
    if cfg.dataset == "table":
        from pg2kit.datasets.table import Table

        return Table(size=cfg.size or (256, 256), test_identities=cfg.test_identities,
                     pad=pad, seed=cfg.seed)  # fmt: skip
    if cfg.dataset == "video":
        from pg2kit.datasets.video import Video

        return Video(size=cfg.size or (128, 64), every=cfg.every, pad=pad,
                     max_pixels=cfg.max_pixels)  # fmt: skip
    raise PrepareError(f"unknown dataset {cfg.dataset!r} (choose from {', '.join(DATASETS)})")


def _default_pad() -> str:
    try:
        from pg2kit.persons import DEFAULT_PAD
    except ImportError:
        return "constant"
    return DEFAULT_PAD


def _persons_available() -> bool:
    try:
        import pg2kit.persons  # noqa: F401
    except ImportError:
        return False
    return True


def make_finder(cfg: PrepareConfig, adapter: Any, source: Any) -> Any:
    """The person finder for this dataset and keypoint source."""
    if cfg.dataset in ("market1501", "deepfashion"):
        return WholeImage(adapter)
    if cfg.dataset == "synthetic":
        return WholeImage(adapter, score=1.0)
    if getattr(source, "kind", "") == "mediapipe" and cfg.detect and _persons_available():
        return DetectedPersons(adapter.size, cfg.pad or _default_pad(), _person_options(cfg))
    return KeypointCrop(adapter)


def _person_options(cfg: PrepareConfig) -> dict[str, Any]:
    opts: dict[str, Any] = {}
    if cfg.min_person_px is not None:
        opts["min_person_px"] = cfg.min_person_px
    if cfg.allow_cut:
        opts["allow_cut"] = True
    if cfg.person_keypoints != "crop":  # the finder's default; options name the version
        opts["keypoints"] = cfg.person_keypoints
    if not cfg.segments:
        opts["segment_tiles"] = ()
    if cfg.estimator_options:
        opts["estimator_options"] = dict(cfg.estimator_options)
    return opts


@dataclass
class Plan:
    """What a run will do: the records per split, the shards still to write, the stages."""

    cfg: PrepareConfig
    out: Path
    adapter: Any
    source: Any
    job: Job
    splits: dict[str, list[tuple[Any, Any]]]  # split -> [(record, given keypoints or None)]
    scan_failures: list[tuple[str, str]]
    notes: list[str]
    attrs: dict[str, Any]
    params: dict[str, Any]
    compression: dict[str, str]
    todo: list[tuple[str, int, list[tuple[Any, Any]]]]  # (split, shard index, tasks)
    done: dict[tuple[str, int], dict[str, Any]]
    bad_coordinates: int = 0


def plan_prepare(cfg: PrepareConfig) -> Plan:
    """Scan the source, look up imported keypoints, and list the shards still to write."""
    from pg2kit.datasets.base import AdapterError
    from pg2kit.keypoint_sources import KeypointSourceError, LookupFailed, make_source

    out = Path(cfg.out)
    try:
        adapter = make_adapter(cfg)
    except ValueError as e:
        raise PrepareError(str(e)) from None
    try:
        source = make_source(cfg.keypoints, adapter, cfg.estimator_options)
    except KeypointSourceError as e:
        raise PrepareError(str(e)) from None
    try:
        scan = adapter.scan(Path(cfg.src) if cfg.src is not None else None)
    except AdapterError as e:
        raise PrepareError(str(e)) from None
    failures = list(scan.failures)
    notes = list(scan.notes)
    splits: dict[str, list[tuple[Any, Any]]] = {}
    missing = 0
    for split, records in scan.records.items():
        tasks = []
        for r in records:
            given = None
            if source.in_parent:
                try:
                    given = source.lookup(r.name, r.path)
                except LookupFailed as e:
                    failures.append((r.rel_path, str(e)))
                    continue
                if given is None:
                    failures.append((r.rel_path, f"no keypoints for {r.name} in {source.path}"))
                    missing += 1
                    continue
            tasks.append((r, given))
        if source.in_parent and source.order:
            # keep the annotation file's row order, so an export reproduces it line for line
            tasks.sort(key=lambda t: source.rank(t[0].name))
        splits[split] = tasks
    bad = getattr(source, "bad_coordinates", 0)
    if missing:
        notes.append(f"{missing} images have no keypoints in {source.path}; skipped")
    if bad:
        notes.append(f"{bad} imported keypoints were non-finite or absurd (beyond 1e6 px): "
                     "made missing")  # fmt: skip

    frame = tuple(adapter.frame)
    params = cfg.shard_params()
    finder = make_finder(cfg, adapter, source)
    attrs = {
        "schema_version": shards.SCHEMA_VERSION,
        "dataset": cfg.dataset,
        "keypoint_layout": "openpose-coco18",
        "keypoint_order": "xy",
        "map_kind": cfg.map_kind,
        "map_radius": cfg.map_radius,
        "map_sigma": cfg.map_sigma,
        "mask_radius": cfg.mask_radius,
        "estimator": source.kind,
        "estimator_version": source.version,
        "frame_height": frame[0],
        "frame_width": frame[1],
        "frame_x_offset": frame[2],
        "pg2kit_version": __version__,
    }
    if isinstance(finder, DetectedPersons):
        from pg2kit.keypoint_sources import persons_version

        attrs["person_finder"] = "pg2kit.persons"
        attrs["estimator_version"] = persons_version(finder.options)
    if cfg.compression == "auto":  # chosen by bench/shard_io.py: images barely compress
        compression = {"image": "none", "mask": "gzip1", "pose_map": "gzip1"}
    else:
        compression = dict.fromkeys(("image", "mask", "pose_map"), cfg.compression)
    job = Job(adapter=adapter, finder=finder, source=None if source.in_parent else source,
              frame=frame, map_kind=cfg.map_kind, map_radius=cfg.map_radius,
              map_sigma=cfg.map_sigma, mask_radius=cfg.mask_radius, store_maps=cfg.store_maps,
              max_pixels=cfg.max_pixels, min_image_px=cfg.min_image_px)  # fmt: skip
    plan = Plan(cfg, out, adapter, source, job, splits, failures, notes, attrs, params,
                compression, [], {}, bad)  # fmt: skip

    # shards of consecutive records; finished shards (with matching settings) are kept
    for split, tasks in splits.items():
        for k in range(max(1, -(-len(tasks) // cfg.shard_size))):
            path = shards.shard_path(out, split, k)
            marker = shards.read_marker(path)
            if marker is not None and not cfg.overwrite:
                if marker.get("params") != params:
                    raise PrepareError(
                        f"{out} holds shards made with other settings ({path.name}); "
                        "use --overwrite to redo them or choose another -o"
                    )
                check_keypoints_version(out, path, marker, attrs["estimator_version"])
                plan.done[(split, k)] = marker
            else:
                plan.todo.append((split, k, tasks[k * cfg.shard_size : (k + 1) * cfg.shard_size]))
    return plan


def stored_keypoints_version(path: Path, marker: dict[str, Any]) -> str | None:
    """The `estimator_version` a finished shard was made with: its marker's record, or for
    shards written before markers recorded it, the shard's own attribute (None if unreadable)."""
    if "keypoints_version" in marker:
        return marker["keypoints_version"]
    import h5py

    try:
        with h5py.File(path, "r") as f:
            return str(f.attrs["estimator_version"])
    except (OSError, KeyError):
        return None


def check_keypoints_version(out: Path, path: Path, marker: dict[str, Any], now: str) -> None:
    """Refuse to build on a shard whose keypoints came from other person-finder or estimator
    settings: same command-line settings, but pg2kit's defaults changed since it was written."""
    made = stored_keypoints_version(path, marker)
    if made != now:
        raise PrepareError(
            f"{out} holds shards whose keypoints were found with other settings ({path.name}: "
            f"{made or 'unknown'}, now {now}; pg2kit's person finder or estimator defaults "
            "changed since they were written); use --overwrite to redo them or choose another -o"
        )


# ---------------------------------------------------------------- parent side: run and write


def run_tasks(func, tasks, *, workers, backend="loky", scheduler=None, ray_address=None,
              retries=0, need_paths=()):  # fmt: skip
    """Results of func(*task) in task order, on the chosen backend (pg2kit.parallel)."""
    from pg2kit.parallel import ParallelError
    from pg2kit.parallel import run_tasks as parallel_run_tasks

    try:
        yield from parallel_run_tasks(func, tasks, workers=workers, backend=backend,
                                      scheduler=scheduler, ray_address=ray_address,
                                      retries=retries, need_paths=need_paths)  # fmt: skip
    except ParallelError as e:
        raise PrepareError(str(e)) from None


def run_plan(plan: Plan, log=print, progress: bool = True) -> None:
    """Run the planned shards' chunks on the workers; write each shard when its chunks are in."""
    from tqdm.auto import tqdm

    cfg, out = plan.cfg, plan.out
    out.mkdir(parents=True, exist_ok=True)
    for split, k, _ in plan.todo:
        shards.remove_shard(shards.shard_path(out, split, k))
    _drop_stale(out, plan.splits, cfg.shard_size)
    total = sum(len(t) for _, _, t in plan.todo)
    if plan.done:
        log(f"resuming: {len(plan.done)} finished shard(s) kept, {len(plan.todo)} to do")

    chunks = []  # (shard key, chunk index, number of chunks, tasks)
    for split, k, tasks in plan.todo:
        parts = [tasks[i : i + cfg.chunk_size] for i in range(0, len(tasks), cfg.chunk_size)]
        for c, part in enumerate(parts or [[]]):
            chunks.append(((split, k), c, len(parts or [[]]), part))
    pending: dict[tuple[str, int], dict[int, ChunkResult]] = {}
    shown = 0
    bar = tqdm(total=total, unit="img", desc="prepare", disable=not progress or total == 0,
               dynamic_ncols=True)  # fmt: skip
    workers = cfg.workers if len(chunks) > 1 else 1
    first = next((rec.path for *_, part in chunks for rec, _ in part if rec.path), None)
    results = run_tasks(process_chunk, [(part, plan.job) for *_, part in chunks],
                        workers=workers, backend=cfg.backend, scheduler=cfg.scheduler,
                        ray_address=cfg.ray_address, retries=cfg.retries,
                        need_paths=[first] if first else [])  # fmt: skip
    for (key, c, nchunks, part), res in zip(chunks, results, strict=True):
        bar.update(len(part))
        for path, reason in res.failures:
            if shown < 20:
                bar.write(f"skipped {path}: {reason}")
            shown += 1
        got = pending.setdefault(key, {})
        got[c] = res
        if len(got) == nchunks:
            write_shard(plan, key, [got[i] for i in range(nchunks)])
            del pending[key]
    bar.close()
    if shown > 20:
        log(f"... and {shown - 20} more skipped: see {out / shards.FAILURES}")
    if plan.todo and (out / shards.PAIRS).exists():
        (out / shards.PAIRS).unlink()
        log("note: shards changed, removed the old pairs.h5 (run `pg2kit pairs` again)")


def write_shard(plan: Plan, key: tuple[str, int], parts: list[ChunkResult]) -> None:
    """Write one shard from its chunks' results and record it as done."""
    arrays = _concat([p.arrays for p in parts])
    marker = {
        "params": plan.params,
        "keypoints_version": plan.attrs["estimator_version"],
        "failures": [list(f) for p in parts for f in p.failures],
        "no_person": sum(p.no_person for p in parts),
    }
    split, k = key
    path = shards.shard_path(plan.out, split, k)
    entry = shards.write_shard(path, arrays, {**plan.attrs, "split": split}, plan.compression,
                               marker)  # fmt: skip
    plan.done[key] = {**entry, **marker}


def write_summary(plan: Plan, t0: float, log=print) -> dict[str, Any]:
    """failures.csv and manifest.json from the finished shards; returns the manifest."""
    cfg, out = plan.cfg, plan.out
    manifest = _manifest(plan)
    old = out / shards.MANIFEST
    if (out / shards.PAIRS).exists() and old.exists():  # shards unchanged: the pairs still hold
        try:
            manifest["pairs"] = shards.load_manifest(out).get("pairs")
        except shards.SchemaError:
            pass
    _write_failures(out, plan.scan_failures, plan.done)
    shards.write_manifest(out, manifest)
    manifest["elapsed_s"] = round(time.perf_counter() - t0, 2)
    if sum(s["count"] for s in manifest["splits"].values()) == 0:
        raise PrepareError(f"nothing usable came out of {cfg.src}: see {out / shards.FAILURES}")
    return manifest


def run_prepare(cfg: PrepareConfig, log=print, progress: bool = True) -> dict[str, Any]:
    """Prepare `cfg.out` from `cfg.src`; returns the manifest written."""
    t0 = time.perf_counter()
    if cfg.dataset == "video":
        from pg2kit.datasets.video import run_video

        return run_video(cfg, log=log, progress=progress)
    plan = plan_prepare(cfg)
    for note in plan.notes:
        log(f"note: {note}")
    run_plan(plan, log=log, progress=progress)
    return write_summary(plan, t0, log=log)


def _drop_stale(out: Path, splits: dict[str, list], shard_size: int) -> None:
    """Remove shards beyond what the current inputs need (e.g. after fewer inputs)."""
    for p in sorted((out / shards.SHARD_DIR).glob("*.h5*")):
        stem = p.name.split(".h5")[0]
        split, _, idx = stem.rpartition("-")
        if not idx.isdigit():
            continue
        n = len(splits.get(split, []))
        if int(idx) >= max(1, -(-n // shard_size)) or split not in splits:
            p.unlink(missing_ok=True)


def _concat(parts: list[dict[str, Any]]) -> dict[str, Any]:
    out = {}
    for key in parts[0]:
        vals = [p[key] for p in parts]
        out[key] = sum(vals, []) if isinstance(vals[0], list) else np.concatenate(vals)
    return out


def _manifest(plan: Plan) -> dict[str, Any]:
    cfg, done = plan.cfg, plan.done
    split_info = {}
    for split in plan.splits:
        entries = sorted((k, v) for (s, k), v in done.items() if s == split)
        shard_list = [
            {key: v[key] for key in ("file", "count", "bytes", "sha256")} for _, v in entries
        ]
        split_info[split] = {
            "count": sum(s["count"] for s in shard_list),
            "inputs": len(plan.splits[split]),
            "no_person": sum(v.get("no_person", 0) for _, v in entries),
            "skipped": sum(len(v.get("failures", [])) for _, v in entries),
            "shards": shard_list,
        }
    frame = plan.job.frame
    prefix = getattr(plan.adapter, "csv_prefix", None) or cfg.dataset
    reasons = Counter(_reason_class(r) for _, r in plan.scan_failures)
    for v in done.values():
        reasons.update(_reason_class(r) for _, r in v.get("failures", []))
    return {
        "schema_version": shards.SCHEMA_VERSION,
        "pg2kit_version": __version__,
        "dataset": cfg.dataset,
        "csv_prefix": prefix,
        "source": str(Path(cfg.src).resolve()) if cfg.src else None,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "frame": {"height": frame[0], "width": frame[1], "x_offset": frame[2]},
        "keypoints": {
            "source": plan.attrs["estimator"],
            "version": plan.attrs["estimator_version"],
        },  # fmt: skip
        "params": plan.params,
        "splits": split_info,
        "failures": len(plan.scan_failures)
        + sum(len(v.get("failures", [])) for v in done.values()),
        "rejections": dict(sorted(reasons.items())),
        "bad_coordinates": plan.bad_coordinates,
    }


def _reason_class(reason: str) -> str:
    """A failure reason without its specifics ('image too large: 30000x30000 ...' -> 'image too
    large'), for the counts by reason in the summary."""
    head = reason.split(":")[0]
    if head.startswith("person ") and " of " in head:  # 'person 2 of 3 at (..): why'
        head = reason.split(": ", 1)[1].split(":")[0] if ": " in reason else head
    return " ".join(head.split()[:6])


def _write_failures(out: Path, scan_failures, done) -> None:
    from pg2kit.datasets.base import printable_text

    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["split", "path", "reason"])
    for path, reason in scan_failures:
        w.writerow(["", printable_text(path), printable_text(reason)])
    for (split, _), v in sorted(done.items()):
        for path, reason in v.get("failures", []):
            w.writerow([split, printable_text(path), printable_text(reason)])
    write_text(out / shards.FAILURES, buf.getvalue())


def default_workers() -> int:
    return max(1, min(2, os.cpu_count() or 1))
