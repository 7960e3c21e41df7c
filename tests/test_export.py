"""pg2kit export: every format written from a small prepared folder and read back by the target's
own rules (its library: lmdb, json, PIL; its loader's path and coordinate arithmetic, restated
here from the loaders named in docs/formats.md), coordinates checked against the shards."""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

import h5py
import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from pg2kit import shards
from pg2kit.cli import cli
from pg2kit.export import ExportError, OutFolder, export
from pg2kit.keypoints import NUM_KEYPOINTS


def _pose(rng, h, w):
    kp = np.stack([rng.uniform(0.1, 0.9, 18) * (w - 1), rng.uniform(0.05, 0.95, 18) * (h - 1)], 1)
    kp = np.round(kp * 4) / 4  # quarter pixels: exercises the sub-pixel paths
    kp[rng.random(18) < 0.15] = -1
    return kp.astype(np.float32)


def make_folder(
    root: Path,
    size=(128, 64),
    x_offset=0,
    splits=(("train", 3, 3), ("test", 2, 2)),
    dataset="market1501",
    names=None,
    pairs=True,
    raw_pairs=None,
):
    """A prepared folder written with raw h5py (so that tests can plant bad names).

    splits: (split, identities, poses); names: {split: [names]} to override the Market names.
    pairs: all ordered same-identity pairs (through shards.write_pairs); raw_pairs: {split:
    array} written straight into pairs.h5 without any check.
    """
    root = Path(root)
    h, w = size
    rng = np.random.default_rng(0)
    manifest = {
        "schema_version": 1,
        "dataset": dataset,
        "csv_prefix": "market" if dataset == "market1501" else dataset,
        "frame": {"height": h, "width": w, "x_offset": x_offset},
        "splits": {},
    }
    all_pairs = {}
    offset = 0
    for split, ids, poses in splits:
        n = ids * poses
        split_names = (names or {}).get(split) or [
            f"{offset + i // poses + 1:04d}_c{i % poses + 1}s1_{i:06d}_00.jpg" for i in range(n)
        ]
        identity = [f"{offset + i // poses + 1:04d}" for i in range(n)]
        offset += ids
        kp = np.stack([_pose(rng, h, w) for _ in range(n)])
        yy, xx = np.mgrid[:h, :w]
        images = np.stack(  # smooth pictures, different per sample (JPEG keeps them close)
            [
                np.stack([np.sin(xx / 9 + i), np.cos(yy / 13 - i), np.sin((xx + yy) / 17)], -1)
                for i in range(n)
            ]
        )
        images = np.round(127 + 100 * images).astype(np.uint8)
        path = shards.shard_path(root, split, 0)
        path.parent.mkdir(parents=True, exist_ok=True)
        with h5py.File(path, "w") as f:
            f["image"] = images
            f["keypoints"] = kp
            f["scores"] = (kp[..., 0] >= 0).astype(np.float32) * 0.75
            f["mask"] = np.zeros((n, h, w), np.uint8)
            st = h5py.string_dtype("utf-8")
            f.create_dataset("name", data=np.array(split_names, dtype=object), dtype=st)
            f.create_dataset("identity", data=np.array(identity, dtype=object), dtype=st)
            f.attrs.update(
                {"schema_version": 1, "split": split, "dataset": dataset,
                 "frame_height": h, "frame_width": w, "frame_x_offset": x_offset}
            )  # fmt: skip
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        entry = {"file": f"shards/{path.name}", "count": n, "bytes": path.stat().st_size,
                 "sha256": digest}  # fmt: skip
        shards.marker_path(path).write_text(json.dumps(entry))
        manifest["splits"][split] = {"count": n, "shards": [entry]}
        g = np.arange(n) // poses
        all_pairs[split] = np.array(
            [(a, b) for a in range(n) for b in range(n) if a != b and g[a] == g[b]], np.int64
        )
    (root / shards.MANIFEST).write_text(json.dumps(manifest))
    if raw_pairs is not None:
        with h5py.File(root / shards.PAIRS, "w") as f:
            for split, arr in raw_pairs.items():
                f[split] = np.asarray(arr, np.int64)
    elif pairs:
        shards.write_pairs(root, all_pairs, "test", {})
    return root


