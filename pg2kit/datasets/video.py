"""`prepare video`: every person in a video (or a folder of videos) found, tracked and turned into
identities `<video stem>#<track>`, one sample per sampled frame in which the person passes the gates.

Stages: the parent decodes frames (`--every N`) in a background thread; the workers detect every
person of a frame (PersonFinder.detect), estimate each one's keypoints on that person alone and
apply the quality gates (with `--detect-every K`, detection runs on the first of every K frames
and each person is followed through the others where its last keypoints say it is:
`track_frames`); back in the parent, in frame order, the persons are tracked
(pg2kit.tracking.Tracker), tracks are cut and joined by the person's colours
(`--appearance-split`, `--appearance-join`: `regroup_tracks`), each track is thinned
(`--min-pose-change`), short tracks are dropped
(`--min-track`), tracks are assigned to a split (`--test-identities`) and the samples go into
shards in video order. Detection runs in the workers, not in the parent, because it costs as much
as several keypoint estimates per frame (bench/video_speed.py): in the parent it left the
workers waiting.

A video that cannot be used (unknown codec, not a video, no frames, too large a resolution,
nobody in it) is one row of failures.csv and one line on the terminal; the run goes on.
Interrupted runs start over (the shards of a finished run are reused when nothing changed).
"""

from __future__ import annotations

import math
import queue
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pg2kit.datasets.base import AdapterError, printable_text, rel_posix, require_dir

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm")
FRAMES_PER_BATCH = 16  # frames (or segments) sent to the workers per run_tasks call
BATCH_BYTES = 256 << 20  # most decoded frame bytes in one batch


@dataclass(frozen=True)
class Video:
    """Settings of the video source; `scan` lists the video files."""

    size: tuple[int, int] = (128, 64)  # stored (height, width)
    every: int = 1  # use every N-th frame
    pad: str = "constant"
    max_pixels: int | None = 50_000_000
    name: str = "video"
    csv_prefix: str = "video"

    @property
    def frame(self) -> tuple[int, int, int]:
        return (int(self.size[0]), int(self.size[1]), 0)

    def scan(self, src: Path) -> tuple[Path, list[Path], list[str]]:
        """(root, video files sorted, notes). A file is a one-video source."""
        src = Path(src).expanduser()
        if src.is_file():
            if src.suffix.lower() not in VIDEO_EXTENSIONS:
                raise AdapterError(
                    f"{src} is not a video file (expected {', '.join(VIDEO_EXTENSIONS)})"
                )
            return src.parent.resolve(), [src.resolve()], []
        root = require_dir(src)
        videos, others = [], []
        for p in sorted(root.rglob("*")):
            if any(part.startswith(".") for part in p.relative_to(root).parts) or not p.is_file():
                continue
            (videos if p.suffix.lower() in VIDEO_EXTENSIONS else others).append(p)
        notes = []
        if others:
            notes.append(f"ignored {len(others)} non-video file(s), e.g. {others[0].name}")
        if not videos:
            raise AdapterError(f"no video files ({', '.join(VIDEO_EXTENSIONS)}) found under {root}")
        return root, videos, notes


# ---------------------------------------------------------------- reading and detecting


class VideoUnusable(ValueError):
    """A video that cannot be used at all (one-line reason)."""


class FrameTask:
    """One sampled frame (goes to a worker). The pixels travel as bytes: joblib would otherwise
    memory-map every frame over 1 MB through /dev/shm, whose clean-up races print tracebacks."""

    def __init__(self, frame: int, image: np.ndarray):
        self.frame = frame
        self.shape = image.shape
        self.data = np.ascontiguousarray(image).tobytes()

    @property
    def image(self) -> np.ndarray:
        return np.frombuffer(self.data, np.uint8).reshape(self.shape)


