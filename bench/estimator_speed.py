"""Images/s of the default keypoint estimator alone, 1 and 2 loky worker processes, on real images
from DATA/{Market1501,DeepFashion}; MediaPipe is loaded only inside the workers, never here.
Usage: python bench/estimator_speed.py [--data /work/shared/data/realdev] [--images 80] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np

SETS = {"Market (64x128)": "Market1501", "DeepFashion (256x256)": "DeepFashion"}


def load_rgb(path: Path) -> np.ndarray:
    import cv2

    return np.ascontiguousarray(cv2.imread(str(path), cv2.IMREAD_COLOR)[:, :, ::-1])


# Baseline in the same run: one plain MediaPipe call per image (no upscale, no padding, no flip).
ONE_CALL = {
    "views_small": [(1.0,)],
    "views_large": [(1.0,)],
    "fallback_small": [],
    "fallback_large": [],
    "upscale_height": 0,
}


def time_chunk(images: list[np.ndarray], spec: str, options: dict) -> tuple[int, float, float]:
    """In a worker: build one estimator, warm it up, run it over `images`.

    Returns (images done, seconds for them, seconds to construct + warm up).
    """
    from pg2kit.estimators import make_estimator

    t0 = time.perf_counter()
    est = make_estimator(spec, **options)
    est(images[0])
    t1 = time.perf_counter()
    for img in images:
        est(img)
    t2 = time.perf_counter()
    est.close()
    return len(images), t2 - t1, t1 - t0


def throughput(
    images: list[np.ndarray], workers: int, spec: str, options: dict
) -> tuple[float, float]:
    """(steady-state images/s, wall-clock images/s including worker start and model load)."""
    from joblib import Parallel, delayed

    chunks = [images[i::workers] for i in range(workers)]
    t0 = time.perf_counter()
    results = Parallel(n_jobs=workers, backend="loky")(
        delayed(time_chunk)(c, spec, options) for c in chunks
    )
    wall = time.perf_counter() - t0
    steady = sum(n for n, _, _ in results) / max(dt for _, dt, _ in results)
    return steady, len(images) / wall


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path("/work/shared/data/realdev"))
    ap.add_argument("--images", type=int, default=80, help="images per set")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--spec", default="mediapipe")
    args = ap.parse_args()
    for label, folder in SETS.items():
        paths = sorted((args.data / folder).glob("*.png"))[: args.images]
        images = [load_rgb(p) for p in paths]
        for workers in (1, 2):
            stats = {}
            for name, options in (("baseline", ONE_CALL), ("default", {})):
                runs = [
                    throughput(images, workers, args.spec, options) for _ in range(args.repeats)
                ]
                stats[name] = (
                    statistics.median(r[0] for r in runs),
                    statistics.median(r[1] for r in runs),
                )
            (steady, wall), (base, _) = stats["default"], stats["baseline"]
            print(
                f"{label:22s} {workers} process(es): {steady:6.1f} img/s steady, "
                f"{wall:5.1f} img/s wall incl. start-up (median of {args.repeats}, "
                f"{len(images)} images); 1-call baseline {base:6.1f} img/s, "
                f"ratio {steady / base:.2f}"
            )


if __name__ == "__main__":
    main()
