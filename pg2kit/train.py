"""Two-stage PG2 training (SPEC section 6): stage I trains G1, stage II trains G2 + D with G1 frozen.

Reads a prepared folder with pairs.h5; writes a run folder: config.json, log.txt, stats.jsonl,
tb/ (TensorBoard), samples/step-*.png, checkpoints/ckpt-*.pt (auto-resumed from the newest).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from pg2kit.atomic import write_text
from pg2kit.data import (
    DataError,
    PairBatches,
    PairBatchSampler,
    SplitInfo,
    inspect_split,
    make_loader,
    pose_input,
    to_device,
)
from pg2kit.models import G1, G2, Arch, Discriminator, check_resolution, default_repeat

__all__ = [
    "PRESETS",
    "TrainConfig",
    "TrainError",
    "arch_for",
    "find_checkpoints",
    "load_checkpoint",
    "make_config",
    "masked_l1",
    "train",
]

CKPT_RE = re.compile(r"^ckpt-(\d{7,})\.pt$")


class TrainError(ValueError):
    """Training cannot start or go on; the message says why and what to do."""


@dataclass
class TrainConfig:
    """Everything a run needs; presets fill it, CLI flags override single fields."""

    data: str = ""  # prepared folder with pairs.h5
    run_dir: str = "runs/pg2"
    preset: str = "market1501"
    stage: str = "both"  # g1 | g2 | both
    split: str = "train"
    # schedule: steps are global; stage I runs [0, g1_steps), stage II [g1_steps, total_steps)
    batch_size: int = 16  # per process (global batch = batch_size * world size)
    g1_steps: int = 22_000
    total_steps: int = 60_000
    lr: float = 2e-5
    betas: tuple[float, float] = (0.5, 0.999)
    l1_lambda: float = 10.0
    disc: str = "triplet"  # triplet (PG2 code) | conditional (PG2 paper)
    flip: bool = True  # online horizontal flip with left/right keypoint swap
    map_kind: str = "disk"  # disk (PG2) | gaussian (PATN)
    map_radius: int = 4
    map_sigma: float = 6.0
    # architecture
    channels: int = 128
    repeat: int | None = None  # None: log2(H) - 2
    z_dim: int = 64
    g2_full_res_skip: bool = False
    disc_channels: int = 64
    disc_layers: int | None = None  # None: 4 below 256 rows, 5 from 256
    # machinery
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    threads: int | None = None  # torch intra-op CPU threads; None: torch's default
    amp: bool | None = None  # bf16 autocast; None: on for CUDA
    channels_last: bool | None = None  # None: on for CUDA
    compile: bool = False  # torch.compile the networks
    fused_adam: bool | None = None  # None: fused on CUDA
    num_workers: int | None = None  # None: 0 when the split is in memory, else 2
    in_memory: bool | None = None  # None: when images + masks use under a quarter of the RAM
    log_every: int = 100
    sample_every: int = 1000
    ckpt_every: int = 2000
    keep_checkpoints: int = 0  # 0 keeps all; else only the newest k (and stage I's last)
    g1_checkpoint: str | None = None  # stage II: G1 weights from this checkpoint
    interrupt_after: int | None = None  # stop after this many steps without a final checkpoint

    def __post_init__(self) -> None:
        # paths are kept as str so the config is JSON and weights_only-checkpoint friendly
        for k in ("data", "run_dir", "g1_checkpoint"):
            v = getattr(self, k)
            if v is not None:
                setattr(self, k, str(v))
        self.betas = tuple(float(b) for b in self.betas)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["betas"] = list(self.betas)
        return d


PRESETS: dict[str, dict[str, Any]] = {
    # PG2 Market-1501 script: batch 16, 22k G1 steps, then G2 + D to 60k, lambda 10
    "market1501": dict(batch_size=16, g1_steps=22_000, total_steps=60_000, l1_lambda=10.0),
    # PG2 DeepFashion script: batch 1, 22k then to 80k, lambda 50. Larger batches train much
    # faster on a GPU (e.g. --batch-size 8 with ~1/8 of the steps, --lr 1e-4 after checking the
    # samples); that is a departure from the paper's recipe, so it is not the default.
    "deepfashion": dict(
        batch_size=1, g1_steps=22_000, total_steps=80_000, l1_lambda=50.0, g2_full_res_skip=True
    ),
    # smoke test: both stages in about a minute on a 2-core CPU (small channels, few steps)
    "tiny": dict(
        batch_size=8,
        g1_steps=150,
        total_steps=300,
        channels=16,
        disc_channels=16,
        lr=2e-4,
        log_every=25,
        sample_every=150,
        ckpt_every=150,
    ),
}


def make_config(preset: str = "market1501", **overrides: Any) -> TrainConfig:
    """The preset's config with `overrides` (None values are ignored, as CLI flags default None)."""
    if preset not in PRESETS:
        raise TrainError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    bad = sorted(set(overrides) - fields)
    if bad:
        raise TrainError(f"unknown config field(s): {', '.join(bad)}")
    values = {**PRESETS[preset], **{k: v for k, v in overrides.items() if v is not None}}
    if "betas" in values:
        values["betas"] = tuple(values["betas"])
    return TrainConfig(preset=preset, **values)


