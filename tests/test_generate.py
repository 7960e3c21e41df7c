"""pg2kit generate: pairs of a prepared folder or a pairs CSV, resumable files, one photo + a pose."""

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from pg2kit.cli import cli
from pg2kit.generate import (
    load_generator,
    pair_file_name,
    parse_pair_file_name,
    to_uint8,
)
from pg2kit.imageio import load_rgb
from pg2kit.models import Arch, build_models


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """A synthetic prepared folder (6 identities x 3 poses; 1 held-out identity) with pairs."""
    data = tmp_path_factory.mktemp("gen") / "data"
    r = invoke("prepare", "synthetic", "-o", data, "--ids", 6, "--poses", 3, "--quiet")
    assert r.exit_code == 0, r.output
    r = invoke("pairs", data, "--protocol", "pg2")
    assert r.exit_code == 0, r.output
    return data


def make_checkpoint(path, step=4, g1_steps=2, seed=0):
    """A checkpoint as train saves it, of small random networks (no training needed)."""
    torch.manual_seed(seed)
    arch = Arch(height=128, width=64, channels=4, repeat=5, disc_channels=4)
    g1, g2, disc = build_models(arch)
    torch.save(
        {"format": 1, "step": step, "arch": arch.to_dict(),
         "config": {"g1_steps": g1_steps, "stage": "both", "map_kind": "disk", "map_radius": 4},
         "g1": g1.state_dict(), "g2": g2.state_dict(), "disc": disc.state_dict()},
        path,
    )  # fmt: skip
    return path


def test_names_and_quantisation():
    assert pair_file_name("a.jpg", "b.jpg") == "a.jpg___b.jpg.png"
    assert parse_pair_file_name("a.jpg___b.jpg_vis.png") == ("a.jpg", "b.jpg", "vis")
    assert parse_pair_file_name("a___b_coarse.png") == ("a", "b", "coarse")
    assert parse_pair_file_name("metrics.json") is None
    x = torch.tensor([-1.0, -0.999, 0.0, 0.5, 1.2]).view(1, 1, 1, 5).expand(1, 3, 1, 5)
    # (x + 1) * 127.5 = 0, 0.1275, 127.5, 191.25, 255 (clipped)
    assert to_uint8(x, "round")[0, 0, :, 0].tolist() == [0, 0, 128, 191, 255]
    assert to_uint8(x, "truncate")[0, 0, :, 0].tolist() == [0, 0, 127, 191, 255]


def test_generate_test_pairs_resumable(prepared, tmp_path):
    ckpt = make_checkpoint(tmp_path / "ckpt-0000004.pt")
    out = tmp_path / "gen"
    r = invoke("generate", ckpt, prepared, "-o", out, "--strips", "--coarse", "--quiet")
    assert r.exit_code == 0, r.output
    info = json.loads((out / "generate.json").read_text())
    assert info["pairs"] == 6 and info["generated_now"] == 6 and info["stage2"] is True
    plain = sorted(p for p in out.glob("*.png") if parse_pair_file_name(p.name)[2] == "")
    assert len(plain) == 6 and len(list(out.glob("*_vis.png"))) == 6
    assert load_rgb(plain[0]).shape == (128, 64, 3)
    vis = load_rgb(next(out.glob("*_vis.png")))
    assert vis.shape == (128, 5 * 64, 3)
    # the strip's last panel is the generated image, its third the real target
    a, b, _ = parse_pair_file_name(plain[0].name)
    assert np.array_equal(load_rgb(out / pair_file_name(a, b, "_vis"))[:, 256:], load_rgb(plain[0]))
    # the same model gives the same pixels through the Python API
    gen = load_generator(ckpt)
    assert gen.stage2 and gen.size == (128, 64)
    # resumable: a second run generates nothing; a deleted file is made again
    plain[0].unlink()
    r = invoke("generate", ckpt, prepared, "-o", out, "--strips", "--coarse", "--quiet")
    assert r.exit_code == 0, r.output
    info = json.loads((out / "generate.json").read_text())
    assert info["generated_now"] == 1 and info["skipped_existing"] == 5
    assert plain[0].exists()


def test_generate_from_run_folder_limit_and_truncate(prepared, tmp_path):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    make_checkpoint(run / "checkpoints" / "ckpt-0000002.pt", step=2, seed=1)  # stage I only
    make_checkpoint(run / "checkpoints" / "ckpt-0000004.pt", step=4, seed=2)
    r = invoke("generate", run, prepared, "-o", tmp_path / "g", "--limit", 2, "--quantise",
               "truncate", "--quiet")  # fmt: skip
    assert r.exit_code == 0, r.output
    info = json.loads((tmp_path / "g" / "generate.json").read_text())
    assert info["checkpoint"].endswith("ckpt-0000004.pt") and info["pairs"] == 2
    assert info["quantise"] == "truncate"
    assert not load_generator(run / "checkpoints" / "ckpt-0000002.pt").stage2


