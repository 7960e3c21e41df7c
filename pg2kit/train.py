"""Two-stage PG2 training (SPEC section 6): stage I trains G1, stage II trains G2 + D with G1 frozen.

Reads a prepared folder with pairs.h5; writes a run folder: config.json, log.txt, stats.jsonl,
tb/ (TensorBoard), samples/step-*.png, checkpoints/ckpt-*.pt (auto-resumed from the newest).

Checkpoint format (`format` 1; read with `load_checkpoint`, plain tensors and Python values, so
`torch.load(..., weights_only=True)` reads it):

- `format` (1), `step` (global steps done), `arch` (`Arch.to_dict()`: height, width, channels,
  repeat, z_dim, g2_full_res_skip, disc, disc_layers, disc_channels; `build_models(Arch(**arch))`
  rebuilds the networks), `config` (the resolved `TrainConfig.to_dict()`: map_kind, map_radius,
  map_sigma, precision, ... as the run used them), `maps` (kind, radius, sigma and, per value,
  "data" / "flag" / "default": where it came from), `param_counts` (g1, g2, disc);
- `g1`, `g2`, `disc`: state dicts of the plain modules (never DDP- or compile-prefixed);
- `opt_g1` while stage I runs (step <= g1_steps), `opt_g2` and `opt_disc` afterwards; `rng`.

Pose maps for G1 are rendered from the target keypoints as `pose_input(kp, H, W, kind, radius,
sigma)` with the checkpoint's config values; the refined image is coarse + G2(coarse, source).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import math
import os
import queue
import re
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from pg2kit.atomic import WriteError, atomic_path, write_text
from pg2kit.data import (
    DataError,
    PairBatches,
    PairBatchSampler,
    SplitInfo,
    inspect_split,
    make_loader,
    map_settings,
    pose_input,
    to_device,
)
from pg2kit.models import (
    Arch,
    build_models,
    check_resolution,
    default_repeat,
    param_counts,
)

__all__ = [
    "COMPILE_MODES",
    "PRESETS",
    "PRECISIONS",
    "Steps",
    "TrainConfig",
    "TrainError",
    "arch_for",
    "find_checkpoints",
    "load_checkpoint",
    "make_config",
    "masked_l1",
    "plan_run",
    "resolve_config",
    "train",
]

CKPT_RE = re.compile(r"^ckpt-(\d{7,})\.pt$")
COMPILE_MODES = ("none", "default", "reduce-overhead", "max-autotune")
PRECISIONS = ("bf16", "fp32")


class TrainError(ValueError):
    """Training cannot start or go on; the message says why and what to do."""


@dataclass
class TrainConfig:
    """Everything a run needs; presets fill it, CLI flags override single fields.

    Fields left None are resolved by `resolve_config`: map settings from the prepared folder,
    machinery from the device.
    """

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
    adv_weight: float = 1.0  # weight of BCE(D(refined), 1) in the G2 loss: 1 Market, 0.5 Fashion
    disc: str = "triplet"  # triplet (PG2 code) | conditional (PG2 paper)
    flip: bool = True  # online horizontal flip with left/right keypoint swap
    map_kind: str | None = None  # disk (PG2) | gaussian (PATN); None: the prepared folder's
    map_radius: int | None = None  # None: the prepared folder's (4)
    map_sigma: float | None = None  # None: the prepared folder's (6.0)
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
    precision: str | None = None  # bf16 (autocast) | fp32 (the reproduction setting); None: bf16
    # on CUDA, fp32 on CPU
    channels_last: bool | None = None  # None: on for CUDA
    compile: str = "none"  # none | default | reduce-overhead | max-autotune (whole step)
    fused_adam: bool | None = None  # None: fused (one kernel per step) on CUDA and CPU
    num_workers: int | None = None  # None: 0 when the split is in memory, else 2
    in_memory: bool | None = None  # None: when images + masks use under a quarter of the RAM
    prefetch: int = 2  # batches assembled and copied ahead on a background thread; 0: inline
    log_every: int = 100
    sample_every: int = 1000
    ckpt_every: int = 2000
    keep_checkpoints: int = 3  # the newest K (and stage I's last); 0 keeps all
    g1_checkpoint: str | None = None  # stage II: G1 weights from this checkpoint

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
    # PG2 DeepFashion script: batch 1, 22k then to 80k, lambda 50; the G adversarial BCE is
    # averaged over [D(G2); D(I_A)] there, and D(I_A) carries no gradient: weight 0.5 (SPEC 6).
    # Larger batches train much faster on a GPU (e.g. --batch-size 8 with ~1/8 of the steps);
    # that departs from the paper's recipe, so it is not the default.
    "deepfashion": dict(
        batch_size=1,
        g1_steps=22_000,
        total_steps=80_000,
        l1_lambda=50.0,
        adv_weight=0.5,
        g2_full_res_skip=True,
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
    need(cfg.map_kind in (None, "disk", "gaussian"), "map kind must be disk or gaussian")
    need(cfg.precision in (None, *PRECISIONS), f"precision must be one of {PRECISIONS}")
    need(cfg.compile in COMPILE_MODES, f"compile must be one of {', '.join(COMPILE_MODES)}")
    need(cfg.batch_size >= 1, "batch size must be >= 1")
    need(0 <= cfg.g1_steps, "g1 steps must be >= 0")
    need(
        cfg.stage == "g1" or cfg.total_steps > cfg.g1_steps,
        f"total steps ({cfg.total_steps}) must exceed the G1 steps ({cfg.g1_steps}) for stage II",
    )
    need(cfg.lr > 0 and cfg.l1_lambda >= 0, "lr must be > 0 and lambda >= 0")
    need(cfg.adv_weight >= 0, "the adversarial weight must be >= 0")
    need(min(cfg.log_every, cfg.sample_every, cfg.ckpt_every) >= 1, "intervals must be >= 1")
    need(cfg.channels >= 1 and cfg.disc_channels >= 1, "channel counts must be >= 1")
    need(cfg.keep_checkpoints >= 0 and cfg.prefetch >= 0, "keep/prefetch counts must be >= 0")


def resolve_config(cfg: TrainConfig, info: SplitInfo, device: torch.device) -> tuple:
    """(config with every None filled, {map field: "data" | "flag" | "default"}).

    Map kind, radius and sigma come from the prepared folder's shard attributes unless the
    config (a flag) sets them.
    """
    stored, stored_from = map_settings(info.root, info.split)
    values, origin = {}, {}
    for field, key in (("map_kind", "kind"), ("map_radius", "radius"), ("map_sigma", "sigma")):
        flag = getattr(cfg, field)
        values[field] = flag if flag is not None else stored[key]
        origin[key] = "flag" if flag is not None else stored_from[key]
    cuda = device.type == "cuda"
    out = dataclasses.replace(
        cfg,
        **values,
        precision=cfg.precision or ("bf16" if cuda else "fp32"),
        channels_last=cfg.channels_last if cfg.channels_last is not None else cuda,
        fused_adam=cfg.fused_adam if cfg.fused_adam is not None else True,
    )
    return out, origin


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


def _ckpt_step(path: Path) -> int:
    return int(CKPT_RE.match(path.name).group(1))


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


@dataclass
class RunPlan:
    """Where a run starts and from which weights (see `plan_run`)."""

    start: int
    end: int
    resume: dict[str, Any] | None = None  # full state to continue from
    resume_path: Path | None = None
    g1_source: dict[str, Any] | None = None  # stage II only: G1 weights from here
    g1_path: Path | None = None
    warnings: list[str] = dataclasses.field(default_factory=list)


def _newest_readable(run: Path, arch: Arch) -> tuple[dict | None, Path | None, list[str]]:
    """Newest checkpoint that loads, skipping unreadable ones with a warning each."""
    warnings = []
    for path in reversed(find_checkpoints(run)):
        try:
            ckpt = load_checkpoint(path)
        except TrainError as e:
            warnings.append(f"warning: skipping unreadable checkpoint {path} ({e})")
            continue
        _check_arch(ckpt, arch, path, ("g1", "g2", "disc"))
        return ckpt, path, warnings
    return None, None, warnings


def plan_run(cfg: TrainConfig, arch: Arch, run: Path) -> RunPlan:
    """Resume from the run folder's newest readable checkpoint, or start stage I / stage II."""
    end = cfg.g1_steps if cfg.stage == "g1" else cfg.total_steps
    resume, resume_path, warnings = _newest_readable(run, arch)
    plan = RunPlan(start=0, end=end, warnings=warnings)
    if cfg.stage == "g2" and (resume is None or resume["step"] < cfg.g1_steps):
        # stage II without a stage-II checkpoint: G1 from --g1-checkpoint or this run's newest
        if cfg.g1_checkpoint:
            g1_path = Path(cfg.g1_checkpoint)
            if not g1_path.is_file():
                raise TrainError(f"{g1_path}: G1 checkpoint not found")
            plan.g1_source = load_checkpoint(g1_path)
            _check_arch(plan.g1_source, arch, g1_path, ("g1",))
            plan.g1_path = g1_path
        elif resume is not None:
            plan.g1_source, plan.g1_path = resume, resume_path
        else:
            raise TrainError(
                f"stage g2 needs G1 weights: give --g1-checkpoint or a run folder with a G1 "
                f"checkpoint ({run} has none)"
            )
        plan.start = cfg.g1_steps
        return plan
    if resume is not None:
        plan.start, plan.resume, plan.resume_path = int(resume["step"]), resume, resume_path
    return plan


