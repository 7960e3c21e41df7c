"""Fault injection (issue 8): damaged prepared folders, hostile names, full disks, CSV edges.

Every case runs the commands through the real CLI and asserts: exit code 1 with exactly one
`Error:` line naming the file and the problem (or the documented success), no traceback, no
file written outside the output folder. docs/reliability.md lists every case with its test.
"""

from __future__ import annotations

import errno
import json
import os

import h5py
import numpy as np
import pytest

from pg2kit import atomic, shards
from pg2kit.formats import write_defgan_annotations
from tests import _faultkit as fk

# ---------------------------------------------------------------- damaged prepared folders


def _shard0(root):
    return root / "shards" / "train-00000.h5"


def _name_traversal(root):
    fk.set_names(_shard0(root), ["../../../x.png"] + [f"{i}.jpg" for i in range(1, 5)])


def _name_absolute(root):
    fk.set_names(_shard0(root), [f"{i}.jpg" for i in range(4)] + ["/abs/x.png"])


def _name_control(root):
    fk.set_names(_shard0(root), [f"{i}.jpg" for i in range(4)] + ["a\nb.jpg"])


def _truncated(root):
    p = _shard0(root)
    with open(p, "r+b") as f:
        f.truncate(p.stat().st_size // 2)


def _missing(root):
    _shard0(root).unlink()


def _no_marker(root):
    shards.marker_path(_shard0(root)).unlink()


def _garbage_same_size(root):
    p = _shard0(root)
    p.write_bytes(np.random.default_rng(0).bytes(p.stat().st_size))


def _schema_99(root):
    m = json.loads((root / "manifest.json").read_text())
    m["schema_version"] = 99
    (root / "manifest.json").write_text(json.dumps(m))


def _manifest_not_json(root):
    (root / "manifest.json").write_text('{"schema_version": 1, "splits": ')


def _manifest_without(key):
    def damage(root):
        m = json.loads((root / "manifest.json").read_text())
        del m[key]
        (root / "manifest.json").write_text(json.dumps(m))

    return damage


def _manifest_escape(root):
    m = json.loads((root / "manifest.json").read_text())
    m["splits"]["train"]["shards"][0]["file"] = "../../etc/passwd"
    (root / "manifest.json").write_text(json.dumps(m))


def _negative_pair_ids(root):
    fk.write_raw_pairs(root, [[0, 1], [-1, 2]])


def _out_of_range_pair_ids(root):
    fk.write_raw_pairs(root, [[0, 1], [2, 999]])


def _stale_pairs(root):
    def edit(f):
        f["keypoints"][0, 0] = [1.0, 1.0]

    fk.rewrite_marked(_shard0(root), edit, pairs_follow=False)  # pairs.h5 not re-made


def _pairs_not_hdf5(root):
    (root / "pairs.h5").write_bytes(b"not hdf5 at all")


def _wrong_shape(root):
    def edit(f):
        kp = f["keypoints"][...]
        del f["keypoints"]
        f["keypoints"] = kp[:, :17]

    fk.rewrite_marked(_shard0(root), edit)


def _image_bytes_changed(root):
    p = _shard0(root)
    size = p.stat().st_size
    with h5py.File(p, "r+") as f:  # same size, valid HDF5: only the checksum can tell
        f["image"][0, 0, 0] = 255 - f["image"][0, 0, 0]
    assert p.stat().st_size == size


PAIRS = ["pairs", "{root}", "--protocol", "pg2"]
INSPECT = ["inspect", "{root}", "--no-pictures"]
INSPECT_PICS = ["inspect", "{root}", "-n", "2"]
VERIFY = ["verify", "{root}", "--quiet"]
EXPORT = ["export", "{root}", "-o", "{out}/export", "--images", "--quiet"]
TRAIN = ["train", "{root}", "--preset", "tiny", "-o", "{out}/run", "--dry-run"]
TRAIN_VERIFY = [*TRAIN, "--verify"]

# case -> (damage, message part, commands that must refuse with one line)
CASES = {
    "name ../../../x.png": (_name_traversal, "not a plain file name", [PAIRS, VERIFY, EXPORT]),
    "name /abs/x.png": (_name_absolute, "not a plain file name", [PAIRS, VERIFY, EXPORT]),
    "name with a line break": (_name_control, "not a plain file name", [PAIRS, VERIFY, EXPORT]),
    "truncated shard": (
        _truncated,
        "the manifest says",
        [PAIRS, INSPECT, VERIFY, EXPORT, TRAIN],
    ),
    "missing shard": (_missing, "missing", [PAIRS, INSPECT, VERIFY, EXPORT, TRAIN]),
    "missing done marker": (_no_marker, "no done marker", [PAIRS, INSPECT, VERIFY, EXPORT, TRAIN]),
    "garbage shard, same size": (
        _garbage_same_size,
        "train-00000.h5",
        [PAIRS, VERIFY, EXPORT, TRAIN, INSPECT_PICS],
    ),
    "schema version 99": (_schema_99, "schema version 99", [PAIRS, INSPECT, VERIFY, EXPORT, TRAIN]),
    "manifest not JSON": (_manifest_not_json, "not valid JSON", [PAIRS, INSPECT, VERIFY, TRAIN]),
    "manifest without its frame": (
        _manifest_without("frame"),
        "no valid 'frame'",
        [PAIRS, INSPECT, VERIFY, EXPORT, TRAIN],
    ),
    "manifest without its dataset name": (
        _manifest_without("dataset"),
        "no 'dataset' name",
        [PAIRS, INSPECT, VERIFY, EXPORT, TRAIN],
    ),
    "manifest file outside shards/": (
        _manifest_escape,
        "is not inside shards/",
        [PAIRS, INSPECT, VERIFY, EXPORT, TRAIN],
    ),
    "negative pair ids": (_negative_pair_ids, "outside the split", [VERIFY, EXPORT, TRAIN]),
    "pair ids out of range": (
        _out_of_range_pair_ids,
        "outside the split",
        [VERIFY, EXPORT, TRAIN, INSPECT_PICS],
    ),
    "stale pairs (shards changed)": (
        _stale_pairs,
        "made for other shards",
        [VERIFY, EXPORT, TRAIN, INSPECT_PICS],
    ),
    "pairs.h5 not HDF5": (_pairs_not_hdf5, "pairs.h5", [INSPECT_PICS, VERIFY, EXPORT, TRAIN]),
    "dataset of the wrong shape": (
        _wrong_shape,
        "keypoints",
        [PAIRS, VERIFY, EXPORT, TRAIN],
    ),
    "image bytes changed, same size": (
        _image_bytes_changed,
        "sha256 differs",
        [PAIRS, INSPECT, VERIFY, EXPORT, TRAIN, TRAIN_VERIFY],
    ),
}
ALL_COMMANDS = [PAIRS, INSPECT, VERIFY, EXPORT, TRAIN]


@pytest.mark.parametrize("case", list(CASES))
def test_damaged_folder(case, tmp_path):
    damage, needle, refusing = CASES[case]
    root = fk.folder(tmp_path / "out" / "prep")
    damage(root)
    before = fk.files_under(tmp_path)
    for cmd in refusing:
        args = [a.format(root=root, out=tmp_path / "out") for a in cmd]
        line = fk.assert_one_line_error(fk.invoke(args), needle)
        assert str(root) in line or "pairs.h5" in line, line  # names the file
    # every other command either works or refuses in one line: never a traceback
    for cmd in ALL_COMMANDS:
        if cmd in refusing:
            continue
        r = fk.invoke([a.format(root=root, out=tmp_path / "out") for a in cmd])
        assert r.exception is None or isinstance(r.exception, SystemExit), (cmd, r.output)
        assert "Traceback" not in r.output and r.exit_code in (0, 1), (cmd, r.output)
    outside = {p for p in fk.files_under(tmp_path) - before if tmp_path / "out" not in p.parents}
    assert not outside, outside
    assert not list(tmp_path.rglob("x.png"))


def test_damaged_pairs_h5_is_remade_by_pairs(tmp_path):
    root = fk.folder(tmp_path / "prep")
    _pairs_not_hdf5(root)
    assert fk.invoke(["pairs", root, "--protocol", "pg2"]).exit_code == 0
    assert fk.invoke(["verify", root, "--quiet"]).exit_code == 0


def test_healthy_folder_passes_every_command(tmp_path):
    root = fk.folder(tmp_path / "out" / "prep")
    for cmd in [VERIFY, INSPECT, EXPORT, PAIRS]:
        r = fk.invoke([a.format(root=root, out=tmp_path / "out") for a in cmd])
        assert r.exit_code == 0, (cmd, r.output)
    assert "OK (3 shards, 12 samples" in fk.invoke(["verify", root, "--quiet"]).output


# ---------------------------------------------------------------- names on write


@pytest.mark.parametrize(
    "name", ["../x.png", "/abs/x.png", "a/b.png", "a\\b.png", "..", "", "C:x.png", "a\x00b"]
)
def test_write_shard_refuses_unsafe_names(name, tmp_path):
    path = shards.shard_path(tmp_path, "train", 0)
    arrays = {"image": np.zeros((2, 4, 4, 3), np.uint8), "name": ["ok.jpg", name]}
    with pytest.raises(shards.PreparedError, match="row 1"):
        shards.write_shard(path, arrays, {})
    assert not list(tmp_path.rglob("*")) or not list((tmp_path / "shards").glob("*"))


def test_write_shard_refuses_undecodable_text(tmp_path):
    bad = os.fsdecode(b"caf\xe9.jpg")  # a lone surrogate: not UTF-8
    arrays = {"image": np.zeros((1, 4, 4, 3), np.uint8), "name": [bad]}
    with pytest.raises(shards.PreparedError, match="undecodable"):
        shards.write_shard(shards.shard_path(tmp_path, "train", 0), arrays, {})
    arrays = {"image": np.zeros((1, 4, 4, 3), np.uint8), "name": ["a.jpg"], "source_path": [bad]}
    with pytest.raises(shards.PreparedError, match="source_path.*undecodable"):
        shards.write_shard(shards.shard_path(tmp_path, "train", 0), arrays, {})


# ---------------------------------------------------------------- write errors


def _check_no_tmp(folder):
    left = [p for p in folder.rglob("*") if p.name.endswith(".tmp")]
    assert not left, left


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EACCES, errno.EROFS])
def test_injected_write_errors(code, tmp_path, monkeypatch):
    """An OSError in the middle of any atomic write: one WriteError naming the file, no tmp."""
    root = fk.folder(tmp_path / "prep")

    def fail(*_a, **_k):
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(os, "fsync", fail)
    with pytest.raises(atomic.WriteError) as e:
        atomic.write_text(tmp_path / "a.txt", "x" * 1000)
    assert "a.txt" in str(e.value) and e.value.errno == code
    if code == errno.ENOSPC:
        assert "needs 1.0 KB" in str(e.value) and "free" in str(e.value)
    path = shards.shard_path(tmp_path / "new", "train", 0)
    with pytest.raises(atomic.WriteError, match="train-00000.h5"):
        shards.write_shard(path, {"image": np.zeros((3, 8, 8, 3), np.uint8)}, {})
    assert not path.exists()
    r = fk.invoke(["pairs", root, "--protocol", "pg2"])
    fk.assert_one_line_error(r, "cannot write", "pairs.h5")
    monkeypatch.undo()
    _check_no_tmp(tmp_path)
    r = fk.invoke(["pairs", root, "--protocol", "pg2"])  # the error gone: completes
    assert r.exit_code == 0, r.output


