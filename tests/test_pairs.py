"""Pair protocols, the pair index and the `pairs` command on tiny hand-made data."""

import itertools
import json

import numpy as np
import pytest
from click.testing import CliRunner

from pg2kit.commands.pairs import pairs as pairs_cmd
from pg2kit.formats import read_pairs_csv, write_defgan_annotations
from pg2kit.pairs import (
    custom_pairs,
    deepfashion_identity,
    defgan_pairs,
    market_identity,
    market_test_sample,
    permutation_pairs,
    pg2_pairs,
    pose_difference,
    read_pair_index,
    write_pair_index,
)


def _torso_keypoints(n, rng=None):
    """(n, 18, 2) keypoints with every point present (a standing-person-ish random layout)."""
    rng = rng or np.random.default_rng(0)
    return rng.uniform(1, 60, (n, 18, 2)).astype(np.float32)


def _reference_permutations(keys, keep):
    """The Def-GAN script's loop: itertools.permutations per identity, first-appearance order."""
    groups = {}
    for i, (k, ok) in enumerate(zip(keys, keep, strict=True)):
        if ok:
            groups.setdefault(k, []).append(i)
    out = [p for rows in groups.values() for p in itertools.permutations(rows, 2)]
    return np.array(out, np.int64).reshape(-1, 2)


def test_identity_keys():
    assert market_identity("0002_c1s1_000451_03.jpg") == "0002"
    assert market_identity("-1_c3s2_000001_00.jpg") == "-1"
    assert (
        deepfashion_identity("fashionWOMENBlouses_Shirtsid0000637003_1front.jpg") == "id0000637003"
    )
    assert (
        deepfashion_identity("fasionMENSweatshirts_Hoodiesid0000123402_4full.jpg") == "id0000123402"
    )
    assert (
        deepfashion_identity("fashionMENTees_Tanksid0000123401_7additional.jpg") == "id0000123401"
    )
    for bad in ("IMG_0001.jpg", "fashionWOMENDressesid00001_1front.jpg"):
        with pytest.raises(ValueError, match="DeepFashion"):
            deepfashion_identity(bad)
    with pytest.raises(ValueError, match="IMG_0001.jpg"):
        market_identity("IMG_0001.jpg")


@pytest.mark.parametrize("chunk", [1, 7, 1 << 16])  # batches of whole groups, or all at once
def test_permutation_order_matches_itertools(chunk):
    rng = np.random.default_rng(1)
    keys = rng.choice(["b", "a", "c", "d", "e"], size=23)
    keep = rng.random(23) > 0.2
    got = permutation_pairs(keys, keep, chunk=chunk)
    np.testing.assert_array_equal(got, _reference_permutations(list(keys), keep))
    assert got.dtype == np.int64


def test_defgan_market_filters_torso_and_junk():
    names = [
        "0001_c1s1_000001_00.jpg",  # 0
        "0002_c1s1_000001_00.jpg",  # 1
        "0001_c2s1_000001_00.jpg",  # 2
        "-1_c1s1_000001_00.jpg",  # 3 junk
        "0000_c1s1_000001_00.jpg",  # 4 distractor
        "0001_c3s1_000001_00.jpg",  # 5 torso keypoint 11 missing
        "0002_c2s1_000001_00.jpg",  # 6
        "0000_c2s1_000001_00.jpg",  # 7 distractor
        "-1_c2s1_000001_00.jpg",  # 8 junk
    ]
    kp = _torso_keypoints(len(names))
    kp[5, 11] = -1
    kp[2, 0] = -1  # the nose is not part of the rule
    got = defgan_pairs(names, kp, "market1501", "train")
    assert got.tolist() == [[0, 2], [2, 0], [1, 6], [6, 1]]
    # the same rows as DeepFashion-style "other" keep junk names as their own identity
    keys = [n.split("_")[0] for n in names]
    other = defgan_pairs(names, kp, "other", "train", identities=keys)
    assert other.tolist() == [[0, 2], [2, 0], [1, 6], [6, 1], [3, 8], [8, 3], [4, 7], [7, 4]]


def test_defgan_market_test_sampling_rule():
    # 2 identities x 80 images -> 2 * 80 * 79 = 12,640 pairs, so 12,000 are sampled
    names = [f"{1 + i % 2:04d}_c1s1_{i:06d}_00.jpg" for i in range(160)]
    kp = _torso_keypoints(160)
    full = _reference_permutations([n[:4] for n in names], np.ones(160, bool))
    assert len(full) == 12_640
    # pandas DataFrame.sample(n=12000, replace=False, random_state=0), as the script does it
    rows = np.random.RandomState(0).choice(len(full), size=12_000, replace=False)
    got = defgan_pairs(names, kp, "market1501", "test")
    np.testing.assert_array_equal(got, full[rows])
    np.testing.assert_array_equal(defgan_pairs(names, kp, "market1501", "train"), full)
    # DeepFashion test is not sampled
    df_names = [f"fashionWOMENBlouses_Shirtsid0000{1 + i % 2:04d}01_1front.jpg" for i in range(160)]
    assert len(defgan_pairs(df_names, kp, "deepfashion", "test")) == 12_640


