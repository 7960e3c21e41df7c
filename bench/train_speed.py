"""Training-step throughput of G1 (stage I) and G2 + D (stage II): fp32 eager vs optimised path.

Prints samples/s, counted FLOPs per sample (FlopCounterMode), model FLOP utilisation against
--peak-tflops and the projected time of the full Market schedule (22k G1 + 38k G2 steps, batch 16).
On CPU it uses fewer channels (--cpu-channels) and smaller batches, and says so.
Usage: python bench/train_speed.py [--seconds 8] [--peak-tflops 989]
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pg2kit.models import G1, G2, Arch, Discriminator, default_repeat  # noqa: E402
from pg2kit.train import g1_step, g2_step, make_config  # noqa: E402

MARKET_G1, MARKET_G2 = 22_000, 38_000


def fake_batch(b: int, h: int, w: int, device, channels_last: bool) -> dict:
    g = torch.Generator().manual_seed(0)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    img = lambda: (torch.rand(b, 3, h, w, generator=g) * 2 - 1).to(device, memory_format=fmt)  # noqa: E731
    kp = torch.rand(b, 18, 2, generator=g) * torch.tensor([w - 1, h - 1])
    return {
        "source": img(),
        "target": img(),
        "target_kp": kp.to(device),
        "source_kp": kp.to(device),
        "mask": (torch.rand(b, 1, h, w, generator=g) < 0.3).float().to(device),
    }


def build(arch: Arch, device, opt_path: dict):
    fmt = torch.channels_last if opt_path["channels_last"] else torch.contiguous_format
    g1, g2, d = (m.to(device, memory_format=fmt) for m in (G1(arch), G2(arch), Discriminator(arch)))
    kw = {"fused": True} if opt_path["fused"] else {}
    opt = {k: torch.optim.Adam(m.parameters(), lr=2e-5, betas=(0.5, 0.999), **kw)
           for k, m in (("g1", g1), ("g2", g2), ("disc", d))}  # fmt: skip
    nets = {"g1": g1, "g2": g2, "disc": d, "g1_frozen": g1}
    if opt_path["compile"]:
        nets = {k: torch.compile(v) for k, v in nets.items()}
    return nets, opt


def measure(arch, batch, device, opt_path, stage, seconds, cfg) -> tuple[float, float]:
    """(median samples/s over 3 timed windows, FLOPs per sample counted in one step)."""
    from torch.utils.flop_counter import FlopCounterMode

    torch.manual_seed(0)
    nets, opt = build(arch, device, opt_path)
    data = fake_batch(batch, arch.height, arch.width, device, opt_path["channels_last"])

    def amp():
        return torch.autocast(device.type, dtype=torch.bfloat16, enabled=opt_path["amp"])

    step = g1_step if stage == "g1" else g2_step
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for _ in range(3 if opt_path["compile"] else 1):  # warm-up (compilation)
        step(nets, opt, data, cfg, arch, amp)
    counter = FlopCounterMode(display=False)
    with counter:
        step(nets, opt, data, cfg, arch, amp)
    flops = counter.get_total_flops() / batch
    rates = []
    for _ in range(3):
        sync()
        t, n = time.perf_counter(), 0
        while time.perf_counter() - t < seconds / 3 or n < 2:
            step(nets, opt, data, cfg, arch, amp)
            n += 1
        sync()
        rates.append(n * batch / (time.perf_counter() - t))
    return statistics.median(rates), flops


def market_flops(stage: str, channels: int, device) -> float:
    """FLOPs per sample of one training step of the full-size Market model (meta tensors)."""
    from torch.utils.flop_counter import FlopCounterMode

    arch = Arch(height=128, width=64, channels=channels, repeat=5)
    cfg = make_config("market1501")
    with torch.device("meta"):
        nets, opt = build(arch, torch.device("meta"), dict(channels_last=False, fused=False,
                                                           compile=False))  # fmt: skip
        data = fake_batch(2, 128, 64, "meta", False)
    counter = FlopCounterMode(display=False)
    step = g1_step if stage == "g1" else g2_step
    with counter, contextlib.suppress(Exception):  # the optimiser step may not run on meta
        step(nets, opt, data, cfg, arch, contextlib.nullcontext)
    return counter.get_total_flops() / 2


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=8.0, help="timed seconds per measurement")
    ap.add_argument("--peak-tflops", type=float, default=None,
                    help="peak of the device for the utilisation (e.g. 989 for H100 bf16 dense)")  # fmt: skip
    ap.add_argument("--cpu-channels", type=int, default=16, help="base channels n on CPU")
    ap.add_argument(
        "--compile", action="store_true", help="add torch.compile to the optimised path"
    )
    ap.add_argument("--shapes", default=None, help="e.g. 128x64x16,256x256x1 (HxWxbatch)")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch intra-op threads (CPU)")  # fmt: skip
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    eager = dict(amp=False, channels_last=False, fused=False, compile=False)
    if cuda:
        optimised = dict(amp=True, channels_last=True, fused=True, compile=args.compile)
        channels = 128
        shapes = args.shapes or "128x64x16,128x64x64,256x256x1,256x256x16"
    else:
        # measured on the 2-core AMD EPYC (avx512_bf16) at 128x64, n = 16, batch 16: bf16 autocast
        # x1.8 (G1) / x1.6 (G2+D), fused Adam ~x1.1, channels_last mixed (x1.3 alone, slower
        # with bf16); so the CPU "optimised" path is bf16 + fused Adam (+ compile if asked)
        optimised = dict(amp=True, channels_last=False, fused=True, compile=args.compile)
        channels = args.cpu_channels
        shapes = args.shapes or "128x64x16,128x64x64,256x256x4"
    name = torch.cuda.get_device_name() if cuda else f"CPU, {torch.get_num_threads()} threads"
    print(f"torch {torch.__version__} on {name}; base channels n = {channels}"
          + ("" if cuda else " (reduced for CPU; the full model uses 128)"))  # fmt: skip
    print(f"optimised path: {optimised}")
    market = {}
    for shape in shapes.split(","):
        h, w, b = (int(v) for v in shape.split("x"))
        arch = Arch(height=h, width=w, channels=channels, repeat=default_repeat(h),
                    g2_full_res_skip=h >= 256, disc_layers=5 if h >= 256 else 4)  # fmt: skip
        cfg = make_config("market1501" if h < 256 else "deepfashion")
        for stage in ("g1", "g2"):
            (e, flops), (o, _) = (
                measure(arch, b, device, p, stage, args.seconds, cfg) for p in (eager, optimised)
            )
            util = ""
            if args.peak_tflops:
                util = f" | MFU eager {e * flops / args.peak_tflops / 1e10:.1f}% " \
                       f"opt {o * flops / args.peak_tflops / 1e10:.1f}%"  # fmt: skip
            print(f"{h}x{w} batch {b:3d} {stage.upper()}{'+D' if stage == 'g2' else '  '}: "
                  f"eager fp32 {e:8.1f} samples/s | optimised {o:8.1f} samples/s | x{o / e:.2f} "
                  f"| {flops / 1e9:.2f} GFLOP/sample | {o * flops / 1e12:.3f} TFLOP/s{util}")  # fmt: skip
            if (h, w, b) == (128, 64, 16):
                market[stage] = (o, flops)
    if len(market) == 2:
        t = MARKET_G1 * 16 / market["g1"][0] + MARKET_G2 * 16 / market["g2"][0]
        if cuda:
            print(f"projected full Market schedule (optimised path): {t / 3600:.1f} h")
        else:
            full = {s: market_flops(s, 128, device) for s in ("g1", "g2")}
            scale = sum(n * 16 * full[s] / market[s][0] / market[s][1]
                        for s, n in (("g1", MARKET_G1), ("g2", MARKET_G2)))  # fmt: skip
            print(f"projected Market schedule at n = {channels}: {t / 3600:.1f} h; full model "
                  f"(n = 128, {full['g1'] / 1e9:.0f} / {full['g2'] / 1e9:.0f} GFLOP per sample "
                  f"and step for G1 / G2+D) at the same FLOP rate: {scale / 3600 / 24:.0f} days")  # fmt: skip


if __name__ == "__main__":
    main()
