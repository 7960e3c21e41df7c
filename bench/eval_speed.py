"""SSIM + mask-SSIM (pg2 and patn conventions) for 12,000 Market-size (128x64) pairs.

pg2kit.metrics.ssim_batch against the straightforward loop a user writes (scikit-image's
structural_similarity per pair, as the PG2/PATN scripts do), timed in the same run: the loop on a
subset (extrapolated to all pairs), pg2kit on all of them; and the largest difference per pair.

Images: the real Market crops of shared/data/realdev (cycled to N pairs); "generated" = the
target shifted 2 px with noise. Masks: PG2 body masks (r4) of the annotated target keypoints.

    python bench/eval_speed.py                       # 12,000 pairs, loop on 300
    python bench/eval_speed.py --pairs 2000 --loop 100
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import numpy as np

REALDEV = Path("/work/shared/data/realdev")


def load_pairs(n: int, seed: int = 0):
    import cv2

    from pg2kit.formats import read_defgan_annotations
    from pg2kit.maps import body_masks

    table = read_defgan_annotations(REALDEV / "annotations.csv")
    kp_by_stem = {Path(str(k)).stem: v for k, v in zip(table.names, table.keypoints, strict=True)}
    files = sorted((REALDEV / "Market1501").glob("*.png"))
    imgs, kps = [], []
    for p in files:
        img = cv2.cvtColor(cv2.imread(str(p)), cv2.COLOR_BGR2RGB)
        if img.shape[:2] == (128, 64) and p.stem in kp_by_stem:
            imgs.append(img)
            kps.append(kp_by_stem[p.stem])
    idx = np.arange(n) % len(imgs)
    real = np.stack(imgs)[idx]
    rng = np.random.default_rng(seed)
    gen = np.roll(real, 2, axis=2).astype(np.int16) + rng.integers(-20, 21, real.shape)
    gen = np.clip(gen, 0, 255).astype(np.uint8)
    masks = body_masks(np.stack(kps)[idx].astype(np.float32), 128, 64, radius=4)
    return gen, real, masks, len(imgs)


def loop_metrics(gen, real, masks):
    """The straightforward per-pair scikit-image loop (both conventions, plain and masked)."""
    from skimage.metrics import structural_similarity

    out = {k: [] for k in ("pg2", "patn", "mask_pg2", "mask_patn")}
    for g, r, m in zip(gen, real, masks, strict=True):
        gm, rm = g * m[..., None], r * m[..., None]
        for key, (a, b) in (("", (g, r)), ("mask_", (gm, rm))):
            out[key + "pg2"].append(structural_similarity(
                a, b, win_size=7, data_range=255, channel_axis=-1))  # fmt: skip
            span = float(a.max()) - float(a.min())
            out[key + "patn"].append(structural_similarity(
                a.astype(float), b.astype(float), gaussian_weights=True, sigma=1.5,
                use_sample_covariance=False, data_range=span or 1.0, channel_axis=-1))  # fmt: skip
    return {k: np.array(v) for k, v in out.items()}


def fast_metrics(gen, real, masks):
    from pg2kit.metrics import apply_mask, ssim_batch_multi

    plain = ssim_batch_multi(gen, real)
    masked = ssim_batch_multi(apply_mask(gen, masks), apply_mask(real, masks))
    return {**plain, **{f"mask_{k}": v for k, v in masked.items()}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=12_000)
    ap.add_argument("--loop", type=int, default=300, help="pairs timed with the skimage loop")
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()
    gen, real, masks, distinct = load_pairs(a.pairs)
    print(f"{a.pairs} pairs 128x64 from {distinct} real Market crops; load avg "
          f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cpus")  # fmt: skip
    t = time.perf_counter()
    ref = loop_metrics(gen[: a.loop], real[: a.loop], masks[: a.loop])
    loop_s = (time.perf_counter() - t) * a.pairs / a.loop
    print(f"skimage loop: {loop_s:.1f} s for {a.pairs} pairs (extrapolated from {a.loop})")
    times = []
    for _ in range(a.repeats):
        t = time.perf_counter()
        fast = fast_metrics(gen, real, masks)
        times.append(time.perf_counter() - t)
    med = statistics.median(times)
    print(f"pg2kit.metrics: median {med:.1f} s of {a.repeats} ({', '.join(f'{x:.1f}' for x in times)})"
          f" -> {loop_s / med:.0f}x faster")  # fmt: skip
    for k in ref:
        d = np.abs(fast[k][: a.loop] - ref[k]).max()
        print(f"  {k:10s} mean {fast[k].mean():.4f}  max |pg2kit - skimage| {d:.1e}")


if __name__ == "__main__":
    main()