def test_disk_full_preflight(tmp_path, monkeypatch):
    """A shard that does not fit is refused before anything is written, with the sizes."""
    monkeypatch.setattr(atomic, "free_bytes", lambda _folder: 1000)
    path = shards.shard_path(tmp_path, "train", 0)
    with pytest.raises(atomic.WriteError, match=r"no space left.*needs .*, 1.0 KB free"):
        shards.write_shard(path, {"image": np.zeros((3, 64, 64, 3), np.uint8)}, {})
    assert not path.exists()
    _check_no_tmp(tmp_path)


def test_disk_full_on_real_tmpfs(tmp_path):
    """A real full file system (a 1 MB tmpfs, root only): `pairs` ends in one line, exit code 1,
    no temporary file and no crash of libhdf5; after freeing space it completes."""
    with fk.small_tmpfs(tmp_path / "small", "2m") as mnt:
        if mnt is None:
            pytest.skip("needs root and tmpfs to mount a small file system")
        root = fk.folder(mnt / "prep", num_ids=6, poses=4, with_pairs=False)
        filler = fk.fill(mnt, leave=2048)
        r = fk.run_cli_subprocess(["pairs", root, "--protocol", "pg2"])
        assert r.returncode == 1, (r.returncode, r.stdout, r.stderr)  # 139 was the segfault
        assert "Traceback" not in r.stderr
        err = [ln for ln in r.stderr.splitlines() if ln.startswith("Error:")]
        assert len(err) == 1 and "no space left" in err[0] and "pairs.h5" in err[0], r.stderr
        _check_no_tmp(mnt)
        assert not (root / "pairs.h5").exists()
        # a shard written straight onto the full disk: the same, in-process (no segfault)
        with pytest.raises(atomic.WriteError, match="no space left"):
            shards.write_shard(
                shards.shard_path(mnt / "x", "train", 0),
                {"image": np.random.default_rng(0).integers(0, 255, (8, 64, 64, 3), np.uint8)},
                {},
            )
        _check_no_tmp(mnt)
        filler.unlink()
        r = fk.run_cli_subprocess(["pairs", root, "--protocol", "pg2"])
        assert r.returncode == 0, r.stderr
        assert shards.read_pairs(root, "train").shape == (6 * 4 * 3, 2)


