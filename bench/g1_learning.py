"""Does G1 learn? Train it on CPU for a few minutes, then score held-out pairs.

Reports mask-SSIM (target mask, PG2 SSIM variant) and SSIM of the coarse output against the
"copy the source image" baseline on the same held-out pairs.
Usage: python bench/g1_learning.py DATA [--minutes 5] [--channels 32] [--eval-split test]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pg2kit.data import PairBatches, PairBatchSampler, inspect_split, pose_input, to_device  # noqa: E402
from pg2kit.metrics import mask_ssim, ssim  # noqa: E402
from pg2kit.models import G1  # noqa: E402
from pg2kit.train import Steps, arch_for, make_config, resolve_config  # noqa: E402


def to_u8(x: torch.Tensor) -> np.ndarray:
    """(B, 3, H, W) in [-1, 1] -> (B, H, W, 3) uint8."""
    return ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data", type=Path, help="prepared folder with pairs.h5 (train + held-out)")
    ap.add_argument("--minutes", type=float, default=5.0)
    ap.add_argument("--channels", type=int, default=32, help="base channels n (PG2: 128)")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--lr", type=float, default=2e-4, help="Adam lr (PG2: 2e-5, for 22k steps)")
    ap.add_argument("--eval-split", default="test")
    ap.add_argument("--eval-pairs", type=int, default=400)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    cfg = make_config("market1501", data=args.data, channels=args.channels, batch_size=args.batch,
                      lr=args.lr, seed=args.seed)  # fmt: skip
    info = inspect_split(args.data, "train")
    device = torch.device("cpu")
    cfg, _ = resolve_config(cfg, info, device)  # pose-map settings of the folder, fp32 on CPU
    arch = arch_for(cfg, info)
    torch.manual_seed(args.seed)
    g1 = G1(arch)
    opt = {"g1": torch.optim.Adam(g1.parameters(), lr=args.lr, betas=cfg.betas)}
    steps = Steps({"g1": g1}, opt, cfg, arch, device)  # the trainer's stage-I step
    train = PairBatches(args.data, "train").load()
    stream = iter(PairBatchSampler(len(train), args.batch, args.seed, flip=True))
    print(f"train: {len(train)} pairs at {arch.height}x{arch.width}; G1 n = {arch.channels}, "
          f"R = {arch.repeat}, {sum(p.numel() for p in g1.parameters()) / 1e6:.1f} M params; "
          f"{torch.get_num_threads()} threads, {args.minutes} min")  # fmt: skip

    t0, step, losses = time.perf_counter(), 0, []
    while time.perf_counter() - t0 < args.minutes * 60:
        batch = to_device(train[next(stream)], device)
        out = steps.g1(batch)
        losses.append(float(out["g1_l1"]))
        step += 1
        if step % 100 == 0:
            print(f"step {step}: L_G1 {np.mean(losses[-100:]):.4f} "
                  f"({step * args.batch / (time.perf_counter() - t0):.1f} samples/s)")  # fmt: skip
    print(f"trained {step} steps ({step * args.batch} samples) in {time.perf_counter() - t0:.0f} s")

    held = PairBatches(args.data, args.eval_split, in_memory=False)
    n = min(args.eval_pairs, len(held))
    picks = np.random.default_rng(0).choice(len(held), n, replace=False)
    gen, src, tgt, masks = [], [], [], []
    with torch.no_grad():
        for lo in range(0, n, 32):
            idx = np.stack([picks[lo : lo + 32], np.zeros(len(picks[lo : lo + 32]), np.int64)], -1)
            b = to_device(held[idx], device)
            pose = pose_input(b["target_kp"], arch.height, arch.width, cfg.map_kind,
                              cfg.map_radius, cfg.map_sigma)  # fmt: skip
            gen.append(to_u8(g1(b["source"], pose)))
            src.append(to_u8(b["source"]))
            tgt.append(to_u8(b["target"]))
            masks.append(b["mask"][:, 0].numpy().astype(np.uint8))
    gen, src, tgt, masks = (np.concatenate(x) for x in (gen, src, tgt, masks))
    print(f"held-out '{args.eval_split}' pairs: {n} (PG2 SSIM variant, target masks)")
    print(f"  copy-source baseline: mask-SSIM {mask_ssim(src, tgt, masks):.4f}   "
          f"SSIM {ssim(src, tgt):.4f}")  # fmt: skip
    print(f"  G1 coarse output:     mask-SSIM {mask_ssim(gen, tgt, masks):.4f}   "
          f"SSIM {ssim(gen, tgt):.4f}")  # fmt: skip


if __name__ == "__main__":
    main()
