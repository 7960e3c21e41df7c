"""`prepare` end to end on generated data: shards, manifest, failures, resume after SIGKILL."""

import csv
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import cv2
import h5py
import numpy as np
import pytest

from pg2kit import shards
from pg2kit.prepare import PrepareConfig, PrepareError, run_prepare

ROOT = Path(__file__).resolve().parents[1]


def _content(out: Path) -> dict:
    """Everything the shards hold, per split, concatenated in sample-id order."""
    manifest = shards.load_manifest(out)
    fields = ["image", "keypoints", "scores", "mask", "name", "identity", "camera"]
    return {s: shards.read_split_fields(out, s, fields) for s in manifest["splits"]}


def _assert_same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for split in a:
        for key in a[split]:
            np.testing.assert_array_equal(a[split][key], b[split][key], err_msg=f"{split}/{key}")


def test_synthetic_prepare(tmp_path):
    cfg = PrepareConfig(dataset="synthetic", out=tmp_path, synthetic_ids=5, synthetic_poses=3,
                        workers=1, shard_size=4)  # fmt: skip
    manifest = run_prepare(cfg, progress=False)
    assert manifest["splits"]["train"]["count"] == 12 and manifest["splits"]["test"]["count"] == 3
    assert len(manifest["splits"]["train"]["shards"]) == 3
    with h5py.File(tmp_path / "shards" / "train-00000.h5") as f:
        assert f["image"].shape == (4, 128, 64, 3) and f["mask"].dtype == np.uint8
        assert f.attrs["schema_version"] == 1 and f.attrs["keypoint_order"] == "xy"
        assert f.attrs["estimator"] == "synthetic" and f.attrs["mask_radius"] == 4
        kp, mask = f["keypoints"][0], f["mask"][0]
    # the mask covers the body: every present keypoint lies inside it
    ok = kp[:, 0] >= 0
    xs, ys = np.floor(kp[ok] + 0.5).astype(int).T
    assert mask[ys.clip(0, 127), xs.clip(0, 63)].all()
    # a re-run keeps everything; changed settings without --overwrite are refused
    again = run_prepare(cfg, progress=False)
    assert again["splits"] == manifest["splits"]
    cfg.mask_radius = 7
    with pytest.raises(PrepareError, match="other settings"):
        run_prepare(cfg, progress=False)
    cfg.overwrite = True
    assert run_prepare(cfg, progress=False)["params"]["mask_radius"] == 7


def test_store_maps_gaussian(tmp_path):
    cfg = PrepareConfig(dataset="synthetic", out=tmp_path, synthetic_ids=2, synthetic_poses=2,
                        workers=1, store_maps=True, map_kind="gaussian")  # fmt: skip
    run_prepare(cfg, progress=False)
    with h5py.File(tmp_path / "shards" / "train-00000.h5") as f:
        pm = f["pose_map"][...]
        assert pm.shape[1:] == (128, 64, 18) and pm.dtype == np.float16
        assert 0.99 <= pm.max() <= 1.0