def _check_config(cfg: TrainConfig) -> None:
    def need(ok: bool, msg: str) -> None:
        if not ok:
            raise TrainError(msg)

    need(cfg.stage in ("g1", "g2", "both"), f"stage must be g1, g2 or both, not {cfg.stage!r}")
    need(cfg.disc in ("triplet", "conditional"), "disc must be triplet or conditional")
    need(cfg.map_kind in ("disk", "gaussian"), "map kind must be disk or gaussian")
    need(cfg.batch_size >= 1, "batch size must be >= 1")
    need(0 <= cfg.g1_steps, "g1 steps must be >= 0")
    need(
        cfg.stage == "g1" or cfg.total_steps > cfg.g1_steps,
        f"total steps ({cfg.total_steps}) must exceed the G1 steps ({cfg.g1_steps}) for stage II",
    )
    need(cfg.lr > 0 and cfg.l1_lambda >= 0, "lr must be > 0 and lambda >= 0")
    need(min(cfg.log_every, cfg.sample_every, cfg.ckpt_every) >= 1, "intervals must be >= 1")
    need(cfg.channels >= 1 and cfg.disc_channels >= 1, "channel counts must be >= 1")


def arch_for(cfg: TrainConfig, info: SplitInfo) -> Arch:
    """The architecture for this config on data of info's frame; TrainError if unsupported."""
    h, w = info.height, info.width
    try:
        repeat = cfg.repeat or default_repeat(h)
        check_resolution(h, w, repeat)
    except ValueError as e:
        raise TrainError(f"{info.root}: {e}") from None
    layers = cfg.disc_layers or (5 if h >= 256 else 4)
    if h % 2**layers or w % 2**layers:
        raise TrainError(
            f"{info.root}: resolution {h}x{w} is not divisible by 2^{layers} for the "
            f"discriminator's {layers} stride-2 convs; set --disc-layers"
        )
    return Arch(
        height=h,
        width=w,
        channels=cfg.channels,
        repeat=repeat,
        z_dim=cfg.z_dim,
        g2_full_res_skip=cfg.g2_full_res_skip,
        disc=cfg.disc,
        disc_layers=layers,
        disc_channels=cfg.disc_channels,
    )


# ---------------------------------------------------------------- checkpoints


