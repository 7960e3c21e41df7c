"""Pair protocols (Def-GAN/PATN, PG2, custom) as pure functions over names/keypoint arrays.

Pairs are int64 (P, 2) arrays of (source, target) row indices; pairs.h5 is written and read by
pg2kit.shards (write_pairs / read_pairs; write_pair_index / read_pair_index here are the same).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pg2kit.keypoints import TORSO, present

# Def-GAN Market test pairs: rows RandomState(0).permutation(n)[:12000] of the full list (SPEC 2).
MARKET_TEST_PAIRS = 12_000
# PG2 test split: 12,800 pairs drawn at random.
PG2_TEST_PAIRS = 12_800

_MARKET_RE = re.compile(r"^(-1|\d+)_c\d+")
# flattened DeepFashion: fashion|fasion + gender + category + id + 8-digit item + 2-digit group
_DEEPFASHION_RE = re.compile(r"^fash?ion(?:MEN|WOMEN).*?(id\d{10})")


# ---------------------------------------------------------------- identity keys


def market_identity(name: str) -> str:
    """Market-1501 identity: the name up to the first '_' (`0002_c1s1_000451_03.jpg` -> `0002`)."""
    if not _MARKET_RE.match(name):
        raise ValueError(f"{name!r} is not a Market-1501 name (like 0002_c1s1_000451_03.jpg)")
    return name.split("_", 1)[0]


def deepfashion_identity(name: str) -> str:
    """Def-GAN DeepFashion key: the 12 characters from 'id' (item id + 2-digit group).

    `fashionWOMENBlouses_Shirtsid0000637003_1front.jpg` -> `id0000637003`; the `fasion` prefix
    misspelling of some files is accepted.
    """
    m = _DEEPFASHION_RE.match(name)
    if m is None:
        raise ValueError(
            f"{name!r} is not a flattened DeepFashion name "
            "(like fashionWOMENBlouses_Shirtsid0000637003_1front.jpg)"
        )
    return m.group(1)


def identity_keys(names: Sequence[str], dataset: str) -> list[str]:
    """Def-GAN identity key of every name for `dataset` 'market1501' or 'deepfashion'."""
    if dataset == "market1501":
        return [market_identity(n) for n in names]
    if dataset == "deepfashion":
        return [deepfashion_identity(n) for n in names]
    raise ValueError(f"unknown dataset {dataset!r} (market1501, deepfashion)")


# ---------------------------------------------------------------- core: all permutations


def group_codes(identities: Sequence | np.ndarray) -> np.ndarray:
    """Group number (N,) int64 per sample, groups numbered by first appearance."""
    ids = np.asarray(identities)
    if ids.size == 0:
        return np.zeros(0, np.int64)
    _, first, inverse = np.unique(ids, return_index=True, return_inverse=True)
    rank = np.empty(len(first), np.int64)
    rank[np.argsort(first, kind="stable")] = np.arange(len(first))
    return rank[inverse.reshape(-1)]


def permutation_pairs(
    identities: Sequence | np.ndarray, keep: np.ndarray | None = None, chunk: int = 1 << 16
) -> np.ndarray:
    """All ordered same-identity pairs (i != j) among the kept rows, as (P, 2) int64 row indices.

    Order, as `itertools.permutations(rows_of_identity, 2)` per identity: identities in order of
    first appearance among the kept rows; within one, sources in row order and for each source
    the other rows in row order. Filled batch by batch (about `chunk` pairs of whole groups at a
    time) into one preallocated array, so memory is 16 bytes per pair plus O(chunk + N).
    """
    n = len(identities)
    rows = np.arange(n, dtype=np.int64)
    if keep is not None:
        keep = np.asarray(keep, bool)
        if keep.shape != (n,):
            raise ValueError(f"keep must have shape ({n},), got {keep.shape}")
        rows = rows[keep]
    if len(rows) == 0:
        return np.zeros((0, 2), np.int64)
    codes = group_codes(np.asarray(identities)[rows])
    # kept rows sorted by group (stable: row order inside a group)
    members = rows[np.argsort(codes, kind="stable")]
    sizes = np.bincount(codes).astype(np.int64)  # k per group, in first-appearance order
    starts = np.cumsum(sizes) - sizes  # first position of each group in `members`
    per_group = sizes * (sizes - 1)
    ends = np.cumsum(per_group)  # end of each group's pairs in the output
    out = np.empty((int(ends[-1]), 2), np.int64)
    ga = 0
    while ga < len(sizes):
        # whole groups [ga, gb) holding about `chunk` pairs (at least one group)
        gb = max(int(np.searchsorted(ends, ends[ga] - per_group[ga] + chunk, "right")), ga + 1)
        lo = int(ends[ga] - per_group[ga])
        pg = per_group[ga:gb]
        g = np.repeat(np.arange(ga, gb), pg)  # group of every pair of the batch
        offset = np.arange(len(g), dtype=np.int64) - np.repeat(np.cumsum(pg) - pg, pg)
        km1 = sizes[g] - 1
        i = offset // km1  # source position inside the group
        j = offset % km1  # target position among the k-1 others: skip the source itself
        j += j >= i
        base = starts[g]
        out[lo : lo + len(g), 0] = members[base + i]
        out[lo : lo + len(g), 1] = members[base + j]
        ga = gb
    return out


# ---------------------------------------------------------------- Def-GAN / PATN


def defgan_valid(names: Sequence[str], keypoints: np.ndarray, dataset: str) -> np.ndarray:
    """(N,) bool: torso keypoints 2, 5, 8, 11 present; Market also drops `-1*` and `0000*` names."""
    kp = np.asarray(keypoints)
    if kp.shape != (len(names), 18, 2):
        raise ValueError(f"keypoints must be ({len(names)}, 18, 2), got {kp.shape}")
    ok = present(kp[:, list(TORSO)]).all(axis=1)
    if dataset == "market1501":
        junk = np.fromiter((n.startswith(("-1", "0000")) for n in names), bool, len(names))
        ok &= ~junk
    return ok


def market_test_sample(n: int, count: int = MARKET_TEST_PAIRS) -> np.ndarray:
    """Rows RandomState(0).permutation(n)[:count]: what pandas `sample(count, random_state=0)`
    (used by the Def-GAN script) picks from n rows, in that order."""
    return np.random.RandomState(0).permutation(n)[: min(count, n)].astype(np.int64)


def defgan_pairs(
    names: Sequence[str],
    keypoints: np.ndarray,
    dataset: str = "market1501",
    split: str = "train",
    identities: Sequence[str] | None = None,
) -> np.ndarray:
    """Def-GAN/PATN pairs (P, 2) int64 of row indices (SPEC section 2).

    Keeps rows with the four torso keypoints (Market: not junk/distractor), groups them by the
    name's identity key (or `identities`, required for dataset 'other'), emits
    itertools.permutations order per identity (see `permutation_pairs`). Market 'test' is then
    sampled to 12,000 rows by `market_test_sample`; DeepFashion test is not sampled.
    """
    if dataset not in ("market1501", "deepfashion", "other"):
        raise ValueError(f"unknown dataset {dataset!r} (market1501, deepfashion, other)")
    keep = defgan_valid(names, keypoints, dataset)
    if identities is None:
        if dataset == "other":
            raise ValueError("dataset 'other' needs identities")
        # keys of dropped rows are not needed, and junk names may not parse
        rows = np.flatnonzero(keep)
        keys = np.full(len(names), "", dtype=object)
        keys[rows] = identity_keys([names[r] for r in rows], dataset)
        identities = keys.astype(str)
    pairs = permutation_pairs(np.asarray(identities).astype(str), keep)
    if dataset == "market1501" and split == "test":
        pairs = pairs[market_test_sample(len(pairs))]
    return pairs


# ---------------------------------------------------------------- PG2 and custom


def _choose_sorted(n: int, count: int, rng: np.random.Generator) -> np.ndarray:
    """`count` distinct indices of range(n), chosen at random and returned in increasing order."""
    return np.sort(rng.choice(n, size=count, replace=False))


def pg2_pairs(
    identities: Sequence[str] | np.ndarray,
    cameras: np.ndarray | None = None,
    cross_camera: bool = False,
    max_pairs: int | None = None,
    seed: int = 0,
    keep: np.ndarray | None = None,
) -> np.ndarray:
    """PG2 pairs (P, 2) int64: every ordered same-identity pair among `keep` rows.

    cross_camera: only pairs whose two cameras differ and are known (>= 0). max_pairs: if there are
    more, keep a seeded random subset (numpy default_rng(seed)), in the original order.
    """
    pairs = permutation_pairs(identities, keep)
    if cross_camera:
        if cameras is None:
            raise ValueError("cross_camera needs cameras")
        ca, cb = np.asarray(cameras)[pairs[:, 0]], np.asarray(cameras)[pairs[:, 1]]
        pairs = pairs[(ca != cb) & (ca >= 0) & (cb >= 0)]  # unknown (-1) never counts as different
    if max_pairs is not None and len(pairs) > max_pairs:
        pairs = pairs[_choose_sorted(len(pairs), max_pairs, np.random.default_rng(seed))]
    return pairs


def pose_difference(
    keypoints: np.ndarray, pairs: np.ndarray, height: float, chunk: int = 1 << 16
) -> np.ndarray:
    """(P,) float32 pose difference of each pair: the mean Euclidean distance between the
    keypoints present in both images, divided by the image `height` (pixels). NaN where the two
    share no keypoint. Computed in chunks so memory stays O(P)."""
    kp = np.asarray(keypoints, np.float32)
    pairs = np.asarray(pairs, np.int64).reshape(-1, 2)
    vis = present(kp)
    out = np.empty(len(pairs), np.float32)
    for s in range(0, len(pairs), chunk):
        a, b = pairs[s : s + chunk, 0], pairs[s : s + chunk, 1]
        both = vis[a] & vis[b]  # (c, 18)
        dist = np.linalg.norm(kp[a] - kp[b], axis=-1)  # (c, 18) pixels
        n = both.sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            out[s : s + chunk] = np.where(both, dist, 0).sum(axis=1) / n / height
    return out


def custom_pairs(
    identities: Sequence[str] | np.ndarray,
    keypoints: np.ndarray,
    cameras: np.ndarray | None = None,
    *,
    height: float,
    min_keypoints: int = 4,
    require_torso: bool = True,
    min_pose_diff: float = 0.0,
    cross_camera: bool = False,
    max_per_identity: int | None = None,
    seed: int = 0,
    keep: np.ndarray | None = None,
) -> np.ndarray:
    """Filtered same-identity pairs (P, 2) int64.

    Rows must have >= min_keypoints present keypoints (and the torso 2, 5, 8, 11 with
    require_torso). Pairs must differ in camera (cross_camera) and have pose difference
    >= min_pose_diff (see `pose_difference`: mean distance of shared keypoints / image height;
    pairs with no shared keypoint fail any min_pose_diff > 0). max_per_identity keeps a seeded
    random subset of each identity's pairs, in order.
    """
    kp = np.asarray(keypoints, np.float32)
    n = len(identities)
    if kp.shape != (n, 18, 2):
        raise ValueError(f"keypoints must be ({n}, 18, 2), got {kp.shape}")
    vis = present(kp)
    ok = np.ones(n, bool) if keep is None else np.asarray(keep, bool).copy()
    ok &= vis.sum(axis=1) >= min_keypoints
    if require_torso:
        ok &= vis[:, list(TORSO)].all(axis=1)
    pairs = pg2_pairs(identities, cameras, cross_camera=cross_camera, keep=ok)
    if min_pose_diff > 0 and len(pairs):
        diff = pose_difference(kp, pairs, height)
        pairs = pairs[diff >= min_pose_diff]  # NaN compares False: dropped
    if max_per_identity is not None and len(pairs):
        codes = group_codes(np.asarray(identities))[pairs[:, 0]]
        # pairs are grouped by identity already, so each identity is one contiguous run
        bounds = np.flatnonzero(np.diff(codes)) + 1
        starts = np.concatenate([[0], bounds])
        ends = np.concatenate([bounds, [len(pairs)]])
        rng = np.random.default_rng(seed)
        chosen = []
        for s, e in zip(starts, ends, strict=True):
            if e - s > max_per_identity:
                chosen.append(s + _choose_sorted(e - s, max_per_identity, rng))
            else:
                chosen.append(np.arange(s, e))
        pairs = pairs[np.concatenate(chosen)]
    return pairs


# ---------------------------------------------------------------- pairs.h5 (owned by shards.py)


def write_pair_index(
    root: str | Path,
    pairs_by_split: dict[str, np.ndarray],
    protocol: str,
    params: dict[str, Any],
) -> Path:
    """Write ROOT/pairs.h5 and the manifest's "pairs" entry: `pg2kit.shards.write_pairs`."""
    from pg2kit.shards import write_pairs

    return write_pairs(root, pairs_by_split, protocol, params)


def read_pair_index(root: str | Path, split: str) -> np.ndarray:
    """The checked (P, 2) int64 pairs of `split`: `pg2kit.shards.read_pairs` (a missing split is
    a PairsMissingError, which is also a KeyError)."""
    from pg2kit.shards import read_pairs

    return read_pairs(root, split)
