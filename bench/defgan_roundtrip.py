"""Check the Def-GAN route end to end on the real Market train annotation file.

    python bench/defgan_roundtrip.py [--csv ../shared/data/defgan/market-annotation-train.csv]

Builds a Market-1501 layout of stand-in images named as in the file, then runs the CLI:
`prepare market1501 --keypoints FILE.csv`, `export --format defgan` (compared field for field and
byte for byte with the input), `pairs --protocol defgan` and `pairs --from-annotations` (pair
counts; the published train count is 263,632).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

PUBLISHED_TRAIN_PAIRS = 263_632


def run(*args: str) -> float:
    t = time.perf_counter()
    subprocess.run([sys.executable, "-m", "pg2kit.cli", *args], check=True)
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--csv", type=Path,
                    default=Path("../shared/data/defgan/market-annotation-train.csv"))  # fmt: skip
    args = ap.parse_args()
    lines = args.csv.read_text().splitlines()
    names = [line.split(":", 1)[0] for line in lines[1:]]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        folder = tmp / "Market" / "bounding_box_train"
        folder.mkdir(parents=True)
        rng = np.random.default_rng(0)
        stand_in = rng.integers(0, 255, (128, 64, 3), dtype=np.uint8)
        ok, jpg = cv2.imencode(".jpg", stand_in)
        for name in names:
            (folder / name).write_bytes(jpg.tobytes())
        print(f"{len(names)} stand-in images written")
        out = tmp / "prepared"
        t_prep = run("prepare", "market1501", str(tmp / "Market"), "-o", str(out),
                     "--keypoints", str(args.csv), "--quiet")  # fmt: skip
        t_exp = run("export", str(out), "-o", str(tmp / "export"), "--quiet")
        exported = (tmp / "export" / "market-annotation-train.csv").read_text().splitlines()
        same_rows = sum(a == b for a, b in zip(lines, exported, strict=False))
        fields_in = [line.split(":") for line in lines]
        fields_out = [line.split(":") for line in exported]
        same_fields = sum(a == b for r, s in zip(fields_in, fields_out, strict=False)
                          for a, b in zip(r, s, strict=False))  # fmt: skip
        total_fields = sum(len(r) for r in fields_in)
        identical = (tmp / "export" / "market-annotation-train.csv").read_bytes() == (
            args.csv.read_bytes()
        )
        print(f"export: {len(exported)} lines ({len(lines)} in the input), {same_rows} identical; "
              f"{same_fields}/{total_fields} fields equal; byte-identical file: {identical}")  # fmt: skip
        t_pairs = run("pairs", str(out), "--protocol", "defgan")
        import h5py

        with h5py.File(out / "pairs.h5") as f:
            n_prepared = len(f["train"])
        t_ann = run("pairs", "--from-annotations", str(args.csv), "--dataset", "market1501",
                    "--split", "train", "--protocol", "defgan", "-o", str(tmp / "pairs.csv"))  # fmt: skip
        n_ann = len((tmp / "pairs.csv").read_text().splitlines()) - 1
        print(f"defgan train pairs: prepared route {n_prepared}, --from-annotations {n_ann}, "
              f"published {PUBLISHED_TRAIN_PAIRS}")  # fmt: skip
        print(f"times (s): prepare {t_prep:.1f}, export {t_exp:.1f}, pairs {t_pairs:.1f}, "
              f"pairs --from-annotations {t_ann:.1f} (CLI process start included)")  # fmt: skip
        ok = identical and n_prepared == n_ann == PUBLISHED_TRAIN_PAIRS
        print("OK" if ok else "MISMATCH")
        sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