def find_checkpoints(run_dir: str | Path) -> list[Path]:
    """Checkpoints of a run folder, oldest first (by step number)."""
    d = Path(run_dir) / "checkpoints"
    if not d.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in d.iterdir() if (m := CKPT_RE.match(p.name))]
    return [p for _, p in sorted(found)]


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """A checkpoint as saved (tensors and plain Python only: weights_only=True loads it)."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises several types for truncated/foreign files
        raise TrainError(f"{path}: cannot read the checkpoint ({type(e).__name__}: {e})") from None
    if not isinstance(ckpt, dict) or "arch" not in ckpt or "step" not in ckpt:
        raise TrainError(f"{path}: not a pg2kit checkpoint")
    return ckpt


def _check_arch(ckpt: dict[str, Any], arch: Arch, path: Path, parts: tuple[str, ...]) -> None:
    theirs = ckpt["arch"]
    # G1 weights from a checkpoint only need G1's architecture to match
    keys = (
        ("height", "width", "channels", "repeat", "z_dim")
        if parts == ("g1",)
        else tuple(arch.to_dict())
    )
    diff = [
        f"{k} {theirs.get(k)} vs {getattr(arch, k)}"
        for k in keys
        if theirs.get(k) != getattr(arch, k)
    ]
    if diff:
        raise TrainError(
            f"{path}: checkpoint of another architecture ({'; '.join(diff)}; checkpoint vs this "
            "run); use a new run folder or the settings it was trained with"
        )


def _save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)  # a crash mid-write never leaves a truncated newest checkpoint


def _rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# ---------------------------------------------------------------- losses and steps


def masked_l1(x: torch.Tensor, y: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """mean(|x - y| * (1 + M)): the PG2 pose-mask loss; mask (B, 1, H, W) of 0/1."""
    return ((x.float() - y.float()).abs() * (1.0 + mask)).mean()


def _bce(logits: torch.Tensor, real: bool) -> torch.Tensor:
    target = torch.ones_like(logits) if real else torch.zeros_like(logits)
    return F.binary_cross_entropy_with_logits(logits.float(), target)


def _disc_logits(disc, arch: Arch, target, source, image):
    """D logits of (real target, image) in one forward so BatchNorm sees one batch.

    triplet: D on [target; source; image] -> (real, source-negative, image); conditional:
    D on [(source, target); (source, image)] -> (real, None, image).
    """
    b = target.shape[0]
    if arch.disc == "triplet":
        real, neg, fake = disc(torch.cat([target, source, image])).split(b)
        return real, neg, fake
    real, fake = disc(torch.cat([target, image]), torch.cat([source, source])).split(b)
    return real, None, fake


def g1_step(nets, opt, batch, cfg: TrainConfig, arch: Arch, amp) -> dict[str, torch.Tensor]:
    """One stage-I step: L_G1 = mean(|G1 - I_B| * (1 + M_B))."""
    pose = pose_input(
        batch["target_kp"], arch.height, arch.width, cfg.map_kind, cfg.map_radius, cfg.map_sigma
    )
    with amp():
        coarse = nets["g1"](batch["source"], pose.to(batch["source"].dtype))
    loss = masked_l1(coarse, batch["target"], batch["mask"])
    opt["g1"].zero_grad(set_to_none=True)
    loss.backward()
    opt["g1"].step()
    return {"g1_l1": loss.detach()}


def g2_step(nets, opt, batch, cfg: TrainConfig, arch: Arch, amp) -> dict[str, torch.Tensor]:
    """One stage-II step: D on refined.detach() first, then G2 with the updated D."""
    source, target, mask = batch["source"], batch["target"], batch["mask"]
    pose = pose_input(
        batch["target_kp"], arch.height, arch.width, cfg.map_kind, cfg.map_radius, cfg.map_sigma
    )
    with torch.no_grad(), amp():
        coarse = nets["g1_frozen"](source, pose)
    coarse = coarse.float()
    with amp():
        refined = coarse + nets["g2"](coarse, source)  # G2 outputs a difference map
    refined = refined.float()

    # D step: triplet 0.5 BCE(D(I_B),1) + 0.25 BCE(D(I_A),0) + 0.25 BCE(D(refined),0)
    with amp():
        real, neg, fake = _disc_logits(nets["disc"], arch, target, source, refined.detach())
    if neg is not None:
        loss_d = 0.5 * _bce(real, True) + 0.25 * _bce(neg, False) + 0.25 * _bce(fake, False)
    else:
        loss_d = 0.5 * (_bce(real, True) + _bce(fake, False))
    opt["disc"].zero_grad(set_to_none=True)
    loss_d.backward()
    opt["disc"].step()

    # G step: BCE(D(refined), 1) + lambda * L1; D's gradients from this pass are discarded (and
    # not all-reduced under DDP), they are zeroed before the next D step
    sync = getattr(nets["disc"], "no_sync", contextlib.nullcontext)
    with sync():
        with amp():
            _, _, fake = _disc_logits(nets["disc"], arch, target, source, refined)
        adv = _bce(fake, True)
        l1 = masked_l1(refined, target, mask)
        loss_g = adv + cfg.l1_lambda * l1
        opt["g2"].zero_grad(set_to_none=True)
        loss_g.backward()
    opt["g2"].step()
    return {"g2_adv": adv.detach(), "g2_l1": l1.detach(), "d": loss_d.detach()}


# ---------------------------------------------------------------- run-folder helpers


class _Log:
    """print + append to log.txt on rank 0; silent elsewhere."""

    def __init__(self, path: Path | None):
        self.path = path

    def __call__(self, msg: str) -> None:
        if self.path is None:
            return
        print(msg, flush=True)
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(msg + "\n")


def _tensorboard(run: Path, log: _Log):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as e:  # tensorboard not installed: train without it
        log(f"note: no TensorBoard events ({e})")
        return None
    return SummaryWriter(str(run / "tb"))


def _sample_grid(g1, g2, batch, arch: Arch, cfg: TrainConfig, stage2: bool) -> np.ndarray:
    """Rows of source | target skeleton | coarse | refined | target as one uint8 RGB image."""
    with torch.no_grad():
        pose = pose_input(
            batch["target_kp"], arch.height, arch.width, cfg.map_kind, cfg.map_radius, cfg.map_sigma
        )
        coarse = g1(batch["source"], pose)
        refined = coarse + g2(coarse, batch["source"]) if stage2 else torch.zeros_like(coarse)

    def u8(x: torch.Tensor) -> np.ndarray:  # (B, 3, H, W) in [-1, 1] -> (B, H, W, 3) uint8
        x = ((x.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
        return x.permute(0, 2, 3, 1).cpu().numpy()

    src, tgt, c, r = u8(batch["source"]), u8(batch["target"]), u8(coarse), u8(refined)
    kp = batch["target_kp"].cpu().numpy()
    from pg2kit import viz

    rows = []
    for i in range(len(src)):
        skel = viz.draw_skeleton(np.zeros_like(tgt[i]), kp[i])
        rows.append([src[i], skel, c[i], r[i], tgt[i]])
    cols = ["source", "pose", "coarse", "refined", "target"]
    return viz.grid(rows, col_labels=cols if arch.width >= 64 else None)


def _fmt_time(s: float) -> str:
    if not math.isfinite(s):
        return "?"
    s = int(s)
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def _distributed() -> tuple[int, int, int]:
    """(rank, world size, local rank); initialises the process group under torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1, 0
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0"))


