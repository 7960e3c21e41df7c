"""Training batches of (source, target) pairs from a prepared folder (shards/*.h5 + pairs.h5).

The dataset returns whole uint8 batches (a sampler yields index arrays); `to_device` turns them
into float NCHW tensors in [-1, 1] and renders pose maps on the training device.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from pg2kit import shards
from pg2kit.keypoints import flip_keypoints

__all__ = [
    "DataError",
    "PairBatchSampler",
    "PairBatches",
    "SplitInfo",
    "inspect_split",
    "make_loader",
    "map_settings",
    "pose_input",
    "to_device",
]


class DataError(ValueError):
    """The prepared folder cannot be trained on; the message says why."""


@dataclass(frozen=True)
class SplitInfo:
    """What the trainer needs to know about one split before building anything."""

    root: Path
    split: str
    height: int
    width: int
    num_samples: int
    num_pairs: int
    image_bytes: int  # images + masks of the whole split, bytes


def inspect_split(root: str | Path, split: str = "train") -> SplitInfo:
    """Validate a prepared folder for training and describe `split`; DataError if unusable.

    Checks (through pg2kit.shards): manifest and shard schema version, pairs.h5 with this
    split, pair ids in range, the datasets the trainer reads, one frame size for all shards.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: not a folder")
    try:
        manifest = shards.load_manifest(root)
        paths = shards.split_shards(root, split, manifest)
    except shards.SchemaError as e:
        raise DataError(str(e)) from None
    if not paths:
        raise DataError(f"{root}: split {split!r} has no shards")
    for p in paths:
        if not p.exists():
            raise DataError(f"{p}: listed in the manifest but missing")
    if not (root / shards.PAIRS).exists():
        raise DataError(f"{root}: no {shards.PAIRS}; run `pg2kit pairs {root}` first")
    attrs = _split_attrs(root, split)
    version = attrs.get("schema_version")
    if version != shards.SCHEMA_VERSION:
        raise DataError(
            f"{paths[0]}: schema version {version}, this pg2kit reads version "
            f"{shards.SCHEMA_VERSION}; re-run `pg2kit prepare --overwrite`"
        )
    # first sample of every shard: datasets present, shapes, one frame for the split
    reader = shards.SplitReader(root, split)
    frame = None
    try:
        for k, p in enumerate(paths):
            first = [int(reader.offsets[k])]
            try:
                image = reader.read("image", first)
                kp = reader.read("keypoints", first)
                reader.read("mask", first)
            except shards.PreparedError as e:
                raise DataError(str(e)) from None
            except KeyError as e:
                raise DataError(f"{p}: no dataset {e}") from None
            except OSError as e:
                raise DataError(f"{p}: cannot read ({e})") from None
            if image.shape[3:] != (3,) or kp.shape[1:] != (18, 2):
                raise DataError(f"{p}: image or keypoints of unexpected shape")
            hw = tuple(image.shape[1:3])
            if frame is None:
                frame = hw
            elif hw != frame:
                raise DataError(f"{p}: frame {hw} differs from the split's first shard {frame}")
    finally:
        reader.close()
    n = len(reader)
    pairs = _read_pairs(root, split)
    if len(pairs) == 0:
        raise DataError(f"{root / shards.PAIRS}: split {split!r} has no pairs")
    if pairs.min() < 0 or pairs.max() >= n:
        raise DataError(
            f"{root / shards.PAIRS}: pair ids outside 0..{n - 1} (stale pairs? re-run pairs)"
        )
    h, w = frame
    return SplitInfo(root, split, h, w, n, len(pairs), n * h * w * 4)


def _split_attrs(root: Path, split: str) -> dict:
    try:
        return shards.shard_attrs(root, split)
    except shards.SchemaError as e:
        raise DataError(str(e)) from None
    except OSError as e:
        raise DataError(f"{root}: cannot read the first shard of {split!r} ({e})") from None


def _read_pairs(root: Path, split: str) -> np.ndarray:
    """pairs.h5's (P, 2) pairs of `split`, checked by pg2kit.shards (fresh, ids in range)."""
    try:
        pairs = shards.read_pairs(root, split)
    except shards.PreparedError as e:
        raise DataError(str(e)) from None
    except OSError as e:
        raise DataError(f"{root / shards.PAIRS}: cannot read ({e})") from None
    if pairs.ndim != 2 or pairs.shape[1] != 2:
        raise DataError(f"{root / shards.PAIRS}: /{split} has shape {pairs.shape}, expected (P, 2)")
    return pairs


MAP_DEFAULTS = {"kind": "disk", "radius": 4, "sigma": 6.0}


