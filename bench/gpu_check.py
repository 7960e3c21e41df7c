"""GPU check of the trainer: samples/s of G1 and G2+D, fp32 eager against the optimised path,
model FLOP utilisation and the projected full Market / DeepFashion schedules.

Run through bench/gpu_check.sh (one call, under 8 minutes on an H100/H200, nothing installed).
The steps are the trainer's own (pg2kit.train.Steps) on a synthetic batch already on the device
(so data loading is not in the figures). Paths:
  fp32 eager  : fp32, no compile, Adam with its defaults, loss.backward() (what a user writes
                first)
  bf16 eager  : bf16 autocast, channels_last, fused Adam, no compile (the trainer's gradient
                hand-over by torch.autograd.grad, as in the optimised path)
  optimised   : bf16 autocast, channels_last, fused Adam, --compile MODE (whole step)
FLOPs per step are counted with torch.utils.flop_counter.FlopCounterMode (forward + backward of
every network the step runs); MFU = FLOPs/s over --peak-tflops (default: bf16 dense peak of the
card, 989 for H100/H200 SXM). GPU_CHECK_SMOKE=1 (or --smoke) runs the same code on tiny networks
and shapes, also on a CPU, to prove the script works; its numbers mean nothing. In smoke mode the
compiled path is captured by the aot_eager backend (dynamo + AOTAutograd, no code generation:
inductor's C++ compile of the whole G2+D step takes minutes on a small CPU, and inductor itself is
checked by the slow tests and bench/train_speed.py); `--smoke-backend inductor` keeps inductor.

Time: measurements run in priority order: the optimised path of the four rows the projections
need (Market batch 16 and DeepFashion batch 1, G1 and G2+D), then their fp32 and bf16 eager
paths, then the larger batches. Each one starts only if `--budget` minus the time spent so far
is at least its expected cost (optimised: 1.5 x the longest compile so far, at least 60 s on a
GPU; eager: 5 s); otherwise it is printed as skipped. The projections and their PASS/FAIL lines
are printed as soon as those four rows are done, and the JSON is rewritten after every
measurement, so a run cut short still leaves them.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback
from pathlib import Path

import torch
import torch._dynamo

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _train_common import (  # noqa: E402
    FASHION,
    MARKET,
    arch_of,
    fake_batch,
    make_steps,
    step_flops,
    step_fn,
    time_calls,
)

PATHS = {
    "fp32 eager": dict(
        precision="fp32", compile="none", fused_adam=False, channels_last=False, plain_backward=True
    ),  # fmt: skip
    "bf16 eager": dict(precision="bf16", compile="none", fused_adam=True, channels_last=True),
    "optimised": dict(precision="bf16", fused_adam=True, channels_last=True),  # + compile mode
}
TARGETS = {"market_min": 10.0, "fashion_b1_min": 15.0, "speedup": 2.5}
PROJECTED = {(r, s) for r in ("market b16", "fashion b1") for s in ("g1", "g2")}  # rows it needs


def peak_for(name: str) -> float:
    for key, tflops in (("H100", 989.0), ("H200", 989.0), ("A100", 312.0)):
        if key in name:
            return tflops
    return float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--smoke", action="store_true", default=os.environ.get("GPU_CHECK_SMOKE") == "1",
                    help="tiny networks and shapes (works on a CPU); env GPU_CHECK_SMOKE=1")  # fmt: skip
    ap.add_argument("--budget", type=float, default=420.0,
                    help="seconds for all measurements; later rows are skipped past it")  # fmt: skip
    ap.add_argument("--seconds", type=float, default=2.0, help="timed seconds per measurement")
    ap.add_argument("--compile", default="reduce-overhead",
                    choices=["default", "reduce-overhead", "max-autotune"],
                    help="compile mode of the optimised path")  # fmt: skip
    ap.add_argument("--peak-tflops", type=float, default=None,
                    help="peak for the MFU  [default: bf16 dense peak of the card]")  # fmt: skip
    ap.add_argument("--smoke-backend", default="aot_eager", choices=["aot_eager", "inductor"],
                    help="smoke mode only: backend of the compiled path")  # fmt: skip
    ap.add_argument("--json", default=None, help="also write the results here  [default: "
                    "$OUT/gpu_check.json when $OUT is set]")  # fmt: skip
    args = ap.parse_args()
    t_start = time.perf_counter()

    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    name = torch.cuda.get_device_name() if cuda else f"CPU ({torch.get_num_threads()} threads)"
    peak = args.peak_tflops or peak_for(name)
    if args.smoke:
        channels, dchannels, seconds = 4, 4, 0.3
        # (label, dataset, H, W, batch); smoke: the same rows at tiny sizes
        rows = [
            ("market b16", MARKET, 32, 16, 4),
            ("fashion b1", FASHION, 64, 64, 1),
            ("market b64", MARKET, 32, 16, 8),
            ("fashion b8", FASHION, 64, 64, 2),
        ]
        if not cuda:
            torch.set_num_threads(1)  # tiny tensors: more threads only wait for each other
        if args.smoke_backend != "inductor":
            real_compile = torch.compile

            def _compile(fn, mode=None):  # Steps calls torch.compile(fn, mode=...)
                return real_compile(fn, backend=args.smoke_backend)

            torch.compile = _compile
    else:
        channels, dchannels, seconds = 128, 64, args.seconds
        rows = [
            ("market b16", MARKET, 128, 64, 16),
            ("fashion b1", FASHION, 256, 256, 1),
            ("market b64", MARKET, 128, 64, 64),
            ("fashion b8", FASHION, 256, 256, 8),
        ]
    if not cuda and not args.smoke:
        sys.exit("no CUDA device: run with GPU_CHECK_SMOKE=1 for the CPU smoke test")
    if cuda:
        torch.backends.cudnn.benchmark = True
    print(f"gpu_check: torch {torch.__version__} on {name}; peak {peak} TFLOP/s (bf16 dense); "
          f"compile mode {args.compile}; n = {channels}"
          f"{f' SMOKE (numbers mean nothing; compile backend {args.smoke_backend})' if args.smoke else ''}; "
          f"TF32 convs {torch.backends.cudnn.allow_tf32}, TF32 matmul "
          f"{torch.backends.cuda.matmul.allow_tf32}", flush=True)  # fmt: skip

    json_path = args.json or (os.path.join(os.environ["OUT"], "gpu_check.json")
                              if os.environ.get("OUT") else None)  # fmt: skip
    out = {"device": name, "torch": torch.__version__, "smoke": args.smoke, "channels": channels,
           "compile": args.compile, "peak_tflops": peak, "rows": [], "summary": {}}  # fmt: skip
    # rows in table order; measurements in priority order: first the optimised path of the rows
    # the projections need, then their fp32 and bf16 eager paths, then the larger batches
    results, by = out["rows"], {}
    for label, ds, h, w, b in rows:
        arch = arch_of(h, w, channels=channels, disc_channels=dchannels)
        for stage in ("g1", "g2"):
            row = {"row": label, "hw": f"{h}x{w}", "batch": b, "stage": stage,
                   "tflop_per_step": step_flops(arch, ds["preset"], stage, b) / 1e12}  # fmt: skip
            results.append(row)
            by[label, stage] = (row, arch, ds, h, w, b)
    first = [k for k in by if k in PROJECTED]
    order = [(k, path) for path in ("optimised", "fp32 eager", "bf16 eager") for k in first]
    order += [(k, path) for k in by if k not in PROJECTED
              for path in ("fp32 eager", "optimised", "bf16 eager")]  # fmt: skip
    longest_compile, projected = 0.0, False
    for (label, stage), path in order:
        row, arch, ds, h, w, b = by[label, stage]
        flops = row["tflop_per_step"] * 1e12
        kw = PATHS[path]
        left = args.budget - (time.perf_counter() - t_start)
        # a compile may take longer than the longest so far; the first one gets 60 s (GPU)
        need = max(1.5 * longest_compile, 5.0 if args.smoke else 60.0) if path == "optimised" \
            else 5.0  # fmt: skip
        if left < need:
            row[path] = {"skipped": f"time budget ({left:.0f} s left, {need:.0f} s needed)"}
        else:
            if path == "optimised":
                kw = {**kw, "compile": args.compile}
                torch._dynamo.reset()  # static shapes, no guards left from the last row
            try:
                if cuda:
                    torch.cuda.empty_cache()
                steps = make_steps(arch, ds["preset"], device, **kw)
                batch = fake_batch(b, h, w, device, kw["channels_last"])
                fn = step_fn(steps, stage, batch)
                t0 = time.perf_counter()
                for _ in range(3):  # warm-up: cudnn autotune, compile, CUDA graph capture
                    fn()
                if cuda:
                    torch.cuda.synchronize()
                warm = time.perf_counter() - t0
                if path == "optimised":
                    longest_compile = max(longest_compile, warm)
                sec = time_calls(fn, device, seconds)
                row[path] = {"samples_per_s": b / sec, "steps_per_s": 1 / sec,
                             "mfu": flops / sec / (peak * 1e12), "warmup_s": warm}  # fmt: skip
                del steps, batch, fn
            except Exception as e:  # noqa: BLE001 -- report and go on with the next row
                row[path] = {"error": f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"}
                traceback.print_exc(limit=3)
        print(f"  [{time.perf_counter() - t_start:4.0f} s] {row['hw']} b{b} {stage} {path}: "
              f"{_fmt(row[path])}", flush=True)  # fmt: skip
        if not projected and all(all(p in by[k][0] for p in PATHS) for k in first):
            for r in results:
                if (r["row"], r["stage"]) in PROJECTED:
                    _print_row(r)
            out["summary"].update(_project(results, args.smoke))
            projected = True
        out["seconds_total"] = time.perf_counter() - t_start
        _write(json_path, out)

    for r in results:
        if (r["row"], r["stage"]) not in PROJECTED:
            _print_row(r)
    out["summary"].update(_speedup(results, args.smoke))
    out["seconds_total"] = time.perf_counter() - t_start
    if _write(json_path, out):
        print(f"wrote {json_path}")
    print(f"total {out['seconds_total']:.0f} s")


def _write(path: str | None, out: dict) -> bool:
    if path:
        Path(path).write_text(json.dumps(out, indent=1, default=str) + "\n")
    return bool(path)


def _fmt(r: dict | None) -> str:
    if not r:
        return "-"
    if "samples_per_s" in r:
        mfu = r["mfu"]
        return (f"{r['samples_per_s']:9.1f}/s MFU {mfu * 100:5.1f}%"
                if mfu == mfu else f"{r['samples_per_s']:9.1f}/s")  # fmt: skip
    return r.get("skipped") or r.get("error", "?")


def _print_row(row: dict) -> None:
    e, o = row.get("fp32 eager", {}), row.get("optimised", {})
    ratio = ""
    if "samples_per_s" in e and "samples_per_s" in o:
        ratio = f" | optimised/fp32 eager x{o['samples_per_s'] / e['samples_per_s']:.2f}"
    print(f"{row['hw']:>8} b{row['batch']:<3} {row['stage'].upper()}{'+D' if row['stage'] == 'g2' else '  '}"
          f" {row['tflop_per_step']:.3f} TFLOP/step | fp32 eager {_fmt(e)} | bf16 eager "
          f"{_fmt(row.get('bf16 eager'))} | optimised {_fmt(o)}{ratio}", flush=True)  # fmt: skip


def _verdict(ok: bool, target: str, smoke: bool) -> str:
    word = " PASS" if ok else f" FAIL (target {target})"
    return word + (" [smoke: means nothing]" if smoke else "")


def _project(results: list[dict], smoke: bool) -> dict:
    """Full-schedule times from steps/s of the batch-16 Market and batch-1 DeepFashion rows."""
    by = {(r["row"], r["stage"]): r for r in results}
    summary = {}
    for key, ds, target in (("market b16", MARKET, TARGETS["market_min"]),
                            ("fashion b1", FASHION, TARGETS["fashion_b1_min"])):  # fmt: skip
        for path in PATHS:
            g1, g2 = by.get((key, "g1"), {}).get(path, {}), by.get((key, "g2"), {}).get(path, {})
            if "steps_per_s" not in g1 or "steps_per_s" not in g2:
                continue
            minutes = (ds["g1"] / g1["steps_per_s"] + ds["g2"] / g2["steps_per_s"]) / 60
            summary[f"{key} {path} full schedule min"] = minutes
            verdict = "" if path != "optimised" else \
                _verdict(minutes <= target, f"<= {target:.0f} min", smoke)  # fmt: skip
            print(f"projected {ds['preset']} schedule ({ds['g1']} G1 + {ds['g2']} G2+D steps, "
                  f"batch {ds['batch']}), {path}: {minutes:.1f} min{verdict}")  # fmt: skip
    return summary


def _speedup(results: list[dict], smoke: bool) -> dict:
    summary = {}
    speedups = [r["optimised"]["samples_per_s"] / r["fp32 eager"]["samples_per_s"]
                for r in results if "samples_per_s" in r.get("optimised", {})
                and "samples_per_s" in r.get("fp32 eager", {})]  # fmt: skip
    if speedups:
        lo = min(speedups)
        summary["min_speedup"] = lo
        verdict = _verdict(lo >= TARGETS["speedup"], f">= {TARGETS['speedup']}", smoke)
        print(f"optimised / fp32 eager: min x{lo:.2f}, max x{max(speedups):.2f} over "
              f"{len(speedups)} rows{verdict}")  # fmt: skip
    return summary


if __name__ == "__main__":
    main()
