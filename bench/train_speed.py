"""What the CPU pays to issue one training step: eager against the compiled whole step.

For Market G1 (batch 16), Market G2+D (batch 16) and DeepFashion G1 / G2+D (batch 1) it prints
the ops one step issues (profiler: top-level dispatcher ops + inductor's fused kernels; and a
TorchDispatchMode count for eager) and the CPU time of one step, eager (loss.backward() with
Adam defaults or fused Adam, NCHW and channels_last; the trainer's eager step) and compiled in
the same run. Op counts depend on the depth of the networks, not on their width, the frame or
the batch; so by default the networks run at n = 2 channels on a small frame and batch with the
full depth (32x16 batch 2 for Market, 32x32 batch 1 for DeepFashion), where the arithmetic is
small, so that the CPU time per step comes closest to the issuing cost (Python, autograd,
dispatcher, kernel-call glue: what a GPU waits on when the CPU cannot keep up); on a CPU the
kernels themselves still run inside it. Each run checks that the eager op count at the small
size equals the one at the full frame and batch (same width). Then: how long a checkpoint write
blocks the loop (synchronous torch.save against the background writer, full-size Market G1
state) and how long the loop waits for each batch with and without the prefetch thread (a 20 ms
stand-in for an asynchronous GPU step).

Usage: python bench/train_speed.py [--only market|deepfashion] [--stage g1|g2] [--no-extras]
       [--channels 2] [--frame small|full] [--threads 1] [--steps 15] [--skip-compile]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

# a private inductor cache: a cache shared with other processes compiling at the same time
# gave a half-written kernel .so here ("file too short")
os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", os.path.join(tempfile.gettempdir(),
                                                              f"pg2kit-inductor-{os.getpid()}"))  # fmt: skip

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _train_common import (  # noqa: E402
    FASHION,
    MARKET,
    arch_of,
    dispatch_mode_count,
    fake_batch,
    issued_ops,
    make_steps,
    step_fn,
    step_times,
)

# the baselines (loss.backward(): what a user writes, with Adam's defaults or fused Adam) and the
# trainer's settings: fused Adam everywhere, gradients handed over by torch.autograd.grad,
# channels_last on CUDA only (so "compiled, NCHW" is `--compile default` on a CPU and "compiled,
# channels_last" the same on a GPU); "compiled, loss.backward()" isolates the hand-over's part
VARIANTS = {
    "eager, Adam defaults, loss.backward()": dict(
        compile="none", fused_adam=False, plain_backward=True
    ),
    "eager, fused Adam, loss.backward()": dict(
        compile="none", fused_adam=True, plain_backward=True
    ),
    "eager, fused Adam, channels_last, loss.backward()": dict(
        compile="none", fused_adam=True, channels_last=True, plain_backward=True
    ),
    "eager trainer step (fused Adam, gradients handed over)": dict(compile="none", fused_adam=True),
    "compiled step, fused Adam, channels_last, loss.backward()": dict(
        compile="default", fused_adam=True, channels_last=True, plain_backward=True
    ),
    "compiled step, fused Adam": dict(compile="default", fused_adam=True),
    "compiled step, fused Adam, channels_last": dict(
        compile="default", fused_adam=True, channels_last=True
    ),
}
BASELINES = ("eager, Adam defaults, loss.backward()", "eager, fused Adam, loss.backward()")
COMPILED = tuple(k for k, v in VARIANTS.items() if v["compile"] != "none")


def issue_table(args) -> None:
    import torch._dynamo
    import torch._inductor.config as inductor_config

    torch.set_num_threads(args.threads)
    inductor_config.cpp.enable_kernel_profile = True  # name each C++ kernel in the profile
    # the two compiled paths of a row differ only in strides: compile each for its own (static)
    # shapes and strides, as the trainer does, rather than one graph generalised over both
    torch._dynamo.config.automatic_dynamic_shapes = False
    cases = []
    if args.only in (None, "market"):
        cases += [("Market G1", MARKET, "g1"), ("Market G2+D", MARKET, "g2")]
    if args.only in (None, "deepfashion"):
        cases += [("DeepFashion G1", FASHION, "g1"), ("DeepFashion G2+D", FASHION, "g2")]
    print(f"\n## ops and CPU time to issue one step (n = {args.channels}, {args.frame} frame and "
          f"batch, fp32, {torch.get_num_threads()} thread(s); ms: process CPU time and wall time, medians of 3 x {args.steps} single "
          f"steps after 3 warm-up steps, the paths timed in turn; load average {os.getloadavg()[0]:.1f} at the start)")  # fmt: skip
    print("| step | batch | frame | path | dispatcher (aten) ops | fused kernels | total | "
          "dispatch-mode count | aten ops outside compiled graphs + graph calls | CPU ms per "
          "step | wall ms per step | CPU us per op |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for label, ds, stage in cases:
        if args.stage and stage != args.stage:
            continue
        full_h, full_w = ds["hw"]
        h, w = ds["small_hw"] if args.frame == "small" else ds["hw"]
        b = ds["small_batch"] if args.frame == "small" else ds["batch"]
        arch = arch_of(h, w, channels=args.channels, disc_channels=args.channels, depth_of=full_h)
        batch = fake_batch(b, h, w, "cpu")
        if (h, w) != (full_h, full_w):  # the claim "same graph, same ops", checked on each run
            full = arch_of(full_h, full_w, channels=args.channels, disc_channels=args.channels)
            counts = []
            for a, data in ((full, fake_batch(ds["batch"], full_h, full_w, "cpu")), (arch, batch)):
                fn = step_fn(make_steps(a, ds["preset"], "cpu", plain_backward=True), stage, data)
                fn(), fn()  # Adam state exists
                counts.append(dispatch_mode_count(fn))
            same = "same" if counts[0] == counts[1] else "DIFFERENT"
            print(f"|  |  |  | check: eager fused-Adam aten ops at {full_h}x{full_w} batch "
                  f"{ds['batch']} {counts[0]}, at {h}x{w} batch {b} {counts[1]}: {same} |")  # fmt: skip
        torch._dynamo.reset()  # a fresh start for each row: no guards or cache entries left
        fns, ops, dm, warm = {}, {}, {}, {}
        for name, kw in VARIANTS.items():
            if args.skip_compile and kw["compile"] != "none":
                continue
            steps = make_steps(arch, ds["preset"], "cpu", **kw)
            fn = step_fn(steps, stage, fake_batch(b, h, w, "cpu", kw.get("channels_last", False)))
            t0 = time.perf_counter()
            for _ in range(3):  # warm-up; compiles on the first call
                fn()
            warm[name] = time.perf_counter() - t0
            ops[name] = issued_ops(fn)
            dm[name] = dispatch_mode_count(fn) if kw["compile"] == "none" else "-"
            fns[name] = fn
        # timed round-robin, so that a change in the machine's load hits every path alike
        times = {name: [] for name in fns}
        for _ in range(3):
            for name, fn in fns.items():
                times[name] += step_times(fn, args.steps, rounds=1)
        results = {}
        for name in fns:
            o = ops[name]
            sec = statistics.median(c for c, _ in times[name])
            wall = statistics.median(t for _, t in times[name])
            results[name] = (o, sec)
            print(f"| {label} | {b} | {h}x{w} | {name} | {o['dispatcher']} | {o['fused']} | "
                  f"{o['total']} | {dm[name]} | {o['outside']} + {o['graphs']} | "
                  f"{sec * 1e3:.2f} | {wall * 1e3:.2f} | "
                  f"{sec * 1e6 / o['total']:.1f} |"
                  + (f" (warm-up incl. compile {warm[name]:.0f} s)" if name in COMPILED else ""),
                  flush=True)  # fmt: skip
            if args.verbose:
                print("   top ops:", dict(o["top"].most_common(12)))
        for comp_name in COMPILED:
            comp = results.get(comp_name)
            for base_name in BASELINES:
                base = results.get(base_name)
                if not base or not comp:
                    continue
                c = comp[0]
                print(f"|  |  |  | {base_name} / {comp_name} | "
                      f"x{base[0]['dispatcher'] / c['dispatcher']:.2f} fewer aten ops | | "
                      f"x{base[0]['total'] / c['total']:.2f} fewer ops (aten + fused) | | "
                      f"x{base[0]['total'] / (c['outside'] + c['graphs']):.1f} with CUDA graphs "
                      f"(projected) | CPU time ratio x{base[1] / comp[1]:.2f} | | |")  # fmt: skip


def checkpoint_stall(args) -> None:
    """Loop-blocking time of a checkpoint: full-size Market G1 + Adam state (~850 MB)."""
    from pg2kit.train import CheckpointWriter, _cpu_copy

    arch = arch_of(128, 64)
    steps = make_steps(arch, "market1501", "cpu")
    batch = fake_batch(2, 128, 64, "cpu")
    steps.g1(batch)  # Adam state exists
    state = {"g1": steps.nets["g1"].state_dict(), "opt_g1": steps.opt["g1"].state_dict()}
    with tempfile.TemporaryDirectory(dir=args.tmp) as d:
        sync, bg, total = [], [], []
        for i in range(args.ckpt_repeats):
            t = time.perf_counter()
            torch.save(state, Path(d) / f"sync-{i}.pt")  # the straightforward write
            sync.append(time.perf_counter() - t)
            (Path(d) / f"sync-{i}.pt").unlink()
            writer = CheckpointWriter(Path(d), keep=1, boundary_step=-1)
            t = time.perf_counter()
            writer.save(i + 1, _cpu_copy(state))  # what the trainer does
            bg.append(time.perf_counter() - t)
            writer.wait()
            total.append(time.perf_counter() - t)
    mb = sum(v.numel() * v.element_size() for v in state["g1"].values()) * 3 / 1e6
    print(f"\n## checkpoint write, Market G1 + Adam state (~{mb:.0f} MB), {args.ckpt_repeats} "
          f"repeats, folder {args.tmp or tempfile.gettempdir()}")  # fmt: skip
    print(f"synchronous torch.save blocks the loop {statistics.median(sync):.2f} s; background "
          f"writer blocks it {statistics.median(bg):.2f} s (the CPU copy), the write itself "
          f"takes {statistics.median(total):.2f} s on its thread (fsync included)")  # fmt: skip


def prefetch_wait(args) -> None:
    """Main-thread time spent getting each batch, with a 20 ms sleeping stand-in step."""
    from pg2kit.data import PairBatches, PairBatchSampler, make_loader
    from pg2kit.train import Prefetcher

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tests._shardfactory import make_prepared

    with tempfile.TemporaryDirectory() as d:
        root = make_prepared(Path(d) / "prep", num_ids=40, poses=4, size=(128, 64),
                             shard_size=40)  # fmt: skip
        ds = PairBatches(root, in_memory=True).load()
        res = {}
        for depth in (0, 2):
            sampler = PairBatchSampler(len(ds), 16, 0, True)
            batches = Prefetcher(iter(make_loader(ds, sampler)), torch.device("cpu"), False, depth)
            waits = []
            for i in range(60):
                t = time.perf_counter()
                next(batches)
                if i >= 5:
                    waits.append(time.perf_counter() - t)
                time.sleep(0.02)  # the GPU step the CPU would be issuing meanwhile
            batches.close()
            res[depth] = statistics.median(waits)
    print("\n## batch wait on the issuing thread (Market 128x64, batch 16, in memory, flips)")
    print(f"inline (prefetch 0): {res[0] * 1e3:.2f} ms per step; prefetch 2: "
          f"{res[2] * 1e3:.2f} ms per step")  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--channels", type=int, default=2, help="base channels n for the op table")
    ap.add_argument("--frame", choices=["small", "full"], default="small",
                    help="op table frame and batch: small (32x16 batch 2 / 32x32 batch 1 with the full "
                    "depth: the same ops as the full size) or full (128x64 batch 16 / 256x256 batch 1)")  # fmt: skip
    ap.add_argument("--threads", type=int, default=1, help="torch threads for the op table")
    ap.add_argument("--steps", type=int, default=15, help="timed single steps per round (3 rounds)")
    ap.add_argument("--skip-compile", action="store_true", help="eager rows only")
    ap.add_argument("--only", choices=["market", "deepfashion"], default=None,
                    help="only these rows of the op table")  # fmt: skip
    ap.add_argument("--stage", choices=["g1", "g2"], default=None, help="only this stage's rows")
    ap.add_argument("--no-extras", action="store_true", help="op table only")
    ap.add_argument("--ckpt-repeats", type=int, default=3, help="checkpoint writes to time")
    ap.add_argument("--tmp", default=None, help="folder for the checkpoint timing")
    ap.add_argument("--verbose", action="store_true", help="print the most frequent ops")
    args = ap.parse_args()
    print(f"torch {torch.__version__}, CPU, {torch.get_num_threads()} threads")
    issue_table(args)
    if not args.no_extras:
        checkpoint_stall(args)
        prefetch_wait(args)


if __name__ == "__main__":
    main()