@dataclass
class FrameResult:
    """What a worker found in one frame: every person (duplicates dropped) in detector order."""

    frame: int
    boxes: np.ndarray  # float32 (N, 4) source pixels
    scores: np.ndarray  # float32 (N,)
    samples: list  # Found (accepted) or None (rejected), per person
    reasons: list  # None (accepted) or the rejection reason, per person


@dataclass
class VideoStats:
    frames_expected: int = 0
    frames_read: int = 0
    persons: int = 0
    stopped_early: bool = False


def open_video(path: Path, max_pixels: int | None) -> tuple[Any, int, tuple[int, int]]:
    """(cv2.VideoCapture, frame count or 0 if unknown, (width, height)); VideoUnusable if not
    usable. The resolution is checked before any frame is decoded."""
    import cv2

    if path.stat().st_size == 0:
        raise VideoUnusable("empty file (0 bytes)")
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        cap.release()
        raise VideoUnusable("cannot open: not a video, damaged, or a codec OpenCV cannot decode")
    w = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH))
    h = int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
    n = max(0, int(cap.get(cv2.CAP_PROP_FRAME_COUNT)))
    if w <= 0 or h <= 0:
        cap.release()
        raise VideoUnusable("no video stream with a frame size (audio only or damaged)")
    if max_pixels and w * h > max_pixels:
        cap.release()
        raise VideoUnusable(
            f"resolution {w}x{h} = {w * h / 1e6:.1f} MP > --max-pixels {max_pixels / 1e6:g} MP"
        )
    return cap, n, (w, h)


def frames(cap: Any, every: int, stats: VideoStats) -> Iterator[tuple[int, np.ndarray]]:
    """(frame index, RGB frame) of every `every`-th frame until the stream ends."""
    import cv2

    index = -1
    while True:
        index += 1
        if index % every:
            if not cap.grab():
                break
            continue
        ok, bgr = cap.read()
        if not ok or bgr is None:
            break
        stats.frames_read += 1
        yield index, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    if stats.frames_expected and index < stats.frames_expected:
        stats.stopped_early = True


# ---------------------------------------------------------------- worker side


def _distinct(done: list) -> list:
    """The gated persons of a frame without second detections of one person."""
    from pg2kit.persons import DUPLICATE

    return [p for p in done if not (p.reason or "").startswith(DUPLICATE)]


def _frame_result(task: FrameTask, done: list, size: tuple[int, int], pad: str) -> FrameResult:
    from pg2kit.prepare import DetectedPersons
    from pg2kit.tracking import appearance

    image = task.image
    maker = DetectedPersons(size, pad, {})
    samples, reasons = [], []
    for p in done:
        reasons.append(p.reason)
        sample = None if p.reason else maker.sample(image, p, frame=task.frame)
        if sample is not None:  # here, in the worker: the parent's appearance pass only compares
            sample.appearance = appearance(sample.image, sample.keypoints)
        samples.append(sample)
    boxes = np.array([p.box for p in done], np.float32).reshape(-1, 4)
    scores = np.array([p.score for p in done], np.float32)
    return FrameResult(task.frame, boxes, scores, samples, reasons)


def find_in_frame(task: FrameTask, finder: Any, size: tuple[int, int], pad: str) -> FrameResult:
    """Detect every person of one frame, estimate each one's keypoints on its own crop, gate."""
    image = task.image
    done = _distinct(finder.find(image))
    return _frame_result(task, done, size, pad)


def find_in_frames(tasks: list[FrameTask], options: dict, size, pad) -> list[FrameResult]:
    """Worker task: `find_in_frame` for each frame, with this worker's PersonFinder."""
    from pg2kit.keypoint_sources import worker_person_finder

    finder = worker_person_finder(options)
    return [find_in_frame(t, finder, size, pad) for t in tasks]