def _fields(root, split):
    return shards.read_split_fields(root, split, ["name", "keypoints", "image", "identity"])


def _files_outside(tmp_path: Path, allowed: list[Path]) -> list[Path]:
    keep = [a.resolve() for a in allowed]
    return [
        p
        for p in tmp_path.rglob("*")
        if p.is_file() and not any(p.resolve().is_relative_to(a) for a in keep)
    ]


def quiet(*_):
    pass


# ---------------------------------------------------------------- defgan / patn-resize


def _read_patn_annotations(path: Path) -> dict[str, np.ndarray]:
    """As PATN/DPTN/CFLD do: pandas.read_csv(sep=':'), json.loads of the y and x columns."""
    with open(path, newline="") as f:
        rows = list(csv.reader(f, delimiter=":"))
    assert rows[0] == ["name", "keypoints_y", "keypoints_x"]
    out = {}
    for name, ys, xs in rows[1:]:
        out[name] = np.stack([json.loads(xs), json.loads(ys)], 1)  # (18, 2) x, y
    return out


@pytest.mark.parametrize("x_offset,width", [(0, 256), (40, 176)])
def test_patn_resize_frame_and_images(tmp_path, x_offset, width):
    src = make_folder(tmp_path / "p", size=(256, width), x_offset=x_offset, dataset="deepfashion",
                      splits=(("train", 2, 2), ("test", 1, 2)))  # fmt: skip
    out = tmp_path / "out"
    export(src, out, "patn-resize", images=True, log=quiet, progress=False)
    for split in ("train", "test"):
        got = _read_patn_annotations(out / f"fasion-resize-annotation-{split}.csv")
        f = _fields(src, split)
        for name, kp, img in zip(f["name"], f["keypoints"], f["image"], strict=True):
            x256 = kp[:, 0] + x_offset  # column in the 256-wide frame
            inside = (kp[:, 0] >= 0) & (x256 - 40 >= -0.5) & (x256 - 40 < 175.5)
            want_x = np.where(inside, np.floor(x256 - 40 + 0.5), -1)
            want_y = np.where(inside, np.floor(kp[:, 1] + 0.5), -1)
            np.testing.assert_array_equal(got[name][:, 0], want_x)
            np.testing.assert_array_equal(got[name][:, 1], want_y)
            pic = np.asarray(Image.open(out / split / name).convert("RGB"))
            assert pic.shape == (256, 176, 3)  # PATN's fashion_resize images
            crop = img[:, 40 - x_offset : 216 - x_offset].astype(int)
            assert np.abs(pic.astype(int) - crop).mean() < 12  # JPEG
        with open(out / f"fasion-resize-pairs-{split}.csv", newline="") as fh:
            pairs = list(csv.DictReader(fh))
        want = shards.read_pairs(src, split)
        names = list(f["name"])
        assert [(r["from"], r["to"]) for r in pairs] == [(names[a], names[b]) for a, b in want]


def test_patn_resize_refuses_other_frames(tmp_path):
    src = make_folder(tmp_path / "p", size=(128, 64))
    with pytest.raises(ExportError, match="not DeepFashion's 256-high frame"):
        export(src, tmp_path / "out", "patn-resize", log=quiet, progress=False)


# ---------------------------------------------------------------- openpose-json