# ---------------------------------------------------------------- pairs: kill at any point


def test_pairs_killed_between_pairs_h5_and_manifest(tmp_path, monkeypatch):
    root = fk.folder(tmp_path / "prep")
    old = json.loads((root / "manifest.json").read_text())["pairs"]

    def killed(*_a, **_k):
        raise KeyboardInterrupt  # as if SIGKILL came right after pairs.h5 was renamed

    monkeypatch.setattr(shards, "write_manifest", killed)
    with pytest.raises(KeyboardInterrupt):
        shards.write_pairs(root, {"train": np.array([[0, 1], [1, 0], [0, 2]])}, "pg2", {"x": 1})
    monkeypatch.undo()
    on_disk = json.loads((root / "manifest.json").read_text())["pairs"]
    assert on_disk == old  # the manifest file still describes the previous pairs ...
    m = shards.load_manifest(root)  # ... but every reader sees what pairs.h5 holds
    assert m["pairs"]["counts"] == {"train": 3} and m["pairs"]["protocol"] == "pg2"
    assert len(shards.read_pairs(root, "train")) == 3
    r = fk.invoke(["verify", root, "--quiet"])
    fk.assert_one_line_error(r, "1 problem")
    assert "disagrees with pairs.h5" in r.output
    assert fk.invoke(["pairs", root, "--protocol", "pg2"]).exit_code == 0  # tidies up
    assert fk.invoke(["verify", root, "--quiet"]).exit_code == 0