def follow_in_frames(
    segments: list[list[FrameTask]], options: dict, size, pad, views: int = 2
) -> list:
    """Worker task: for each segment of consecutive frames, every person is detected in its
    first frame (keypoints and gates as configured) and then followed frame by frame
    (PersonFinder.follow: each person looked for where its last keypoints say it is, without the
    detector; keypoints from the landmark model on that ROI, as MediaPipe tracks, with the same
    gates; `views` 1 runs it as is only, 2 also mirrored). One list of FrameResult per
    segment."""
    from pg2kit.keypoint_sources import worker_person_finder

    finder = worker_person_finder(options)
    follower = worker_person_finder({**options, "keypoints": "roi", "roi_views": views})
    out = []
    for segment in segments:
        results, prev = [], None
        for task in segment:
            image = task.image
            if prev is None:
                prev = _distinct(finder.find(image))
            else:
                candidates = [q for q in map(follower.follow, prev) if q is not None]
                prev = _distinct(follower.estimate_all(image, candidates))
            results.append(_frame_result(task, prev, size, pad))
        out.append(results)
    return out


def track_frames(
    batches: Iterator[list[FrameTask]], detect_every: int, run: Any, tracker: Any
) -> Iterator[tuple[FrameResult, list[int]]]:
    """(frame result, track id per person) for every frame of `batches`, in frame order.

    With `detect_every` 1, `run("detect", [FrameTask])` finds every person in every frame. With
    K > 1 the frames are cut into segments of K consecutive sampled frames and
    `run("follow", [[FrameTask]])` detects in a segment's first frame and follows each person
    through the rest (`follow_in_frames`); segments run in parallel. Every frame's persons then
    feed `tracker` in frame order. `run` returns one result per item, in order.
    """
    k = max(1, int(detect_every))

    def tracked(results):
        for res in results:
            # a person who passed every gate may start a track, whatever its detector score
            # (persons accepted at scores 0.3-0.5 were found and then never tracked); rejected
            # candidates only keep tracks alive
            starts = [reason is None for reason in res.reasons]
            ids = tracker.update(res.frame, res.boxes, res.scores, starts)
            yield res, [int(t) for t in ids]

    carry: list[FrameTask] = []  # frames of a segment cut by the batch end
    for batch in batches:
        if k == 1:
            yield from tracked(run("detect", batch))
            continue
        seq = carry + batch
        full = len(seq) // k * k
        carry = seq[full:]
        found = run("follow", [seq[i : i + k] for i in range(0, full, k)]) if full else []
        yield from tracked(res for segment in found for res in segment)
    if carry:  # the video's last, shorter segment
        yield from tracked(run("follow", [carry])[0])


# ---------------------------------------------------------------- parent side


def pose_distance(a: np.ndarray, b: np.ndarray, height: int) -> float:
    """Mean displacement of the keypoints present in both poses, as a share of the crop height
    (inf when they share fewer than 3 keypoints)."""
    ok = (a[:, 0] >= 0) & (b[:, 0] >= 0)
    if ok.sum() < 3:
        return math.inf
    return float(np.linalg.norm(a[ok] - b[ok], axis=1).mean() / height)


def thin_track(samples: list, min_change: float, height: int) -> list:
    """Keep a track's sample only if its pose moved by >= `min_change` from the last kept one."""
    if min_change <= 0 or not samples:
        return samples
    kept = [samples[0]]
    for s in samples[1:]:
        if pose_distance(s.keypoints, kept[-1].keypoints, height) >= min_change:
            kept.append(s)
    return kept