def _device(name: str, local_rank: int) -> torch.device:
    if name == "auto":
        name = f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu"
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise TrainError(f"device {name!r} requested but CUDA is not available")
    return dev


# ---------------------------------------------------------------- the loop


def train(cfg: TrainConfig) -> Path:
    """Train per `cfg`, resuming from the run folder's newest checkpoint; returns the run folder.

    Everything is validated before the run folder is touched. Raises TrainError / DataError.
    """
    # 1. validate config, data, architecture and checkpoints before writing anything
    _check_config(cfg)
    run = Path(cfg.run_dir)
    info = inspect_split(cfg.data, cfg.split)
    arch = arch_for(cfg, info)
    resume_path = (find_checkpoints(run) or [None])[-1]
    resume = load_checkpoint(resume_path) if resume_path else None
    if resume is not None:
        _check_arch(resume, arch, resume_path, ("g1", "g2", "disc"))
    g1_source = None  # stage II without a stage-II checkpoint: G1 weights from here
    if cfg.stage == "g2" and (resume is None or resume["step"] < cfg.g1_steps):
        if cfg.g1_checkpoint:
            g1_path = Path(cfg.g1_checkpoint)
            if not g1_path.is_file():
                raise TrainError(f"{g1_path}: G1 checkpoint not found")
            g1_source = load_checkpoint(g1_path)
            _check_arch(g1_source, arch, g1_path, ("g1",))
        elif resume is not None:
            g1_source = resume  # the newest checkpoint of this run folder holds G1
        else:
            raise TrainError(
                f"stage g2 needs G1 weights: give --g1-checkpoint or a run folder with a G1 "
                f"checkpoint ({run} has none)"
            )
        resume = None
    end = cfg.g1_steps if cfg.stage == "g1" else cfg.total_steps
    if resume is not None:
        start = int(resume["step"])
    elif cfg.stage == "g2":
        start = cfg.g1_steps
    else:
        start = 0

    rank, world, local_rank = _distributed()
    device = _device(cfg.device, local_rank)
    cuda = device.type == "cuda"
    amp_on = cfg.amp if cfg.amp is not None else cuda
    channels_last = cfg.channels_last if cfg.channels_last is not None else cuda
    fused = cfg.fused_adam if cfg.fused_adam is not None else cuda

    # 2. the run folder (rank 0 writes, the others only read)
    main = rank == 0
    if main:
        run.mkdir(parents=True, exist_ok=True)
        config = {**cfg.to_dict(), "arch": arch.to_dict()}
        write_text(run / "config.json", json.dumps(config, indent=2) + "\n")
    log = _Log(run / "log.txt" if main else None)
    log(f"pg2kit train: {cfg.data} -> {run} | stage {cfg.stage} | {info.height}x{info.width}, "
        f"{info.num_pairs} pairs | device {device}, {world} process(es) | amp {amp_on}, "
        f"channels_last {channels_last}, compile {cfg.compile}, fused adam {fused}")  # fmt: skip
    if start >= end:
        log(f"nothing to do: step {start} >= end {end}")
        return run

    # 3. models, optimisers, state
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    g1, g2, disc = (
        m.to(device, memory_format=fmt) for m in (G1(arch), G2(arch), Discriminator(arch))
    )
    adam = {"lr": cfg.lr, "betas": tuple(cfg.betas), **({"fused": True} if fused else {})}
    opt = {
        "g1": torch.optim.Adam(g1.parameters(), **adam),
        "g2": torch.optim.Adam(g2.parameters(), **adam),
        "disc": torch.optim.Adam(disc.parameters(), **adam),
    }
    if resume is not None:
        g1.load_state_dict(resume["g1"])
        g2.load_state_dict(resume["g2"])
        disc.load_state_dict(resume["disc"])
        for k in opt:
            if f"opt_{k}" in resume:
                opt[k].load_state_dict(resume[f"opt_{k}"])
        log(f"resumed from {resume_path} at step {start}")
    elif g1_source is not None:
        g1.load_state_dict(g1_source["g1"])
        log(f"stage II from G1 weights of step {g1_source['step']}")
    g1_frozen = g1  # stage II uses G1 without grads, never wrapped
    nets = {"g1": g1, "g2": g2, "disc": disc, "g1_frozen": g1_frozen}
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel as DDP

        ids = [device.index] if cuda else None
        nets.update({k: DDP(nets[k], device_ids=ids) for k in ("g1", "g2", "disc")})
    if cfg.compile:
        nets = {k: torch.compile(v) for k, v in nets.items()}

    def amp():
        return torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp_on)

    # 4. data: the sampler starts at batch `start` so a resumed run continues the same stream
    dataset = PairBatches(cfg.data, cfg.split, in_memory=cfg.in_memory).load()
    workers = cfg.num_workers if cfg.num_workers is not None else (0 if dataset.in_memory else 2)
    sampler = PairBatchSampler(len(dataset), cfg.batch_size, cfg.seed, cfg.flip, rank, world, start)
    loader = iter(make_loader(dataset, sampler, workers, pin_memory=cuda))
    fixed = None
    if main:
        fixed = _fixed_batch(cfg, device, channels_last)
        tb = _tensorboard(run, log)
        stats_file = open(run / "stats.jsonl", "a", encoding="utf-8")
    log(f"{len(dataset)} pairs, {sampler.batches_per_epoch} batches of {cfg.batch_size} per "
        f"epoch and process, {'in memory' if dataset.in_memory else 'from shards'}, {workers} "
        f"workers")  # fmt: skip

    def save(step: int) -> None:
        bad = [k for k, m in (("g1", g1), ("g2", g2), ("disc", disc)) if not _finite(m)]
        if bad:
            raise TrainError(f"non-finite weights in {', '.join(bad)} at step {step}; not saved")
        state = {
            "format": 1,
            "step": step,
            "arch": arch.to_dict(),
            "config": cfg.to_dict(),
            "g1": g1.state_dict(),
            "g2": g2.state_dict(),
            "disc": disc.state_dict(),
            "rng": _rng_state(),
        }
        # G1's Adam state matters only while G1 trains; G2/D's only once stage II has begun
        for k in ("g1",) if step <= cfg.g1_steps else ("g2", "disc"):
            state[f"opt_{k}"] = opt[k].state_dict()
        path = run / "checkpoints" / f"ckpt-{step:07d}.pt"
        _save_checkpoint(path, state)
        _prune(run, cfg)
        log(f"saved {path}")

    # 5. the loop: one batch per step; stage I below g1_steps, stage II from there
    if resume is not None:  # after the loader, whose creation draws from the RNG
        _set_rng_state(resume["rng"])
    sums: dict[str, torch.Tensor] = {}
    count, t_last, step = 0, time.perf_counter(), start
    done_this_run = 0
    for step in range(start, end):
        stage2 = step >= cfg.g1_steps
        for k in ("g2", "disc"):
            nets[k].train(stage2)
        batch = to_device(next(loader), device, channels_last)
        step_fn = g2_step if stage2 else g1_step
        losses = step_fn(nets, opt, batch, cfg, arch, amp)
        for k, v in losses.items():
            sums[k] = sums.get(k, 0.0) + v
        count += 1
        done = step + 1
        done_this_run += 1
        at_log = done % cfg.log_every == 0 or done == end or done == cfg.g1_steps
        at_ckpt = done % cfg.ckpt_every == 0 or done == end or done == cfg.g1_steps
        if at_log or at_ckpt:
            means = {k: float(v) / count for k, v in sums.items()}
            if not all(math.isfinite(v) for v in means.values()):
                last = (find_checkpoints(run) or ["none"])[-1]
                raise TrainError(
                    f"loss became NaN/inf between steps {done - count + 1} and {done} "
                    f"({means}); stopped; the last good checkpoint is {last}"
                )
            now = time.perf_counter()
            rate = count * cfg.batch_size * world / max(now - t_last, 1e-9)
            eta = (end - done) * cfg.batch_size * world / rate
            if main:
                text = " ".join(f"{k} {v:.4f}" for k, v in means.items())
                log(f"step {done}/{end} [{'g2' if stage2 else 'g1'}] {text} | "
                    f"{rate:.1f} samples/s | ETA {_fmt_time(eta)}")  # fmt: skip
                stats_file.write(json.dumps({"step": done, **means, "samples_per_s": rate}) + "\n")
                stats_file.flush()
                if tb is not None:
                    for k, v in means.items():
                        tb.add_scalar(f"loss/{k}", v, done)
                    tb.add_scalar("perf/samples_per_s", rate, done)
            sums, count, t_last = {}, 0, time.perf_counter()
        if main and (done % cfg.sample_every == 0 or done == end or done == cfg.g1_steps):
            from pg2kit import viz

            img = _sample_grid(g1, g2, fixed, arch, cfg, stage2)
            viz.save_png(run / "samples" / f"step-{done:07d}.png", img)
            if tb is not None:
                tb.add_image("samples", img, done, dataformats="HWC")
        if cfg.interrupt_after is not None and done_this_run >= cfg.interrupt_after and done < end:
            log(f"interrupted after {done_this_run} steps at step {done} (interrupt_after)")
            break
        if main and at_ckpt:
            save(done)
    if main:
        stats_file.close()
        if tb is not None:
            tb.close()
    if world > 1:
        _check_ranks_agree(run, (g1, g2, disc), main, log)
    return run