def test_pairs_killed_while_writing_pairs_h5(tmp_path, monkeypatch):
    root = fk.folder(tmp_path / "prep")
    before = shards.read_pairs(root, "train")

    def killed(*_a, **_k):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", killed)
    with pytest.raises(KeyboardInterrupt):
        shards.write_pairs(root, {"train": np.array([[0, 1]])}, "pg2", {})
    monkeypatch.undo()
    np.testing.assert_array_equal(shards.read_pairs(root, "train"), before)
    _check_no_tmp(root)
    assert fk.invoke(["verify", root, "--quiet"]).exit_code == 0


def test_pairs_tmp_left_by_sigkill_is_cleaned(tmp_path):
    root = fk.folder(tmp_path / "prep")
    (root / ".pairs.h5.12345.tmp").write_bytes(b"half a file")
    assert fk.invoke(["pairs", root, "--protocol", "pg2"]).exit_code == 0
    _check_no_tmp(root)


def test_write_pairs_refuses_bad_ids(tmp_path):
    root = fk.folder(tmp_path / "prep", with_pairs=False)
    for bad in ([[0, -1]], [[0, 12]]):
        with pytest.raises(shards.PreparedIndexError, match="outside the split's samples 0..11"):
            shards.write_pairs(root, {"train": np.array(bad)}, "pg2", {})
    assert not (root / "pairs.h5").exists()


# ---------------------------------------------------------------- pairs: nothing silently empty


