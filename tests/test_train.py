"""Trainer: CLI end to end, resume after an interruption, DDP on CPU, bad inputs, NaN stop."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
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


# ---------------------------------------------------------------- issue 9 / issue 8 (train side)


def test_presets_adv_weight_and_dry_run_param_counts(folder, tmp_path):
    assert T.make_config("market1501").adv_weight == 1.0
    assert T.make_config("deepfashion").adv_weight == 0.5  # SPEC 6: public code's effective weight
    r = run([folder, "-o", tmp_path / "run", *FAST, "--dry-run"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    from pg2kit.models import Arch, param_counts

    assert out["param_counts"] == param_counts(Arch(**out["arch"]))
    assert set(out["param_counts"]) == {"g1", "g2", "disc"}
    assert out["map_kind"] == "disk" and out["maps_from"]["kind"] == "data"
    assert out["precision"] == "fp32" and out["compile"] == "none"


@pytest.fixture(scope="module")
def gaussian_folder(tmp_path_factory):
    """A prepared folder whose shards say map_kind gaussian, sigma 3 (as `prepare --maps`)."""
    from pg2kit import shards

    real = shards.write_shard

    def write_shard(path, arrays, attrs, *a, **kw):
        return real(path, arrays, {**attrs, "map_kind": "gaussian", "map_sigma": 3.0}, *a, **kw)

    mp = pytest.MonkeyPatch()
    mp.setattr(shards, "write_shard", write_shard)
    try:
        return make_prepared(tmp_path_factory.mktemp("gauss"), num_ids=3, poses=3, size=(32, 16))
    finally:
        mp.undo()


def test_gaussian_folder_trains_with_gaussian_maps_without_flags(gaussian_folder, tmp_path,
                                                                 monkeypatch):  # fmt: skip
    seen = []
    real = T.pose_input

    def spy(kp, height, width, kind="disk", radius=4, sigma=6.0):
        out = real(kp, height, width, kind, radius, sigma)
        seen.append((kind, sigma, out))
        return out

    monkeypatch.setattr(T, "pose_input", spy)
    out = tmp_path / "run"
    T.train(cfg(gaussian_folder, out, stage="g1", g1_steps=2, ckpt_every=2))
    assert seen and all(k == "gaussian" and s == 3.0 for k, s, _ in seen)
    maps = seen[0][2]  # Gaussians: values strictly between -1 and 1 occur (disks are {-1, 1})
    assert ((maps > -0.99) & (maps < 0.99)).any()
    conf = json.loads((out / "config.json").read_text())
    assert conf["map_kind"] == "gaussian" and conf["map_sigma"] == 3.0
    assert conf["maps"]["from"] == {"kind": "data", "radius": "data", "sigma": "data"}
    ck = T.load_checkpoint(T.find_checkpoints(out)[-1])
    assert ck["config"]["map_kind"] == "gaussian" and ck["maps"]["kind"] == "gaussian"
    # a flag overrides the folder, and the config says so
    seen.clear()
    T.train(cfg(gaussian_folder, tmp_path / "r2", stage="g1", g1_steps=1, map_kind="disk"))
    assert seen and all(k == "disk" for k, _, _ in seen)
    conf = json.loads((tmp_path / "r2" / "config.json").read_text())
    assert conf["maps"]["from"]["kind"] == "flag" and conf["maps"]["from"]["sigma"] == "data"


def test_second_run_on_a_locked_run_folder_exits_1(folder, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    fd = T.lock_run_folder(out)  # another run holds the folder
    try:
        r = run([folder, "-o", out, *FAST, "--stage", "g1", "--g1-steps", 2])
        assert r.exit_code == 1 and "another `pg2kit train` is running" in r.output
        assert "Traceback" not in r.output and len(r.output.strip().splitlines()) == 1
        assert not (out / "config.json").exists()
    finally:
        os.close(fd)
    # a process that dies (SIGKILL) releases the lock
    code = f"from pg2kit.train import lock_run_folder; lock_run_folder({str(out)!r}); " \
           "import os, signal; os.kill(os.getpid(), signal.SIGKILL)"  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])}
    assert subprocess.run([sys.executable, "-c", code], env=env).returncode == -9
    os.close(T.lock_run_folder(out))


def test_resume_truncates_stats_log_and_tensorboard(folder, tmp_path):
    kw = dict(g1_steps=3, total_steps=8, ckpt_every=4, log_every=1, sample_every=2)
    out = tmp_path / "run"
    T.train(cfg(folder, out, **kw), stop_after=6)  # killed at 6, newest checkpoint 4
    T.train(cfg(folder, out, **kw))
    stats = [json.loads(x)["step"] for x in (out / "stats.jsonl").read_text().splitlines()]
    assert stats == list(range(1, 9))  # steps 5, 6 logged once, not twice
    log = (out / "log.txt").read_text()
    assert log.count("step 5/8") == 1 and log.count("step 6/8") == 1
    assert "dropped 2 row(s) past step 4" in log
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    ea = EventAccumulator(str(out / "tb"))
    ea.Reload()
    steps = [e.step for e in ea.Scalars("loss/g2_l1")]
    assert steps == [4, 5, 6, 7, 8]


def test_truncated_newest_checkpoint_falls_back_with_a_warning(folder, tmp_path):
    kw = dict(stage="g1", ckpt_every=2, log_every=1, keep_checkpoints=0)
    out = tmp_path / "run"
    T.train(cfg(folder, out, g1_steps=4, **kw))
    newest = out / "checkpoints" / "ckpt-0000004.pt"
    newest.write_bytes(newest.read_bytes()[:1000])  # a torn write
    T.train(cfg(folder, out, g1_steps=6, **kw))
    log = (out / "log.txt").read_text()
    assert f"skipping unreadable checkpoint {newest}" in log
    assert "ckpt-0000002.pt at step 2" in log
    assert T.load_checkpoint(out / "checkpoints" / "ckpt-0000006.pt")["step"] == 6
    assert T.load_checkpoint(newest)["step"] == 4  # rewritten by the resumed run


def test_disk_full_while_saving_a_checkpoint(folder, tmp_path, monkeypatch):
    import errno

    real_save = torch.save

    def full(obj, f, *a, **kw):
        f.write(b"x" * 1000)  # part of the checkpoint reached the disk
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", full)
    out = tmp_path / "run"
    r = run([folder, "-o", out, *FAST, "--stage", "g1", "--g1-steps", 4, "--ckpt-every", 2,
             "--batch-size", 4])  # fmt: skip
    monkeypatch.setattr(torch, "save", real_save)
    assert r.exit_code == 1, r.output
    last = r.output.strip().splitlines()[-1]
    assert last.startswith("Error: cannot write ") and "ckpt-0000002.pt" in last
    assert "no space left" in last and "free" in last and "Traceback" not in r.output
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == []  # no *.tmp left


def test_verify_finds_a_damaged_shard(tmp_path):
    import shutil

    src = make_prepared(tmp_path / "prep", num_ids=3, poses=3)
    shard = sorted((src / "shards").glob("*.h5"))[0]
    data = bytearray(shard.read_bytes())
    data[-10] ^= 0xFF  # same size, other bytes
    shard.write_bytes(bytes(data))
    r = run([src, "-o", tmp_path / "run", *FAST, "--stage", "g1", "--g1-steps", 1, "--verify"])
    assert r.exit_code == 1 and shard.name in r.output and "sha256" in r.output
    assert not (tmp_path / "run").exists()
    shutil.rmtree(src)


def _tiny_steps(folder, compile_mode, channels_last=False, plain_backward=False):
    from pg2kit.data import PairBatches, inspect_split

    info = inspect_split(folder)
    c, _ = T.resolve_config(cfg(folder, "unused", compile=compile_mode, channels_last=channels_last),
                            info, torch.device("cpu"))  # fmt: skip
    arch = T.arch_for(c, info)
    torch.manual_seed(0)
    from pg2kit.models import build_models

    fmt = torch.channels_last if channels_last else torch.contiguous_format
    nets = dict(zip(("g1", "g2", "disc"), (m.to(memory_format=fmt) for m in build_models(arch)),
                    strict=True))  # fmt: skip
    steps = T.Steps(nets, T.make_optimizers(nets, c), c, arch, torch.device("cpu"),
                    plain_backward=plain_backward)  # fmt: skip
    ds = PairBatches(folder).load()
    batch = T.to_device(ds[np.array([[0, 0], [5, 1], [9, 0], [13, 1]])], torch.device("cpu"),
                        channels_last)  # fmt: skip
    return steps, batch


def _gradients_in_another_layout(fn, monkeypatch) -> int:
    """Gradients that the backward returns in a layout other than their parameter's in one call
    of `fn` (the step then copies each into the parameter's layout: 2 extra ops)."""
    real, n = torch.autograd.grad, 0

    def spy(outputs, inputs, **kw):
        nonlocal n
        grads = real(outputs, inputs, **kw)
        n += sum(
            g is not None and g.stride() != p.stride() for p, g in zip(inputs, grads, strict=True)
        )
        return grads

    with monkeypatch.context() as m:
        m.setattr(torch.autograd, "grad", spy)
        fn()
    return n


def _grads_have_their_parameters_layout(nets) -> bool:
    return all(p.grad is None or p.grad.stride() == p.stride()
               for m in nets.values() for p in m.parameters())  # fmt: skip


def _compare_compiled_and_eager(folder, stage, channels_last=False):
    """One step (or two) eager and compiled from the same weights; same losses and weights."""
    results = []
    for mode in ("none", "default"):
        steps, batch = _tiny_steps(folder, mode, channels_last)
        fn = steps.g1 if stage == "g1" else steps.g2
        losses = [fn(batch) for _ in range(2)]
        assert _grads_have_their_parameters_layout(steps.nets)
        results.append((losses, {k: m.state_dict() for k, m in steps.nets.items()}))
    (le, we), (lc, wc) = results
    # tolerance: float32 with reassociated sums in fused kernels; 2 Adam steps at lr 2e-4
    for a, b in zip(le, lc, strict=True):
        for k in a:
            torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5)
    for net in we:
        for k in we[net]:
            if net == "disc" and k in _inert_disc_biases(steps.nets["disc"]):
                continue
            torch.testing.assert_close(we[net][k], wc[net][k], rtol=1e-4, atol=1e-5)


