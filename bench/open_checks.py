"""What the cheap checks on every open cost, against train start-up, on a 40-shard folder.

Builds a prepared folder of 40 shards (Market-sized 128x64 frames, 128 samples each, pairs.h5),
then times, interleaved and repeated (median):

  checked    what a trainer does at start through pg2kit.shards: load_manifest (stat + marker
             per shard), check_split (every shard's dataset headers), the keypoints/name/identity
             fields (names checked) and read_pairs (fingerprint, ids in range)
  unchecked  the same reads as a user would write them with plain json + h5py, no checks
  start-up   `pg2kit train DATA --preset tiny --dry-run` in a fresh process (imports, config,
             data checks, model build), the start-up the checks are part of

and prints the overhead (checked - unchecked) as a share of start-up. Also times write_shard
(in-memory HDF5 + one write + fsync) against plain h5py writing to disk, per shard.

    python bench/open_checks.py [--shards 40] [--per-shard 128] [--repeats 7]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pg2kit import shards  # noqa: E402


def build(root: Path, n_shards: int, per_shard: int, h: int = 128, w: int = 64) -> None:
    rng = np.random.default_rng(0)
    entries = []
    attrs = {"schema_version": 1, "split": "train", "dataset": "market1501", "frame_height": h,
             "frame_width": w, "map_kind": "disk", "map_radius": 4, "map_sigma": 6.0,
             "mask_radius": 4, "keypoint_layout": "openpose-coco18", "keypoint_order": "xy"}  # fmt: skip
    ids = []
    for k in range(n_shards):
        base = rng.integers(0, 255, (1, h, w, 3), np.uint8)
        arrays = {
            "image": np.repeat(base, per_shard, 0)
            ^ rng.integers(0, 8, (per_shard, h, w, 3), np.uint8),
            "keypoints": rng.uniform(0, 60, (per_shard, 18, 2)).astype(np.float32),
            "scores": np.ones((per_shard, 18), np.float32),
            "mask": rng.integers(0, 2, (per_shard, h, w), np.uint8),
            "name": [
                f"{(k * per_shard + i) // 8:04d}_c1s1_{i:06d}_00.jpg" for i in range(per_shard)
            ],
            "identity": [f"{(k * per_shard + i) // 8:04d}" for i in range(per_shard)],
            "camera": np.ones(per_shard, np.int16),
        }
        ids += arrays["identity"]
        entries.append(shards.write_shard(shards.shard_path(root, "train", k), arrays, attrs,
                                          compression={"image": "lzf", "mask": "lzf"}))  # fmt: skip
    n = n_shards * per_shard
    manifest = {"schema_version": 1, "dataset": "market1501", "csv_prefix": "market",
                "frame": {"height": h, "width": w, "x_offset": 0},
                "keypoints": {"source": "bench", "version": ""},
                "splits": {"train": {"count": n, "shards": entries}}}  # fmt: skip
    shards.write_manifest(root, manifest)
    from pg2kit.pairs import pg2_pairs

    shards.write_pairs(root, {"train": pg2_pairs(np.array(ids))}, "pg2", {})


def checked(root: Path) -> None:
    shards._CHECKED.clear()  # as in a fresh process: every shard header is checked once
    shards.check_split(root, "train", ("image", "keypoints", "mask"))
    shards.read_split_fields(root, "train", ["keypoints", "name", "identity"])
    shards.read_pairs(root, "train")


def unchecked(root: Path) -> None:
    m = json.loads((root / "manifest.json").read_text())
    for s in m["splits"]["train"]["shards"]:
        with h5py.File(root / s["file"], "r") as f:
            f["image"].shape  # noqa: B018 - what a plain reader touches
    parts = {k: [] for k in ("keypoints", "name", "identity")}
    for s in m["splits"]["train"]["shards"]:
        with h5py.File(root / s["file"], "r") as f:
            for k in parts:
                v = f[k][...]
                parts[k].append(np.array([x.decode() for x in v]) if v.dtype == object else v)
    {k: np.concatenate(v) for k, v in parts.items()}
    with h5py.File(root / "pairs.h5", "r") as f:
        f["train"][...]


def timed(fn, *a) -> float:
    t = time.perf_counter()
    fn(*a)
    return time.perf_counter() - t


def startup(root: Path, out: Path) -> float:
    t = time.perf_counter()
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "pg2kit.cli",
            "train",
            str(root),
            "--preset",
            "tiny",
            "-o",
            str(out),
            "--dry-run",
        ],  # fmt: skip
        capture_output=True,
        text=True,
    )
    if r.returncode:
        raise SystemExit(f"train --dry-run failed: {r.stderr[-500:]}")
    return time.perf_counter() - t


def prepare_startup(tmp: Path, repeats: int) -> tuple[float, float, float]:
    """A re-run of `prepare synthetic` on its finished 40-shard folder (all shards done: the
    start-up and resume path) against what the checks add there (one load_manifest)."""
    out = tmp / "synth"
    args = [sys.executable, "-m", "pg2kit.cli", "prepare", "synthetic", "-o", str(out),
            "--ids", "40", "--poses", "8", "--shard-size", "8", "--workers", "1", "--quiet"]  # fmt: skip
    subprocess.run(args, check=True, capture_output=True)
    subprocess.run([sys.executable, "-m", "pg2kit.cli", "pairs", str(out), "--protocol", "pg2"],
                   check=True, capture_output=True)  # fmt: skip
    runs = []
    for _ in range(repeats):
        t = time.perf_counter()
        subprocess.run(args, check=True, capture_output=True)
        runs.append(time.perf_counter() - t)
    a, b = [], []
    for _ in range(7):
        shards._CHECKED.clear()
        a.append(timed(shards.load_manifest, out))
        b.append(timed(lambda: json.loads((out / "manifest.json").read_text())))
    n = sum(len(i["shards"]) for i in shards.load_manifest(out)["splits"].values())
    print(f"synthetic folder for the prepare re-run: {n} shards")
    return statistics.median(runs), statistics.median(a), statistics.median(b)


def write_cost(tmp: Path, repeats: int) -> tuple[float, float]:
    rng = np.random.default_rng(1)
    arrays = {"image": rng.integers(0, 255, (256, 128, 64, 3), np.uint8),
              "keypoints": rng.uniform(0, 60, (256, 18, 2)).astype(np.float32),
              "name": [f"{i}.jpg" for i in range(256)]}  # fmt: skip

    def plain(path):
        with h5py.File(path, "w") as f:
            for k, v in arrays.items():
                if k == "name":
                    f.create_dataset(k, data=np.array(v, object), dtype=h5py.string_dtype())
                else:
                    f.create_dataset(k, data=v, chunks=(1, *v.shape[1:]), compression="lzf")

    def ours(path):
        shards.write_shard(path, arrays, {}, compression={"image": "lzf", "keypoints": "lzf"})

    a, b = [], []
    for i in range(repeats):
        a.append(timed(plain, tmp / f"plain{i}.h5"))
        b.append(timed(ours, tmp / "w" / f"s{i}.h5"))
    return statistics.median(a), statistics.median(b)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shards", type=int, default=40)
    ap.add_argument("--per-shard", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--startup-repeats", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="pg2kit-open-") as tmp:
        root = Path(tmp) / "prep"
        t = time.perf_counter()
        build(root, args.shards, args.per_shard)
        print(f"folder: {args.shards} shards x {args.per_shard} samples, 128x64, "
              f"built in {time.perf_counter() - t:.1f} s")  # fmt: skip
        checked(root), unchecked(root)  # warm the page cache and imports
        a, b = [], []
        for _ in range(args.repeats):  # interleaved, so load changes hit both alike
            a.append(timed(checked, root))
            b.append(timed(unchecked, root))
        s = [startup(root, Path(tmp) / "run") for _ in range(args.startup_repeats)]
        ca, ub, st = statistics.median(a), statistics.median(b), statistics.median(s)
        print(f"checked open (pg2kit.shards):     {ca * 1000:8.1f} ms  (median of {args.repeats})")
        print(f"unchecked open (json + h5py):     {ub * 1000:8.1f} ms")
        print(f"train --dry-run start-up:         {st * 1000:8.1f} ms  (median of {len(s)})")
        print(f"overhead of the checks:           {(ca - ub) * 1000:8.1f} ms = "
              f"{100 * (ca - ub) / st:.2f}% of start-up")  # fmt: skip
        ps, lm, raw = prepare_startup(Path(tmp), args.startup_repeats)
        print(f"prepare re-run, all shards done:  {ps * 1000:8.1f} ms; load_manifest checked "
              f"{lm * 1000:.1f} ms vs json {raw * 1000:.1f} ms = "
              f"{100 * (lm - raw) / ps:.2f}% of it")  # fmt: skip
        copy = Path(tmp) / "copy"  # a copy that did not keep file times (plain `cp -r`)
        shutil.copytree(root, copy, copy_function=shutil.copyfile)
        first = timed(checked, copy)  # every shard's time changed: each is hashed once
        again = timed(checked, Path(shutil.copytree(copy, Path(tmp) / "copy2")))  # times kept
        print(f"open of a copy with new file times: {first * 1000:.1f} ms (each shard hashed "
              f"once, markers updated); a copy keeping them: {again * 1000:.1f} ms")  # fmt: skip
        p, o = write_cost(Path(tmp), max(3, args.repeats // 2))
        print(f"write 256-sample shard: plain h5py {p * 1000:.0f} ms, write_shard {o * 1000:.0f} ms "
              f"(in memory, one write, fsync)")  # fmt: skip


if __name__ == "__main__":
    main()
