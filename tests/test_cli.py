"""The whole chain through the CLI on a tiny synthetic set: prepare -> pairs -> train -> inspect."""

import json

import h5py
import numpy as np
from click.testing import CliRunner

from pg2kit.cli import cli


def invoke(*args):
    result = CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)
    return result


def test_prepare_pairs_train_inspect_export(tmp_path):
    data = tmp_path / "prepared"
    r = invoke("prepare", "synthetic", "-o", data, "--ids", 6, "--poses", 3, "--quiet")
    assert r.exit_code == 0, r.output
    assert "train: 15 samples" in r.output and "test: 3 samples" in r.output
    r = invoke("pairs", data, "--protocol", "pg2")
    assert r.exit_code == 0, r.output
    with h5py.File(data / "pairs.h5") as f:
        train_pairs = f["train"][...]
    assert len(train_pairs) == 5 * 3 * 2  # 5 identities x 3 poses: 3*2 ordered pairs each
    run = tmp_path / "run"
    r = invoke("train", data, "--preset", "tiny", "-o", run, "--channels", 4, "--g1-steps", 2,
               "--steps", 4, "--batch-size", 4, "--ckpt-every", 2, "--sample-every", 4,
               "--log-every", 2)  # fmt: skip
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in (run / "checkpoints").iterdir())[-1] == "ckpt-0000004.pt"
    assert (run / "samples" / "step-0000004.png").exists()
    stats = [json.loads(line) for line in (run / "stats.jsonl").read_text().splitlines()]
    assert [s["step"] for s in stats] == [2, 4] and "g1_l1" in stats[0] and "d" in stats[1]
    assert all(np.isfinite(v) for s in stats for v in s.values())
    r = invoke("inspect", data, "-n", 4)
    assert r.exit_code == 0, r.output
    assert "pairs: protocol pg2" in r.output
    assert (data / "inspect" / "contact_sheet.png").exists()
    assert (data / "inspect" / "pair_samples_train.png").exists()
    # re-running prepare on finished shards keeps the pairs and their manifest entry
    r = invoke("prepare", "synthetic", "-o", data, "--ids", 6, "--poses", 3, "--quiet")
    assert r.exit_code == 0 and "resuming: 2 finished shard(s) kept, 0 to do" in r.output
    assert json.loads((data / "manifest.json").read_text())["pairs"]["counts"]["train"] == 30
    r = invoke("export", data, "-o", tmp_path / "csv", "--quiet")
    assert r.exit_code == 0, r.output
    rows = (tmp_path / "csv" / "synthetic-annotation-train.csv").read_text().splitlines()
    assert rows[0] == "name:keypoints_y:keypoints_x" and len(rows) == 16
    pairs_rows = (tmp_path / "csv" / "synthetic-pairs-train.csv").read_text().splitlines()
    assert pairs_rows[0] == "from,to" and len(pairs_rows) == 31


def test_user_errors_are_one_line(tmp_path):
    r = invoke("inspect", tmp_path)
    assert r.exit_code != 0 and "no manifest.json" in r.output and "Traceback" not in r.output
    r = invoke("prepare", "market1501", tmp_path, "-o", tmp_path / "out")
    assert r.exit_code != 0 and "Error" in r.output and "Traceback" not in r.output
    r = invoke("prepare", "synthetic", tmp_path, "-o", tmp_path / "out")
    assert r.exit_code == 2 and "synthetic takes no SRC" in r.output
    r = invoke("train", tmp_path, "--preset", "tiny", "-o", tmp_path / "run")
    assert r.exit_code != 0 and "Traceback" not in r.output
    assert not (tmp_path / "run").exists()