def regroup_tracks(
    per_track: dict[int, list], split: float, join: float
) -> tuple[dict[int, list], list[tuple[Any, int, str]], int, int]:
    """The tracker's tracks (track id -> samples in frame order) checked by appearance
    (pg2kit.tracking): each track is cut where its person's colours change (`split`, the
    distance; 0: never) and tracks showing one person are joined again (`join`; 0: never).

    Returns (tracks, dropped, cuts, joins): the new tracks (a joined chain keeps the id of its
    first piece; the later parts of a cut track get new ids above the tracker's), the dropped
    lone samples as (sample, old track id, reason), and the counts of cuts and joins."""
    from pg2kit.tracking import TrackPiece, appearance, join_tracks, split_by_appearance

    if split <= 0 and join <= 0:
        return per_track, [], 0, 0
    next_id = max(per_track, default=-1) + 1
    pieces: list[tuple[int, list]] = []  # (id, samples)
    descs: dict[int, list] = {}  # id(sample) -> descriptor
    dropped, cuts = [], 0
    for track in sorted(per_track):
        samples = per_track[track]
        d = [appearance(s.image, s.keypoints) if s.appearance is None else s.appearance
             for s in samples]  # fmt: skip
        for s, x in zip(samples, d, strict=True):
            descs[id(s)] = x
        labels = split_by_appearance(d, split) if split > 0 else [0] * len(samples)
        parts: dict[int, list] = defaultdict(list)
        for s, label in zip(samples, labels, strict=True):
            if label < 0:
                dropped.append((s, track, f"looks like someone else: appearance distance > "
                                          f"{split:g} from the rest of its track"))  # fmt: skip
            else:
                parts[label].append(s)
        for label in sorted(parts):
            if label == 0:
                pieces.append((track, parts[label]))
            else:
                pieces.append((next_id, parts[label]))
                next_id += 1
                cuts += 1
    if join <= 0:
        return dict(pieces), dropped, cuts, 0
    chains = join_tracks(
        [
            TrackPiece(
                [s.frame for s in p],
                np.array([s.box for s in p], np.float64),
                [descs[id(s)] for s in p],
            )
            for _, p in pieces
        ],  # fmt: skip
        join,
    )
    out = {}
    for chain in chains:
        out[pieces[chain[0]][0]] = [s for k in chain for s in pieces[k][1]]
    return out, dropped, cuts, len(pieces) - len(chains)


def track_split(seed: int, video: int, track: int, test_fraction: float) -> str:
    """'test' for a deterministic `test_fraction` share of the tracks, else 'train'."""
    if test_fraction <= 0:
        return "train"
    u = np.random.default_rng([seed, 7, video, track]).random()
    return "test" if u < test_fraction else "train"


def video_stem(path: Path) -> str:
    from pg2kit.datasets.folder import safe_name

    return safe_name(printable_text(path.stem))


@dataclass
class Summary:
    videos: int = 0
    videos_used: int = 0
    frames_read: int = 0
    persons_found: int = 0
    persons_estimated: int = 0
    tracks: int = 0
    tracks_kept: int = 0
    samples: int = 0
    thinned: int = 0
    cuts: int = 0  # tracks cut where the person's appearance changed
    joins: int = 0  # tracks joined to an earlier one of the same appearance
    rejections: Counter = field(default_factory=Counter)

    def lines(self) -> list[str]:
        out = [
            f"videos {self.videos} ({self.videos_used} used), frames read {self.frames_read}, "
            f"persons found {self.persons_found}, tracks kept {self.tracks_kept} of "
            f"{self.tracks}, samples written {self.samples}"
            + (f" ({self.thinned} near-identical frames thinned out)" if self.thinned else "")
        ]
        if self.cuts or self.joins:
            out.append(f"by appearance: {self.cuts} track(s) cut where the person changed, "
                       f"{self.joins} joined to an earlier track")  # fmt: skip
        if self.rejections:
            out.append("rejections: " + ", ".join(f"{k} {v}" for k, v in
                                                  self.rejections.most_common()))  # fmt: skip
        return out