def _cpu_copy(obj: Any) -> Any:
    """A deep copy of a (nested) state dict with every tensor copied to the CPU."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().to("cpu", copy=True)
    if isinstance(obj, dict):
        return {k: _cpu_copy(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return type(obj)(_cpu_copy(v) for v in obj)
    return obj


def _nbytes(obj: Any) -> int:
    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, dict):
        return sum(_nbytes(v) for v in obj.values())
    if isinstance(obj, list | tuple):
        return sum(_nbytes(v) for v in obj)
    return 0


class CheckpointWriter:
    """Writes checkpoints atomically on a background thread; one write in flight at a time.

    `save` takes a state whose tensors are already CPU copies (the loop goes on changing the
    weights meanwhile); a failed write (e.g. a full disk) leaves no temporary file and raises
    TrainError from the next `save` or `wait`, naming the file and the space.
    """

    def __init__(self, run: Path, keep: int, boundary_step: int, background: bool = True):
        self.dir = run / "checkpoints"
        self.keep, self.boundary_step, self.background = keep, boundary_step, background
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    def path(self, step: int) -> Path:
        return self.dir / f"ckpt-{step:07d}.pt"

    def save(self, step: int, state: dict[str, Any]) -> Path:
        self.wait()
        path = self.path(step)
        if self.background:
            self._thread = threading.Thread(target=self._write, args=(path, state), daemon=True)
            self._thread.start()
        else:
            self._write(path, state)
            self.wait()
        return path

    def wait(self) -> None:
        """Block until the write in flight is on disk; TrainError if it failed."""
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        err, self._error = self._error, None
        if err is not None:
            raise TrainError(str(err)) from None

    def _write(self, path: Path, state: dict[str, Any]) -> None:
        try:
            with atomic_path(path, needed=_nbytes(state)) as tmp:
                with open(tmp, "wb") as f:
                    torch.save(state, f)
                    f.flush()
                    os.fsync(f.fileno())
            self._prune()
        except WriteError as e:
            self._error = e
        except Exception as e:  # noqa: BLE001 -- reported on the loop's thread
            self._error = TrainError(f"cannot write {path}: {type(e).__name__}: {e}")

    def _prune(self) -> None:
        if self.keep <= 0:
            return
        ckpts = find_checkpoints(self.dir.parent)
        keep = set(ckpts[-self.keep :])
        keep |= {p for p in ckpts if _ckpt_step(p) == self.boundary_step}
        for p in ckpts:
            if p not in keep:
                p.unlink(missing_ok=True)


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


def _unwrap(module: torch.nn.Module) -> torch.nn.Module:
    return getattr(module, "module", module)  # DDP keeps the network in .module


class Steps:
    """One training step of each stage, bound once to the networks, optimisers and settings.

    The loss computations (pose rendering, G1, G2, D, losses) run in four functions that are
    torch.compile'd as whole regions when `compile` is not "none"; their backward graphs are
    compiled with them. Stage II, in the pix2pix order: refined = coarse + G2(coarse, source)
    with G1 frozen; a D step on refined.detach(); a G2 step through D with D's parameters frozen
    (no weight gradients for D are computed in the G pass).
    """

    def __init__(
        self,
        nets: dict[str, torch.nn.Module],
        opt: dict[str, torch.optim.Optimizer],
        cfg: TrainConfig,
        arch: Arch,
        device: torch.device,
        *,
        plain_backward: bool | None = None,
    ):
        self.nets, self.opt, self.arch = nets, opt, arch
        # Gradients reach .grad by torch.autograd.grad and a Python assignment: loss.backward()
        # costs one aten::detach per parameter (AccumulateGrad), 64 of the 69 aten ops that a
        # compiled Market G1 step issued outside its graphs (BENCHMARKS.md). DDP needs
        # loss.backward(): its reducer runs on AccumulateGrad's hooks. `plain_backward`: force
        # either way (the benches' baselines).
        if plain_backward is None:
            from torch.nn.parallel import DistributedDataParallel as DDP

            plain_backward = any(isinstance(n, DDP) for n in nets.values())
        self.plain_backward = plain_backward
        self.params = {k: [p for g in o.param_groups for p in g["params"]] for k, o in opt.items()}
        self.l1_lambda, self.adv_weight = cfg.l1_lambda, cfg.adv_weight
        # the pose renderer, bound once to the frame and map settings
        self.render = functools.partial(
            pose_input,
            height=arch.height,
            width=arch.width,
            kind=cfg.map_kind,
            radius=cfg.map_radius,
            sigma=cfg.map_sigma,
        )
        self.device_type = device.type
        self.bf16 = cfg.precision == "bf16"
        self.compile = cfg.compile
        self.masked_l1 = masked_l1  # looked up at bind time (tests may patch the module's)
        wrap = self._compiled if cfg.compile != "none" else (lambda f: f)
        self.g1_loss = wrap(self._g1_loss)
        self.refine = wrap(self._refine)
        self.d_loss = wrap(self._d_loss)
        self.g2_loss = wrap(self._g2_loss)
        self._stage2_ready = False

    def _compiled(self, fn: Callable) -> Callable:
        return torch.compile(fn, mode=None if self.compile == "default" else self.compile)

    def _amp(self):
        if not self.bf16:
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, dtype=torch.bfloat16)

    # ---- loss regions (what gets compiled)

    def _g1_loss(self, source, target, mask, target_kp):
        pose = self.render(target_kp)  # (B, 18, H, W) in {-1, 1} (disks) or [-1, 1]
        with self._amp():
            coarse = self.nets["g1"](source, pose.to(source.dtype))
        return self.masked_l1(coarse, target, mask)

    def _refine(self, source, target_kp):
        pose = self.render(target_kp)
        with self._amp():
            coarse = _unwrap(self.nets["g1"])(source, pose.to(source.dtype)).float()
            return coarse + self.nets["g2"](coarse, source).float()  # G2: a difference map

    def _disc(self, disc, target, source, image):
        """D logits (real, source-negative or None, image) in one forward: BN sees one batch.

        triplet: D on [target; source; image]; conditional: D on [(source, target); (source,
        image)].
        """
        b = target.shape[0]
        with self._amp():
            if self.arch.disc == "triplet":
                real, neg, fake = disc(torch.cat([target, source, image])).split(b)
                return real, neg, fake
            real, fake = disc(torch.cat([target, image]), torch.cat([source, source])).split(b)
        return real, None, fake

    def _d_loss(self, target, source, fake):
        real, neg, fake = self._disc(self.nets["disc"], target, source, fake)
        if neg is not None:  # 0.5 BCE(D(I_B),1) + 0.25 BCE(D(I_A),0) + 0.25 BCE(D(G2),0)
            return 0.5 * _bce(real, True) + 0.25 * _bce(neg, False) + 0.25 * _bce(fake, False)
        return 0.5 * (_bce(real, True) + _bce(fake, False))

    def _g2_loss(self, target, source, mask, refined):
        # D frozen and unwrapped: no gradient sync, no weight gradients
        _, _, fake = self._disc(_unwrap(self.nets["disc"]), target, source, refined)
        adv = _bce(fake, True)
        l1 = self.masked_l1(refined, target, mask)
        # the parts leave detached: outputs with a gradient would each cost autograd a zeros op
        return self.adv_weight * adv + self.l1_lambda * l1, adv.detach(), l1.detach()

    # ---- the steps

    def _backward(self, loss: torch.Tensor, name: str) -> None:
        """The gradients of `loss` in the .grad of optimiser `name`'s parameters (set to None
        before), each in its parameter's layout, as loss.backward() leaves them."""
        if self.plain_backward:
            loss.backward()
            return
        params = self.params[name]
        grads = torch.autograd.grad(loss, params, allow_unused=True)
        for p, g in zip(params, grads, strict=True):
            if g is not None and g.stride() != p.stride():  # AccumulateGrad's layout rule
                g = torch.empty_like(p).copy_(g)
            p.grad = g

    def _mark_step(self) -> None:
        if self.compile == "reduce-overhead":
            torch.compiler.cudagraph_mark_step_begin()  # outputs of the last replay may be reused

    def g1(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Stage I: L_G1 = mean(|G1 - I_B| * (1 + M_B)); returns detached losses."""
        self._mark_step()
        loss = self.g1_loss(batch["source"], batch["target"], batch["mask"], batch["target_kp"])
        self.opt["g1"].zero_grad(set_to_none=True)
        self._backward(loss, "g1")
        self.opt["g1"].step()
        return {"g1_l1": loss.detach().clone()}

    def g2(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Stage II: a D step on refined.detach(), then a G2 step through the updated D."""
        if not self._stage2_ready:  # G1 is frozen for the rest of the run
            _unwrap(self.nets["g1"]).requires_grad_(False)
            self._stage2_ready = True
        self._mark_step()
        source, target, mask = batch["source"], batch["target"], batch["mask"]
        refined = self.refine(source, batch["target_kp"])
        loss_d = self.d_loss(target, source, refined.detach())
        self.opt["disc"].zero_grad(set_to_none=True)
        self._backward(loss_d, "disc")
        self.opt["disc"].step()

        disc = _unwrap(self.nets["disc"])
        disc.requires_grad_(False)
        try:
            loss_g, adv, l1 = self.g2_loss(target, source, mask, refined)
            self.opt["g2"].zero_grad(set_to_none=True)
            self._backward(loss_g, "g2")
        finally:
            disc.requires_grad_(True)
        self.opt["g2"].step()
        return {
            "g2_adv": adv.clone(),  # a copy: under CUDA graphs the next replay reuses memory
            "g2_l1": l1.clone(),
            "d": loss_d.detach().clone(),
        }


def make_optimizers(nets, cfg: TrainConfig) -> dict[str, torch.optim.Optimizer]:
    adam = {"lr": cfg.lr, "betas": tuple(cfg.betas), **({"fused": True} if cfg.fused_adam else {})}
    return {k: torch.optim.Adam(nets[k].parameters(), **adam) for k in ("g1", "g2", "disc")}


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


def lock_run_folder(run: Path):
    """An exclusive flock on the run folder itself, held while the returned handle is open.

    The kernel drops it when the process dies (also on SIGKILL). TrainError if held.
    """
    import fcntl

    fd = os.open(run, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise TrainError(
            f"{run}: another `pg2kit train` is running on this run folder; wait for it to end "
            "or give another -o"
        ) from None
    return fd


def _truncate_history(run: Path, step: int, ckpt_name: str | None) -> list[str]:
    """Drop what a killed run logged past `step` (it is trained again): stats.jsonl rows,
    log.txt lines after the checkpoint line, sample grids. Returns notes for the log."""
    notes = []
    stats = run / "stats.jsonl"
    if stats.exists():
        lines = stats.read_text(encoding="utf-8").splitlines(keepends=True)
        kept = []
        for line in lines:
            try:
                row_step = json.loads(line)["step"]
            except (json.JSONDecodeError, KeyError, TypeError):
                continue  # a half-written last row
            if row_step <= step:
                kept.append(line if line.endswith("\n") else line + "\n")
        if len(kept) != len(lines):
            write_text(stats, "".join(kept))
            notes.append(f"stats.jsonl: dropped {len(lines) - len(kept)} row(s) past step {step}")
    log = run / "log.txt"
    if log.exists() and ckpt_name is not None:
        lines = log.read_text(encoding="utf-8").splitlines(keepends=True)
        marks = [i for i, line in enumerate(lines) if line.startswith("checkpoint ") and
                 line.rstrip().endswith(ckpt_name)]  # fmt: skip
        if marks and marks[-1] + 1 < len(lines):
            write_text(log, "".join(lines[: marks[-1] + 1]))
            notes.append(f"log.txt: dropped {len(lines) - marks[-1] - 1} line(s) past step {step}")
    samples = run / "samples"
    if samples.is_dir():
        for p in samples.glob("step-*.png"):
            m = re.match(r"step-(\d+)\.png$", p.name)
            if m and int(m.group(1)) > step:
                p.unlink(missing_ok=True)
    return notes


def _tensorboard(run: Path, log: _Log, purge_step: int | None):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as e:  # tensorboard not installed: train without it
        log(f"note: no TensorBoard events ({e})")
        return None
    # purge_step: events a killed run wrote at or after it are hidden from the resumed run's view
    return SummaryWriter(str(run / "tb"), purge_step=purge_step)


def _sample_grid(g1, g2, batch, render, stage2: bool, width: int) -> np.ndarray:
    """Rows of source | target skeleton | coarse | refined | target as one uint8 RGB image."""
    with torch.no_grad():
        pose = render(batch["target_kp"])
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
    return viz.grid(rows, col_labels=cols if width >= 64 else None)


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


class Prefetcher:
    """Batches from `loader`, moved to `device`, `depth` ahead on a background thread.

    Batch assembly (indexing, flips) and the host-to-device copies then overlap the step the
    main thread is issuing. On CUDA the copies run on a side stream; the consumer's stream waits
    for them. The order of batches is the loader's (one producer), so resume stays exact.
    """

    def __init__(self, loader: Iterator, device: torch.device, channels_last: bool, depth: int):
        self.loader, self.device, self.channels_last = loader, device, channels_last
        self.depth = depth
        self.cuda = device.type == "cuda"
        self.stream = torch.cuda.Stream(device) if self.cuda else None
        self._q: queue.Queue = queue.Queue(maxsize=max(depth, 1))
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if depth > 0:
            self._thread = threading.Thread(target=self._run, daemon=True)
            self._thread.start()

    def _move(self, batch):
        if not self.cuda:
            return to_device(batch, self.device, self.channels_last), None
        with torch.cuda.stream(self.stream):
            out = to_device(batch, self.device, self.channels_last)
            event = torch.cuda.Event()
            event.record(self.stream)
        return out, event

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                item = self._move(next(self.loader))
                while not self._stop.is_set():
                    try:
                        self._q.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
        except BaseException as e:  # noqa: BLE001 -- re-raised on the consumer's thread
            self._q.put(e)

    def __next__(self) -> dict[str, torch.Tensor]:
        if self._thread is None:
            batch, _ = self._move(next(self.loader))
            return batch
        item = self._q.get()
        if isinstance(item, BaseException):
            raise item
        batch, event = item
        if event is not None:
            stream = torch.cuda.current_stream(self.device)
            stream.wait_event(event)
            for t in batch.values():
                t.record_stream(stream)  # the copy stream's memory is not reused too early
        return batch

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            with contextlib.suppress(queue.Empty):
                while True:
                    self._q.get_nowait()
            self._thread.join(timeout=5)


def verify_prepared(root: str | Path) -> None:
    """Full checksum verification of a prepared folder (`train --verify`); DataError if damaged."""
    from pg2kit import shards

    report = shards.verify(Path(root), progress=True)
    if not report.ok:
        more = len(report.problems) - 1
        raise DataError(
            report.problems[0] + (f" (+{more} more; see `pg2kit verify`)" if more else "")
        )


# ---------------------------------------------------------------- the loop


def _state(step, arch, cfg, maps, nets, opt) -> dict[str, Any]:
    """The checkpoint of `step` with every tensor copied to the CPU (format in the docstring)."""
    state = {
        "format": 1,
        "step": step,
        "arch": arch.to_dict(),
        "config": cfg.to_dict(),
        "maps": maps,
        "param_counts": param_counts(arch),
        **{k: _unwrap(nets[k]).state_dict() for k in ("g1", "g2", "disc")},
        "rng": _rng_state(),
    }
    # G1's Adam state matters only while G1 trains; G2/D's only once stage II has begun
    for k in ("g1",) if step <= cfg.g1_steps else ("g2", "disc"):
        state[f"opt_{k}"] = opt[k].state_dict()
    return _cpu_copy(state)


def train(cfg: TrainConfig, *, verify: bool = False, stop_after: int | None = None) -> Path:
    """Train per `cfg`, resuming from the run folder's newest readable checkpoint; returns it.

    Everything is validated before the run folder is written. `verify`: check every shard's
    checksum first. `stop_after`: end after that many steps without a final checkpoint (tests
    use it as an interruption). Raises TrainError / DataError.
    """
    # 1. validate config, data, architecture and checkpoints before writing anything
    _check_config(cfg)
    run = Path(cfg.run_dir)
    if verify:
        verify_prepared(cfg.data)
    info = inspect_split(cfg.data, cfg.split)
    rank, world, local_rank = _distributed()
    device = _device(cfg.device, local_rank)
    cfg, map_origin = resolve_config(cfg, info, device)
    arch = arch_for(cfg, info)
    main = rank == 0
    lock = lock_run_folder(run) if main and run.is_dir() else None
    try:
        plan = plan_run(cfg, arch, run)
        if main and lock is None:
            run.mkdir(parents=True, exist_ok=True)
            lock = lock_run_folder(run)
        return _train(cfg, arch, info, plan, map_origin, run, device, rank, world, stop_after)
    finally:
        if lock is not None:
            os.close(lock)


def _train(cfg, arch, info, plan, map_origin, run, device, rank, world, stop_after) -> Path:
    main = rank == 0
    cuda = device.type == "cuda"
    maps = {"kind": cfg.map_kind, "radius": cfg.map_radius, "sigma": cfg.map_sigma,
            "from": map_origin}  # fmt: skip
    log = _Log(run / "log.txt" if main else None)
    history_notes = []
    if main:
        if plan.resume is not None:
            history_notes = _truncate_history(run, plan.start, plan.resume_path.name)
        config = {**cfg.to_dict(), "arch": arch.to_dict(), "maps": maps,
                  "param_counts": param_counts(arch)}  # fmt: skip
        write_text(run / "config.json", json.dumps(config, indent=2) + "\n")
    for w in plan.warnings:
        log(w)
    for note in history_notes:
        log(f"resume: {note}")
    origin = ", ".join(f"{k} {maps[k]} (from {map_origin[k]})" for k in ("kind", "radius", "sigma"))
    log(f"pg2kit train: {cfg.data} -> {run} | stage {cfg.stage} | {info.height}x{info.width}, "
        f"{info.num_pairs} pairs | device {device}, {world} process(es) | precision "
        f"{cfg.precision}, channels_last {cfg.channels_last}, compile {cfg.compile}, fused adam "
        f"{cfg.fused_adam} | pose maps: {origin}")  # fmt: skip
    if plan.start >= plan.end:
        log(f"nothing to do: step {plan.start} >= end {plan.end}")
        return run

    # 2. models, optimisers, state
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    fmt = torch.channels_last if cfg.channels_last else torch.contiguous_format
    g1, g2, disc = (m.to(device, memory_format=fmt) for m in build_models(arch))
    nets = {"g1": g1, "g2": g2, "disc": disc}
    opt = make_optimizers(nets, cfg)
    if plan.resume is not None:
        for k in ("g1", "g2", "disc"):
            nets[k].load_state_dict(plan.resume[k])
        for k in opt:
            if f"opt_{k}" in plan.resume:
                opt[k].load_state_dict(plan.resume[f"opt_{k}"])
        log(f"resumed from {plan.resume_path} at step {plan.start}")
    elif plan.g1_source is not None:
        g1.load_state_dict(plan.g1_source["g1"])
        log(f"stage II from G1 weights of step {plan.g1_source['step']} ({plan.g1_path})")
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel as DDP

        ids = [device.index] if cuda else None
        nets = {k: DDP(v, device_ids=ids) for k, v in nets.items()}
    steps = Steps(nets, opt, cfg, arch, device)

    # 3. data: the sampler starts at batch `start` so a resumed run continues the same stream
    dataset = PairBatches(cfg.data, cfg.split, in_memory=cfg.in_memory).load()
    workers = cfg.num_workers if cfg.num_workers is not None else (0 if dataset.in_memory else 2)
    sampler = PairBatchSampler(
        len(dataset), cfg.batch_size, cfg.seed, cfg.flip, rank, world, plan.start
    )
    loader = iter(make_loader(dataset, sampler, workers, pin_memory=cuda))
    fixed = tb = stats_file = None
    if main:
        fixed = _fixed_batch(cfg, device, cfg.channels_last)
        tb = _tensorboard(run, log, plan.start + 1 if plan.resume is not None else None)
        stats_file = open(run / "stats.jsonl", "a", encoding="utf-8")
    log(f"{len(dataset)} pairs, {sampler.batches_per_epoch} batches of {cfg.batch_size} per "
        f"epoch and process, {'in memory' if dataset.in_memory else 'from shards'}, {workers} "
        f"workers, prefetch {cfg.prefetch}")  # fmt: skip
    if plan.resume is not None:  # after the loader, whose creation draws from the RNG
        _set_rng_state(plan.resume["rng"])
    batches = Prefetcher(loader, device, bool(cfg.channels_last), cfg.prefetch)
    writer = CheckpointWriter(run, cfg.keep_checkpoints, cfg.g1_steps)
    try:
        _loop(cfg, plan, steps, batches, writer, log, run, main, world, arch, maps, fixed, tb,
              stats_file, stop_after)  # fmt: skip
        writer.wait()
    finally:
        batches.close()
        with contextlib.suppress(TrainError):
            writer.wait()
        if stats_file is not None:
            stats_file.close()
        if tb is not None:
            tb.close()
    if world > 1:
        _check_ranks_agree(run, [_unwrap(nets[k]) for k in ("g1", "g2", "disc")], main, log)
    return run


def _loop(cfg, plan, steps, batches, writer, log, run, main, world, arch, maps, fixed, tb,
          stats_file, stop_after) -> None:  # fmt: skip
    """Steps plan.start .. plan.end: stage I below g1_steps, stage II from there."""
    end = plan.end
    sums: dict[str, torch.Tensor] = {}
    count, t_last = 0, time.perf_counter()
    g1, g2 = (_unwrap(steps.nets[k]) for k in ("g1", "g2"))
    for step in range(plan.start, end):
        stage2 = step >= cfg.g1_steps
        losses = (steps.g2 if stage2 else steps.g1)(next(batches))
        for k, v in losses.items():
            sums[k] = sums[k] + v if k in sums else v
        count += 1
        done = step + 1
        boundary = done == end or done == cfg.g1_steps
        at_log = done % cfg.log_every == 0 or boundary
        at_ckpt = done % cfg.ckpt_every == 0 or boundary
        if at_log or at_ckpt:
            means = {k: float(v) / count for k, v in sums.items()}
            if not all(math.isfinite(v) for v in means.values()):
                writer.wait()
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
        if main and (done % cfg.sample_every == 0 or boundary):
            from pg2kit import viz

            img = _sample_grid(g1, g2, fixed, steps.render, stage2, arch.width)
            viz.save_png(run / "samples" / f"step-{done:07d}.png", img)
            if tb is not None:
                tb.add_image("samples", img, done, dataformats="HWC")
        if stop_after is not None and done - plan.start >= stop_after and done < end:
            log(f"interrupted after {done - plan.start} steps at step {done} (stop_after)")
            break
        if main and at_ckpt:
            bad = [k for k, m in (("g1", g1), ("g2", g2), ("disc", steps.nets["disc"]))
                   if not _finite(m)]  # fmt: skip
            if bad:
                raise TrainError(
                    f"non-finite weights in {', '.join(bad)} at step {done}; not saved"
                )
            state = _state(done, arch, cfg, maps, steps.nets, steps.opt)
            path = writer.save(done, state)
            log(f"checkpoint {path}")


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
    return to_device(ds[idx], device, bool(channels_last))


if __name__ == "__main__":  # pragma: no cover
    sys.exit("use `pg2kit train` (or python -m pg2kit.commands.train)")
