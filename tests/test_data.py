"""Pair loader: the right pairs, flips with left/right swap, shuffling, workers, bad folders."""

import json

import h5py
import numpy as np
import pytest
import torch

from pg2kit.data import (
    DataError,
    PairBatches,
    PairBatchSampler,
    flip_keypoints_batch,
    inspect_split,
    make_loader,
    to_device,
)
from pg2kit.keypoints import flip_keypoints
from tests import _faultkit as fk
from tests._shardfactory import make_prepared


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return make_prepared(tmp_path_factory.mktemp("prep"), num_ids=4, poses=3, size=(32, 16))


def whole_split(root, field):
    with open(root / "manifest.json") as f:
        files = [s["file"] for s in json.load(f)["splits"]["train"]["shards"]]
    parts = []
    for name in files:
        with h5py.File(root / name, "r") as f:
            parts.append(f[field][...])
    return np.concatenate(parts)


@pytest.mark.parametrize("in_memory", [True, False])
def test_returns_the_indexed_pairs(folder, in_memory):
    ds = PairBatches(folder, in_memory=in_memory)
    images, kps, masks = (whole_split(folder, k) for k in ("image", "keypoints", "mask"))
    with h5py.File(folder / "pairs.h5", "r") as f:
        pairs = f["train"][...]
    rows = np.array([5, 0, 17, 5])  # repeats allowed, any order, across shards
    b = ds[np.stack([rows, np.zeros(4, np.int64)], -1)]
    src, tgt = pairs[rows, 0], pairs[rows, 1]
    assert b["source"].dtype == torch.uint8 and b["source"].shape == (4, 32, 16, 3)
    np.testing.assert_array_equal(b["source"].numpy(), images[src])
    np.testing.assert_array_equal(b["target"].numpy(), images[tgt])
    np.testing.assert_array_equal(b["source_kp"].numpy(), kps[src])
    np.testing.assert_array_equal(b["target_kp"].numpy(), kps[tgt])
    np.testing.assert_array_equal(b["target_mask"].numpy(), masks[tgt])
    assert not np.array_equal(images[src], images[tgt])  # source and target really differ


def test_flip_mirrors_both_images_mask_and_swaps_sides(folder):
    ds = PairBatches(folder)
    plain = ds[np.array([[3, 0], [7, 0]])]
    flipped = ds[np.array([[3, 1], [7, 0]])]
    np.testing.assert_array_equal(flipped["source"][0].numpy(), plain["source"][0].numpy()[:, ::-1])
    np.testing.assert_array_equal(flipped["target"][0].numpy(), plain["target"][0].numpy()[:, ::-1])
    np.testing.assert_array_equal(
        flipped["target_mask"][0].numpy(), plain["target_mask"][0].numpy()[:, ::-1]
    )
    np.testing.assert_array_equal(flipped["source"][1].numpy(), plain["source"][1].numpy())
    for key in ("source_kp", "target_kp"):
        kp, fk = plain[key][0].numpy(), flipped[key][0].numpy()
        np.testing.assert_array_equal(fk, flip_keypoints(kp, 16))
        # worked by hand: the new left shoulder (5) is the old right shoulder (2) mirrored
        assert fk[5, 0] == 15 - kp[2, 0] and fk[5, 1] == kp[2, 1]


def test_batch_flip_by_hand():
    kp = np.full((1, 18, 2), -1, np.float32)
    kp[0, 2] = (3, 10)  # right shoulder at column 3
    kp[0, 16] = (0, 2)  # right ear at the left border; left ear (17) missing
    out = flip_keypoints_batch(kp, 16)
    assert out[0, 5].tolist() == [12, 10]  # becomes the left shoulder at 16 - 1 - 3
    assert out[0, 17].tolist() == [15, 2]
    assert out[0, 16].tolist() == [-1, -1] and out[0, 2].tolist() == [-1, -1]
    np.testing.assert_array_equal(out[0], flip_keypoints(kp[0], 16))


