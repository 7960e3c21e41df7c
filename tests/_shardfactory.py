"""Tiny schema-conformant prepared folders (shards + manifest + pairs.h5) for trainer tests.

Figures are stick people drawn with cv2: clothing colours fixed per identity, pose varied per
image, so G1 has something learnable. Not a dataset: see pg2kit.datasets.synthetic for that.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import cv2
import numpy as np

from pg2kit import shards

# standing person, (x, y) as fractions of (W, H), COCO-18 order
_TEMPLATE = np.array(
    [
        [0.50, 0.12], [0.50, 0.20], [0.33, 0.22], [0.28, 0.38], [0.26, 0.52], [0.67, 0.22],
        [0.72, 0.38], [0.74, 0.52], [0.42, 0.52], [0.40, 0.72], [0.40, 0.92], [0.58, 0.52],
        [0.60, 0.72], [0.60, 0.92], [0.46, 0.10], [0.54, 0.10], [0.42, 0.11], [0.58, 0.11],
    ],
    np.float32,
)  # fmt: skip
_LIMBS_SHIRT = ((2, 3), (3, 4), (5, 6), (6, 7), (2, 5), (2, 8), (5, 11))
_LIMBS_PANTS = ((8, 9), (9, 10), (11, 12), (12, 13), (8, 11))


def _pose(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    t = _TEMPLATE.copy()
    t[[3, 4, 6, 7, 9, 10, 12, 13]] += rng.uniform(-0.12, 0.12, (8, 2)).astype(np.float32)
    t[:, 0] += rng.uniform(-0.08, 0.08)
    kp = np.round(t * [w - 1, h - 1]).astype(np.float32)
    kp = np.clip(kp, 0, [w - 1, h - 1]).astype(np.float32)
    if rng.random() < 0.3:  # a hidden ear now and then
        kp[16 + int(rng.integers(2))] = -1
    return kp


def _draw(kp: np.ndarray, colours: np.ndarray, h: int, w: int, bg: int) -> tuple:
    img = np.full((h, w, 3), bg, np.uint8)
    mask = np.zeros((h, w), np.uint8)
    t = max(1, w // 10)
    pt = [tuple(int(v) for v in p) for p in kp]
    for limbs, col in ((_LIMBS_PANTS, colours[1]), (_LIMBS_SHIRT, colours[0])):
        for a, b in limbs:
            cv2.line(img, pt[a], pt[b], tuple(int(c) for c in col), t + 1)
            cv2.line(mask, pt[a], pt[b], 1, t + 3)
    r = max(2, w // 8)
    cv2.circle(img, pt[0], r, tuple(int(c) for c in colours[2]), -1)
    cv2.circle(mask, pt[0], r + 1, 1, -1)
    return img, mask


def make_prepared(
    root: Path,
    num_ids: int = 4,
    poses: int = 3,
    size: tuple[int, int] = (32, 16),
    splits: tuple[str, ...] = ("train",),
    shard_size: int = 5,
    seed: int = 0,
    with_pairs: bool = True,
    schema_version: int = shards.SCHEMA_VERSION,
) -> Path:
    """Write a prepared folder with `num_ids` identities x `poses` images per split.

    Pairs: all ordered (source, target) pairs within each identity. Returns `root`.
    """
    root = Path(root)
    h, w = size
    rng = np.random.default_rng(seed)
    manifest = {
        "schema_version": schema_version,
        "dataset": "synthetic",
        "frame": {"height": h, "width": w, "x_offset": 0},
        "keypoints": {"source": "synthetic", "version": ""},
        "splits": {},
    }
    pairs_by_split = {}
    for split in splits:
        images, masks, kps, names, ids = [], [], [], [], []
        for i in range(num_ids):
            colours = rng.integers(0, 256, (3, 3))
            for p in range(poses):
                kp = _pose(rng, h, w)
                img, m = _draw(kp, colours, h, w, bg=int(rng.integers(90, 140)))
                images.append(img)
                masks.append(m)
                kps.append(kp)
                names.append(f"{i + 1:04d}_c1s1_{p:06d}_00.jpg")
                ids.append(f"{i + 1:04d}")
        n = len(images)
        entries = []
        for k, lo in enumerate(range(0, n, shard_size)):
            sl = slice(lo, lo + shard_size)
            kp = np.stack(kps[sl])
            arrays = {
                "image": np.stack(images[sl]),
                "keypoints": kp,
                "scores": (kp[..., 0] >= 0).astype(np.float32),
                "mask": np.stack(masks[sl]),
                "name": names[sl],
                "identity": ids[sl],
            }
            attrs = {
                "schema_version": schema_version,
                "split": split,
                "dataset": "synthetic",
                "keypoint_layout": "openpose-coco18",
                "keypoint_order": "xy",
                "map_kind": "disk",
                "map_radius": 4,
                "map_sigma": 6.0,
                "mask_radius": 4,
                "estimator": "synthetic",
                "frame_height": h,
                "frame_width": w,
                "frame_x_offset": 0,
            }
            entries.append(shards.write_shard(shards.shard_path(root, split, k), arrays, attrs))
        manifest["splits"][split] = {"count": n, "shards": entries}
        pairs = [
            (i * poses + a, i * poses + b)
            for i in range(num_ids)
            for a, b in itertools.permutations(range(poses), 2)
        ]
        pairs_by_split[split] = np.array(pairs, np.int64).reshape(-1, 2)
    (root / shards.MANIFEST).write_text(json.dumps(manifest, indent=1))
    if with_pairs and schema_version == shards.SCHEMA_VERSION:
        shards.write_pairs(root, pairs_by_split, "test", {})
    elif with_pairs:  # another schema: pg2kit refuses to write into it, so plain h5py
        import h5py

        with h5py.File(root / shards.PAIRS, "w") as f:
            for split, pairs in pairs_by_split.items():
                f[split] = pairs
    return root