KILL_SCRIPT = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from pg2kit.prepare import PrepareConfig, run_prepare
    cfg = PrepareConfig(dataset="synthetic", out=Path(sys.argv[1]), synthetic_ids=60,
                        synthetic_poses=10, shard_size=20, workers=1)
    run_prepare(cfg, progress=False)
    """
)


def test_sigkill_midway_then_rerun_gives_same_shards(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    killed = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-c", KILL_SCRIPT, str(killed)], env=env)
    deadline = time.time() + 60
    while time.time() < deadline and not list((killed / "shards").glob("*.done")):
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL, "the run finished before it could be killed"
    done = list((killed / "shards").glob("*.done"))
    assert 0 < len(done) < 30 and not (killed / "manifest.json").exists()
    subprocess.run([sys.executable, "-c", KILL_SCRIPT, str(killed)], env=env, check=True)
    clean = tmp_path / "clean"
    subprocess.run([sys.executable, "-c", KILL_SCRIPT, str(clean)], env=env, check=True)
    _assert_same(_content(killed), _content(clean))
    assert not list(killed.rglob("*.tmp"))


def _market_tree(root: Path, names: list[str]) -> None:
    folder = root / "bounding_box_train"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in names:
        cv2.imwrite(str(folder / name), rng.integers(0, 255, (128, 64, 3), dtype=np.uint8))


CSV_ROWS = [
    "0002_c1s1_000451_03.jpg: [11, 25, 27, 45, -1, 24, 40, 49, 64, 90, 113, 63, 89, -1, 9, 8, -1, 8]: [19, 32, 19, 21, -1, 46, 56, 47, 24, 25, 30, 44, 60, -1, 17, 22, -1, 33]",
    "0001_c1s1_000151_01.jpg: [-1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1]: [-1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1]",
    "0002_c2s1_000301_01.jpg: [13, 26, 26, 37, 43, 27, 42, -1, 56, 82, 117, 57, 85, 115, 10, 10, 14, -1]: [33, 29, 14, 3, 9, 42, 48, -1, 22, 20, 15, 39, 41, 29, 29, 35, 22, -1]",
]


def test_market_csv_import_bad_files_and_export_round_trip(tmp_path):
    from pg2kit.export import export_defgan

    src = tmp_path / "Market"
    _market_tree(src, ["0001_c1s1_000151_01.jpg", "0002_c1s1_000451_03.jpg",
                       "0002_c2s1_000301_01.jpg", "-1_c1s1_000001_00.jpg"])  # fmt: skip
    train = src / "bounding_box_train"
    (train / "0003_c1s1_000001_00.jpg").write_bytes(b"")  # zero bytes
    (train / "0004_c1s1_000001_00.jpg").write_bytes(b"not an image at all")
    good = (train / "0002_c1s1_000451_03.jpg").read_bytes()
    (train / "0005_c1s1_000001_00.jpg").write_bytes(good[: len(good) // 2])  # truncated
    csv_text = "name:keypoints_y:keypoints_x\n" + "\n".join(CSV_ROWS) + "\n"
    bad_rows = [
        CSV_ROWS[0].replace("0002_c1s1_000451_03", f"000{k}_c1s1_000001_00") for k in (3, 4, 5)
    ]
    annotations = tmp_path / "market-annotation-train.csv"
    annotations.write_text(csv_text + "\n".join(bad_rows) + "\n")
    out = tmp_path / "prepared"
    cfg = PrepareConfig(dataset="market1501", src=src, out=out, keypoints=str(annotations),
                        workers=1)  # fmt: skip
    manifest = run_prepare(cfg, progress=False, log=lambda s: None)
    assert manifest["splits"]["train"]["count"] == 3
    assert manifest["splits"]["train"]["no_person"] == 1
    with open(out / "failures.csv") as f:
        reasons = {Path(row["path"]).name: row["reason"] for row in csv.DictReader(f)}
    assert set(reasons) == {"-1_c1s1_000001_00.jpg", "0003_c1s1_000001_00.jpg",
                            "0004_c1s1_000001_00.jpg", "0005_c1s1_000001_00.jpg"}  # fmt: skip
    assert "no keypoints" in reasons["-1_c1s1_000001_00.jpg"]
    assert (
        "empty" in reasons["0003_c1s1_000001_00.jpg"]
        or "0 bytes" in reasons["0003_c1s1_000001_00.jpg"]
    )
    assert "truncated" in reasons["0005_c1s1_000001_00.jpg"]
    export_defgan(out, tmp_path / "export", log=lambda s: None)
    assert (tmp_path / "export" / "market-annotation-train.csv").read_text() == csv_text


def test_nothing_usable_is_an_error(tmp_path):
    src = tmp_path / "Market" / "bounding_box_train"
    src.mkdir(parents=True)
    (src / "0001_c1s1_000001_00.jpg").write_bytes(b"")
    cfg = PrepareConfig(dataset="market1501", src=src.parent, out=tmp_path / "o", workers=1)
    with pytest.raises(PrepareError, match="nothing usable"):
        run_prepare(cfg, progress=False, log=lambda s: None)


def test_openpose_json_folder_import(tmp_path):
    import json

    src = tmp_path / "Market"
    names = ["0001_c1s1_000151_01.jpg", "0002_c1s1_000451_03.jpg"]
    _market_tree(src, names)
    kp_dir = tmp_path / "openpose"
    kp_dir.mkdir()
    rng = np.random.default_rng(1)
    expect = {}
    for name in names:
        xy = np.stack([rng.integers(0, 64, 18), rng.integers(0, 128, 18)], -1).astype(np.float32)
        conf = np.full(18, 0.9)
        conf[3] = 0  # confidence 0 -> missing
        flat = np.concatenate([xy, conf[:, None]], 1).ravel().tolist()
        doc = {"people": [{"pose_keypoints_2d": flat}]}
        (kp_dir / f"{Path(name).stem}_keypoints.json").write_text(json.dumps(doc))
        xy[3] = -1
        expect[name] = xy
    out = tmp_path / "prepared"
    cfg = PrepareConfig(dataset="market1501", src=src, out=out, keypoints=str(kp_dir), workers=1)
    run_prepare(cfg, progress=False, log=lambda s: None)
    got = shards.read_split_fields(out, "train", ["name", "keypoints"])
    for name, kp in zip(got["name"], got["keypoints"], strict=True):
        np.testing.assert_array_equal(kp, expect[name])
    assert shards.shard_attrs(out)["estimator"] == "openpose-json"
