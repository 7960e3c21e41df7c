"""`pg2kit train`: train PG2 (G1, then G2 + D) on a prepared folder with pairs.h5.

Thin wrapper over pg2kit.train; torch is imported only when the command runs.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from pg2kit.commands.common import friendly_errors

PRESET_NAMES = ("market1501", "deepfashion", "tiny")

EPILOG = """\b
Examples:
  pg2kit train prepared/market --preset market1501 -o runs/market
  pg2kit train prepared/market --stage g1 -o runs/market          # stage I only
  pg2kit train prepared/market --stage g2 -o runs/market          # stage II from its G1
  pg2kit train prepared/fashion --preset deepfashion --stage g2 \\
      --g1-checkpoint runs/g1/checkpoints/ckpt-0022000.pt -o runs/fashion
  pg2kit train prepared/synthetic --preset tiny -o runs/smoke     # a one-minute smoke test
  pg2kit train prepared/market --preset market1501 --dry-run      # resolved config + sizes
  pg2kit train prepared/market --precision fp32 -o runs/repro     # the paper's arithmetic
  pg2kit train prepared/market --compile reduce-overhead --verify # CUDA graphs; checksums first
  torchrun --nproc_per_node 2 -m pg2kit.commands.train prepared/market -o runs/ddp

\b
A run folder is resumed from its newest readable checkpoint when the command is repeated; one
run at a time per run folder (a lock). Pose-map kind, radius and sigma come from the prepared
folder (`prepare --maps`) unless --map, --map-radius or --map-sigma override them.
"""


@click.command(epilog=EPILOG, context_settings={"show_default": True})
@click.argument("data", type=click.Path(path_type=Path), metavar="DATA")
@click.option(
    "--preset",
    type=click.Choice(PRESET_NAMES),
    default="market1501",
    help="Schedule and sizes to start from; the flags below override single values.",
)
@click.option(
    "--stage",
    type=click.Choice(["g1", "g2", "both"]),
    default="both",
    help="g1: stage I only; g2: stage II from a G1 checkpoint; both: one after the other.",
)
@click.option(
    "-o",
    "--run-dir",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    metavar="RUN",
    help="Run folder (checkpoints, logs, samples)  [default: runs/<preset>-<DATA name>]",
)
@click.option("--split", default="train", metavar="SPLIT", help="Split of DATA to train on.")
@click.option(
    "--batch-size",
    type=click.IntRange(min=1),
    default=None,
    metavar="N",
    help="Pairs per step and process (preset: 16 Market, 1 DeepFashion).",
)
@click.option(
    "--steps",
    "total_steps",
    type=click.IntRange(min=1),
    default=None,
    metavar="N",
    help="Last global step (stage II runs from --g1-steps to here).",
)
@click.option(
    "--g1-steps", type=click.IntRange(min=0), default=None, metavar="N", help="Stage I steps."
)
@click.option(
    "--lr", type=click.FloatRange(min=0, min_open=True), default=None, metavar="LR", help="Adam lr."
)
@click.option(
    "--lambda",
    "l1_lambda",
    type=click.FloatRange(min=0),
    default=None,
    metavar="W",
    help="Weight of the masked L1 in the G2 loss (preset: 10 Market, 50 DeepFashion).",
)
@click.option(
    "--disc",
    type=click.Choice(["triplet", "conditional"]),
    default=None,
    help="D form: triplet (PG2 code, source as extra negative) or conditional (PG2 paper).",
)
@click.option("--flip/--no-flip", default=None, help="Online horizontal flip with left/right swap.")
@click.option(
    "--map",
    "map_kind",
    type=click.Choice(["disk", "gaussian"]),
    default=None,
    help="Pose map: disks (PG2) or Gaussians (PATN)  [default: the prepared folder's]",
)
@click.option("--map-radius", type=click.IntRange(min=0), default=None, metavar="PX",
              help="Disk radius of the pose map  [default: the prepared folder's, 4]")  # fmt: skip
@click.option("--map-sigma", type=click.FloatRange(min=0, min_open=True), default=None,
              metavar="PX", help="Gaussian sigma of the pose map  [default: the prepared "
              "folder's, 6]")  # fmt: skip
@click.option("--adv-weight", type=click.FloatRange(min=0), default=None, metavar="W",
              help="Weight of the adversarial BCE in the G2 loss (preset: 1 Market, 0.5 "
              "DeepFashion as in the public code).")  # fmt: skip
@click.option("--channels", type=click.IntRange(min=1), default=None, metavar="N",
              help="Base channel count n of G1/G2 (128 in PG2).")  # fmt: skip
@click.option("--repeat", type=click.IntRange(min=3), default=None, metavar="R",
              help="G1 levels R  [default: log2(H) - 2]")  # fmt: skip
@click.option("--disc-layers", type=click.IntRange(min=1), default=None, metavar="N",
              help="Stride-2 convs of D  [default: 4 below 256 rows, else 5]")  # fmt: skip
@click.option("--seed", type=int, default=None, metavar="N", help="Seed of weights and data order.")
@click.option(
    "--device", default=None, metavar="DEV", help="auto, cpu, cuda or cuda:N  [default: auto]"
)
@click.option("--threads", type=click.IntRange(min=1), default=None, metavar="N",
              help="CPU threads of torch  [default: torch's choice]")  # fmt: skip
@click.option("--precision", type=click.Choice(["bf16", "fp32"]), default=None,
              help="bf16 autocast or fp32; fp32 is the reproduction setting (the paper's "
              "arithmetic)  [default: bf16 on CUDA, fp32 on CPU]")  # fmt: skip
@click.option(
    "--channels-last/--no-channels-last",
    default=None,
    help="channels_last memory format  [default: on with CUDA]",
)
@click.option("--compile", type=click.Choice(["none", "default", "reduce-overhead", "max-autotune"]),
              default=None, help="torch.compile the whole step (pose maps, G1, G2, D, losses); "
              "reduce-overhead and max-autotune use CUDA graphs on a GPU  [default: none]")  # fmt: skip
@click.option(
    "--fused-adam/--no-fused-adam", default=None, help="Fused Adam  [default: on with CUDA]"
)
@click.option("--workers", "num_workers", type=click.IntRange(min=0), default=None, metavar="N",
              help="DataLoader workers  [default: 0 in memory, else 2]")  # fmt: skip
@click.option("--in-memory/--from-shards", default=None,
              help="Hold the split's images in RAM  [default: when under 1/4 of the RAM]")  # fmt: skip
@click.option("--log-every", type=click.IntRange(min=1), default=None, metavar="N",
              help="Steps between status lines.")  # fmt: skip
@click.option("--sample-every", type=click.IntRange(min=1), default=None, metavar="N",
              help="Steps between sample grids.")  # fmt: skip
@click.option("--ckpt-every", type=click.IntRange(min=1), default=None, metavar="N",
              help="Steps between checkpoints.")  # fmt: skip
@click.option("--keep-checkpoints", type=click.IntRange(min=0), default=None, metavar="K",
              help="Keep the newest K checkpoints and stage I's last (0: all)  [default: 3]")  # fmt: skip
@click.option("--prefetch", type=click.IntRange(min=0), default=None, metavar="N",
              help="Batches prepared ahead on a background thread (0: inline)  [default: 2]")  # fmt: skip
@click.option(
    "--g1-checkpoint",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    metavar="CKPT",
    help="Stage II: take G1 from this checkpoint  [default: the run folder's newest]",
)
@click.option("--verify", is_flag=True,
              help="Check every shard's checksum against the manifest before training.")  # fmt: skip
@click.option("--dry-run", is_flag=True,
              help="Print the resolved config and the parameter counts of G1, G2, D; exit.")  # fmt: skip
@friendly_errors
def train(data: Path, preset: str, stage: str, run_dir: Path | None, dry_run: bool, verify: bool,
          **flags):  # fmt: skip
    """Train PG2 on the pairs of a prepared folder DATA (see `pg2kit pairs`)."""
    from pg2kit.data import DataError
    from pg2kit.train import TrainError, make_config
    from pg2kit.train import train as run_training

    if run_dir is None:
        run_dir = Path("runs") / f"{preset}-{Path(data).resolve().name}"
    try:
        cfg = make_config(preset, data=data, run_dir=run_dir, stage=stage, **flags)
    except TrainError as e:
        raise click.ClickException(str(e)) from None
    try:
        if dry_run:
            click.echo(json.dumps(_dry_run(cfg, verify), indent=2))
            return
        run_training(cfg, verify=verify)
    except (TrainError, DataError) as e:
        raise click.ClickException(str(e)) from None


def _dry_run(cfg, verify: bool) -> dict:
    """The resolved config, architecture, parameter counts and resume point; writes nothing."""
    import torch

    from pg2kit.data import inspect_split
    from pg2kit.models import param_counts
    from pg2kit.train import (
        _check_config,
        arch_for,
        find_checkpoints,
        resolve_config,
        verify_prepared,
    )

    _check_config(cfg)
    if verify:
        verify_prepared(cfg.data)
    info = inspect_split(cfg.data, cfg.split)
    device = torch.device("cuda" if cfg.device == "auto" and torch.cuda.is_available() else
                          "cpu" if cfg.device == "auto" else cfg.device)  # fmt: skip
    resolved, origin = resolve_config(cfg, info, device)
    arch = arch_for(resolved, info)
    counts = param_counts(arch)
    ckpts = find_checkpoints(cfg.run_dir)
    return {
        **resolved.to_dict(),
        "maps_from": origin,
        "arch": arch.to_dict(),
        "param_counts": counts,
        "pairs": info.num_pairs,
        "resume_from": str(ckpts[-1]) if ckpts else None,
    }


if __name__ == "__main__":  # torchrun -m pg2kit.commands.train ...
    train()