def _inert_disc_biases(disc):
    """Biases of D's convs that feed a BatchNorm: BN subtracts the batch mean, so their exact
    gradient is 0 and what autograd returns is rounding noise (~1e-9), which Adam scales to
    +-lr steps of either sign; eager and compiled code round differently there."""
    mods = list(disc.features)
    return {f"features.{i}.bias" for i, m in enumerate(mods[:-1])
            if isinstance(mods[i + 1], torch.nn.BatchNorm2d)}  # fmt: skip


def test_captured_whole_steps_match_eager(folder, monkeypatch):
    """Default-suite check of the compiled path without a C++ compiler run: torch.compile with
    the aot_eager backend captures the same regions (dynamo + AOTAutograd forward/backward
    graphs, D frozen in the G pass) but runs them with aten kernels. Inductor's code is
    checked by the slow tests below (minutes of gcc on this VM)."""
    real = torch.compile
    monkeypatch.setattr(torch, "compile", lambda fn, mode=None: real(fn, backend="aot_eager"))
    _compare_compiled_and_eager(folder, "g1")
    _compare_compiled_and_eager(folder, "g2")


@pytest.mark.parametrize("stage", ["g1", "g2"])
def test_gradients_handed_over_equal_loss_backward_and_cost_no_op_per_parameter(folder, stage):
    """The trainer's step takes gradients by torch.autograd.grad: the same weights after two
    steps as loss.backward(), and no aten::detach per parameter (AccumulateGrad's)."""
    from torch.profiler import ProfilerActivity, profile

    results = []
    for plain in (True, False):
        steps, batch = _tiny_steps(folder, "none", plain_backward=plain)
        fn = steps.g1 if stage == "g1" else steps.g2
        fn(batch)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            fn(batch)
        detaches = sum(e.name == "aten::detach" for e in prof.events())
        results.append(({k: m.state_dict() for k, m in steps.nets.items()}, detaches))
    (plain_w, plain_detaches), (w, detaches) = results
    for net in w:
        for k in w[net]:
            torch.testing.assert_close(w[net][k], plain_w[net][k], rtol=0, atol=0)
    trained = [p for k in (("g1",) if stage == "g1" else ("g2", "disc"))
               for p in steps.nets[k].parameters()]  # fmt: skip
    assert plain_detaches >= len(trained) and detaches < plain_detaches - len(trained) + 5


@pytest.mark.slow
def test_compiled_g1_step_matches_eager(folder):
    _compare_compiled_and_eager(folder, "g1")


@pytest.mark.slow
def test_compiled_g2_step_matches_eager(folder):
    _compare_compiled_and_eager(folder, "g2")


@pytest.mark.slow
def test_compiled_channels_last_g1_step_matches_eager_and_copies_no_gradient(folder, monkeypatch):
    """channels_last (the trainer's default on CUDA): the compiled step agrees with eager, and
    every gradient of its backward already has its parameter's layout (in NCHW, inductor's
    backward returns the conv weight gradients in another layout and the step copies each into
    its parameter's layout: 2 extra ops per conv weight and step)."""
    _compare_compiled_and_eager(folder, "g1", channels_last=True)
    steps, batch = _tiny_steps(folder, "default", channels_last=True)
    steps.g1(batch)
    assert _gradients_in_another_layout(lambda: steps.g1(batch), monkeypatch) == 0
    nchw, batch = _tiny_steps(folder, "default")  # the copies this layout costs, counted
    nchw.g1(batch)
    assert _gradients_in_another_layout(lambda: nchw.g1(batch), monkeypatch) > 0
    assert _grads_have_their_parameters_layout(nchw.nets)