def test_sampler_global_shuffle_reproducible_and_resumable():
    s = PairBatchSampler(50, 8, seed=3, flip=True)
    assert s.batches_per_epoch == 6
    e0, e1 = s.epoch(0), s.epoch(1)
    assert len(np.unique(e0[..., 0])) == 48  # no repeats inside an epoch
    assert not np.array_equal(e0, e1)
    assert np.array_equal(e0, PairBatchSampler(50, 8, seed=3, flip=True).epoch(0))
    assert 0 < e0[..., 1].sum() < 48  # some pairs flipped, not all
    assert not np.array_equal(e0[..., 0], np.sort(e0[..., 0], axis=None).reshape(6, 8))
    stream = iter(s)
    first = [next(stream) for _ in range(10)]
    resumed = iter(PairBatchSampler(50, 8, seed=3, flip=True, start_batch=4))
    for k in range(4, 10):
        np.testing.assert_array_equal(next(resumed), first[k])
    assert PairBatchSampler(50, 8, flip=False).epoch(0)[..., 1].sum() == 0


def test_sampler_ranks_get_disjoint_shares():
    ranks = [PairBatchSampler(64, 4, seed=1, rank=r, world_size=2).epoch(0) for r in (0, 1)]
    a, b = (set(r[..., 0].ravel().tolist()) for r in ranks)
    assert len(a) == len(b) == 32 and not a & b
    with pytest.raises(DataError):
        PairBatchSampler(10, 8, world_size=2)


@pytest.mark.parametrize("in_memory", [False, True])
def test_dataloader_with_workers_matches_in_process(folder, in_memory):
    ds = PairBatches(folder, in_memory=in_memory)
    s = PairBatchSampler(len(ds), 4, seed=0, flip=True)
    ref = [ds[i] for i, _ in zip(iter(s), range(6), strict=False)]
    loader = make_loader(PairBatches(folder, in_memory=in_memory), s, num_workers=2)
    got = [b for b, _ in zip(loader, range(6), strict=False)]
    for r, g in zip(ref, got, strict=True):
        for k in r:
            assert torch.equal(r[k], g[k])


def test_to_device_scales_and_layouts(folder):
    b = to_device(PairBatches(folder)[np.array([[0, 0], [1, 0]])], torch.device("cpu"))
    assert b["source"].shape == (2, 3, 32, 16) and b["source"].dtype == torch.float32
    assert -1 <= b["source"].min() and b["source"].max() <= 1
    raw = PairBatches(folder)[np.array([[0, 0]])]["source"][0, 5, 7, 2]
    assert b["source"][0, 2, 5, 7] == pytest.approx(raw.item() / 127.5 - 1)
    assert b["mask"].shape == (2, 1, 32, 16) and set(b["mask"].unique().tolist()) <= {0.0, 1.0}


def test_bad_folders(tmp_path):
    no_pairs = make_prepared(tmp_path / "a", with_pairs=False)
    with pytest.raises(DataError, match="pairs.h5"):
        inspect_split(no_pairs)
    old = make_prepared(tmp_path / "b", schema_version=2)
    with pytest.raises(DataError, match="schema version 2"):
        inspect_split(old)
    mixed = make_prepared(tmp_path / "m")  # manifest says 1, one shard says 2
    shard = mixed / "shards" / "train-00001.h5"
    with h5py.File(shard, "r+") as f:
        f.attrs["schema_version"] = 2
    with pytest.raises(DataError, match="train-00001.h5: sha256 differs"):  # edited in place
        inspect_split(mixed)
    fk.rewrite_marked(shard, lambda f: None)  # the same shard, re-stamped as if written so
    with pytest.raises(DataError, match="train-00001.h5: schema version 2"):
        inspect_split(mixed)
    with pytest.raises(DataError, match="no split"):
        inspect_split(make_prepared(tmp_path / "c"), "test")
    with pytest.raises(DataError, match="not a folder"):
        inspect_split(tmp_path / "missing")