def test_pairs_csv_known_and_unknown_names(prepared, tmp_path):
    from pg2kit import shards

    names = [str(n) for n in shards.read_split_fields(prepared, "test", ["name"])["name"]]
    ckpt = make_checkpoint(tmp_path / "c.pt")
    good = tmp_path / "pairs.csv"
    # the second name is matched by its stem (community files may use another extension)
    good.write_text(f"from,to\n{names[0]},{names[1][:-4]}.png\n")
    r = invoke("generate", ckpt, prepared, "-o", tmp_path / "g", "--pairs", good, "--quiet")
    assert r.exit_code == 0, r.output
    assert (tmp_path / "g" / pair_file_name(names[0], names[1])).exists()
    bad = tmp_path / "bad.csv"
    bad.write_text(f"from,to\n{names[0]},0099_c1s1_000000_00.jpg\n")
    r = invoke("generate", ckpt, prepared, "-o", tmp_path / "g2", "--pairs", bad)
    assert r.exit_code == 1 and "Traceback" not in r.output
    assert "bad.csv" in r.output and "0099_c1s1_000000_00.jpg" in r.output
    assert "not in the split" in r.output and len(r.output.strip().splitlines()) == 1
    r = invoke("generate", tmp_path / "nothing.pt", prepared, "-o", tmp_path / "g3")
    assert r.exit_code == 1 and "no such checkpoint" in r.output


def _openpose_json(path, kp):
    flat = []
    for x, y in kp:
        flat += [float(x), float(y), 0.9] if x >= 0 else [0.0, 0.0, 0.0]
    path.write_text(json.dumps({"version": 1.3, "people": [{"pose_keypoints_2d": flat}]}))
    return path


def test_one_photo_into_a_new_pose(prepared, tmp_path):
    """A synthetic figure pasted into a larger photo; its keypoints and the target pose are
    OpenPose JSON files (the imported-keypoints path: no estimator needed)."""
    from pg2kit import shards, viz

    fields = shards.read_split_fields(prepared, "train", ["image", "keypoints"])
    person, kp = fields["image"][0], fields["keypoints"][0]
    photo = np.full((400, 300, 3), 200, np.uint8)
    big = np.repeat(np.repeat(person, 2, 0), 2, 1)  # 256x128, pasted at (x 80, y 70)
    photo[70:326, 80:208] = big
    photo_kp = np.where(kp >= 0, kp * 2 + 0.5 + [80, 70], -1)
    viz.save_png(tmp_path / "me.png", photo)
    src_json = _openpose_json(tmp_path / "me_keypoints.json", photo_kp)
    target_kp = fields["keypoints"][5] * 3 + 10  # another pose, in another frame
    pose_json = _openpose_json(tmp_path / "pose.json", np.where(fields["keypoints"][5] >= 0,
                                                                target_kp, -1))  # fmt: skip
    ckpt = make_checkpoint(tmp_path / "c.pt")
    out = tmp_path / "out.png"
    r = invoke("generate", ckpt, "--source", tmp_path / "me.png", "--source-keypoints", src_json,
               "--pose", pose_json, "-o", out, "--strip")  # fmt: skip
    assert r.exit_code == 0, r.output
    assert load_rgb(out).shape == (128, 64, 3)
    assert load_rgb(tmp_path / "out_vis.png").shape == (128, 4 * 64, 3)
    r = invoke("generate", ckpt, "--source", tmp_path / "me.png", "--pose", tmp_path / "x.json",
               "--source-keypoints", src_json, "-o", out)  # fmt: skip
    assert r.exit_code == 1 and "x.json" in r.output and "Traceback" not in r.output
    r = invoke("generate", ckpt, "--source", tmp_path / "me.png", "-o", out)
    assert r.exit_code == 2 and "--pose" in r.output


def test_one_photo_with_estimated_keypoints(prepared, tmp_path):
    """Source and target are plain photos (no keypoint files): both go through prepare folder's
    person finding and the bundled estimator; a photo with nobody in it is one clear line."""
    pytest.importorskip("mediapipe")
    from pg2kit import shards, viz
    from pg2kit.generate import frame_photo

    fields = shards.read_split_fields(prepared, "train", ["image", "keypoints"])

    def photo(i, x, y):
        p = np.full((480, 360, 3), 200, np.uint8)
        p[y : y + 256, x : x + 128] = np.repeat(np.repeat(fields["image"][i], 2, 0), 2, 1)
        return p

    me, pose = photo(0, 100, 90), photo(5, 60, 150)
    crop, kp = frame_photo(me, (128, 64))
    assert crop.shape == (128, 64, 3) and (kp[:, 0] >= 0).sum() >= 12
    # the crop is the figure: the pasted person fills the frame's middle, background is cut
    person = np.abs(crop.astype(int) - 200).sum(-1) > 30
    assert person[16:112, 16:48].mean() > 0.5
    # its keypoints are the figure's: the same layout as the stored ones, up to scale/shift
    ref = fields["keypoints"][0]
    both = (kp[:, 0] >= 0) & (ref[:, 0] >= 0)
    a, b = kp[both] - kp[both].mean(0), ref[both] - ref[both].mean(0)
    assert np.corrcoef(a.ravel(), b.ravel())[0, 1] > 0.95
    viz.save_png(tmp_path / "me.png", me)
    viz.save_png(tmp_path / "pose.png", pose)
    viz.save_png(tmp_path / "empty.png", np.full((480, 360, 3), 200, np.uint8))
    ckpt = make_checkpoint(tmp_path / "c.pt")
    out = tmp_path / "out.png"
    r = invoke("generate", ckpt, "--source", tmp_path / "me.png", "--pose", tmp_path / "pose.png",
               "-o", out, "--strip")  # fmt: skip
    assert r.exit_code == 0, r.output
    assert load_rgb(out).shape == (128, 64, 3)
    assert load_rgb(tmp_path / "out_vis.png").shape == (128, 4 * 64, 3)
    r = invoke("generate", ckpt, "--source", tmp_path / "me.png", "--pose",
               tmp_path / "empty.png", "-o", out)  # fmt: skip
    assert r.exit_code == 1 and "empty.png: no person found" in r.output, r.output
    assert "Traceback" not in r.output