def test_openpose_json_round_trips_through_prepare(tmp_path):
    from pg2kit.formats import read_openpose_json
    from pg2kit.prepare import PrepareConfig, run_prepare

    src = make_folder(tmp_path / "p", splits=(("train", 3, 3),))
    out = tmp_path / "op"
    export(src, out, "openpose-json", images=True, log=quiet, progress=False)
    f = _fields(src, "train")
    for name, kp in zip(f["name"], f["keypoints"], strict=True):
        doc = json.loads(
            (out / "keypoints" / "train" / f"{Path(name).stem}_keypoints.json").read_text()
        )
        flat = doc["people"][0]["pose_keypoints_2d"]
        assert len(flat) == 3 * NUM_KEYPOINTS  # COCO-18 x, y, c
        got, conf = read_openpose_json(
            out / "keypoints" / "train" / f"{Path(name).stem}_keypoints.json"
        )
        np.testing.assert_array_equal(got, kp)
        np.testing.assert_array_equal(conf > 0, kp[:, 0] >= 0)

    # import: the exported images as a Market tree, keypoints from the exported folder
    market = tmp_path / "Market"
    (market / "bounding_box_train").mkdir(parents=True)
    for p in (out / "images" / "train").iterdir():
        (market / "bounding_box_train" / p.name).write_bytes(p.read_bytes())
    again = tmp_path / "again"
    cfg = PrepareConfig(dataset="market1501", src=market, out=again,
                        keypoints=str(out / "keypoints"), workers=1)  # fmt: skip
    run_prepare(cfg, progress=False, log=quiet)
    back = shards.read_split_fields(again, "train", ["name", "keypoints", "scores"])
    want = dict(zip(f["name"], f["keypoints"], strict=True))
    assert sorted(back["name"]) == sorted(want)
    for name, kp, sc in zip(back["name"], back["keypoints"], back["scores"], strict=True):
        np.testing.assert_array_equal(kp, want[name])
        np.testing.assert_allclose(sc, np.where(kp[:, 0] >= 0, 0.75, 0))


def test_openpose_json_no_person_is_an_empty_people_list(tmp_path):
    src = make_folder(tmp_path / "p", splits=(("train", 1, 2),), pairs=False)
    with h5py.File(src / "shards" / "train-00000.h5", "r+") as fh:
        fh["keypoints"][0] = -1  # same size: the manifest's checks still hold
    export(src, tmp_path / "op", "openpose-json", log=quiet, progress=False)
    first = sorted((tmp_path / "op" / "keypoints" / "train").iterdir())
    docs = [json.loads(p.read_text()) for p in first]
    assert sorted(len(d["people"]) for d in docs) == [0, 1]


# ---------------------------------------------------------------- pidm / nted


def _pidm_loader_pose(path: Path, img_h: int, img_w: int) -> np.ndarray:
    """PIDM/NTED's get_label_tensor + trans_keypoins without augmentation: np.loadtxt, then
    x -> (x - 40) * W / 176, y -> y * H / 256, -1 stays -1."""
    kp = np.loadtxt(path)
    missing = kp == -1
    kp[:, 0] = (kp[:, 0] - 40) * (img_w / 176.0)
    kp[:, 1] = kp[:, 1] * (img_h / 256.0)
    kp[missing] = -1
    return kp


def _pidm_fashion_name(path_in: str) -> str:
    """PIDM/NTED's path_to_fashion_name (called for every item): needs 5 path parts."""
    path_in = "fashion/" + path_in.split("img/")[-1]
    parts = path_in.split("/")
    parts[3] = parts[3].replace("_", "")
    parts[4] = parts[4].split("_")[0] + "_" + "".join(parts[4].split("_")[1:])
    return "".join(parts)


