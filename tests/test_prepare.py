"""`prepare` end to end on generated data: shards, manifest, failures, resume after SIGKILL."""

import csv
import json
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
    # also where only the keypoints' version differs (the estimator's or person finder's
    # defaults changed); a marker written before markers recorded it is checked against the
    # shard's own attribute
    marker = shards.marker_path(tmp_path / "shards" / "train-00001.h5")
    info = json.loads(marker.read_text())
    assert info.pop("keypoints_version") == shards.shard_attrs(tmp_path)["estimator_version"]
    marker.write_text(json.dumps(info))
    assert run_prepare(cfg, progress=False)["splits"] == manifest["splits"]
    marker.write_text(json.dumps({**info, "keypoints_version": "0.0.1"}))
    with pytest.raises(PrepareError, match="keypoints were found with other settings"):
        run_prepare(cfg, progress=False)
    marker.write_text(json.dumps(info))
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


# ---------------------------------------------------------------- the pipeline's stages


def test_plan_names_the_stages_and_shards_carry_provenance(tmp_path):
    from pg2kit.datasets.synthetic import Synthetic
    from pg2kit.keypoint_sources import TrueKeypoints
    from pg2kit.prepare import WholeImage, plan_prepare

    cfg = PrepareConfig(dataset="synthetic", out=tmp_path, synthetic_ids=3, synthetic_poses=2,
                        workers=1, shard_size=4)  # fmt: skip
    plan = plan_prepare(cfg)
    assert isinstance(plan.adapter, Synthetic) and isinstance(plan.job.finder, WholeImage)
    assert isinstance(plan.job.source, TrueKeypoints)
    assert [(s, k, len(t)) for s, k, t in plan.todo] == [("train", 0, 4), ("test", 0, 2)]
    record, given = plan.splits["train"][0]
    assert given is None and record.key == (1, 0) and record.name.startswith("0001_c")
    run_prepare(cfg, progress=False)
    f = shards.read_split_fields(tmp_path, "train", ["source_box", "track", "frame",
                                                     "detector_score", "source_path"])  # fmt: skip
    np.testing.assert_array_equal(f["source_box"][0], [0, 0, 64, 128])  # whole image x0,y0,x1,y1
    assert f["source_box"].dtype == np.float32 and f["track"].dtype == np.int32
    assert (f["track"] == -1).all() and (f["frame"] == -1).all()
    assert (f["detector_score"] == 1.0).all()  # synthetic: the truth
    assert f["source_path"][0].startswith("synthetic/0001_c")


def test_same_bytes_with_one_or_two_workers(tmp_path):
    outs = []
    for workers in (1, 2):
        out = tmp_path / f"w{workers}"
        cfg = PrepareConfig(dataset="synthetic", out=out, synthetic_ids=4, synthetic_poses=4,
                            workers=workers, shard_size=8, chunk_size=3)  # fmt: skip
        run_prepare(cfg, progress=False)
        outs.append({p.name: p.read_bytes() for p in sorted((out / "shards").glob("*.h5"))})
    assert outs[0] == outs[1] and len(outs[0]) == 3


@pytest.mark.slow
def test_same_bytes_on_dask(tmp_path):
    pytest.importorskip("dask.distributed")
    outs = []
    for backend in ("loky", "dask"):
        out = tmp_path / backend
        cfg = PrepareConfig(dataset="synthetic", out=out, synthetic_ids=4, synthetic_poses=4,
                            workers=2, shard_size=8, chunk_size=3, backend=backend)  # fmt: skip
        run_prepare(cfg, progress=False)
        outs.append({p.name: p.read_bytes() for p in sorted((out / "shards").glob("*.h5"))})
    assert outs[0] == outs[1]


