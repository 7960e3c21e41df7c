"""Benchmark: parse a Def-GAN annotation CSV + mine Def-GAN pairs, pg2kit vs a plain-Python
itertools baseline (time medians, and tracemalloc peak memory at several subset sizes).

    python bench/pairs_speed.py [--csv /work/shared/data/defgan/market-annotation-train.csv]
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np

from pg2kit.formats import read_defgan_annotations
from pg2kit.pairs import defgan_pairs

DEFAULT_CSV = Path("/work/shared/data/defgan/market-annotation-train.csv")


def pg2kit_run(path: Path) -> int:
    table = read_defgan_annotations(path)
    return len(defgan_pairs(table.names, table.keypoints, "market1501", "train"))


def baseline_parse(path: Path) -> list[tuple[str, list[int], list[int]]]:
    """Per-row json, the straightforward reading of the format."""
    rows = []
    with open(path, encoding="utf-8") as f:
        next(f)
        for line in f:
            name, ys, xs = line.rstrip("\n").split(":")
            rows.append((name, json.loads(ys), json.loads(xs)))
    return rows


def baseline_mine(rows: list[tuple[str, list[int], list[int]]]) -> list[tuple[str, str]]:
    """The protocol as plain Python: filter, dict of lists, itertools.permutations."""
    groups: dict[str, list[str]] = {}
    for name, y, x in rows:
        if any(y[k] == -1 or x[k] == -1 for k in (2, 5, 8, 11)):
            continue
        if name.startswith("-1") or name.startswith("0000"):
            continue
        groups.setdefault(name.split("_")[0], []).append(name)
    return [p for names in groups.values() for p in itertools.permutations(names, 2)]


def baseline_run(path: Path) -> int:
    return len(baseline_mine(baseline_parse(path)))


def median_time(fn, arg, repeats: int) -> tuple[float, int]:
    times, n = [], 0
    for _ in range(repeats):
        t = time.perf_counter()
        n = fn(arg)
        times.append(time.perf_counter() - t)
    return statistics.median(times), n


def peak_memory(fn, arg) -> tuple[int, int]:
    tracemalloc.start()
    n = fn(arg)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak, n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--csv", type=Path, default=DEFAULT_CSV, help="Def-GAN Market annotation CSV")
    ap.add_argument("--repeats", type=int, default=7, help="timed runs per implementation")
    args = ap.parse_args()
    mib = 2**20

    t_ours, n_ours = median_time(pg2kit_run, args.csv, args.repeats)
    t_base, n_base = median_time(baseline_run, args.csv, args.repeats)
    print(f"file: {args.csv}")
    print(f"pairs: pg2kit {n_ours}, baseline {n_base} (Market train published: 263632)")
    print(f"parse + mine, median of {args.repeats}:")
    print(f"  pg2kit   {t_ours * 1e3:8.1f} ms")
    print(f"  baseline {t_base * 1e3:8.1f} ms   speed-up x{t_base / t_ours:.1f}")

    # mining alone, and its memory as the pair count grows: k renamed copies of the file's
    # identities give exactly k times the pairs
    table = read_defgan_annotations(args.csv)
    rows = baseline_parse(args.csv)
    print("mine only (parsed input), median time and tracemalloc peak, k copies of the file:")
    print(f"  {'k':>2} {'pairs':>8} {'pg2kit ms':>9} {'MiB':>6} {'B/pair':>6}", end="")
    print(f" {'base ms':>8} {'MiB':>6} {'B/pair':>6}")
    for k in (1, 2, 4):
        names = [f"{c + 1}{n}" for c in range(k) for n in table.names]
        kp = np.concatenate([table.keypoints] * k)
        rows_k = [(f"{c + 1}{n}", y, x) for c in range(k) for n, y, x in rows]

        def ours(_, names=names, kp=kp):
            return len(defgan_pairs(names, kp, "market1501", "train"))

        def base(_, rows_k=rows_k):
            return len(baseline_mine(rows_k))

        t_o, pairs = median_time(ours, None, args.repeats)
        t_b, _ = median_time(base, None, args.repeats)
        m_o, _ = peak_memory(ours, None)
        m_b, _ = peak_memory(base, None)
        print(
            f"  {k:>2} {pairs:>8} {t_o * 1e3:>9.1f} {m_o / mib:>6.1f} {m_o / pairs:>6.0f}", end=""
        )
        print(f" {t_b * 1e3:>8.1f} {m_b / mib:>6.1f} {m_b / pairs:>6.0f}   x{t_b / t_o:.1f}")

    lines = args.csv.read_text(encoding="utf-8").splitlines(keepends=True)
    header, body = lines[0], lines[1:]
    print("parse + mine, tracemalloc peak on the first n rows of the file:")
    print(f"  {'rows':>6} {'pairs':>8} {'pg2kit MiB':>10} {'base MiB':>9}")
    with tempfile.TemporaryDirectory() as tmp:
        for frac in (0.125, 0.25, 0.5, 1.0):
            n = int(len(body) * frac)
            sub = Path(tmp) / f"sub{n}.csv"
            sub.write_text(header + "".join(body[:n]), encoding="utf-8")
            p_ours, pairs = peak_memory(pg2kit_run, sub)
            p_base, _ = peak_memory(baseline_run, sub)
            print(f"  {n:>6} {pairs:>8} {p_ours / mib:>10.1f} {p_base / mib:>9.1f}")


if __name__ == "__main__":
    main()