@pytest.mark.parametrize("frame", [((128, 64), 0), ((256, 256), 0)])
def test_pidm_layout_as_its_loader_reads_it(tmp_path, frame):
    lmdb = pytest.importorskip("lmdb")
    (h, w), x_offset = frame
    src = make_folder(tmp_path / "p", size=(h, w), x_offset=x_offset)
    out = tmp_path / "pidm"
    sizes = [(64, 48), (32, 24)]
    export(src, out, "pidm", sizes=sizes, log=quiet, progress=False)
    deepfashion = h == 256
    total = sum(len(_fields(src, s)["name"]) for s in ("train", "test"))
    for H, W in sizes:
        env = lmdb.open(str(out / f"{H}-{W}"), readonly=True, lock=False)
        with env.begin() as txn:
            assert txn.get(b"length") == str(total).zfill(5).encode()
            assert txn.stat()["entries"] == total + 1
            for split in ("train", "test"):
                f = _fields(src, split)
                lines = (out / f"{split}_pairs.txt").read_text().splitlines()
                want = shards.read_pairs(src, split)
                assert len(lines) == len(want)
                key_of = {}
                for line, (a, b) in zip(lines, want, strict=True):
                    item = line.strip().split(",")  # the loader: target, then sources
                    target = item[0].replace(".jpg", ".png")
                    sources = [p.replace(".jpg", ".png") for p in item[1:]]
                    assert len(sources) == 1
                    key_of[int(b)], key_of[int(a)] = target, sources[0]
                    _pidm_fashion_name(sources[0])
                    _pidm_fashion_name(target)
                for i, key in key_of.items():
                    png = txn.get(key.encode("utf-8"))
                    assert png is not None, key
                    img = Image.open(__import__("io").BytesIO(png))
                    assert img.format == "PNG" and img.size == (W, H)
                    pose = out / key.replace("img/", "pose/").replace(".png", ".txt")
                    got = _pidm_loader_pose(pose, H, W)
                    kp = f["keypoints"][i]
                    ok = kp[:, 0] >= 0
                    if deepfashion:  # outside the person crop: missing
                        ok &= (kp[:, 0] + x_offset >= 39.5) & (kp[:, 0] + x_offset < 215.5)
                    assert ((got == -1).all(1) == ~ok).all()
                    if deepfashion:  # the LMDB image is the 176-wide person crop
                        sx, sy, x0 = W / 176, H / 256, 40 - x_offset
                    else:
                        sx, sy, x0 = W / w, H / h, 0
                    want_x, want_y = (kp[ok, 0] - x0) * sx, kp[ok, 1] * sy  # plain scaling
                    np.testing.assert_allclose(got[ok, 0], want_x, atol=2e-3 * max(sx, 1))
                    np.testing.assert_allclose(got[ok, 1], want_y, atol=2e-3 * max(sy, 1))
        env.close()


def test_pidm_needs_pairs_and_plain_names(tmp_path):
    pytest.importorskip("lmdb")
    src = make_folder(tmp_path / "p", pairs=False)
    with pytest.raises(ExportError, match="run `pg2kit pairs"):
        export(src, tmp_path / "o", "pidm", log=quiet, progress=False)
    names = {"train": ["a,b.jpg", "c.jpg", "d.jpg"]}
    src = make_folder(tmp_path / "q", splits=(("train", 1, 3),), names=names)
    with pytest.raises(ExportError, match="holds ','"):
        export(src, tmp_path / "o2", "pidm", log=quiet, progress=False)


# ---------------------------------------------------------------- pcdms


def _pcdms_read_coordinates(path: str) -> list[float]:
    """PCDMs's read_coordinates_file: two floats per line, flattened."""
    values = []
    with open(path) as f:
        for line in f:
            x, y = map(float, line.strip().split())
            values += [x, y]
    return values