def _prefetch(gen: Iterator[FrameTask], batch: int) -> Iterator[list[FrameTask]]:
    """Batches of `gen` produced by a background thread, two ahead, so that decoding and
    detection in this process overlap the workers' keypoint estimation."""
    q: queue.Queue = queue.Queue(maxsize=2)
    done = object()
    stop = threading.Event()

    def produce():
        try:
            buf = []
            for item in gen:
                if stop.is_set():
                    return
                buf.append(item)
                if len(buf) == batch:
                    q.put(buf)
                    buf = []
            if buf:
                q.put(buf)
            q.put(done)
        except BaseException as e:  # noqa: BLE001 - handed to the consumer
            q.put(e)

    t = threading.Thread(target=produce, daemon=True)
    t.start()
    try:
        while True:
            item = q.get()
            if item is done:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        while t.is_alive():
            try:
                q.get(timeout=0.1)
            except queue.Empty:
                pass
        t.join()


def run_video(cfg: Any, log=print, progress: bool = True) -> dict[str, Any]:
    """`prepare video`: see the module docstring. Returns the manifest written."""
    from tqdm.auto import tqdm

    from pg2kit import __version__, shards
    from pg2kit.keypoint_sources import persons_version
    from pg2kit.prepare import (
        Job,
        Plan,
        PrepareError,
        _default_pad,
        _person_options,
        check_keypoints_version,
        run_tasks,
        sample_arrays,
        write_shard,
        write_summary,
    )

    t0 = time.perf_counter()
    if cfg.keypoints != "mediapipe":
        raise PrepareError("prepare video finds keypoints itself: --keypoints must be mediapipe")
    pad = cfg.pad or _default_pad()
    adapter = Video(size=tuple(cfg.size or (128, 64)), every=cfg.every, pad=pad,
                    max_pixels=cfg.max_pixels)  # fmt: skip
    try:
        root, videos, notes = adapter.scan(Path(cfg.src))
    except AdapterError as e:
        raise PrepareError(str(e)) from None
    for note in notes:
        log(f"note: {note}")
    out = Path(cfg.out)
    params = cfg.shard_params()
    options = _person_options(cfg)
    version = persons_version(options)
    existing = sorted((out / shards.SHARD_DIR).glob("*.h5"))
    markers = [shards.read_marker(p) for p in existing]
    if existing and not cfg.overwrite:
        if any(m is not None and m.get("params") != params for m in markers):
            raise PrepareError(f"{out} holds shards made with other settings; use --overwrite "
                               "to redo them or choose another -o")  # fmt: skip
        for path, m in zip(existing, markers, strict=True):
            if m is not None:
                check_keypoints_version(out, path, m, version)
        if all(markers) and (out / shards.MANIFEST).exists():
            try:
                manifest = shards.load_manifest(out)
            except shards.SchemaError:
                manifest = None
            if manifest is not None and manifest.get("params") == params:
                log(f"{out} is already prepared with these settings; nothing to do")
                manifest["elapsed_s"] = round(time.perf_counter() - t0, 2)
                return manifest
    for p in sorted((out / shards.SHARD_DIR).glob("*.h5*")):
        p.unlink()
    (out / shards.PAIRS).unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)

    size = adapter.frame[:2]
    job = Job(adapter=adapter, finder=None, source=None, frame=adapter.frame,
              map_kind=cfg.map_kind, map_radius=cfg.map_radius, map_sigma=cfg.map_sigma,
              mask_radius=cfg.mask_radius, store_maps=cfg.store_maps,
              max_pixels=cfg.max_pixels, min_image_px=cfg.min_image_px)  # fmt: skip
    attrs = {
        "schema_version": shards.SCHEMA_VERSION, "dataset": "video",
        "keypoint_layout": "openpose-coco18", "keypoint_order": "xy",
        "map_kind": cfg.map_kind, "map_radius": cfg.map_radius, "map_sigma": cfg.map_sigma,
        "mask_radius": cfg.mask_radius, "estimator": "mediapipe",
        "estimator_version": version,
        "frame_height": size[0], "frame_width": size[1], "frame_x_offset": 0,
        "pg2kit_version": __version__, "person_finder": "pg2kit.persons",
    }  # fmt: skip
    if cfg.compression == "auto":
        compression = {"image": "none", "mask": "gzip1", "pose_map": "gzip1"}
    else:
        compression = dict.fromkeys(("image", "mask", "pose_map"), cfg.compression)
    plan = Plan(cfg, out, adapter, None, job, {}, [], notes, attrs, params, compression, [], {})
    summary = Summary(videos=len(videos))
    pending: dict[str, list] = defaultdict(list)  # split -> [(record, Found)] not yet in a shard
    written: dict[str, int] = defaultdict(int)  # split -> shards written
    inputs: Counter = Counter()

    def flush(split: str, final: bool = False) -> None:
        while len(pending[split]) >= cfg.shard_size or (final and pending[split]):
            part = pending[split][: cfg.shard_size]
            del pending[split][: cfg.shard_size]
            from pg2kit.prepare import ChunkResult, _no_person

            res = ChunkResult(sample_arrays(part, job), [], _no_person(part))
            write_shard(plan, (split, written[split]), [res])
            written[split] += 1

    def fail(path: str, reason: str) -> None:
        plan.scan_failures.append((path, reason))
        summary.rejections[_reason_key(reason)] += 1

    for vi, path in enumerate(videos):
        rel = rel_posix(path, root)
        stem = video_stem(path)
        try:
            cap, count, (w, h) = open_video(path, cfg.max_pixels)
        except (VideoUnusable, OSError) as e:
            log(f"skipped {rel}: {' '.join(str(e).split())}")
            fail(rel, " ".join(str(e).split()))
            continue
        stats = VideoStats(frames_expected=count)
        bar = tqdm(total=-(-count // cfg.every) if count else None, unit="frame", desc=stem[:24],
                   disable=not progress, dynamic_ncols=True, leave=False)  # fmt: skip
        per_track: dict[int, list] = defaultdict(list)
        seen_tracks: set[int] = set()
        try:
            from pg2kit.tracking import Tracker

            tracker = Tracker()  # the measured defaults (docs/estimator.md)

            def run(kind: str, items: list) -> list:
                if kind == "detect":
                    func, tasks = find_in_frames, [([it], options, size, pad) for it in items]
                else:
                    func = follow_in_frames
                    tasks = [([it], options, size, pad, cfg.follow_views) for it in items]
                workers = cfg.workers if len(tasks) > 1 else 1
                return [res for (res,) in run_tasks(
                    func, tasks, workers=workers, backend=cfg.backend, scheduler=cfg.scheduler,
                    ray_address=cfg.ray_address, retries=cfg.retries)]  # fmt: skip

            gen = (FrameTask(i, im) for i, im in frames(cap, cfg.every, stats))
            last = 0
            # FRAMES_PER_BATCH frames (K = 1) or segments of K frames per batch, but no more
            # than BATCH_BYTES of decoded frames (two batches are held: one decoded ahead)
            k = cfg.key_every
            fit = max(k, BATCH_BYTES // max(1, w * h * 3) // k * k)
            batches = _prefetch(gen, min(FRAMES_PER_BATCH * k, fit))
            for res, ids in track_frames(batches, k, run, tracker):
                n = len(res.samples)
                stats.persons += n
                summary.persons_estimated += n
                for track, found, reason in zip(ids, res.samples, res.reasons, strict=True):
                    if track >= 0:
                        seen_tracks.add(track)
                    if reason is not None:
                        summary.rejections[_reason_key(reason)] += 1
                        who = f"track {track}" if track >= 0 else "untracked person"
                        plan.scan_failures.append((rel, f"frame {res.frame} {who}: {reason}"))
                        continue
                    if track < 0:  # a tracker that gives an accepted person no id: no identity
                        summary.rejections["not tracked"] += 1
                        plan.scan_failures.append((rel, f"frame {res.frame}: accepted person "
                                                        "not tracked (the tracker gave no id)"))  # fmt: skip
                        continue
                    found.track = track
                    per_track[track].append(found)
                bar.update(stats.frames_read - last)
                last = stats.frames_read
        finally:
            cap.release()
            bar.close()
        summary.frames_read += stats.frames_read
        summary.persons_found += stats.persons
        summary.tracks += len(seen_tracks)
        if stats.frames_read == 0:
            log(f"skipped {rel}: no frame could be decoded")
            fail(rel, "no frame could be decoded (zero frames, truncated or unknown codec)")
            continue
        summary.videos_used += 1
        if stats.stopped_early and count:
            msg = f"stream ended after frame {stats.frames_read * cfg.every} of {count} (truncated or damaged); the frames before it are used"  # noqa: E501
            log(f"note: {rel}: {msg}")
            fail(rel, msg)
        if not seen_tracks:
            log(f"skipped {rel}: nobody found in {stats.frames_read} frames")
            fail(rel, f"nobody found in {stats.frames_read} frames")
            continue
        per_track, dropped, cuts, joins = regroup_tracks(
            per_track, cfg.appearance_split, cfg.appearance_join
        )
        summary.cuts += cuts
        summary.joins += joins
        for s, track, reason in dropped:
            summary.rejections[_reason_key(reason)] += 1
            plan.scan_failures.append((rel, f"frame {s.frame} track {track}: {reason}"))
        kept_any = False
        for track in sorted(per_track):
            samples = per_track[track]  # in frame order (track_frames)
            thinned = thin_track(samples, cfg.min_pose_change, size[0])
            summary.thinned += len(samples) - len(thinned)
            if len(thinned) < cfg.min_track:
                summary.rejections["track too short"] += 1
                plan.scan_failures.append((rel, f"track {track}: {len(thinned)} sample(s) < "
                                                f"--min-track {cfg.min_track}"))  # fmt: skip
                continue
            summary.tracks_kept += 1
            kept_any = True
            identity = f"{stem}#{track}"
            split = track_split(cfg.seed, vi, track, cfg.test_identities)
            record = _VideoRecord(rel_path=rel, identity=identity, camera=vi)
            for s in thinned:
                s.name = f"{stem}_t{track:04d}_f{s.frame:06d}.png"
                s.identity = identity
                pending[split].append((record, s))
                inputs[split] += 1
            summary.samples += len(thinned)
            flush(split)
        if not kept_any:
            fail(rel, f"no track kept: nobody passed the gates and --min-track {cfg.min_track} "
                      f"in {stats.frames_read} frames")  # fmt: skip
    for split in list(pending):
        flush(split, final=True)
    for split in inputs:
        plan.splits[split] = [None] * inputs[split]
    for line in summary.lines():
        log(line)
    if summary.samples == 0:
        # still write failures.csv so the user can see why
        from pg2kit.prepare import _write_failures

        _write_failures(out, plan.scan_failures, plan.done)
        raise PrepareError(f"nothing usable came out of {cfg.src}: see {out / shards.FAILURES}")
    manifest = write_summary(plan, t0, log=log)
    manifest["video_summary"] = {k: v for k, v in summary.__dict__.items() if k != "rejections"} | {
        "rejections": dict(summary.rejections)
    }
    shards.write_manifest(out, {k: v for k, v in manifest.items() if k != "elapsed_s"})
    try:
        from pg2kit.report import track_sheet

        sheet = track_sheet(out, out / "inspect" / "tracks.png")
        log(f"track sheet: {sheet}")
    except ImportError:
        pass
    return manifest


@dataclass(frozen=True)
class _VideoRecord:
    """What the shard writer reads of a record, for video samples."""

    rel_path: str
    identity: str
    camera: int
    name: str = ""
    sequence: int = -1
    frame: int = -1
    junk: bool = False
    distractor: bool = False


def _reason_key(reason: str) -> str:
    from pg2kit.prepare import _reason_class

    return _reason_class(reason)
