"""pg2kit evaluate: the CLI chain, numbers equal to direct computation, conventions, weight files."""

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from pg2kit import shards
from pg2kit.cli import cli
from pg2kit.evaluate import pose_accuracy
from pg2kit.generate import pair_file_name
from pg2kit.imageio import load_rgb


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    """prepare synthetic -> pairs -> train --preset tiny (a few steps) -> generate, via the CLI."""
    root = tmp_path_factory.mktemp("eval")
    data, run, gen = root / "data", root / "run", root / "gen"
    r = invoke("prepare", "synthetic", "-o", data, "--ids", 6, "--poses", 3, "--quiet")
    assert r.exit_code == 0, r.output
    assert invoke("pairs", data, "--protocol", "pg2").exit_code == 0
    r = invoke("train", data, "--preset", "tiny", "-o", run, "--channels", 4, "--g1-steps", 1,
               "--steps", 2, "--batch-size", 4, "--ckpt-every", 2, "--sample-every", 2)  # fmt: skip
    assert r.exit_code == 0, r.output
    r = invoke("generate", run, data, "-o", gen, "--strips", "--quiet")
    assert r.exit_code == 0, r.output
    return data, run, gen


@pytest.mark.slow
def test_chain_with_pose_accuracy(chain, tmp_path):
    data, _, gen = chain
    r = invoke("evaluate", gen, "--real", data, "--quiet", "-o", tmp_path)
    assert r.exit_code == 0, r.output
    m = json.loads((tmp_path / "metrics.json").read_text())["metrics"]
    for k in ("pckh", "pck_0.1h", "detection_rate"):
        assert k in m and "MediaPipe" in m[k]["convention"], k
    assert m["detection_rate"]["real"] == 1.0  # the synthetic figures are found


def test_chain_through_the_cli(chain):
    """The default variant skips pose accuracy (MediaPipe start-up); the slow one above runs it."""
    data, _, gen = chain
    r = invoke("evaluate", gen, "--real", data, "--quiet", "--no-pose")
    assert r.exit_code == 0, r.output
    res = json.loads((gen / "metrics.json").read_text())
    assert res["pairs"] == 6 and res["split"] == "test"
    m = res["metrics"]
    for k in ("ssim_pg2", "ssim_patn", "mask_ssim_pg2", "mask_ssim_patn", "l1", "psnr"):
        assert k in m, k
    assert "pg2" not in m["ssim_patn"]["convention"].split(":")[0]
    assert "TARGET" in m["mask_ssim_pg2"]["convention"]
    assert 0 <= m["ssim_pg2"]["value"] <= 1 and "pckh" not in m
    md = (gen / "metrics.md").read_text()
    assert "| ssim_pg2 |" in md and "IS, mask-IS, FID skipped: no --inception-weights" in md
    rows = (gen / "per_pair.csv").read_text().splitlines()
    assert rows[0].startswith("from,to,ssim_pg2") and len(rows) == 7

    # the numbers are those of the metrics on the files and the stored targets
    from skimage.metrics import structural_similarity

    names = [str(n) for n in shards.read_split_fields(data, "test", ["name"])["name"]]
    reader = shards.SplitReader(data, "test")
    ref = []
    for row in rows[1:]:
        a, b = row.split(",")[:2]
        g = load_rgb(gen / pair_file_name(a, b))
        t = reader.read("image", [names.index(b)])[0]
        ref.append(structural_similarity(g, t, win_size=7, data_range=255, channel_axis=-1))
    assert m["ssim_pg2"]["value"] == pytest.approx(np.mean(ref), abs=1e-9)


def test_strips_mask_source_and_padding(chain, tmp_path):
    data, _, gen = chain
    strips = tmp_path / "strips"
    strips.mkdir()
    for p in gen.glob("*_vis.png"):  # only the strips, as the Def-GAN/PATN scripts leave them
        (strips / p.name).write_bytes(p.read_bytes())
    r = invoke("evaluate", strips, "--real", data, "--split", "test", "--no-pose", "--quiet")
    assert r.exit_code == 0, r.output
    a = json.loads((gen / "metrics.json").read_text())["metrics"]
    b = json.loads((strips / "metrics.json").read_text())["metrics"]
    assert b["ssim_pg2"]["value"] == pytest.approx(a["ssim_pg2"]["value"], abs=1e-12)
    r = invoke("evaluate", strips, "--real", data, "--split", "test", "--no-pose", "--quiet",
               "--mask-from", "source", "--mask-kind", "defgan", "-o", tmp_path / "src")  # fmt: skip
    assert r.exit_code == 0, r.output
    c = json.loads((tmp_path / "src" / "metrics.json").read_text())["metrics"]
    assert (
        "SOURCE" in c["mask_ssim_pg2"]["convention"]
        and "Def-GAN" in c["mask_ssim_pg2"]["convention"]
    )
    assert c["mask_ssim_pg2"]["value"] != pytest.approx(b["mask_ssim_pg2"]["value"], abs=1e-6)
    assert c["ssim_pg2"]["value"] == pytest.approx(b["ssim_pg2"]["value"], abs=1e-12)
    r = invoke("evaluate", strips, "--real", data, "--split", "test", "--no-pose", "--quiet",
               "--pad-to-256", "-o", tmp_path / "pad")  # fmt: skip
    assert r.exit_code == 0, r.output
    d = json.loads((tmp_path / "pad" / "metrics.json").read_text())
    assert d["padded_to_256"] and "inflates SSIM" in d["metrics"]["ssim_pg2"]["convention"]
    assert d["metrics"]["ssim_pg2"]["value"] > b["ssim_pg2"]["value"]  # white margins match