def test_pcdms_layout_as_its_loader_reads_it(tmp_path):
    src = make_folder(tmp_path / "p", size=(128, 64))
    out = tmp_path / "pcdms"
    export(src, out, "pcdms", log=quiet, progress=False)
    image_root = str(out / "train_all_png") + "/"
    for split in ("train", "test"):
        items = json.loads((out / f"{split}_data.json").read_text())
        f = _fields(src, split)
        index = {Path(n).stem: i for i, n in enumerate(f["name"])}
        want = shards.read_pairs(src, split)
        assert len(items) == len(want)
        for item, (a, b) in zip(items, want, strict=True):
            for key, sid in (("source_image", a), ("target_image", b)):
                name = item[key]
                assert index[Path(name).stem] == sid
                img_path = image_root + name.replace(".jpg", ".png")  # stage 1/2 loaders
                img = np.asarray(Image.open(img_path).convert("RGB"))
                np.testing.assert_array_equal(img, f["image"][sid])  # PNG: lossless
                pose_txt = (image_root + name).replace("/train_all_png/", "/normalized_pose_txt/")
                coords = np.array(_pcdms_read_coordinates(pose_txt.replace(".jpg", ".txt")))
                assert coords.shape == (36,)
                kp = f["keypoints"][sid]
                ok = kp[:, 0] >= 0
                got = coords.reshape(18, 2)
                np.testing.assert_allclose(got[ok, 0], (kp[ok, 0] + 0.5) / 64, atol=1e-6)
                np.testing.assert_allclose(got[ok, 1], (kp[ok, 1] + 0.5) / 128, atol=1e-6)
                assert (got[~ok] == -1).all()
                pose_jpg = img_path.replace("/train_all_png/", "/openpose_all_img/")
                skel = np.asarray(Image.open(pose_jpg.replace(".png", "_pose.jpg")).convert("RGB"))
                assert skel.shape == img.shape
                if ok[1]:  # the neck dot is drawn in its OpenPose colour (255, 85, 0)
                    x, y = np.round(kp[1]).astype(int)
                    assert abs(int(skel[y, x, 0]) - 255) < 60 and skel[y, x, 2] < 80


def test_pcdms_refuses_a_stem_in_two_splits(tmp_path):
    names = {"train": ["a.jpg", "b.jpg"], "test": ["a.png", "c.jpg"]}
    src = make_folder(tmp_path / "p", splits=(("train", 1, 2), ("test", 1, 2)), names=names)
    with pytest.raises(ExportError, match="also names a sample of split 'train'"):
        export(src, tmp_path / "o", "pcdms", log=quiet, progress=False)


# ---------------------------------------------------------------- controlnet


def test_controlnet_imagefolder(tmp_path):
    src = make_folder(tmp_path / "p", size=(128, 64))
    out = tmp_path / "cn"
    export(src, out, "controlnet", sizes=[(256, 128)], caption="person {identity} ({split})",
           log=quiet, progress=False)  # fmt: skip
    for split in ("train", "test"):
        rows = [
            json.loads(line) for line in (out / split / "metadata.jsonl").read_text().splitlines()
        ]
        f = _fields(src, split)
        assert len(rows) == len(f["name"])
        for row, name, ident, kp in zip(
            rows, f["name"], f["identity"], f["keypoints"], strict=True
        ):
            assert set(row) == {"file_name", "conditioning_image", "text"}
            assert row["text"] == f"person {ident} ({split})"
            img = Image.open(out / split / row["file_name"])
            cond = np.asarray(Image.open(out / split / row["conditioning_image"]).convert("RGB"))
            assert img.size == (128, 256) and cond.shape == (256, 128, 3)
            assert Path(row["file_name"]).stem == Path(name).stem
            ok = kp[:, 0] >= 0
            lit = cond.max(axis=2) > 0
            if ok.any():  # skeleton pixels near the keypoints, black far from them
                x, y = np.round((kp[ok][0] + 0.5) * 2 - 0.5).astype(int)
                assert lit[max(0, y - 2) : y + 3, max(0, x - 2) : x + 3].any()
                assert 0 < lit.mean() < 0.5
            else:
                assert not lit.any()


# ---------------------------------------------------------------- safety, errors, resume


@pytest.mark.parametrize("bad", ["../../../escape.png", "/abs/escape.png", "..", "a/b.jpg"])
@pytest.mark.parametrize("fmt", ["defgan", "openpose-json", "pcdms", "controlnet"])
def test_bad_names_never_escape(tmp_path, bad, fmt):
    names = {"train": [bad, "ok_1.jpg", "ok_2.jpg"]}
    src = make_folder(tmp_path / "p", splits=(("train", 1, 3),), names=names)
    out = tmp_path / "deep" / "out"
    r = CliRunner().invoke(cli, ["export", str(src), "--format", fmt, "-o", str(out), "--images",
                                 "--quiet"])  # fmt: skip
    assert r.exit_code == 1, r.output
    assert "not a plain file name" in r.output and "Traceback" not in r.output
    assert len(r.output.strip().splitlines()) == 1 or r.output.count("Error") == 1
    assert _files_outside(tmp_path, [src, out]) == []
    assert not Path("/abs/escape.png").exists()