def map_settings(root: str | Path, split: str = "train") -> tuple[dict, dict]:
    """Pose-map kind, radius and sigma the folder was prepared with, and where each came from.

    Returns ({"kind", "radius", "sigma"}, {same keys: "data" or "default"}); "default" (PG2's
    disk, 4, 6.0) for folders whose shards do not record the value.
    """
    attrs = _split_attrs(Path(root), split)
    values, origin = {}, {}
    for key, cast in (("kind", str), ("radius", int), ("sigma", float)):
        v = attrs.get(f"map_{key}")
        if isinstance(v, bytes):
            v = v.decode()
        values[key] = cast(v) if v is not None else MAP_DEFAULTS[key]
        origin[key] = "data" if v is not None else "default"
    if values["kind"] not in ("disk", "gaussian"):
        raise DataError(f"{root}: unknown map_kind {values['kind']!r} in the shard attributes")
    return values, origin


def _total_ram() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 8 << 30


class PairBatches(torch.utils.data.Dataset):
    """Whole batches of pairs: `ds[idx]` with idx an int64 (B, 2) array of (pair index, flip).

    Returns a dict of tensors: source, target uint8 (B, H, W, 3); source_kp, target_kp float32
    (B, 18, 2) xy; target_mask uint8 (B, H, W). Flipped rows are mirrored horizontally, both
    images and the mask, with the left/right keypoint swap.

    in_memory=True reads the split's images and masks into RAM once (a split of Market train is
    ~400 MB) and collates with numpy fancy indexing; otherwise samples are read from the shards
    through lazily opened h5py handles, one set per worker process (never pickled).
    """

    def __init__(self, root: str | Path, split: str = "train", in_memory: bool | None = None):
        self.info = inspect_split(root, split)
        self.root, self.split = Path(root), split
        self.pairs = _read_pairs(self.root, split)  # (P, 2) global sample ids
        if in_memory is None:  # auto: up to a quarter of the RAM
            in_memory = self.info.image_bytes <= _total_ram() // 4
        self.in_memory = in_memory
        self._reader: shards.SplitReader | None = None
        self._arrays: dict[str, np.ndarray] | None = None
        self._keypoints: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.pairs)

    def __getstate__(self) -> dict:
        # workers get a copy without open handles or loaded arrays (each reopens lazily); with the
        # fork start method arrays loaded in the parent are inherited without pickling
        state = self.__dict__.copy()
        state["_reader"] = None
        if not self.in_memory:
            state["_arrays"] = None
        elif self._arrays is not None and torch.multiprocessing.get_start_method() != "fork":
            state["_arrays"] = None
        return state

    def load(self) -> PairBatches:
        """Read keypoints (always) and, in memory mode, the images and masks of the split."""
        if self._keypoints is None:
            self._keypoints = shards.read_split_fields(self.root, self.split, ["keypoints"])[
                "keypoints"
            ].astype(np.float32)
        if self.in_memory and self._arrays is None:
            self._arrays = self._read_whole(("image", "mask"))
        return self

    def _read_whole(self, fields: tuple[str, ...]) -> dict[str, np.ndarray]:
        """Whole fields of the split, filled shard by shard into preallocated arrays.

        Peak memory is the arrays plus a few chunks of `chunk` samples (concatenating
        per-shard parts would hold the split twice).
        """
        chunk = 256
        reader = shards.SplitReader(self.root, self.split)
        out: dict[str, np.ndarray] = {}
        try:
            bounds = reader.offsets
            for k in range(len(bounds) - 1):
                for lo in range(int(bounds[k]), int(bounds[k + 1]), chunk):
                    hi = min(lo + chunk, int(bounds[k + 1]))  # inside one shard: one slice read
                    for field in fields:
                        part = reader.read(field, np.arange(lo, hi))
                        if field not in out:
                            out[field] = np.empty((len(reader), *part.shape[1:]), part.dtype)
                        out[field][lo:hi] = part
                        del part
        finally:
            reader.close()
        return out

    def _read(self, field: str, ids: np.ndarray) -> np.ndarray:
        if self._arrays is not None:
            return self._arrays[field][ids]  # numpy fancy indexing: one copy, no Python loop
        if self._reader is None:  # opened lazily, so in each worker process separately
            self._reader = shards.SplitReader(self.root, self.split)
        return self._reader.read(field, ids)

    def __getitem__(self, idx: np.ndarray) -> dict[str, torch.Tensor]:
        self.load()
        idx = np.asarray(idx, np.int64).reshape(-1, 2)
        pair_ids, flip = idx[:, 0], idx[:, 1].astype(bool)
        src_ids, tgt_ids = self.pairs[pair_ids, 0], self.pairs[pair_ids, 1]
        b = len(idx)
        # sources then targets in one read: (2B, H, W, 3)
        ids = np.concatenate([src_ids, tgt_ids])
        images = self._read("image", ids)
        mask = self._read("mask", tgt_ids)
        kp = self._keypoints[ids].copy()  # (2B, 18, 2)
        if flip.any():
            f2 = np.concatenate([flip, flip])
            images[f2] = images[f2, :, ::-1]
            mask[flip] = mask[flip, :, ::-1]
            kp[f2] = flip_keypoints_batch(kp[f2], self.info.width)
        return {
            "source": torch.from_numpy(images[:b]),
            "target": torch.from_numpy(images[b:]),
            "source_kp": torch.from_numpy(kp[:b]),
            "target_kp": torch.from_numpy(kp[b:]),
            "target_mask": torch.from_numpy(np.ascontiguousarray(mask)),
        }


