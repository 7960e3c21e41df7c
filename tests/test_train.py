"""Trainer: CLI end to end, resume after an interruption, DDP on CPU, bad inputs, NaN stop."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from pg2kit import train as T
from pg2kit.commands.train import train as train_cmd
from tests._shardfactory import make_prepared

FAST = ["--preset", "tiny", "--channels", "4", "--log-every", "2", "--seed", "0"]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return make_prepared(tmp_path_factory.mktemp("prep"), num_ids=3, poses=3, size=(32, 16))


def run(args):
    result = CliRunner().invoke(train_cmd, [str(a) for a in args])
    return result


def cfg(folder, run_dir, **kw):
    base = dict(data=folder, run_dir=run_dir, channels=4, disc_channels=4, batch_size=4)
    return T.make_config("tiny", **{**base, **kw})


def test_cli_end_to_end(folder, tmp_path):
    out = tmp_path / "run"
    r = run([folder, "-o", out, *FAST, "--g1-steps", 4, "--steps", 8, "--ckpt-every", 4,
             "--sample-every", 4, "--batch-size", 4])  # fmt: skip
    assert r.exit_code == 0, r.output
    assert "step 8/8 [g2]" in r.output and "samples/s" in r.output
    names = sorted(p.name for p in (out / "checkpoints").iterdir())
    assert names == ["ckpt-0000004.pt", "ckpt-0000008.pt"]
    ck = torch.load(out / "checkpoints" / "ckpt-0000008.pt", weights_only=True)
    assert ck["step"] == 8 and ck["config"]["channels"] == 4 and "opt_g2" in ck
    assert "opt_g1" in torch.load(out / "checkpoints" / "ckpt-0000004.pt", weights_only=True)
    stats = [json.loads(x) for x in (out / "stats.jsonl").read_text().splitlines()]
    assert [s["step"] for s in stats] == [2, 4, 6, 8] and "d" in stats[-1]
    assert (out / "log.txt").read_text().count("step ") >= 4
    assert json.loads((out / "config.json").read_text())["arch"]["repeat"] == 3
    assert sorted(p.name for p in (out / "samples").iterdir()) == [
        "step-0000004.png",
        "step-0000008.png",
    ]
    # repeating the command resumes and finds nothing left to do
    r = run([folder, "-o", out, *FAST, "--g1-steps", 4, "--steps", 8, "--batch-size", 4])
    assert r.exit_code == 0 and "nothing to do" in r.output


def test_dry_run_prints_config_and_writes_nothing(folder, tmp_path):
    r = run([folder, "-o", tmp_path / "run", "--preset", "market1501", "--lambda", 3, "--dry-run"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    assert out["batch_size"] == 16 and out["l1_lambda"] == 3 and out["total_steps"] == 60_000
    assert out["arch"]["height"] == 32 and out["lr"] == 2e-5 and out["betas"] == [0.5, 0.999]
    assert not (tmp_path / "run").exists()


def assert_same_state(a, b, path=""):
    if isinstance(a, dict):
        assert a.keys() == b.keys(), path
        for k in a:
            assert_same_state(a[k], b[k], f"{path}/{k}")
    elif isinstance(a, torch.Tensor):
        assert torch.equal(a, b), path
    elif isinstance(a, list | tuple):
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_same_state(x, y, f"{path}/{i}")
    else:
        assert a == b, path


def test_interrupted_run_resumes_with_same_state(folder, tmp_path):
    kw = dict(
        g1_steps=4, total_steps=10, ckpt_every=3, log_every=1, sample_every=100, keep_checkpoints=0
    )
    T.train(cfg(folder, tmp_path / "straight", **kw))
    # killed after the checkpoint at step 6 (stage II already begun), before the one at 9
    T.train(cfg(folder, tmp_path / "broken", **kw), stop_after=8)
    ckpts = [p.name for p in T.find_checkpoints(tmp_path / "broken")]
    assert ckpts == ["ckpt-0000003.pt", "ckpt-0000004.pt", "ckpt-0000006.pt"]
    T.train(cfg(folder, tmp_path / "broken", **kw))
    log = (tmp_path / "broken" / "log.txt").read_text()
    assert "resumed from" in log and "at step 6" in log
    for step in (6, 9, 10):
        a = torch.load(tmp_path / "straight" / f"checkpoints/ckpt-{step:07d}.pt", weights_only=True)
        b = torch.load(tmp_path / "broken" / f"checkpoints/ckpt-{step:07d}.pt", weights_only=True)
        a["config"].pop("run_dir"), b["config"].pop("run_dir")
        assert "opt_g2" in a and "opt_disc" in a
        assert_same_state(a, b)
    # and training moved the weights at all
    first = torch.load(tmp_path / "straight/checkpoints/ckpt-0000003.pt", weights_only=True)
    last = torch.load(tmp_path / "straight/checkpoints/ckpt-0000010.pt", weights_only=True)
    assert not torch.equal(first["g1"]["stem.weight"], last["g1"]["stem.weight"])


def test_stage_g2_from_a_given_g1_checkpoint(folder, tmp_path):
    T.train(cfg(folder, tmp_path / "g1", stage="g1", g1_steps=3, ckpt_every=3))
    g1_ckpt = tmp_path / "g1/checkpoints/ckpt-0000003.pt"
    c = cfg(folder, tmp_path / "g2", stage="g2", g1_steps=3, total_steps=5, g1_checkpoint=g1_ckpt)
    T.train(c)
    a = torch.load(g1_ckpt, weights_only=True)
    b = torch.load(tmp_path / "g2/checkpoints/ckpt-0000005.pt", weights_only=True)
    assert_same_state(a["g1"], b["g1"])  # G1 stays frozen in stage II
    with pytest.raises(T.TrainError, match="needs G1 weights"):
        T.train(cfg(folder, tmp_path / "none", stage="g2", g1_steps=3, total_steps=5))


def test_bad_inputs_give_clear_errors_and_leave_no_run(folder, tmp_path):
    nopairs = make_prepared(tmp_path / "np", with_pairs=False)
    r = run([nopairs, "-o", tmp_path / "r1", *FAST])
    assert r.exit_code == 1 and "pairs.h5" in r.output and "Traceback" not in r.output
    assert not (tmp_path / "r1").exists()

    old = make_prepared(tmp_path / "old", schema_version=7)
    r = run([old, "-o", tmp_path / "r2", *FAST])
    assert r.exit_code == 1 and "schema version 7" in r.output
    assert not (tmp_path / "r2").exists()

    odd = make_prepared(tmp_path / "odd", size=(32, 18))
    r = run([odd, "-o", tmp_path / "r3", *FAST])
    assert r.exit_code == 1 and "not divisible" in r.output
    assert not (tmp_path / "r3").exists()

    r = run([folder, "-o", tmp_path / "r4", *FAST, "--g1-steps", 5, "--steps", 5])
    assert r.exit_code == 1 and "must exceed" in r.output


def test_checkpoint_of_another_architecture_is_refused(folder, tmp_path):
    out = tmp_path / "run"
    T.train(cfg(folder, out, stage="g1", g1_steps=2, ckpt_every=2))
    before = (out / "config.json").read_text()
    r = run([folder, "-o", out, *FAST, "--channels", 8, "--stage", "g1", "--g1-steps", 4])
    assert r.exit_code == 1 and "another architecture" in r.output and "channels 4 vs 8" in r.output
    assert (out / "config.json").read_text() == before
    assert [p.name for p in T.find_checkpoints(out)] == ["ckpt-0000002.pt"]


def test_nan_loss_stops_and_keeps_last_good_checkpoint(folder, tmp_path, monkeypatch):
    calls = {"n": 0}
    real_l1 = T.masked_l1

    def poisoned(x, y, m):
        calls["n"] += 1
        loss = real_l1(x, y, m)
        return loss * float("nan") if calls["n"] > 5 else loss

    monkeypatch.setattr(T, "masked_l1", poisoned)
    out = tmp_path / "run"
    with pytest.raises(T.TrainError, match="NaN"):
        T.train(cfg(folder, out, stage="g1", g1_steps=20, ckpt_every=2, log_every=1))
    ckpts = T.find_checkpoints(out)
    assert [p.name for p in ckpts] == ["ckpt-0000002.pt", "ckpt-0000004.pt"]
    ck = T.load_checkpoint(ckpts[-1])
    assert all(torch.isfinite(v).all() for v in ck["g1"].values())


@pytest.mark.slow
def test_ddp_two_processes_gloo(folder, tmp_path):
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).parents[1])}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "pg2kit.commands.train", str(folder), "-o", str(out), *FAST,
           "--batch-size", "2", "--g1-steps", "3", "--steps", "6"]  # fmt: skip
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout + p.stderr
    check = json.loads((out / "ddp_check.json").read_text())
    assert len(check["rank_digests"]) == 2 and check["identical"]
    assert len(set(check["rank_digests"])) == 1
    ck = torch.load(out / "checkpoints/ckpt-0000006.pt", weights_only=True)
    assert ck["step"] == 6
    # each rank took 2 pairs per step: the log reports 2 processes
    assert "2 process(es)" in (out / "log.txt").read_text()
