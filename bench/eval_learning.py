"""Does a short tiny-preset run learn? `evaluate` of its test pairs vs the copy-the-source baseline.

prepare synthetic (held-out test identities) -> pairs -> train --preset tiny -> generate on the
test pairs -> evaluate; the baseline "generates" each pair by returning the source image
unchanged. Both go through the same `pg2kit evaluate` (no weights: SSIM, mask-SSIM, L1, PSNR,
pose accuracy with the bundled MediaPipe).

    python bench/eval_learning.py --work /tmp/eval_learning --steps 300
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np


def run(*args: str) -> None:
    print("$", " ".join(args), flush=True)
    subprocess.run(args, check=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, default=Path("/tmp/eval_learning"))
    ap.add_argument("--ids", type=int, default=40)
    ap.add_argument("--poses", type=int, default=8)
    ap.add_argument("--steps", type=int, default=300, help="total steps (tiny preset: 300)")
    ap.add_argument("--g1-steps", type=int, default=None, help="default: half of --steps")
    ap.add_argument("--channels", type=int, default=16)
    ap.add_argument("--limit", type=int, default=200, help="test pairs scored")
    ap.add_argument("--seed", type=int, default=0,
                    help="synthetic data seed (other figures, other held-out identities)")  # fmt: skip
    a = ap.parse_args()
    w = a.work if a.seed == 0 else a.work.with_name(f"{a.work.name}-seed{a.seed}")
    data, runs, gen, base = w / "data", w / f"run-{a.steps}", w / f"gen-{a.steps}", w / "copy"
    pg = [sys.executable, "-m", "pg2kit.cli"]
    if not (data / "pairs.h5").exists():
        run(*pg, "prepare", "synthetic", "-o", str(data), "--ids", str(a.ids), "--poses",
            str(a.poses), "--seed", str(a.seed), "--quiet")  # fmt: skip
        run(*pg, "pairs", str(data), "--protocol", "pg2")
    t = time.perf_counter()
    g1 = a.g1_steps if a.g1_steps is not None else a.steps // 2
    run(*pg, "train", str(data), "--preset", "tiny", "-o", str(runs), "--steps", str(a.steps),
        "--g1-steps", str(g1), "--channels", str(a.channels), "--ckpt-every", str(a.steps))  # fmt: skip
    train_s = time.perf_counter() - t
    run(*pg, "generate", str(runs), str(data), "-o", str(gen), "--limit", str(a.limit), "--quiet")

    # the copy-the-source baseline through the same file layout
    from pg2kit import shards, viz
    from pg2kit.generate import pair_file_name

    pairs = shards.read_pairs(data, "test")[: a.limit]
    names = shards.read_split_fields(data, "test", ["name"])["name"]
    reader = shards.SplitReader(data, "test")
    base.mkdir(parents=True, exist_ok=True)
    for s, t_ in pairs:
        viz.save_png(base / pair_file_name(names[s], names[t_]), reader.read("image", [s])[0])
    results = {}
    for label, folder in (("copy-the-source", base), (f"tiny {a.steps} steps", gen)):
        run(*pg, "evaluate", str(folder), "--real", str(data), "--quiet")
        m = json.loads((folder / "metrics.json").read_text())["metrics"]
        results[label] = {k: v["value"] for k, v in m.items()}
    keys = ["ssim_pg2", "mask_ssim_pg2", "mask_ssim_patn", "l1", "pckh", "pck_0.1h",
            "detection_rate"]  # fmt: skip
    print(f"\ntrain: {train_s:.0f} s for {a.steps} steps ({g1} G1), channels {a.channels}")
    print(f"{len(pairs)} test pairs of held-out identities\n")
    print("| | " + " | ".join(keys) + " |")
    print("|---" * (len(keys) + 1) + "|")
    for label, r in results.items():
        cells = [f"{r[k]:.3f}" if isinstance(r.get(k), float) and np.isfinite(r[k]) else "-"
                 for k in keys]  # fmt: skip
        print(f"| {label} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