def _check_ranks_agree(run: Path, modules, main: bool, log: _Log) -> None:
    """DDP: gather a digest of every rank's parameters; write ddp_check.json; fail on mismatch."""
    import hashlib

    import torch.distributed as dist

    h = hashlib.sha256()
    for m in modules:
        for p in m.parameters():
            h.update(p.detach().cpu().contiguous().numpy().tobytes())
    digests: list[str | None] = [None] * dist.get_world_size()
    dist.all_gather_object(digests, h.hexdigest())
    same = len(set(digests)) == 1
    if main:
        check = {"rank_digests": digests, "identical": same}
        write_text(run / "ddp_check.json", json.dumps(check, indent=1) + "\n")
        log(f"DDP check: parameters {'identical' if same else 'DIFFER'} on {len(digests)} ranks")
    dist.barrier()
    dist.destroy_process_group()
    if not same:
        raise TrainError(f"DDP ranks ended with different parameters: {digests}")


def _finite(module: torch.nn.Module) -> bool:
    return all(bool(torch.isfinite(p).all()) for p in module.parameters())


def _prune(run: Path, cfg: TrainConfig) -> None:
    if cfg.keep_checkpoints <= 0:
        return
    ckpts = find_checkpoints(run)
    keep = set(ckpts[-cfg.keep_checkpoints :])
    keep |= {p for p in ckpts if int(CKPT_RE.match(p.name).group(1)) == cfg.g1_steps}
    for p in ckpts:
        if p not in keep:
            p.unlink(missing_ok=True)


def _fixed_batch(cfg: TrainConfig, device: torch.device, channels_last: bool):
    """Up to 8 fixed pairs for the sample grid: held-out 'test' pairs when there are any."""
    split = cfg.split
    with contextlib.suppress(DataError):
        if cfg.split != "test" and inspect_split(cfg.data, "test"):
            split = "test"
    ds = PairBatches(cfg.data, split, in_memory=False)
    n = min(8, len(ds))
    picks = np.linspace(0, len(ds) - 1, n).round().astype(np.int64)  # spread over identities
    idx = np.stack([picks, np.zeros(n, np.int64)], -1)
    return to_device(ds[idx], device, channels_last)


if __name__ == "__main__":  # pragma: no cover
    sys.exit("use `pg2kit train` (or python -m pg2kit.commands.train)")
