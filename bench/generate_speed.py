"""`generate` throughput of the full-size Market model (n = 128, R = 5; 128x64) on this machine.

Times G1 + G2 forward passes (random weights of the real architecture: speed does not depend on
the values) and the PNG writes, on a subset, and extrapolates to 12,000 pairs; reports the
device. Baseline in the same run: batch 1 (what a per-pair loop over the test CSV does).

    python bench/generate_speed.py                    # CPU here; CUDA when available
    python bench/generate_speed.py --pairs 64 --batch 16
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=64, help="pairs timed per setting")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--total", type=int, default=12_000)
    a = ap.parse_args()
    from pg2kit import viz
    from pg2kit.data import pose_input
    from pg2kit.generate import to_uint8
    from pg2kit.models import Arch, build_models

    dev = torch.device(
        ("cuda" if torch.cuda.is_available() else "cpu") if a.device == "auto" else a.device
    )
    arch = Arch()  # Market: 128x64, n = 128, R = 5
    g1, g2, _ = build_models(arch)
    g1, g2 = g1.eval().to(dev), g2.eval().to(dev)
    n_par = sum(p.numel() for m in (g1, g2) for p in m.parameters())
    print(f"device {dev} ({torch.cuda.get_device_name() if dev.type == 'cuda' else os.cpu_count()}"
          f" cpus, load {os.getloadavg()[0]:.1f}); G1+G2 {n_par / 1e6:.1f} M parameters")  # fmt: skip
    rng = np.random.default_rng(0)
    src = rng.integers(0, 256, (a.pairs, 128, 64, 3), dtype=np.uint8)
    kp = np.stack([rng.uniform([8, 8], [56, 120], (18, 2)) for _ in range(a.pairs)])
    kp = kp.astype(np.float32)

    def run(batch: int, write: Path | None) -> float:
        t = time.perf_counter()
        with torch.inference_mode():
            for s in range(0, a.pairs, batch):
                x = torch.from_numpy(src[s : s + batch]).to(dev).permute(0, 3, 1, 2).float()
                x = x / 127.5 - 1
                pose = pose_input(torch.from_numpy(kp[s : s + batch]).to(dev), 128, 64)
                c = g1(x, pose)
                out = to_uint8(c + g2(c, x))
                if write is not None:
                    for j, img in enumerate(out):
                        viz.save_png(write / f"{s + j:06d}.png", img)
        if dev.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - t

    run(a.batch, None)  # warm-up
    with tempfile.TemporaryDirectory() as tmp:
        rows = []
        for label, batch, write in (
            ("batch 1, no files", 1, None),
            (f"batch {a.batch}, no files", a.batch, None),
            (f"batch {a.batch} + PNG files", a.batch, Path(tmp)),
        ):
            times = [run(batch, write) for _ in range(2)]
            per = statistics.median(times) / a.pairs
            rows.append((label, per))
            print(f"{label:28s} {1 / per:8.1f} pairs/s -> {a.total} pairs in "
                  f"{per * a.total / 60:6.1f} min (extrapolated from {a.pairs})")  # fmt: skip


if __name__ == "__main__":
    main()
