"""Throughput of pose maps + body masks from keypoints, one thread: pg2kit.maps vs per-image code.

Usage: python bench/maps_speed.py [--n 2000] [--repeats 5]. Prints median images/s of the batched
functions, of a straightforward per-image numpy version and of the pure-Python reference
(tests/_reference_maps.py), both measured in the same run on fewer images, and the ratios.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ[_var] = "1"  # before numpy is imported

import argparse  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import cv2  # noqa: E402
import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import _reference_maps as ref  # noqa: E402

from pg2kit import maps  # noqa: E402
from pg2kit.keypoints import MASK_SEGMENTS  # noqa: E402

# A standing person in unit coordinates (x, y) of its box, COCO-18 order.
TEMPLATE = np.array([
    (0.50, 0.12), (0.50, 0.22), (0.35, 0.23), (0.30, 0.38), (0.28, 0.52), (0.65, 0.23),
    (0.70, 0.38), (0.72, 0.52), (0.42, 0.52), (0.41, 0.70), (0.40, 0.88), (0.58, 0.52),
    (0.59, 0.70), (0.60, 0.88), (0.47, 0.10), (0.53, 0.10), (0.44, 0.11), (0.56, 0.11),
])  # fmt: skip


def person_keypoints(rng: np.random.Generator, n: int, height: int, width: int) -> np.ndarray:
    """(n, 18, 2) float32 person-like keypoints, jittered, about 15% missing."""
    box_w = min(width, 0.7 * height)  # Market: the full 64 px; DeepFashion: a 180 px wide figure
    scale = rng.uniform(0.8, 1.1, (n, 1, 1))
    shift = rng.normal(0, 0.05, (n, 1, 2)) * (width, height)
    kp = (TEMPLATE - 0.5) * (box_w, height) * scale + (width / 2, height / 2) + shift
    kp = kp + rng.normal(0, 0.03 * height, kp.shape)
    kp[rng.random((n, 18)) < 0.15] = -1
    return kp.astype(np.float32)


# --------------------------------------------------------------------------------------------------
# straightforward per-image numpy: a full-frame distance test per keypoint / per mask point


def naive_pose_map(kp, height, width, kind, radius=4, sigma=6.0):
    yy, xx = np.mgrid[0:height, 0:width]
    out = np.zeros((height, width, 18), np.uint8 if kind == "disk" else np.float32)
    for j, (x, y) in enumerate(kp):
        if x < 0 or y < 0:
            continue
        if kind == "disk":
            cx, cy = np.floor(x + 0.5), np.floor(y + 0.5)
            out[..., j] = (xx - cx) ** 2 + (yy - cy) ** 2 <= radius * radius
        else:
            out[..., j] = np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * sigma * sigma))
    return out


def naive_body_mask(kp, height, width, radius=4):
    yy, xx = np.mgrid[0:height, 0:width]
    mask = np.zeros((height, width), bool)
    for a, b in MASK_SEGMENTS:
        if min(kp[a].min(), kp[b].min()) < 0:
            continue
        length = float(np.hypot(*(kp[b] - kp[a])))
        n = int(length / radius)
        ts = [0.0, 1.0] + ([k / n for k in range(1, n)] if n > 1 else [])
        for t in ts:
            cx, cy = np.floor(kp[a] + t * (kp[b] - kp[a]) + 0.5)
            mask |= (xx - cx) ** 2 + (yy - cy) ** 2 <= radius * radius
    kernel = np.ones((5, 5), np.uint8)
    return cv2.morphologyEx(mask.astype(np.uint8), cv2.MORPH_CLOSE, kernel)


# --------------------------------------------------------------------------------------------------


def median_rate(fn, n_images: int, repeats: int) -> float:
    fn()  # warm-up: caches, allocations
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return n_images / float(np.median(times))


def run_case(kp, height, width, kind, args, torch) -> dict[str, float]:
    """Median images/s of each implementation for one frame size and map kind."""
    chunk = min(args.chunk, len(kp))
    dtype = np.uint8 if kind == "disk" else np.float32
    map_buf = np.zeros((chunk, height, width, 18), dtype)  # preallocated, as a shard writer would
    mask_buf = np.zeros((chunk, height, width), np.uint8)

    def fast():
        for s in range(0, len(kp) - chunk + 1, chunk):
            maps.pose_maps(kp[s : s + chunk], height, width, kind, out=map_buf)
            maps.body_masks(kp[s : s + chunk], height, width, out=mask_buf)

    n_naive = max(4, len(kp) // 20)

    def naive():
        for k in kp[:n_naive]:
            naive_pose_map(k, height, width, kind)
            naive_body_mask(k, height, width)

    n_ref = 4 if kind == "disk" else 1  # pure Python: a Gaussian map is 1.2M exp() at 256x256
    ref_map = ref.pose_map_disk if kind == "disk" else ref.pose_map_gaussian

    def reference():
        for k in kp[:n_ref]:
            ref_map(k, height, width)
            ref.body_mask(k, height, width)

    rates = {
        "fast": median_rate(fast, (len(kp) // chunk) * chunk, args.repeats),
        "naive": median_rate(naive, n_naive, max(1, args.repeats // 2)),
        "reference": median_rate(reference, n_ref, 1),
    }
    if torch is not None:
        kp_t = torch.from_numpy(kp[:chunk])
        rates["torch"] = median_rate(
            lambda: maps.pose_maps_torch(kp_t, height, width, kind), chunk, args.repeats
        )
    return rates


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=2000, help="images for the batched functions")
    ap.add_argument("--repeats", type=int, default=5, help="timed repeats (median reported)")
    ap.add_argument("--chunk", type=int, default=250, help="batch size of the fast functions")
    args = ap.parse_args()
    cv2.setNumThreads(1)
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:
        torch = None

    rng = np.random.default_rng(0)
    print(f"one thread, {args.n} images, median of {args.repeats}; images/s (x = speed-up)")
    print(f"{'frame':>8} {'maps':>8} | {'pg2kit':>9} | {'naive np':>9} {'x':>6} | "
          f"{'reference':>9} {'x':>7} | {'torch cpu':>9}")  # fmt: skip
    for height, width in ((128, 64), (256, 256)):
        kp = person_keypoints(rng, args.n, height, width)
        for kind in ("disk", "gaussian"):
            r = run_case(kp, height, width, kind, args, torch)
            torch_txt = f"{r['torch']:9.0f}" if "torch" in r else "-"
            print(f"{height:>4}x{width:<3} {kind:>8} | {r['fast']:9.0f} | {r['naive']:9.1f} "
                  f"{r['fast'] / r['naive']:6.0f} | {r['reference']:9.2f} "
                  f"{r['fast'] / r['reference']:7.0f} | {torch_txt}")  # fmt: skip
    print("pg2kit/naive/reference: pose maps + body masks (numpy); torch cpu: pose maps only, "
          "(B, 18, H, W)")  # fmt: skip


if __name__ == "__main__":
    main()