def _bomb_png(path: Path, side: int = 30000) -> None:
    """A valid 1-bit PNG of side x side black pixels, a few hundred KB (written row by row with
    zlib: building it with PIL would itself take side*side bytes of memory)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(
            ">I", zlib.crc32(kind + data) & 0xFFFFFFFF)  # fmt: skip

    z = zlib.compressobj(9)
    row = b"\x00" + bytes((side + 7) // 8)
    body = b"".join(z.compress(row) for _ in range(side)) + z.flush()
    ihdr = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)  # 1-bit greyscale
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", body)
                     + chunk(b"IEND", b""))  # fmt: skip


BOMB_SCRIPT = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from pg2kit.prepare import PrepareConfig, run_prepare
    cfg = PrepareConfig(dataset="market1501", src=Path(sys.argv[1]), out=Path(sys.argv[2]),
                        keypoints=sys.argv[3], workers=1)
    run_prepare(cfg, progress=False, log=lambda s: None)
    # VmHWM: this process's own peak (ru_maxrss would keep the forking parent's, across exec)
    status = Path("/proc/self/status").read_text()
    print(next(int(l.split()[1]) for l in status.splitlines() if l.startswith("VmHWM:")))
    """
)


def test_bomb_tiny_and_non_utf8_names_are_rows_not_crashes(tmp_path):
    src = tmp_path / "Market"
    _market_tree(src, ["0002_c1s1_000451_03.jpg", "0002_c2s1_000301_01.jpg"])
    train = src / "bounding_box_train"
    _bomb_png(train / "0003_c1s1_000001_00.png")
    assert (train / "0003_c1s1_000001_00.png").stat().st_size < 500_000
    cv2.imwrite(str(train / "0004_c1s1_000001_00.png"), np.zeros((1, 1, 3), np.uint8))
    # a file name that is not UTF-8 (Latin-1 e-acute), as bytes on Linux
    bad = os.fsencode(str(train)) + b"/0005_c1s1_caf\xe9_00.jpg"
    with open(bad, "wb") as f:
        f.write((train / "0002_c1s1_000451_03.jpg").read_bytes())
    annotations = tmp_path / "market-annotation-train.csv"
    rows = [CSV_ROWS[0], CSV_ROWS[2]]
    rows += [CSV_ROWS[0].replace("0002_c1s1_000451_03", f"000{k}_c1s1_000001_00") for k in (3, 4)]
    annotations.write_text("name:keypoints_y:keypoints_x\n" + "\n".join(rows) + "\n")
    out = tmp_path / "prepared"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    t = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", BOMB_SCRIPT, str(src), str(out),
                           str(annotations)], env=env, capture_output=True, text=True)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    peak_mb = int(proc.stdout.split()[-1]) / 1024  # VmHWM is in kB
    assert peak_mb < 400, f"peak RSS {peak_mb:.0f} MB: the bomb was decoded"
    assert time.perf_counter() - t < 30
    with open(out / "failures.csv", encoding="utf-8") as f:
        reasons = {row["path"].rsplit("/", 1)[-1]: row["reason"] for row in csv.DictReader(f)}
    assert "image too large: 30000x30000" in reasons["0003_c1s1_000001_00.png"]
    assert "image too small: 1x1" in reasons["0004_c1s1_000001_00.png"]
    assert "0005_c1s1_caf%E9_00.jpg" in reasons  # escaped as %XX, documented in docs/schema.md
    assert shards.load_manifest(out)["splits"]["train"]["count"] == 2