def _photo_folder(root, ids, cameras):
    from tests.test_pairs import _prepared_folder, _torso_keypoints

    _prepared_folder(root, ids, cameras, _torso_keypoints(len(ids)))
    return root


def test_cross_camera_with_unknown_cameras_is_an_error(tmp_path):
    root = _photo_folder(tmp_path / "p", ["a", "a", "b", "b"], [-1, -1, -1, -1])
    r = fk.invoke(["pairs", root, "--protocol", "custom", "--cross-camera"])
    fk.assert_one_line_error(r, "--cross-camera needs camera numbers", "unknown (-1")
    assert not (root / "pairs.h5").exists()
    r = fk.invoke(["pairs", root, "--protocol", "pg2", "--cross-camera"])
    fk.assert_one_line_error(r, "--cross-camera needs camera numbers")
    assert fk.invoke(["pairs", root, "--protocol", "custom"]).exit_code == 0


def test_empty_train_pairs_is_an_error_saying_why(tmp_path):
    root = _photo_folder(tmp_path / "p", ["a", "b", "c"], [1, 2, 1])
    r = fk.invoke(["pairs", root, "--protocol", "pg2"])
    fk.assert_one_line_error(r, "split train: no pairs", "3 identities, 0 with two or more")
    assert not (root / "pairs.h5").exists()
    root = _photo_folder(tmp_path / "q", ["a", "a", "b", "b"], [1, 1, 2, 2])
    r = fk.invoke(["pairs", root, "--protocol", "pg2", "--cross-camera"])
    fk.assert_one_line_error(r, "no identity has images from two different known cameras")


def test_video_tracks_pair_only_within_their_track(tmp_path):
    ids = ["clip#1", "clip#1", "clip#2", "clip#2", "clip#2", "other#1"]
    root = _photo_folder(tmp_path / "v", ids, [0, 0, 0, 0, 0, 1])
    assert fk.invoke(["pairs", root, "--protocol", "pg2"]).exit_code == 0
    pairs = shards.read_pairs(root, "train")
    assert len(pairs) == 2 + 6
    assert all(ids[a] == ids[b] for a, b in pairs.tolist())


# ---------------------------------------------------------------- CSV edges (pairs --from-annotations)


def _annotations(path, names, kp, bom=False):
    write_defgan_annotations(path, names, kp)
    if bom:
        path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    return path


def _kp(n):
    return np.random.default_rng(0).uniform(1, 60, (n, 18, 2)).astype(np.float32)


def test_csv_bom_accepted(tmp_path):
    names = ["0001_c1s1_000001_00.jpg", "0001_c2s1_000002_00.jpg"]
    csv = _annotations(tmp_path / "a.csv", names, _kp(2), bom=True)
    out = tmp_path / "p.csv"
    r = fk.invoke(["pairs", "--from-annotations", csv, "--dataset", "market1501",
                   "--split", "train", "-o", out])  # fmt: skip
    assert r.exit_code == 0 and "train: 2 pairs" in r.output, r.output


def test_csv_duplicate_names_name_both_lines(tmp_path):
    names = ["0001_c1s1_000001_00.jpg", "0001_c2s1_000002_00.jpg", "0001_c1s1_000001_00.jpg"]
    csv = _annotations(tmp_path / "a.csv", names, _kp(3))
    r = fk.invoke(["pairs", "--from-annotations", csv, "--dataset", "market1501",
                   "--split", "train", "-o", tmp_path / "p.csv"])  # fmt: skip
    fk.assert_one_line_error(r, "lines 2 and 4", "given twice", "a.csv")
    assert not (tmp_path / "p.csv").exists()


@pytest.mark.parametrize("value", ["9" * 400, "NaN", "Infinity", "2000000", "-1e300"])
def test_csv_absurd_coordinates_are_missing(value, tmp_path):
    from pg2kit.formats import read_defgan_annotations

    names = ["0001_c1s1_000001_00.jpg", "0001_c2s1_000002_00.jpg"]
    csv = _annotations(tmp_path / "a.csv", names, _kp(2))
    lines = csv.read_text().splitlines()
    name, ys, xs = lines[1].rsplit(":", 2)
    xs = xs.replace("[", f"[{value}, ", 1).rsplit(",", 1)[0] + "]"  # first x absurd
    csv.write_text("\n".join([lines[0], f"{name}:{ys}: {xs.strip()}", lines[2]]) + "\n")
    table = read_defgan_annotations(csv)
    assert table.dropped == 1
    r = fk.invoke(["pairs", "--from-annotations", csv, "--dataset", "market1501",
                   "--split", "train", "-o", tmp_path / "p.csv"])  # fmt: skip
    assert r.exit_code == 0 and "note: 1 keypoints of" in r.output, r.output
    assert (table.keypoints[0, 0] == -1).all() and (np.abs(table.keypoints) < 1e6).all()


