"""`pg2kit export` speed of every format on a 10,000-sample prepared folder.

    python bench/export_speed.py [--n 10000] [--repeats 3] [--formats defgan,pidm,...]

Two synthetic prepared folders are made with tests/_shardfactory.py (stick figures, all ordered
same-identity pairs, 10 poses per identity): N samples at 128x64 (Market's frame) and, for
patn-resize, N samples in DeepFashion's 256x176 crop frame (x offset 40). Every format is
exported into a fresh folder `--repeats` times (single process, progress bars off) and the
median is reported with samples/s and the bytes written.

Baseline, in the same run: the straightforward script a user would write to dump every image of
the folder to a PNG file (h5py read per sample, PIL save), i.e. the cost of one PNG per sample
without pg2kit's checks, atomic renames or index files.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

RUNS = [
    ("defgan", {}),
    ("defgan", {"images": True}),
    ("patn-resize", {"images": True}),
    ("openpose-json", {}),
    ("openpose-json", {"images": True}),
    ("pidm", {}),
    ("pcdms", {}),
    ("controlnet", {}),
]


def _size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _baseline(src: Path, out: Path) -> None:
    """What a user would write without pg2kit: every image to PNG, one h5py read each."""
    import h5py
    from PIL import Image

    out.mkdir(parents=True)
    manifest = json.loads((src / "manifest.json").read_text())
    for split, info in manifest["splits"].items():
        for shard in info["shards"]:
            with h5py.File(src / shard["file"], "r") as f:
                for i in range(len(f["name"])):
                    name = f["name"][i].decode()
                    Image.fromarray(f["image"][i]).save(out / f"{split}-{Path(name).stem}.png")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--formats", default="", help="comma-separated subset (default: all)")
    args = ap.parse_args()
    from pg2kit.export import export
    from tests._shardfactory import make_prepared

    poses = 10
    ids = max(1, args.n // poses)
    n = ids * poses
    wanted = set(filter(None, args.formats.split(",")))
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        t = time.perf_counter()
        market = make_prepared(tmp / "market", num_ids=ids, poses=poses, size=(128, 64),
                               shard_size=1024)  # fmt: skip
        fashion = None
        if not wanted or "patn-resize" in wanted:
            fashion = make_prepared(tmp / "fashion", num_ids=ids, poses=poses, size=(256, 176),
                                    shard_size=1024)  # fmt: skip
            m = json.loads((fashion / "manifest.json").read_text())
            m["frame"]["x_offset"] = 40  # DeepFashion's 176-wide crop (prepare --crop176)
            (fashion / "manifest.json").write_text(json.dumps(m))
        print(f"made {n}-sample folders in {time.perf_counter() - t:.1f} s "
              f"({n * (poses - 1)} pairs)")  # fmt: skip

        rows = []
        times = []
        for r in range(args.repeats):
            out = tmp / f"baseline-{r}"
            t = time.perf_counter()
            _baseline(market, out)
            times.append(time.perf_counter() - t)
            size = _size(out)
            shutil.rmtree(out)
        rows.append(("baseline: h5py + PIL PNG per sample", times, size))
        for fmt, opts in RUNS:
            if wanted and fmt not in wanted:
                continue
            src = fashion if fmt == "patn-resize" else market
            times = []
            for r in range(args.repeats):
                out = tmp / f"{fmt}-{r}"
                t = time.perf_counter()
                export(src, out, fmt, log=lambda s: None, progress=False, **opts)
                times.append(time.perf_counter() - t)
                size = _size(out)
                shutil.rmtree(out)
            label = fmt + (" --images" if opts.get("images") else "")
            rows.append((label, times, size))

    print(f"export of {n} samples, median of {args.repeats} (single process)")
    print(f"{'format':38s} {'median s':>9s} {'samples/s':>10s} {'MB written':>11s}")
    for label, times, size in rows:
        med = statistics.median(times)
        print(f"{label:38s} {med:9.2f} {n / med:10.0f} {size / 1e6:11.1f}")


if __name__ == "__main__":
    main()