def test_market_test_sample_small():
    # permutation(5) under seed 0 is [2, 0, 1, 3, 4]: worked out once and written down
    np.testing.assert_array_equal(market_test_sample(5, 3), [2, 0, 1])
    np.testing.assert_array_equal(
        market_test_sample(2, 12_000), np.random.RandomState(0).permutation(2)
    )


def test_defgan_deepfashion_groups_by_item_and_group():
    names = [
        "fashionWOMENBlouses_Shirtsid0000637003_1front.jpg",
        "fashionWOMENBlouses_Shirtsid0000637003_2side.jpg",
        "fashionWOMENBlouses_Shirtsid0000637001_1front.jpg",  # same item, other group
        "fasionWOMENBlouses_Shirtsid0000637003_4full.jpg",  # misspelt prefix, same key
    ]
    got = defgan_pairs(names, _torso_keypoints(4), "deepfashion", "train")
    assert got.tolist() == [[0, 1], [0, 3], [1, 0], [1, 3], [3, 0], [3, 1]]
    with pytest.raises(ValueError, match="IMG_1.jpg"):
        defgan_pairs(["IMG_1.jpg"], _torso_keypoints(1), "deepfashion", "train")


def test_pg2_counts_and_cameras():
    sizes = {"p": 5, "q": 1, "r": 3, "s": 7}
    ids = np.array([k for k, n in sizes.items() for _ in range(n)])
    rng = np.random.default_rng(3)
    ids = ids[rng.permutation(len(ids))]
    cams = rng.integers(1, 4, len(ids))
    assert len(pg2_pairs(ids)) == sum(n * (n - 1) for n in sizes.values())  # 20 + 0 + 6 + 42
    cross = sum(
        1
        for i, j in itertools.permutations(range(len(ids)), 2)
        if ids[i] == ids[j] and cams[i] != cams[j]
    )
    got = pg2_pairs(ids, cams, cross_camera=True)
    assert len(got) == cross and (cams[got[:, 0]] != cams[got[:, 1]]).all()
    capped = pg2_pairs(ids, max_pairs=10, seed=5)
    full = pg2_pairs(ids).tolist()
    assert len(capped) == 10 and len({tuple(p) for p in capped.tolist()}) == 10
    assert all(tuple(p) in {tuple(q) for q in full} for p in capped.tolist())
    np.testing.assert_array_equal(capped, pg2_pairs(ids, max_pairs=10, seed=5))
    assert not np.array_equal(capped, pg2_pairs(ids, max_pairs=10, seed=6))


def test_custom_pose_difference_and_caps():
    kp = np.full((4, 18, 2), -1, np.float32)
    kp[:, 2], kp[:, 5], kp[:, 8], kp[:, 11] = (10, 10), (20, 10), (10, 40), (20, 40)
    kp[1, :, 0] += np.where(kp[1, :, 0] >= 0, 3, 0)  # sample 1: shifted 3 px right
    kp[2, 2] = (10, 14)  # sample 2: one of 4 points moved by 4 px -> mean 1 px
    ids = ["a"] * 4
    diff = pose_difference(kp, np.array([[0, 1], [0, 2], [0, 3]]), height=100)
    np.testing.assert_allclose(diff, [0.03, 0.01, 0.0])
    got = custom_pairs(ids, kp, height=100, min_pose_diff=0.02)
    assert sorted(map(tuple, got.tolist())) == [(0, 1), (1, 0), (1, 2), (1, 3), (2, 1), (3, 1)]
    kp[3, 11] = -1  # torso incomplete, 3 points left
    assert 3 not in custom_pairs(ids, kp, height=100, require_torso=True)
    assert 3 in custom_pairs(ids, kp, height=100, require_torso=False, min_keypoints=3)
    assert 3 not in custom_pairs(ids, kp, height=100, require_torso=False, min_keypoints=4)
    capped = custom_pairs(ids * 2, np.concatenate([kp, kp]), height=100, require_torso=False,
                          max_per_identity=2)  # fmt: skip
    assert len(capped) == 2


def test_pair_index_round_trip(tmp_path):
    _prepared_folder(tmp_path, ["a", "a", "b"], [1, 2, 1], _torso_keypoints(3))
    train = np.array([[0, 1], [1, 0]], np.int64)
    write_pair_index(tmp_path, {"train": train}, "pg2", {"seed": 0})
    np.testing.assert_array_equal(read_pair_index(tmp_path, "train"), train)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["pairs"]["counts"] == {"train": 2}
    assert manifest["pairs"]["protocol"] == "pg2" and manifest["schema_version"] == 1
    with pytest.raises(KeyError, match="query"):
        read_pair_index(tmp_path, "query")
    write_pair_index(tmp_path, {"train": np.zeros((0, 2))}, "pg2", {})
    assert read_pair_index(tmp_path, "train").shape == (0, 2)


def _annotation_file(path, names, kp):
    write_defgan_annotations(path, names, kp)
    return path