# ---------------------------------------------------------------- other stages through the CLI


def _failures(out):
    import csv

    with open(out / "failures.csv", encoding="utf-8") as f:
        return {row["path"].rsplit("/", 1)[-1]: row["reason"] for row in csv.DictReader(f)}


def test_prepare_cli_bad_inputs_become_rows(tmp_path):
    """prepare (helper "prep"): a decompression bomb, a 1x1 image, a non-UTF-8 file name and a
    400-digit coordinate each become a failures.csv row or a counted missing keypoint; rc 0."""
    from tests.test_prepare import CSV_ROWS, _bomb_png, _market_tree

    src = tmp_path / "in" / "Market"
    _market_tree(src, ["0002_c1s1_000451_03.jpg", "0002_c2s1_000301_01.jpg"])
    train = src / "bounding_box_train"
    _bomb_png(train / "0003_c1s1_000001_00.png", side=20000)
    import cv2

    cv2.imwrite(str(train / "0004_c1s1_000001_00.png"), np.zeros((1, 1, 3), np.uint8))
    with open(os.fsencode(str(train)) + b"/0005_c1s1_caf\xe9_00.jpg", "wb") as f:
        f.write((train / "0002_c1s1_000451_03.jpg").read_bytes())
    rows = [CSV_ROWS[0], CSV_ROWS[2].replace("[13, 26,", "[" + "9" * 400 + ", 26,", 1)]
    rows += [CSV_ROWS[0].replace("0002_c1s1_000451_03", f"000{k}_c1s1_000001_00") for k in (3, 4)]
    ann = tmp_path / "in" / "ann.csv"
    ann.write_bytes(b"\xef\xbb\xbfname:keypoints_y:keypoints_x\n" + "\n".join(rows).encode())
    out = tmp_path / "out"
    before = fk.files_under(tmp_path)
    r = fk.invoke(["prepare", "market1501", src, "-o", out, "--keypoints", ann,
                   "--workers", "1", "--quiet"])  # fmt: skip
    assert r.exit_code == 0, r.output
    reasons = _failures(out)
    assert "image too large: 20000x20000" in reasons["0003_c1s1_000001_00.png"]
    assert "image too small: 1x1" in reasons["0004_c1s1_000001_00.png"]
    assert "0005_c1s1_caf%E9_00.jpg" in reasons
    assert json.loads((out / "manifest.json").read_text())["bad_coordinates"] == 1
    outside = {p for p in fk.files_under(tmp_path) - before if out not in p.parents}
    assert not outside, outside
    assert fk.invoke(["verify", out, "--quiet"]).exit_code == 0


def test_prepare_cli_malformed_openpose_json_is_a_row(tmp_path):
    from tests.test_prepare import _market_tree

    src = tmp_path / "Market"
    names = ["0001_c1s1_000151_01.jpg", "0002_c1s1_000451_03.jpg"]
    _market_tree(src, names)
    kp_dir = tmp_path / "openpose"
    kp_dir.mkdir()
    flat = np.concatenate([np.full((18, 2), 20.0), np.full((18, 1), 0.9)], 1).ravel().tolist()
    (kp_dir / "0001_c1s1_000151_01_keypoints.json").write_text(json.dumps(
        {"people": [{"pose_keypoints_2d": flat}]}))  # fmt: skip
    (kp_dir / "0002_c1s1_000451_03_keypoints.json").write_text('{"people": [ {"pose_keyp')
    out = tmp_path / "out"
    r = fk.invoke(["prepare", "market1501", src, "-o", out, "--keypoints", kp_dir,
                   "--workers", "1", "--quiet"])  # fmt: skip
    assert r.exit_code == 0, r.output
    assert "not valid JSON" in _failures(out)["0002_c1s1_000451_03.jpg"]


