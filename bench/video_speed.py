"""`prepare video` throughput against the estimator alone on the same person crops.

    python bench/video_speed.py [--images ../shared/data/realdev/Market1501] [--frames 40]
                                [--people 5] [--workers 2] [--repeats 3]
                                [--detect-every 1,8] [--person-keypoints crop,roi]
                                [--follow-views 1,2] [--skip-finder]

A 768x576 clip is composed from real Market-1501 crops (scaled to 192 px tall) walking across a
textured background at different speeds (some cross), written with cv2.VideoWriter (MJPG).
`prepare video` (decode and track in the parent; detect, follow, keypoints and gates in the
workers; crops, masks, shards) runs on it with N workers once per --detect-every x
--person-keypoints combination (the rate counts persons estimated); the baseline runs only the
MediaPipe estimator
on the same people's crops (each true box widened by 15% of its height, as PersonFinder.estimate
crops), already decoded, in the same N loky workers; a second baseline runs the whole person
finder (detect + keypoints + gates, PersonFinder()) on the decoded frames in the same workers, so
the cost of detection and the cost of the pipeline around it are told apart. Both are warm (models loaded in every
worker before timing) and alternate over the repeats; medians are printed, and the ratio of
each repeat (prepare against the estimator-only run just before it, which cancels more of a VM
whose speed drifts from minute to minute). Target: >= 80%.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

H, W = 576, 768


def compose(images: list[np.ndarray], frames: int, people: int, seed: int = 0):
    """Frames (RGB) and the true boxes per frame of `people` crops walking across."""
    rng = np.random.default_rng(seed)
    tex = cv2.GaussianBlur(rng.integers(60, 200, (H, W, 3), dtype=np.uint8), (0, 0), 6)
    ramp = np.linspace(0.7, 1.1, H)[:, None, None]
    bg = np.clip(tex * ramp, 0, 255).astype(np.uint8)
    walkers = []
    for k in range(people):
        im = images[k % len(images)]
        im = cv2.resize(im, (96, 192), interpolation=cv2.INTER_CUBIC)
        x0 = rng.uniform(0, W - 96)
        v = rng.choice([-1, 1]) * rng.uniform(3, 9)
        y = rng.uniform(40, H - 192 - 20)
        walkers.append((im, x0, v, y))
    out, boxes = [], []
    for t in range(frames):
        img = bg.copy()
        bx = []
        for im, x0, v, y in walkers:
            x = (x0 + v * t) % (W - 96)
            xi, yi = int(x), int(y)
            img[yi : yi + 192, xi : xi + 96] = im
            bx.append((xi, yi, xi + 96, yi + 192))
        out.append(img)
        boxes.append(bx)
    return out, boxes


def _estimate_chunk(crops):
    from pg2kit.keypoint_sources import worker_estimator

    est = worker_estimator({})
    return [est(c) for c in crops]


def _finder_chunk(frames):
    """The person finder alone (detect + keypoints + gates) on decoded frames: persons found."""
    from pg2kit.keypoint_sources import worker_person_finder

    finder = worker_person_finder({})
    return sum(len(finder(f)) for f in frames)


def _warm_finder(_):
    from pg2kit.keypoint_sources import worker_estimator, worker_person_finder

    worker_estimator({})(np.zeros((64, 32, 3), np.uint8))
    finder = worker_person_finder({})
    finder._pose()(np.zeros((64, 32, 3), np.uint8))
    return 0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--images", type=Path, default=Path("../shared/data/realdev/Market1501"))
    ap.add_argument("--frames", type=int, default=40)
    ap.add_argument("--people", type=int, default=5)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--detect-every", default="1", metavar="K[,K...]",
                    help="prepare video --detect-every values to time (one row each)")  # fmt: skip
    ap.add_argument("--skip-finder", action="store_true",
                    help="leave out the finder-only baseline (PersonFinder() on every frame: "
                    "the slowest part of a repeat)")  # fmt: skip
    ap.add_argument("--follow-views", default="2", metavar="N[,N...]",
                    help="prepare video --follow-views values to time (1, 2)")  # fmt: skip
    ap.add_argument("--person-keypoints", default="crop", metavar="KIND[,KIND...]",
                    help="prepare video --person-keypoints values to time (roi, crop)")  # fmt: skip
    args = ap.parse_args()
    ks = [(kind, int(k), int(v)) for kind in args.person_keypoints.split(",")
          for k in args.detect_every.split(",") for v in args.follow_views.split(",")]  # fmt: skip
    from joblib import Parallel, delayed

    from pg2kit.prepare import PrepareConfig, run_prepare

    files = sorted(p for p in args.images.iterdir() if p.suffix.lower() in (".png", ".jpg"))
    images = [cv2.cvtColor(cv2.imread(str(p)), cv2.COLOR_BGR2RGB) for p in files[:50]]
    frames, boxes = compose(images, args.frames, args.people)
    crops = []
    for img, bx in zip(frames, boxes, strict=True):
        for x0, y0, x1, y1 in bx:
            m = int(0.15 * (y1 - y0))
            crops.append(np.ascontiguousarray(img[max(0, y0 - m) : y1 + m,
                                                  max(0, x0 - m) : x1 + m]))  # fmt: skip
    chunks = [crops[i : i + 8] for i in range(0, len(crops), 8)]
    runner = Parallel(n_jobs=args.workers, backend="loky")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        clip = tmp / "street.avi"
        vw = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"MJPG"), 25, (W, H))
        for img in frames:
            vw.write(cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
        vw.release()
        runner(delayed(_warm_finder)(i) for i in range(4 * args.workers))  # models in workers
        warm = tmp / "warm.avi"
        vw = cv2.VideoWriter(str(warm), cv2.VideoWriter_fourcc(*"MJPG"), 25, (W, H))
        for img in frames[:4]:
            vw.write(cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
        vw.release()
        for kind, v in sorted({(kind, v) for kind, _, v in ks}):  # models loaded in the workers
            cfg = PrepareConfig(dataset="video", src=warm, out=tmp / "w", workers=args.workers,
                                min_track=1, overwrite=True, person_keypoints=kind,
                                follow_views=v)  # fmt: skip
            run_prepare(cfg, log=lambda s: None, progress=False)
        est_rates, finder_rates = [], []
        prep_rates: dict[tuple, list[float]] = {k: [] for k in ks}
        frame_rates: dict[tuple, list[float]] = {k: [] for k in ks}
        summary: dict[tuple, dict] = {}
        for _ in range(args.repeats):
            t = time.perf_counter()
            runner(delayed(_estimate_chunk)(c) for c in chunks)
            est_rates.append(len(crops) / (time.perf_counter() - t))
            if not args.skip_finder:
                t = time.perf_counter()
                runner(delayed(_finder_chunk)(frames[i : i + 2]) for i in range(0, len(frames), 2))
                finder_rates.append(len(frames) / (time.perf_counter() - t))
            for kind, k, v in ks:
                cfg = PrepareConfig(dataset="video", src=clip, out=tmp / "out",
                                    workers=args.workers, min_track=1, overwrite=True,
                                    detect_every=k, person_keypoints=kind,
                                    follow_views=v)  # fmt: skip
                t = time.perf_counter()
                manifest = run_prepare(cfg, log=lambda s: None, progress=False)
                dt = time.perf_counter() - t
                summary[kind, k, v] = sm = manifest["video_summary"]
                prep_rates[kind, k, v].append(sm["persons_estimated"] / dt)
                frame_rates[kind, k, v].append(sm["frames_read"] / dt)
    est = statistics.median(est_rates)
    fnd = statistics.median(finder_rates) if finder_rates else float("nan")
    print(f"clip: {args.frames} frames {W}x{H}, {args.people} people per frame, "
          f"{args.workers} workers")  # fmt: skip
    print(f"estimator only : {est:7.1f} persons/s = {est / args.people:.2f} frames/s of "
          f"{args.people} people  (runs: {', '.join(f'{r:.1f}' for r in est_rates)})")  # fmt: skip
    if finder_rates:
        print(
            f"finder only    : {fnd:7.2f} frames/s (PersonFinder() per decoded frame, same workers)"
        )
    for key in ks:
        prep, fr = statistics.median(prep_rates[key]), statistics.median(frame_rates[key])
        sm = summary[key]
        print(f"prepare video --person-keypoints {key[0]} --detect-every {key[1]} --follow-views {key[2]}: "
              f"{prep:7.1f} persons/s, {fr:.2f} frames/s "
              f"(runs: {', '.join(f'{r:.1f}' for r in prep_rates[key])}) -> {prep / est:.2f} of "
              f"the estimator-only rate (persons/s), {fr / (est / args.people):.2f} (frames/s)"
              + (f", {fr / fnd:.2f} of the finder-only rate (frames/s)" if finder_rates else ""))  # fmt: skip
        # the VM's speed drifts between minutes: the ratio of each repeat (prepare against the
        # estimator run just before it) cancels more of that than the ratio of the medians
        per = [r / e for r, e in zip(prep_rates[key], est_rates, strict=True)]
        print(f"    per repeat (vs the estimator-only run just before it): "
              f"{', '.join(f'{r:.2f}' for r in per)}; median {statistics.median(per):.2f}")  # fmt: skip
        print(f"    last run: persons found {sm['persons_found']}, estimated "
              f"{sm['persons_estimated']}, tracks kept {sm['tracks_kept']}, samples "
              f"{sm['samples']}, rejections {sm['rejections']}")  # fmt: skip


if __name__ == "__main__":
    main()
