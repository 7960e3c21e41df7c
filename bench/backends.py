"""`prepare synthetic` throughput on a 2-process Dask LocalCluster against loky on the same cores.

    python bench/backends.py [--ids 100] [--poses 20] [--workers 2] [--repeats 5] [--ray]
    python bench/backends.py --photos ../shared/data/realdev/Market1501 --repeats 3

With --photos DIR, the work is `prepare folder` on real photos (the DIR's images grouped into
identity folders by the part of the name before the first '_', as symlinks): person finding
and the bundled MediaPipe estimator per photo, the per-image cost of real data.

Both engines get the same work (`run_prepare` of the synthetic dataset: rendering, masks, HDF5
shards, manifest) and the same number of single-threaded worker processes. Each is warmed once
(loky's reusable pool; the Dask cluster started before timing, as a user's cluster is running
before they submit), then the repeats alternate loky / dask and the medians are compared. The
cluster start-up is reported separately. The shards of every run are compared byte for byte.
With --ray, a local Ray instance of the same size is timed too (Ray is an optional extra).
"""

from __future__ import annotations

import argparse
import hashlib
import statistics
import tempfile
import time
from pathlib import Path


def _digest(root: Path) -> str:
    h = hashlib.sha256()
    for p in sorted((root / "shards").glob("*.h5")):
        h.update(p.read_bytes())
    return h.hexdigest()


def _parent_write_ms(prepared: Path) -> float:
    """ms per image the parent spends writing a shard (HDF5 built in memory, sha256, marker):
    the part of prepare that does not spread over workers."""
    import h5py

    from pg2kit import shards

    path = sorted((prepared / "shards").glob("*.h5"))[0]
    with h5py.File(path, "r") as f:
        arrays = {k: f[k][...] for k in f}
        attrs = dict(f.attrs)
    for k in shards.STRING_FIELDS:
        if k in arrays:
            arrays[k] = [v.decode() if isinstance(v, bytes) else str(v) for v in arrays[k]]
    n = len(arrays["image"])
    times = []
    for r in range(3):
        t = time.perf_counter()
        shards.write_shard(prepared / "rewrite" / f"s{r}.h5", arrays, attrs)
        times.append(time.perf_counter() - t)
    return 1000 * statistics.median(times) / n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--ids", type=int, default=100)
    ap.add_argument("--poses", type=int, default=20)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--ray", action="store_true", help="also time a local Ray instance")
    ap.add_argument("--photos", type=Path, default=None,
                    help="prepare folder on these real photos instead of synthetic figures")  # fmt: skip
    args = ap.parse_args()
    from pg2kit.parallel import local_cluster
    from pg2kit.prepare import PrepareConfig, run_prepare

    n = args.ids * args.poses
    work = "synthetic"
    src = None
    if args.photos is not None:
        src = Path(tempfile.mkdtemp(prefix="pg2kit-photos-"))
        files = sorted(p for p in args.photos.iterdir() if p.suffix.lower() in (".png", ".jpg"))
        for p in files:
            ident = src / p.name.split("_")[0]
            ident.mkdir(exist_ok=True)
            (ident / p.name).symlink_to(p.resolve())
        n, work = len(files), f"folder ({args.photos})"

    cpu: dict[str, list[float]] = {"loky": [], "dask": [], "ray": []}

    def run(tmp: Path, tag: str, **backend) -> tuple[float, str]:
        out = tmp / tag
        if src is None:
            cfg = PrepareConfig(dataset="synthetic", out=out, synthetic_ids=args.ids,
                                synthetic_poses=args.poses, workers=args.workers,
                                overwrite=True, **backend)  # fmt: skip
        else:
            cfg = PrepareConfig(dataset="folder", src=src, out=out, workers=args.workers,
                                overwrite=True, **backend)  # fmt: skip
        t, c = time.perf_counter(), time.process_time()
        run_prepare(cfg, progress=False, log=lambda s: None)
        cpu[backend["backend"]].append(time.process_time() - c)  # the parent process only
        return time.perf_counter() - t, _digest(out)

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        t = time.perf_counter()
        cluster, client = local_cluster(args.workers)  # what `--backend dask` starts
        start = time.perf_counter() - t
        dask_kw = {"backend": "dask", "scheduler": client}
        engines = {"loky": {"backend": "loky"}, "dask": dask_kw}
        if args.ray:
            engines["ray"] = {"backend": "ray"}
        times: dict[str, list[float]] = {k: [] for k in engines}
        digests: dict[str, set[str]] = {k: set() for k in engines}
        for name, kw in engines.items():  # warm-up, not timed
            run(tmp, f"warm-{name}", **kw)
        for r in range(args.repeats):
            for name, kw in engines.items():
                sec, dig = run(tmp, f"{name}-{r}", **kw)
                times[name].append(sec)
                digests[name].add(dig)
        client.close()
        cluster.close()
        parent_ms = _parent_write_ms(tmp / "loky-0")

    print(f"prepare {work}: {n} images, {args.workers} worker processes, "
          f"{args.repeats} alternating repeats (medians)")  # fmt: skip
    print(f"dask LocalCluster start-up: {start:.2f} s (not in the figures below)")
    base = statistics.median(times["loky"])
    for name in engines:
        med = statistics.median(times[name])
        print(f"  {name:5s} {med:6.2f} s  {n / med:7.1f} img/s  {base / med:5.2f}x loky  "
              f"(runs: {', '.join(f'{t:.2f}' for t in times[name])}; parent process CPU "
              f"{statistics.median(cpu[name]):.2f} s)")  # fmt: skip
    same = len(set().union(*digests.values())) == 1
    print(f"parent's share per image (write_shard of one finished shard, median of 3): "
          f"{parent_ms:.3f} ms")  # fmt: skip
    print(f"shards byte-identical across engines and repeats: {same}")


if __name__ == "__main__":
    main()