def flip_keypoints_batch(keypoints: np.ndarray, width: int) -> np.ndarray:
    """`pg2kit.keypoints.flip_keypoints` over a batch (B, 18, 2): swap sides, x -> width-1-x."""
    return flip_keypoints(keypoints, width)


class PairBatchSampler(torch.utils.data.Sampler):
    """Endless stream of (B, 2) int64 arrays (pair index, flip bit), a global shuffle per epoch.

    Epoch e uses numpy's PCG64 seeded with (seed, e): reproducible, independent of workers.
    Under DDP rank r takes every world-th pair of the epoch's permutation (the
    DistributedSampler split), so each rank sees a disjoint share each epoch; the last
    incomplete batch is dropped. `start_batch` skips batches already trained on (resume).
    """

    def __init__(
        self,
        num_pairs: int,
        batch_size: int,
        seed: int = 0,
        flip: bool = False,
        rank: int = 0,
        world_size: int = 1,
        start_batch: int = 0,
    ):
        self.num_pairs, self.batch_size = num_pairs, batch_size
        self.seed, self.flip = seed, flip
        self.rank, self.world_size = rank, world_size
        self.start_batch = start_batch
        if self.batches_per_epoch == 0:
            raise DataError(
                f"{num_pairs} pairs are fewer than one batch of {batch_size} per process "
                f"x {world_size} processes"
            )

    @property
    def batches_per_epoch(self) -> int:
        return self.num_pairs // self.world_size // self.batch_size

    def epoch(self, e: int) -> np.ndarray:
        """All batches of epoch e for this rank: (batches_per_epoch, B, 2)."""
        rng = np.random.Generator(np.random.PCG64([self.seed, e]))
        perm = rng.permutation(self.num_pairs)
        flips = rng.random(self.num_pairs) < 0.5 if self.flip else np.zeros(self.num_pairs, bool)
        mine = perm[self.rank :: self.world_size]
        nb = self.batches_per_epoch
        mine = mine[: nb * self.batch_size]
        out = np.stack([mine, flips[mine].astype(np.int64)], axis=-1)
        return out.reshape(nb, self.batch_size, 2)

    def __iter__(self) -> Iterator[np.ndarray]:
        nb = self.batches_per_epoch
        e, i = divmod(self.start_batch, nb)
        while True:
            batches = self.epoch(e)
            for k in range(i, nb):
                yield batches[k]
            e, i = e + 1, 0


def make_loader(
    dataset: PairBatches,
    sampler: PairBatchSampler,
    num_workers: int = 0,
    pin_memory: bool = False,
) -> torch.utils.data.DataLoader:
    """DataLoader over whole batches (batch_size=None: the dataset already collates)."""
    kw = {}
    if num_workers > 0:
        kw = {"persistent_workers": True, "prefetch_factor": 4}
    return torch.utils.data.DataLoader(
        dataset,
        sampler=sampler,
        batch_size=None,
        num_workers=num_workers,
        pin_memory=pin_memory,
        **kw,
    )


def pose_input(
    keypoints: torch.Tensor,
    height: int,
    width: int,
    kind: str = "disk",
    radius: int = 4,
    sigma: float = 6.0,
) -> torch.Tensor:
    """Pose maps (B, 18, H, W) rendered on the keypoints' device, scaled to map * 2 - 1."""
    from pg2kit.maps import pose_maps_torch

    maps = pose_maps_torch(keypoints, height, width, kind=kind, radius=radius, sigma=sigma)
    return maps * 2 - 1


def to_device(
    batch: dict[str, torch.Tensor],
    device: torch.device,
    channels_last: bool = False,
) -> dict[str, torch.Tensor]:
    """uint8 NHWC batch -> float32 NCHW in [-1, 1] on `device` (copied as uint8: 4x fewer bytes).

    Adds `mask` (B, 1, H, W) float 0/1 of the target; keypoints stay (B, 18, 2) float32.
    """
    nb = device.type == "cuda"  # non_blocking only pays with pinned memory on CUDA
    fmt = torch.channels_last if channels_last else torch.contiguous_format

    def image(x: torch.Tensor) -> torch.Tensor:
        # one conversion pass into the final layout, then in-place scaling (no temporaries)
        x = x.to(device, non_blocking=nb).permute(0, 3, 1, 2)
        return x.to(torch.float32, memory_format=fmt).mul_(1 / 127.5).sub_(1.0)

    return {
        "source": image(batch["source"]),
        "target": image(batch["target"]),
        "source_kp": batch["source_kp"].to(device, non_blocking=nb),
        "target_kp": batch["target_kp"].to(device, non_blocking=nb),
        "mask": batch["target_mask"].to(device, non_blocking=nb).unsqueeze(1).float(),
    }
