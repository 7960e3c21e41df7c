"""What the CPU pays to issue one training step: eager against the compiled whole step.

For Market G1 (batch 16), Market G2+D (batch 16) and DeepFashion G1 / G2+D (batch 1) it prints
the ops one step issues (profiler: top-level dispatcher ops + inductor's fused kernels; and a
TorchDispatchMode count for eager) and the CPU time per step with the networks shrunk to
--channels base channels, so that the time is the issuing overhead (Python, dispatcher,
kernel-launch glue) rather than arithmetic: the cost the GPU waits on when the CPU cannot keep up.
Op counts do not depend on channels or batch (the graph is the same), only on the depth.
Then: how long a checkpoint write blocks the loop (synchronous torch.save against the
background writer, full-size Market G1 state) and how long the loop waits for each batch with
and without the prefetch thread (a 20 ms stand-in for an asynchronous GPU step).

Usage: python bench/train_speed.py [--seconds 3] [--channels 4] [--skip-compile] [--only market]
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
    time_calls,
)

VARIANTS = {
    "eager, Adam defaults": dict(compile="none", fused_adam=False),
    "eager, fused Adam": dict(compile="none", fused_adam=True),
    "compiled step, fused Adam": dict(compile="default", fused_adam=True),
}


def issue_table(args) -> None:
    cases = []
    if args.only in (None, "market"):
        cases += [("Market G1", MARKET, "g1"), ("Market G2+D", MARKET, "g2")]
    if args.only in (None, "deepfashion"):
        cases += [("DeepFashion G1", FASHION, "g1"), ("DeepFashion G2+D", FASHION, "g2")]
    print(f"\n## ops and CPU time per step (n = {args.channels}, fp32, {torch.get_num_threads()} "
          f"threads)")  # fmt: skip
    print("| step | batch | path | dispatcher ops | fused kernels | total | dispatch-mode count "
          "| ms per step |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|")
    for label, ds, stage in cases:
        if args.stage and stage != args.stage:
            continue
        h, w = ds["hw"]
        arch = arch_of(h, w, channels=args.channels, disc_channels=args.channels)
        batch = fake_batch(ds["batch"], h, w, "cpu")
        results = {}
        for name, kw in VARIANTS.items():
            if args.skip_compile and kw["compile"] != "none":
                continue
            steps = make_steps(arch, ds["preset"], "cpu", **kw)
            fn = step_fn(steps, stage, batch)
            t0 = time.perf_counter()
            for _ in range(3):  # warm-up; compiles on the first call
                fn()
            warm = time.perf_counter() - t0
            ops = issued_ops(fn)
            dm = dispatch_mode_count(fn) if kw["compile"] == "none" else None
            sec = time_calls(fn, "cpu", args.seconds)
            results[name] = (ops, sec)
            print(f"| {label} | {ds['batch']} | {name} | {ops['dispatcher']} | {ops['fused']} | "
                  f"{ops['total']} | {dm if dm is not None else '-'} | {sec * 1e3:.1f} |"
                  + (f" (warm-up incl. compile {warm:.0f} s)" if kw["compile"] != "none" else ""))  # fmt: skip
            if args.verbose:
                print("   top ops:", dict(ops["top"].most_common(8)))
        base = results.get("eager, fused Adam")
        comp = results.get("compiled step, fused Adam")
        plain = results.get("eager, Adam defaults")
        if base and comp:
            print(f"|  |  | ratio eager/compiled (both fused Adam) | | | "
                  f"x{base[0]['total'] / comp[0]['total']:.1f} fewer ops | | "
                  f"x{base[1] / comp[1]:.2f} |")  # fmt: skip
        if plain and comp:
            print(f"|  |  | ratio eager Adam-defaults/compiled | | | "
                  f"x{plain[0]['total'] / comp[0]['total']:.1f} fewer ops | | "
                  f"x{plain[1] / comp[1]:.2f} |")  # fmt: skip


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
    ap.add_argument("--seconds", type=float, default=3.0, help="timed seconds per measurement")
    ap.add_argument("--channels", type=int, default=4, help="base channels n for the op table")
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
