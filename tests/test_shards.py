"""Shard writer/reader: atomic write, done markers, global sample ids, schema checks."""

import json
import pickle

import h5py
import numpy as np
import pytest

from pg2kit import shards


def _arrays(n, offset=0, h=8, w=4):
    rng = np.random.default_rng(offset)
    return {
        "image": rng.integers(0, 255, (n, h, w, 3), dtype=np.uint8),
        "keypoints": rng.uniform(0, 4, (n, 18, 2)).astype(np.float32),
        "name": [f"{offset + i:04d}_c1s1_000000_00.jpg" for i in range(n)],
    }


def _prepared(tmp_path, counts):
    entries = []
    for k, n in enumerate(counts):
        path = shards.shard_path(tmp_path, "train", k)
        entries.append(shards.write_shard(path, _arrays(n, offset=100 * k), {"split": "train"}))
    manifest = {
        "schema_version": shards.SCHEMA_VERSION,
        "splits": {"train": {"count": sum(counts), "shards": entries}},
    }
    shards.write_manifest(tmp_path, manifest)
    return entries


def test_write_shard_is_atomic_and_marked(tmp_path):
    path = shards.shard_path(tmp_path, "train", 0)
    entry = shards.write_shard(
        path,
        _arrays(5),
        {"split": "train", "schema_version": 1},
        compression={"image": "lzf"},
        marker={"failures": [["a", "b"]]},
    )
    assert entry["file"] == "shards/train-00000.h5" and entry["count"] == 5
    assert not path.with_name(path.name + ".tmp").exists()
    marker = shards.read_marker(path)
    assert marker["sha256"] == shards.file_sha256(path)
    assert marker["failures"] == [["a", "b"]]
    with h5py.File(path) as f:
        assert f["image"].chunks == (1, 8, 4, 3)
        assert f["image"].compression == "lzf"
        assert f["name"][2].decode() == "0002_c1s1_000000_00.jpg"
        assert f.attrs["split"] == "train"


def test_unfinished_shard_has_no_marker(tmp_path):
    path = shards.shard_path(tmp_path, "train", 0)
    shards.write_shard(path, _arrays(3), {})
    shards.marker_path(path).unlink()
    assert shards.read_marker(path) is None
    shards.write_shard(path, _arrays(3), {})
    with open(path, "ab") as f:  # a shard changed after its marker was written
        f.write(b"x")
    assert shards.read_marker(path) is None


def test_mismatched_lengths_rejected(tmp_path):
    arrays = _arrays(3)
    arrays["name"] = arrays["name"][:2]
    with pytest.raises(ValueError, match="samples"):
        shards.write_shard(tmp_path / "x.h5", arrays, {})


def test_split_reader_global_ids(tmp_path):
    _prepared(tmp_path, [3, 4, 2])
    reader = shards.SplitReader(tmp_path, "train")
    assert len(reader) == 9
    expect = np.concatenate([_arrays(n, offset=100 * k)["image"] for k, n in enumerate([3, 4, 2])])
    ids = np.array([8, 0, 3, 3, 6, 2])  # any order, repeats, across shards
    np.testing.assert_array_equal(reader.read("image", ids), expect[ids])
    names = reader.read("name", [3, 8])
    assert list(names) == ["0100_c1s1_000000_00.jpg", "0201_c1s1_000000_00.jpg"]
    clone = pickle.loads(pickle.dumps(reader))  # open handles are not pickled
    np.testing.assert_array_equal(clone.read("image", [5]), expect[[5]])
    with pytest.raises(IndexError):
        reader.read("image", [9])
    fields = shards.read_split_fields(tmp_path, "train", ["keypoints", "name"])
    assert (
        fields["keypoints"].shape == (9, 18, 2) and fields["name"][4] == "0101_c1s1_000000_00.jpg"
    )


def test_manifest_errors(tmp_path):
    with pytest.raises(shards.SchemaError, match="no manifest.json"):
        shards.load_manifest(tmp_path)
    (tmp_path / "manifest.json").write_text(json.dumps({"schema_version": 99, "splits": {}}))
    with pytest.raises(shards.SchemaError, match="schema version 99"):
        shards.load_manifest(tmp_path)
    _prepared(tmp_path, [2])
    with pytest.raises(shards.SchemaError, match="no split 'test'"):
        shards.split_shards(tmp_path, "test")