def test_cli_from_annotations(tmp_path):
    names = ["0001_c1s1_0_00.jpg", "0002_c1s1_0_00.jpg", "0001_c2s1_0_00.jpg", "-1_c1s1_0_00.jpg"]
    csv_path = _annotation_file(tmp_path / "ann.csv", names, _torso_keypoints(4))
    out = tmp_path / "pairs.csv"
    args = ["--from-annotations", str(csv_path), "--dataset", "market1501", "--split", "train"]
    result = CliRunner().invoke(pairs_cmd, [*args, "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert read_pairs_csv(out) == [(names[0], names[2]), (names[2], names[0])]
    assert "2 pairs" in result.output


def test_cli_bad_file_one_line_error(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("name:keypoints_y:keypoints_x\na.jpg: [1, 2]: [3, 4]\n")
    args = ["--from-annotations", str(bad), "--dataset", "market1501", "--split", "train"]
    result = CliRunner().invoke(pairs_cmd, [*args, "-o", str(tmp_path / "p.csv")])
    assert result.exit_code != 0
    assert "Traceback" not in result.output and result.exception is not None
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and "line 2" in lines[0] and "bad.csv" in lines[0]
    # names of another dataset: the error names the offending file name
    csv_path = _annotation_file(tmp_path / "ann.csv", ["IMG_1.jpg"], _torso_keypoints(1))
    args = ["--from-annotations", str(csv_path), "--dataset", "deepfashion", "--split", "test"]
    result = CliRunner().invoke(pairs_cmd, [*args, "-o", str(tmp_path / "p.csv")])
    assert result.exit_code != 0 and "IMG_1.jpg" in result.output
    assert len([ln for ln in result.output.splitlines() if ln.strip()]) == 1


def test_cli_help_has_example():
    result = CliRunner().invoke(pairs_cmd, ["--help"])
    assert result.exit_code == 0 and "--from-annotations" in result.output
    assert "pg2kit pairs data/market --protocol defgan" in result.output


def _prepared_folder(root, ids, cams, kp, dataset="other", shard_size=4):
    """A prepared folder (train split, shards of `shard_size`) written with the shards helpers."""
    from pg2kit.shards import shard_path, write_manifest, write_shard

    n = len(ids)
    arrays = {
        "image": np.random.default_rng(0).integers(0, 255, (n, 32, 16, 3), dtype=np.uint8),
        "keypoints": kp,
        "name": [f"{i}_{k}.jpg" for k, i in enumerate(ids)],
        "identity": list(ids),
        "camera": np.asarray(cams, np.int16),
        "junk": np.zeros(n, bool),
        "distractor": np.zeros(n, bool),
    }
    attrs = {"schema_version": 1, "split": "train", "dataset": dataset, "frame_height": 32}
    entries = []
    for k, lo in enumerate(range(0, n, shard_size)):
        part = {key: value[lo : lo + shard_size] for key, value in arrays.items()}
        entries.append(write_shard(shard_path(root, "train", k), part, attrs))
    write_manifest(root, {"schema_version": 1, "dataset": dataset,
                          "frame": {"height": 32, "width": 16, "x_offset": 0},
                          "splits": {"train": {"shards": entries}}})  # fmt: skip


def test_cli_prepared_folder_and_report(tmp_path):
    ids = ["a", "b", "a", "a", "b", "c"]
    kp = _torso_keypoints(6) / 4
    kp[5, 2] = -1  # "c" has one image anyway
    _prepared_folder(tmp_path, ids, [1, 1, 2, 1, 2, 1], kp)
    runner = CliRunner()
    result = runner.invoke(pairs_cmd, [str(tmp_path), "--protocol", "pg2"])
    assert result.exit_code == 0, result.output
    assert len(read_pair_index(tmp_path, "train")) == 3 * 2 + 2
    result = runner.invoke(pairs_cmd, [str(tmp_path), "--protocol", "pg2", "--cross-camera"])
    assert result.exit_code == 0, result.output
    np.testing.assert_array_equal(
        read_pair_index(tmp_path, "train"), [[0, 2], [2, 0], [2, 3], [3, 2], [1, 4], [4, 1]]
    )
    result = runner.invoke(pairs_cmd, [str(tmp_path), "--protocol", "defgan"])
    assert result.exit_code == 0 and "train: 8 pairs" in result.output
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["pairs"]["counts"] == {"train": 8}

    from pg2kit.pair_report import pair_report

    paths = pair_report(tmp_path, tmp_path / "report", n_samples=3)
    assert len(paths) == 3 and all(p.exists() and p.stat().st_size > 0 for p in paths)
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in paths)


def test_cli_folder_errors(tmp_path):
    result = CliRunner().invoke(pairs_cmd, [str(tmp_path / "nothing")])
    assert result.exit_code != 0 and "manifest.json" in result.output
    assert "Traceback" not in result.output
    result = CliRunner().invoke(pairs_cmd, [str(tmp_path), "--min-pose-diff", "0.1"])
    assert result.exit_code != 0 and "--min-pose-diff goes with --protocol custom" in result.output
