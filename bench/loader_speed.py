"""Pair-loader throughput (pairs/s) at 128x64 and 256x256 on a generated prepared folder.

Baseline, measured in the same run: a naive per-pair Dataset (h5py reads per sample, default
collate). Usage: python bench/loader_speed.py [--samples 2000] [--pairs 50000] [--batch 16]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pg2kit import shards  # noqa: E402
from pg2kit.data import PairBatches, PairBatchSampler, make_loader, to_device  # noqa: E402
from pg2kit.pairs import write_pair_index  # noqa: E402


def make_folder(root: Path, n: int, pairs: int, h: int, w: int, shard_size: int = 1024) -> Path:
    """Random images/masks/keypoints in prepare's layout (1024 per shard, masks gzip1)."""
    rng = np.random.default_rng(0)
    entries = []
    for k, lo in enumerate(range(0, n, shard_size)):
        m = min(shard_size, n - lo)
        arrays = {
            "image": rng.integers(0, 256, (m, h, w, 3), dtype=np.uint8),
            "keypoints": (rng.random((m, 18, 2)) * [w, h]).astype(np.float32),
            "mask": (rng.random((m, h, w)) < 0.3).astype(np.uint8),
            "name": [f"{lo + i:06d}.jpg" for i in range(m)],
        }
        attrs = {"schema_version": shards.SCHEMA_VERSION, "split": "train"}
        path = shards.shard_path(root, "train", k)
        entries.append(shards.write_shard(path, arrays, attrs, {"mask": "gzip1"}))
    shards.write_manifest(
        root, {"schema_version": shards.SCHEMA_VERSION, "splits": {"train": {"shards": entries}}}
    )
    write_pair_index(root, {"train": rng.integers(0, n, (pairs, 2))}, "bench", {})
    return root


class NaivePairs(torch.utils.data.Dataset):
    """The straightforward loader: one pair per __getitem__, h5py per sample, default collate."""

    def __init__(self, root: Path):
        self.reader = shards.SplitReader(root, "train")  # only for id -> (shard, index)
        self.files = None
        with h5py.File(root / "pairs.h5", "r") as f:
            self.pairs = f["train"][...]

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, i: int):
        if self.files is None:
            self.files = [h5py.File(p, "r") for p in self.reader.paths]
        (ks, kt), (s, t) = self.reader.locate(self.pairs[i])
        fs, ft = self.files[ks], self.files[kt]

        def img(f, j):
            return torch.from_numpy(f["image"][j]).permute(2, 0, 1).float() / 127.5 - 1

        kp = (torch.from_numpy(fs["keypoints"][s]), torch.from_numpy(ft["keypoints"][t]))
        return img(fs, s), img(ft, t), *kp, torch.from_numpy(ft["mask"][t])


def time_loader(loader, batches: int, batch: int, convert: bool) -> float:
    it = iter(loader)
    next(it)  # start-up (workers, first reads) excluded
    t = time.perf_counter()
    for _ in range(batches):
        b = next(it)
        if convert:  # include the uint8 -> float NCHW [-1, 1] step the trainer does
            to_device(b, torch.device("cpu"))
    return batches * batch / (time.perf_counter() - t)


def bench(root: Path, args, h: int, w: int) -> None:
    b, reps = args.batch, args.repeats
    nb = max(20, args.pairs_timed // b)
    results: dict[str, list[float]] = {}

    def measure(name, make, convert, batches=nb):
        results[name] = [time_loader(make(), batches, b, convert) for _ in range(reps)]

    naive = NaivePairs(root)
    sampler = torch.utils.data.RandomSampler(naive, generator=torch.Generator().manual_seed(0))
    measure(
        "naive per-pair h5py, 0 workers",
        lambda: torch.utils.data.DataLoader(naive, batch_size=b, sampler=sampler),
        False,
        max(5, nb // 10),
    )
    mem = PairBatches(root, in_memory=True).load()
    disk = PairBatches(root, in_memory=False)

    def ours(ds, workers):
        return lambda: make_loader(ds, PairBatchSampler(len(ds), b, 0, flip=True), workers)

    measure("batched, in memory, 0 workers", ours(mem, 0), True)
    measure("batched, in memory, 0 workers, uint8 only", ours(mem, 0), False)
    measure("batched, from shards, 0 workers", ours(disk, 0), True)
    measure("batched, from shards, 2 workers", ours(disk, 2), True)
    base = statistics.median(results["naive per-pair h5py, 0 workers"])
    print(f"\n{h}x{w}, batch {b}, {len(mem)} pairs over {mem.info.num_samples} samples "
          f"({mem.info.image_bytes / 2**20:.0f} MiB images+masks), median of {reps}:")  # fmt: skip
    for name, v in results.items():
        med = statistics.median(v)
        print(f"  {name:45s} {med:10.0f} pairs/s   x{med / base:6.1f}")


def load_peak(root: Path) -> None:
    """Peak bytes allocated while the split's images + masks go into memory (tracemalloc: numpy
    reports its buffers to it): the trainer's fill-preallocated-arrays load against the
    straightforward read-every-shard-then-concatenate (shards.read_split_fields)."""
    import tracemalloc

    def peak(fn) -> tuple[int, int]:
        tracemalloc.start()
        out = fn()
        size = sum(v.nbytes for v in out.values())
        _, top = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        del out
        return top, size

    concat, size = peak(lambda: shards.read_split_fields(root, "train", ["image", "mask"]))
    ours, _ = peak(lambda: PairBatches(root, in_memory=True).load()._arrays)
    print(
        f"in-memory load peak: concatenate {concat / 1e6:.0f} MB, preallocate-and-fill "
        f"{ours / 1e6:.0f} MB, for {size / 1e6:.0f} MB of images + masks "
        f"(x{concat / size:.2f} vs x{ours / size:.2f} the data)"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=2000)
    ap.add_argument("--pairs", type=int, default=50_000)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--pairs-timed", type=int, default=8000, help="pairs read per measurement")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--sizes", default="128x64,256x256")
    ap.add_argument("--threads", type=int, default=1, help="torch threads of the main process")
    ap.add_argument("--memory-only", action="store_true", help="only the load-peak measurement")
    args = ap.parse_args()
    # the loader shares the CPU with the training step; on a busy 2-core machine 2 intra-op
    # threads made the uint8 -> float conversion ~8x slower than 1 thread
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    for size in args.sizes.split(","):
        h, w = (int(v) for v in size.split("x"))
        with tempfile.TemporaryDirectory() as tmp:
            t = time.perf_counter()
            root = make_folder(Path(tmp), args.samples, args.pairs, h, w)
            print(f"generated {size} folder in {time.perf_counter() - t:.1f} s")
            load_peak(root)
            if not args.memory_only:
                bench(root, args, h, w)


if __name__ == "__main__":
    main()