def test_malformed_and_absurd_openpose_json(tmp_path):
    import json

    src = tmp_path / "Market"
    names = ["0001_c1s1_000151_01.jpg", "0002_c1s1_000451_03.jpg", "0003_c1s1_000001_00.jpg"]
    _market_tree(src, names)
    kp_dir = tmp_path / "openpose"
    kp_dir.mkdir()
    flat = np.concatenate([np.full((18, 2), 20.0), np.full((18, 1), 0.9)], 1).ravel().tolist()
    flat[0], flat[4] = 1e30, float("inf")  # absurd x of part 0, non-finite y of part 1
    doc = {"people": [{"pose_keypoints_2d": flat}]}
    (kp_dir / "0001_c1s1_000151_01_keypoints.json").write_text(json.dumps(doc))
    (kp_dir / "0002_c1s1_000451_03_keypoints.json").write_text('{"people": [ {"pose_keyp')
    (kp_dir / "0003_c1s1_000001_00_keypoints.json").write_text('{"people": [{"pose_keypoints_2d'
                                                               '": "abc"}]}')  # fmt: skip
    out = tmp_path / "prepared"
    cfg = PrepareConfig(dataset="market1501", src=src, out=out, keypoints=str(kp_dir), workers=1)
    logs = []
    manifest = run_prepare(cfg, progress=False, log=logs.append)
    assert manifest["splits"]["train"]["count"] == 1
    kp = shards.read_split_fields(out, "train", ["keypoints"])["keypoints"][0]
    assert (kp[:2] == -1).all() and (kp[2:] == 20).all()
    with open(out / "failures.csv", encoding="utf-8") as f:
        reasons = {Path(row["path"]).name: row["reason"] for row in csv.DictReader(f)}
    assert "not valid JSON" in reasons["0002_c1s1_000451_03.jpg"]
    assert "0002_c1s1_000451_03_keypoints.json" in reasons["0002_c1s1_000451_03.jpg"]
    assert "0003_c1s1_000001_00.jpg" in reasons

    # a Def-GAN CSV with a 400-digit coordinate: missing, and counted in the summary
    row = CSV_ROWS[0].replace("0002_c1s1_000451_03", "0001_c1s1_000151_01")
    row = row.replace("[11, 25,", "[" + "9" * 400 + ", 25,", 1)
    annotations = tmp_path / "market-annotation-train.csv"
    annotations.write_text("name:keypoints_y:keypoints_x\n" + row + "\n")
    cfg = PrepareConfig(dataset="market1501", src=src, out=tmp_path / "p2", workers=1,
                        keypoints=str(annotations))  # fmt: skip
    logs = []
    manifest = run_prepare(cfg, progress=False, log=logs.append)
    assert manifest["bad_coordinates"] == 1
    assert any("1 imported keypoints were non-finite or absurd" in line for line in logs)
    kp = shards.read_split_fields(tmp_path / "p2", "train", ["keypoints"])["keypoints"][0]
    assert (kp[0] == -1).all() and (kp[1] >= 0).all()


def test_folder_multi_person_photos_keep_the_identity_person(tmp_path):
    pytest.importorskip("ai_edge_litert")
    from tests._scenes import nearest, photo

    src = tmp_path / "photos"
    truth = {}
    # the tall figure (the identity person) left in one photo, right in the other
    for name, figures in (("a.png", [(1, 0, 40, 250), (2, 1, 250, 160)]),
                          ("b.png", [(3, 0, 230, 250), (4, 1, 30, 160)])):  # fmt: skip
        img, boxes = photo(280, 400, figures)
        (src / "anna").mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(src / "anna" / name), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
        truth[f"anna/{name}"] = boxes
    out = tmp_path / "out"
    cfg = PrepareConfig(dataset="folder", src=src, out=out, workers=1, size=(128, 64))
    run_prepare(cfg, progress=False, log=lambda s: None)
    f = shards.read_split_fields(out, "train", ["source_path", "source_box", "detector_score",
                                                "keypoints", "identity"])  # fmt: skip
    assert sorted(f["source_path"].tolist()) == ["anna/a.png", "anna/b.png"]  # one per photo
    for path, box, kp in zip(f["source_path"], f["source_box"], f["keypoints"], strict=True):
        assert nearest(box, truth[path]) == 0  # the tall figure, wherever it stands
        assert (kp[:, 0] >= 0).sum() >= 10
    assert (f["detector_score"] > 0.3).all() and (f["identity"] == "anna").all()
    with open(out / "failures.csv", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    # every other person found is listed with its reason
    assert {r["path"] for r in rows} <= {"anna/a.png", "anna/b.png"} and rows
    assert all(r["reason"].startswith("person ") for r in rows)
    assert shards.shard_attrs(out)["person_finder"] == "pg2kit.persons"
    # the shards name the person finder's settings, defaults included, and the estimator's
    from pg2kit.keypoint_sources import persons_version

    version = shards.shard_attrs(out)["estimator_version"]
    assert version == persons_version({}) and version.startswith("persons-")
    assert persons_version({"pre_size_fraction": 1.0}) != version
    assert persons_version({"estimator_options": {"agree": 0.4}}) != version