def test_real_image_folder_with_annotations(chain, tmp_path):
    """--real as a plain folder of images + a Def-GAN annotation CSV (as the community has it)."""
    from pg2kit import viz
    from pg2kit.formats import write_defgan_annotations

    data, _, gen = chain
    f = shards.read_split_fields(data, "test", ["name", "image", "keypoints"])
    real = tmp_path / "real"
    for n, img in zip(f["name"], f["image"], strict=True):
        viz.save_png(real / (str(n)[:-4] + ".png"), img)  # other extension: matched by stem
    write_defgan_annotations(tmp_path / "ann.csv", [str(n) for n in f["name"]], f["keypoints"])
    r = invoke("evaluate", gen, "--real", real, "--annotations", tmp_path / "ann.csv",
               "--no-pose", "--quiet", "-o", tmp_path / "out")  # fmt: skip
    assert r.exit_code == 0, r.output
    a = json.loads((gen / "metrics.json").read_text())["metrics"]
    b = json.loads((tmp_path / "out" / "metrics.json").read_text())["metrics"]
    assert b["ssim_pg2"]["value"] == pytest.approx(a["ssim_pg2"]["value"], abs=1e-12)
    # integer keypoints of the CSV move the masks by < 1 px: close, not equal
    assert b["mask_ssim_pg2"]["value"] == pytest.approx(a["mask_ssim_pg2"]["value"], abs=0.05)


def test_weight_files_missing_and_present(chain, tmp_path):
    from pg2kit.nets.lpips import LPIPSAlex

    data, _, gen = chain
    missing = tmp_path / "pt_inception-2015-12-05-6726825d.pth"
    torch.manual_seed(0)
    net = LPIPSAlex()
    sd = {f"lin{i}.model.1.weight": lin.weight.abs() for i, lin in enumerate(net.lin)}
    sd.update({f"features.{k}": v for k, v in net.features.state_dict().items()})
    torch.save(sd, tmp_path / "lpips_alex_combined.pth")
    r = invoke("evaluate", gen, "--real", data, "--no-pose", "--quiet", "-o", tmp_path / "o",
               "--inception-weights", missing, "--lpips-weights",
               tmp_path / "lpips_alex_combined.pth")  # fmt: skip
    assert r.exit_code == 0, r.output
    res = json.loads((tmp_path / "o" / "metrics.json").read_text())
    note = [n for n in res["notes"] if "IS, mask-IS, FID skipped" in n]
    assert len(note) == 1 and str(missing) in note[0] and "pytorch-fid" in note[0]
    assert "\n" not in note[0]
    assert "lpips" in res["metrics"] and res["metrics"]["lpips"]["value"] > 0
    assert "ssim_pg2" in res["metrics"] and "is" not in res["metrics"]


@pytest.mark.slow
def test_inception_metrics_in_evaluate(chain, tmp_path):
    from pg2kit.nets.inception import InceptionV3TF

    data, _, gen = chain
    torch.manual_seed(0)
    torch.save(InceptionV3TF().state_dict(), tmp_path / "inc.pth")
    r = invoke("evaluate", gen, "--real", data, "--no-pose", "--quiet", "-o", tmp_path / "o",
               "--inception-weights", tmp_path / "inc.pth", "--is-splits", 2)  # fmt: skip
    assert r.exit_code == 0, r.output
    m = json.loads((tmp_path / "o" / "metrics.json").read_text())["metrics"]
    assert m["is"]["value"] >= 1 and m["mask_is"]["value"] >= 1 and m["fid"]["value"] > 0
    assert "train" in m["fid"]["convention"]
    assert list(gen.glob("fid_reference-*.npz"))  # reference statistics cached


def test_pose_accuracy_by_hand():
    ref = np.full((2, 18, 2), -1.0)
    ref[:, 0] = [50, 20]  # nose
    ref[:, 14], ref[:, 15] = [45, 16], [55, 16]  # eyes: head box 10 x 4 -> head size 10
    ref[:, 2], ref[:, 5] = [40, 40], [60, 40]
    pred = ref.copy()
    pred[0, 2] += [4, 0]  # 4 px: within 0.5 x 10 (PCKh) and within 0.1 x 128 (PCK)
    pred[0, 5] += [6, 0]  # 6 px: wrong for PCKh, right for PCK@0.1H
    pred[1] = -1  # nothing found on the second generated image
    acc = pose_accuracy(pred, ref, height=128)
    assert acc["keypoints_compared"] == 5
    assert acc["pckh"] == pytest.approx(4 / 5) and acc["pck_0.1h"] == pytest.approx(1.0)
    assert acc["detection_rate_generated"] == 0.5 and acc["detection_rate_real"] == 1.0
