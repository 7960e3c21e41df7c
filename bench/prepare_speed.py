"""`prepare` throughput against the estimator alone, with the same worker processes.

    python bench/prepare_speed.py [--images ../shared/data/realdev/Market1501] [--n 800]

Real Market crops are copied (renamed Market-style) into a Market-1501 layout of N images. The
baseline runs only the estimator on already decoded images in the same 2 loky workers (same task
size); then `run_prepare` does everything (decode, estimate, masks, shards, manifest). Both are
warm (estimators built before timing) and alternate over the repeats; medians are printed.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import cv2


def _estimate_chunk(images, options):
    from pg2kit.keypoint_sources import worker_estimator

    est = worker_estimator(options)
    return [est(im) for im in images]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--images", type=Path, default=Path("../shared/data/realdev/Market1501"))
    ap.add_argument("--n", type=int, default=800)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    from joblib import Parallel, delayed

    from pg2kit.prepare import PrepareConfig, run_prepare

    files = sorted(p for p in args.images.iterdir() if p.suffix.lower() in (".png", ".jpg"))
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        folder = tmp / "Market" / "bounding_box_train"
        folder.mkdir(parents=True)
        images = []
        for i in range(args.n):
            src = files[i % len(files)]
            dst = folder / f"{1 + i // 8:04d}_c1s1_{i:06d}_00{src.suffix}"
            shutil.copyfile(src, dst)
            images.append(cv2.cvtColor(cv2.imread(str(dst)), cv2.COLOR_BGR2RGB))
        cfg = PrepareConfig(dataset="market1501", src=tmp / "Market", out=tmp / "out",
                            workers=args.workers, overwrite=True)  # fmt: skip
        chunks = [images[i : i + cfg.chunk_size] for i in range(0, len(images), cfg.chunk_size)]
        runner = Parallel(n_jobs=args.workers, backend="loky")
        runner(delayed(_estimate_chunk)(images[:2], {}) for _ in range(2 * args.workers))  # warm
        est_rates, prep_rates = [], []
        for _ in range(args.repeats):
            t = time.perf_counter()
            runner(delayed(_estimate_chunk)(c, {}) for c in chunks)
            est_rates.append(args.n / (time.perf_counter() - t))
            t = time.perf_counter()
            manifest = run_prepare(cfg, log=lambda s: None, progress=False)
            prep_rates.append(args.n / (time.perf_counter() - t))
        count = manifest["splits"]["train"]["count"]
        est, prep = statistics.median(est_rates), statistics.median(prep_rates)
        print(f"{args.n} Market crops (64x128), {args.workers} workers, {args.repeats} repeats")
        print(
            f"estimator only : {est:7.1f} images/s  (runs: {', '.join(f'{r:.1f}' for r in est_rates)})"
        )
        print(f"prepare        : {prep:7.1f} images/s  (runs: {', '.join(f'{r:.1f}' for r in prep_rates)}); "
              f"{count} samples written")  # fmt: skip
        print(f"ratio prepare / estimator-only: {prep / est:.3f}")


if __name__ == "__main__":
    main()