@pytest.mark.parametrize("fmt", ["defgan", "pcdms", "patn-resize"])
@pytest.mark.parametrize("bad", [[[-1, 1]], [[0, 99]]])
def test_bad_pair_ids_are_an_error(tmp_path, fmt, bad):
    size = (256, 256) if fmt == "patn-resize" else (128, 64)
    src = make_folder(tmp_path / "p", size=size, splits=(("train", 1, 3),), dataset="deepfashion",
                      raw_pairs={"train": np.array([[0, 1], *bad])})  # fmt: skip
    r = CliRunner().invoke(cli, ["export", str(src), "--format", fmt, "-o", str(tmp_path / "o"),
                                 "--quiet"])  # fmt: skip
    assert r.exit_code == 1 and "Traceback" not in r.output
    assert "outside" in r.output and "pair row 1" in r.output
    assert not list((tmp_path / "o").glob("*pairs*")) and not list(
        (tmp_path / "o").glob("*_data.json")
    )


def test_out_folder_paths_stay_inside(tmp_path):
    out = OutFolder(tmp_path / "o")
    assert out.path("a", "b.png") == tmp_path / "o" / "a" / "b.png"
    for parts in (("..", "x.png"), ("/etc/x",), ("a", "..", "..", "x"), (".",)):
        with pytest.raises(ExportError, match="outside the output folder"):
            out.path(*parts)
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "o" / "link").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(ExportError, match="outside the output folder"):
        out.path("link", "x.png")


def test_resume_keeps_finished_files_and_redoes_on_change(tmp_path):
    src = make_folder(tmp_path / "p")
    out = tmp_path / "cn"
    export(src, out, "controlnet", log=quiet, progress=False)
    first = {p: p.read_bytes() for p in out.rglob("*.png")}
    victim = sorted(first)[0]
    victim.unlink()  # as if killed before this file was renamed into place
    (out / "train" / "metadata.jsonl").unlink()
    export(src, out, "controlnet", log=quiet, progress=False)
    assert {p: p.read_bytes() for p in out.rglob("*.png")} == first
    state = json.loads((out / ".pg2kit-export.json").read_text())
    assert state["complete"] is True and state["format"] == "controlnet"
    assert not list(out.rglob("*.tmp"))
    # other options: nothing is reused (the skeleton size changes)
    export(src, out, "controlnet", sizes=[(64, 32)], log=quiet, progress=False)
    assert Image.open(victim).size == (32, 64)


@pytest.mark.parametrize("fmt", ["defgan", "openpose-json", "pidm", "pcdms", "controlnet"])
def test_cli_every_format(tmp_path, fmt):
    if fmt == "pidm":
        pytest.importorskip("lmdb")
    src = make_folder(tmp_path / "p", splits=(("train", 2, 2),))
    out = tmp_path / "o"
    args = ["export", str(src), "--format", fmt, "-o", str(out), "--quiet"]
    if fmt == "pidm":
        args += ["--size", "32x32"]
    r = CliRunner().invoke(cli, args)
    assert r.exit_code == 0, r.output
    assert (out / ".pg2kit-export.json").exists()


def test_cli_rejects_bad_size(tmp_path):
    src = make_folder(tmp_path / "p", splits=(("train", 1, 2),))
    r = CliRunner().invoke(cli, ["export", str(src), "--format", "pidm", "-o", str(tmp_path / "o"),
                                 "--size", "abc"])  # fmt: skip
    assert r.exit_code == 2 and "HxW" in r.output
    r = CliRunner().invoke(cli, ["export", str(src), "-o", str(tmp_path / "o"), "--size", "64x64"])
    assert r.exit_code == 1 and "--size applies to pidm and controlnet" in r.output