def test_prepare_cli_disk_full_then_rerun(tmp_path):
    """prepare onto a full file system (a real tmpfs, root only): one line naming the shard and
    the space, exit code 1, no temporary file, no crash; after freeing space it completes."""
    with fk.small_tmpfs(tmp_path / "small", "3m") as mnt:
        if mnt is None:
            pytest.skip("needs root and tmpfs to mount a small file system")
        filler = fk.fill(mnt, leave=96 * 1024)
        args = ["prepare", "synthetic", "-o", mnt / "prep", "--ids", 6, "--poses", 4,
                "--size", "128x64", "--workers", 1, "--quiet"]  # fmt: skip
        r = fk.run_cli_subprocess(args)
        assert r.returncode == 1, (r.returncode, r.stdout[-500:], r.stderr[-2000:])
        assert "Traceback" not in r.stderr
        err = [ln for ln in r.stderr.splitlines() if ln.startswith("Error:")]
        assert len(err) == 1 and "no space left" in err[0] and "free" in err[0], r.stderr
        _check_no_tmp(mnt)
        filler.unlink()
        r = fk.run_cli_subprocess(args)
        assert r.returncode == 0, r.stderr[-2000:]
        assert shards.verify(mnt / "prep").ok


def test_export_cli_never_writes_outside(tmp_path):
    """export (helper "export"): shard names that try to leave -o are refused in one line."""
    root = fk.folder(tmp_path / "out" / "prep")
    fk.set_names(_shard0(root), ["../../../../x.png", "/tmp/x.png", "a.jpg", "b.jpg", "c.jpg"])
    before = fk.files_under(tmp_path)
    r = fk.invoke(["export", root, "-o", tmp_path / "out" / "exp", "--images", "--quiet"])
    fk.assert_one_line_error(r, "not a plain file name")
    assert not {p for p in fk.files_under(tmp_path) - before if tmp_path / "out" not in p.parents}
    assert not list(tmp_path.rglob("x.png"))


def test_prepare_cli_folder_non_utf8_name_is_no_crash(tmp_path):
    """prepare folder with a file name that is not UTF-8: escaped (%E9), never a crash or .tmp."""
    import cv2

    src = tmp_path / "src"
    (src / "id1").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in (b"a.jpg", b"caf\xe9.jpg", b"b.jpg"):
        ok, buf = cv2.imencode(".jpg", rng.integers(0, 255, (256, 128, 3), np.uint8))
        with open(os.fsencode(str(src / "id1")) + b"/" + name, "wb") as f:
            f.write(buf.tobytes())
    ys = [20, 40, 40, 80, -1, 40, 80, -1, 130, 180, 230, 130, 180, 230, 15, 15, -1, -1]
    xs = [64, 64, 44, 40, -1, 84, 88, -1, 50, 50, 50, 78, 78, 78, 60, 68, -1, -1]
    ann = tmp_path / "ann.csv"
    ann.write_text("name:keypoints_y:keypoints_x\n"
                   + "".join(f"{n}: {ys}: {xs}\n" for n in ("a.jpg", "b.jpg")))  # fmt: skip
    out = tmp_path / "out"
    r = fk.invoke(["prepare", "folder", src, "-o", out, "--keypoints", ann,
                   "--workers", "1", "--quiet"])  # fmt: skip
    assert r.exit_code == 0, r.output
    assert any("caf%E9.jpg" in p for p in _failures_paths(out))
    _check_no_tmp(out)
    assert fk.invoke(["verify", out, "--quiet"]).exit_code == 0


def _failures_paths(out):
    import csv

    with open(out / "failures.csv", encoding="utf-8") as f:
        return [row["path"] for row in csv.DictReader(f)]


