"""Measure HDF5 shard compression choices: size, write time and read-back speed.

    python bench/shard_io.py [--images ../shared/data/realdev/Market1501] [--n 4096]

Market-size real crops (tiled to N samples) are written as one shard per setting, then read back
in one process by SplitReader (sequential batches of 256) and by per-sample random access.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from pg2kit import maps, shards


def load_images(folder: Path, n: int, size=(128, 64)) -> np.ndarray:
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".png", ".jpg"))
    imgs = []
    for p in files:
        im = cv2.cvtColor(cv2.imread(str(p)), cv2.COLOR_BGR2RGB)
        imgs.append(cv2.resize(im, (size[1], size[0]), interpolation=cv2.INTER_AREA))
    reps = -(-n // len(imgs))
    return np.stack((imgs * reps)[:n])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--images", type=Path, default=Path("../shared/data/realdev/Market1501"))
    ap.add_argument("--n", type=int, default=4096)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    images = load_images(args.images, args.n)
    n, h, w = images.shape[:3]
    rng = np.random.default_rng(0)
    kp = np.stack([rng.uniform(0, w, (n, 18)), rng.uniform(0, h, (n, 18))], -1).astype(np.float32)
    arrays = {
        "image": images,
        "keypoints": kp,
        "scores": np.ones((n, 18), np.float32),
        "mask": maps.body_masks(kp, h, w),
        "name": [f"{i:04d}_c1s1_000000_00.jpg" for i in range(n)],
    }
    raw_mb = (images.nbytes + arrays["mask"].nbytes) / 1e6
    print(f"{n} samples of {h}x{w}; raw image+mask {raw_mb:.1f} MB")
    print("auto = images uncompressed, masks gzip1 (the default of `pg2kit prepare`)")
    print(f"{'compression':<12} {'MB':>7} {'ratio':>6} {'write s':>8} {'seq read/s':>11} "
          f"{'random read/s':>14}")  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        settings = {
            "none": {"image": "none", "mask": "none"},
            "lzf": {"image": "lzf", "mask": "lzf"},
            "gzip1": {"image": "gzip1", "mask": "gzip1"},
            "gzip4": {"image": "gzip4", "mask": "gzip4"},
            "none+lzf": {"image": "none", "mask": "lzf"},
            "auto": {"image": "none", "mask": "gzip1"},  # images barely compress; masks do
        }
        for comp, cmap in settings.items():
            root = Path(tmp) / comp
            path = shards.shard_path(root, "train", 0)
            t = time.perf_counter()
            entry = shards.write_shard(path, arrays, {"split": "train"}, cmap)
            write_s = time.perf_counter() - t
            shards.write_manifest(root, {"schema_version": 1, "splits": {"train": {
                "count": n, "shards": [entry]}}})  # fmt: skip
            seq, rnd = [], []
            for _ in range(args.repeats):
                reader = shards.SplitReader(root, "train")
                t = time.perf_counter()
                for start in range(0, n, 256):
                    ids = np.arange(start, min(n, start + 256))
                    for field in ("image", "keypoints", "mask"):
                        reader.read(field, ids)
                seq.append(n / (time.perf_counter() - t))
                reader.close()
                f = __import__("h5py").File(path, "r")
                dsets = [f["image"], f["keypoints"], f["mask"]]
                order = rng.permutation(n)[:1024]
                t = time.perf_counter()
                for i in order:
                    for ds in dsets:
                        ds[i]
                rnd.append(len(order) / (time.perf_counter() - t))
                f.close()
            mb = entry["bytes"] / 1e6
            print(f"{comp:<12} {mb:>7.1f} {raw_mb / mb:>6.2f} {write_s:>8.2f} "
                  f"{statistics.median(seq):>11.0f} {statistics.median(rnd):>14.0f}")  # fmt: skip


if __name__ == "__main__":
    main()
