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
        "dataset": "market1501",
        "frame": {"height": 8, "width": 4, "x_offset": 0},
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


@pytest.mark.parametrize("name", ["0001_c1s1_000001_00.jpg", "a b.png", "café.jpg", "x..y.png"])
def test_check_name_accepts_plain_names(name):
    assert shards.check_name(name, "here") == name


@pytest.mark.parametrize(
    "name", ["", ".", "..", "../x.png", "/abs.png", "a/b", "a\\b", "C:x", "a\x00b", "a\tb"]
)
def test_check_name_refuses_paths(name):
    with pytest.raises(shards.PreparedError, match="somewhere, row 3: file name"):
        shards.check_names(["ok.png"] * 3 + [name], "somewhere")


def test_schema_error_is_prepared_error():
    assert shards.SchemaError is shards.PreparedError and issubclass(shards.SchemaError, ValueError)


def test_cheap_checks_on_open(tmp_path):
    entries = _prepared(tmp_path, [3, 2])
    shards.load_manifest(tmp_path)
    second = tmp_path / entries[1]["file"]
    data = second.read_bytes()
    second.write_bytes(data[:-10])
    with pytest.raises(shards.PreparedError, match="train-00001.h5: .* bytes, the manifest says"):
        shards.load_manifest(tmp_path)
    with pytest.raises(shards.PreparedError, match="train-00001.h5"):
        shards.SplitReader(tmp_path, "train")
    assert shards.load_manifest(tmp_path, check=False)["splits"]["train"]["count"] == 5
    second.write_bytes(data)
    shards.marker_path(second).unlink()
    with pytest.raises(shards.PreparedError, match="no done marker"):
        shards.read_split_fields(tmp_path, "train", ["name"])


def test_reader_checks_datasets_and_ids(tmp_path):
    _prepared(tmp_path, [3])
    reader = shards.SplitReader(tmp_path, "train")
    with pytest.raises(shards.PreparedIndexError, match="sample id -1 of split 'train'"):
        reader.read("image", [0, -1])
    with pytest.raises(shards.MissingDatasetError, match="no dataset 'mask'"):
        reader.read("mask", [0])
    with pytest.raises(shards.MissingDatasetError, match="no dataset 'mask'"):
        shards.read_split_fields(tmp_path, "train", ["mask"])


def test_pairs_round_trip_and_truth_in_pairs_h5(tmp_path):
    _prepared(tmp_path, [3, 4])
    shards.write_pairs(tmp_path, {"train": np.array([[0, 6], [6, 0]])}, "pg2", {"seed": 1})
    np.testing.assert_array_equal(shards.read_pairs(tmp_path, "train"), [[0, 6], [6, 0]])
    info = shards.pairs_info(tmp_path)
    assert info == {
        "protocol": "pg2",
        "params": {"seed": 1},
        "counts": {"train": 2},
        "stale": False,
    }
    with pytest.raises(shards.PreparedIndexError, match="pair row 0: ids \\[0, 7\\]"):
        shards.write_pairs(tmp_path, {"train": np.array([[0, 7]])}, "pg2", {})
    with pytest.raises(KeyError):
        shards.read_pairs(tmp_path, "test")
    (tmp_path / "pairs.h5").unlink()
    assert "pairs" not in shards.load_manifest(tmp_path)
    with pytest.raises(shards.PreparedError, match="no pairs.h5; run `pg2kit pairs"):
        shards.read_pairs(tmp_path, "train")


def test_verify_reports_every_problem(tmp_path):
    entries = _prepared(tmp_path, [3, 4, 2])
    report = shards.verify(tmp_path)
    assert report.ok and report.shards == 3 and report.samples == 9
    first, last = (tmp_path / entries[k]["file"] for k in (0, 2))
    with h5py.File(first, "r+") as f:  # same size, different bytes
        f["image"][0, 0, 0, 0] ^= 0xFF
    last.unlink()
    report = shards.verify(tmp_path)
    assert len(report.problems) == 2 and not report.ok
    assert "train-00000.h5: sha256 differs" in report.problems[0]
    assert "train-00002.h5: listed in the manifest but missing" in report.problems[1]


def test_write_shard_cleans_up_on_error(tmp_path, monkeypatch):
    import os

    calls = []

    def fail(fd):
        calls.append(fd)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", fail)
    path = shards.shard_path(tmp_path, "train", 0)
    with pytest.raises(shards.WriteError, match="cannot write .*train-00000.h5: no space left"):
        shards.write_shard(path, _arrays(3), {})
    assert calls and not list((tmp_path / "shards").iterdir())