@pytest.mark.parametrize(
    "cmd",
    [
        ["prepare", "synthetic", "-o", "{out}/new", "--ids", "3", "--poses", "2", "--workers",
         "1", "--quiet"],
        PAIRS,
        ["export", "{root}", "-o", "{out}/export", "--quiet"],
        ["export", "{root}", "--format", "openpose-json", "-o", "{out}/export", "--quiet"],
        ["inspect", "{root}", "-n", "2"],
    ],
    ids=["prepare", "pairs", "export defgan", "export openpose-json", "inspect"],
)  # fmt: skip
def test_injected_enospc_in_every_writer(cmd, tmp_path, monkeypatch):
    """Every command that writes: a full disk is one line, exit code 1, no temporary file."""
    root = fk.folder(tmp_path / "out" / "prep")
    monkeypatch.setattr(os, "fsync", fk.enospc)
    r = fk.invoke([a.format(root=root, out=tmp_path / "out") for a in cmd])
    fk.assert_one_line_error(r, "no space left")
    monkeypatch.undo()
    _check_no_tmp(tmp_path)


@pytest.mark.slow
def test_pairs_sigkill_at_random_points_leaves_a_consistent_folder(tmp_path):
    """Real SIGKILLs of `pg2kit pairs` while it writes a ~36 MB pairs.h5: afterwards the pairs
    every reader sees are either the old ones or the new ones, never a mix, and a re-run cleans
    up. (Marked slow: about 2 s per kill.)"""
    import signal
    import subprocess
    import sys
    import time

    root = fk.folder(tmp_path / "prep", num_ids=1, poses=1500, shard_size=500)
    old = shards.read_pairs(root, "train")
    rng = np.random.default_rng(0)
    saved = {n: (root / n).read_bytes() for n in ("pairs.h5", "manifest.json")}
    outcomes = set()
    for _ in range(6):
        for n, data in saved.items():  # each kill starts from the old pairs
            (root / n).write_bytes(data)
        proc = subprocess.Popen(
            [sys.executable, "-m", "pg2kit.cli", "pairs", str(root), "--protocol", "pg2"],
            stdout=subprocess.PIPE, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"},
        )  # fmt: skip
        for line in proc.stdout:
            if line.startswith("train:"):  # pairs computed: the writing starts now
                time.sleep(float(rng.uniform(0, 0.25)))
                break
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        m = shards.load_manifest(root)
        got = shards.read_pairs(root, "train")
        assert m["pairs"]["counts"]["train"] == len(got)
        outcomes.add("old" if m["pairs"]["protocol"] == "test" else "new")
        if m["pairs"]["protocol"] == "test":
            np.testing.assert_array_equal(got, old)
        else:
            assert len(got) == 1500 * 1499 and (got[:, 0] != got[:, 1]).all()
    assert fk.invoke(["pairs", root, "--protocol", "pg2"]).exit_code == 0
    _check_no_tmp(root)
    assert shards.verify(root).ok
    print("outcomes of the kills:", sorted(outcomes))


def test_copied_folder_is_hashed_once_and_accepted(tmp_path):
    """A copy without file times (plain `cp -r`) has new mtimes but the same bytes: the open
    hashes each shard, accepts it and records the new time, so the next open is cheap again."""
    import shutil

    root = fk.folder(tmp_path / "prep")
    copy = tmp_path / "copy"
    shutil.copytree(root, copy, copy_function=shutil.copyfile)  # contents only, new mtimes
    shard = sorted((copy / shards.SHARD_DIR).glob("*.h5"))[0]
    marker = json.loads(shards.marker_path(shard).read_text())
    assert marker["mtime_ns"] != shard.stat().st_mtime_ns
    assert fk.invoke(["inspect", copy, "--no-pictures"]).exit_code == 0
    marker = json.loads(shards.marker_path(shard).read_text())
    assert marker["mtime_ns"] == shard.stat().st_mtime_ns
    # a later in-place edit of the copy is still caught without `verify`
    _image_bytes_changed(copy)
    fk.assert_one_line_error(fk.invoke(["pairs", copy, "--protocol", "pg2"]), "sha256 differs")


def test_temporaries_of_dead_processes_are_removed_on_the_next_write(tmp_path):
    """A SIGKILL leaves `.NAME.<pid>.tmp`; the next write of NAME removes it (the process is
    gone), while a temporary of a live process is kept."""
    import subprocess
    import sys

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    target = tmp_path / "manifest.json"
    left = tmp_path / f".manifest.json.{int(dead.stdout)}.tmp"
    live = tmp_path / f".manifest.json.{os.getppid()}.tmp"
    left.write_text("half")
    live.write_text("busy")
    atomic.write_text(target, "{}")
    assert target.read_text() == "{}" and not left.exists() and live.exists()
