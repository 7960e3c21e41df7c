"""pg2kit.parallel.run_tasks: order, retries, named failures, backends (loky, Dask LocalCluster)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pg2kit.parallel import ParallelError, TaskFailed, check_backend, run_tasks


def _square(x):
    return x * x


def _fail_once(x, folder):
    """Raises the first time it sees x == 3 (a marker file remembers), then succeeds."""
    marker = Path(folder) / f"seen-{x}"
    if x == 3 and not marker.exists():
        marker.touch()
        raise OSError(f"transient failure on {x}")
    return x + 100


def _always_fail(x):
    if x == 2:
        raise ValueError("bad input 2")
    return x


def _kill_worker(x):
    if x == 1:
        os._exit(3)
    return x


def _kill_worker_at_9(x):
    if x == 9:
        os._exit(3)
    return x


def _kill_worker_once(x, folder):
    """Loses its worker the first time it sees x == 3 (a marker file remembers)."""
    marker = Path(folder) / f"lost-{x}"
    if x == 3 and not marker.exists():
        marker.touch()
        os._exit(3)
    return x


@pytest.mark.parametrize("workers", [1, 2])
def test_results_in_task_order(workers):
    got = list(run_tasks(_square, [(i,) for i in range(25)], workers=workers))
    assert got == [i * i for i in range(25)]


@pytest.mark.parametrize("workers", [1, 2])
def test_retry_resubmits_a_failed_task(tmp_path, workers):
    calls = []
    tasks = [(i, str(tmp_path)) for i in range(8)]
    got = list(run_tasks(_fail_once, tasks, workers=workers, retries=1, progress=calls.append))
    assert got == [i + 100 for i in range(8)]
    assert (tmp_path / "seen-3").exists()
    assert sum(calls) == 8


def test_failure_names_the_task_after_retries():
    with pytest.raises(
        TaskFailed, match=r"task 2 \(input 2\) failed after 3 attempts.*bad input 2"
    ):
        list(
            run_tasks(
                _always_fail,
                [(i,) for i in range(5)],
                workers=2,
                retries=2,
                label=lambda t: f"input {t[0]}",
            )
        )


def test_results_before_a_failure_are_yielded():
    got = []
    with pytest.raises(TaskFailed) as info:
        for r in run_tasks(_always_fail, [(i,) for i in range(5)], workers=1):
            got.append(r)
    assert got == [0, 1]
    assert info.value.index == 2 and "ValueError" in info.value.detail


def test_dead_worker_is_a_named_failure():
    with pytest.raises(TaskFailed, match=r"task 1 failed after 2 attempts \(backend loky\)"):
        list(run_tasks(_kill_worker, [(i,) for i in range(4)], workers=2, retries=1))


def test_a_lost_worker_is_charged_to_the_task_that_lost_it():
    """The loss surfaces at whichever task in flight is awaited first; the tasks after the
    loss run one at a time, so the one named is the one that lost its worker, every time."""
    for _ in range(3):
        got = []
        with pytest.raises(TaskFailed, match=r"^task 9 failed after 1 attempt \(backend loky\)"):
            for r in run_tasks(_kill_worker_at_9, [(i,) for i in range(16)], workers=2):
                got.append(r)
        assert got == list(range(9))


def test_a_worker_lost_once_costs_no_result(tmp_path):
    tasks = [(i, str(tmp_path)) for i in range(12)]
    assert list(run_tasks(_kill_worker_once, tasks, workers=2)) == list(range(12))


def test_losses_no_single_task_repeats_end_in_a_run_one_task_at_a_time(monkeypatch):
    """Workers lost only while tasks run in parallel (short of memory, say): no task is blamed
    for them; each loss runs the next tasks one at a time (twice as many after a span that lost
    nothing), so the run finishes with every result in order."""
    import joblib
    from joblib.externals.loky.process_executor import TerminatedWorkerError

    real, parallel_runs = joblib.Parallel, []

    class LosesWorkersInParallel(real):
        def __call__(self, iterable):
            if not self.return_generator:
                return super().__call__(iterable)
            parallel_runs.append(1)

            def lost():  # as joblib's generator: the loss surfaces when results are awaited
                raise TerminatedWorkerError("a worker process was terminated")
                yield

            return lost()

    monkeypatch.setattr(joblib, "Parallel", LosesWorkersInParallel)
    assert list(run_tasks(_square, [(i,) for i in range(40)], workers=2)) == [
        i * i for i in range(40)
    ]
    assert len(parallel_runs) == 3  # spans of 8, 16 and 32 tasks


def test_unknown_backend_and_bad_retries():
    with pytest.raises(ParallelError, match="unknown backend 'spark'"):
        check_backend("spark")
    with pytest.raises(ValueError, match="retries"):
        list(run_tasks(_square, [(1,)], workers=1, retries=-1))


def test_missing_extra_message(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def fake_import(name, *args, **kwargs):
        if name.startswith("dask"):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    with pytest.raises(ParallelError, match=r'pip install "pg2kit\[dask\]"'):
        list(run_tasks(_square, [(1,)], workers=2, backend="dask"))


@pytest.fixture(scope="module")
def dask_cluster():
    """One real dask.distributed LocalCluster with 2 worker processes for this module."""
    distributed = pytest.importorskip("dask.distributed")
    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
    ) as cluster:
        yield cluster


def test_dask_local_cluster_matches_loky(tmp_path, dask_cluster):
    tasks = [(i, str(tmp_path)) for i in range(12)]
    address = dask_cluster.scheduler_address
    got = list(run_tasks(_fail_once, tasks, workers=2, backend="dask", scheduler=address,
                         retries=1))  # fmt: skip
    assert got == [i + 100 for i in range(12)]
    assert got == list(run_tasks(_fail_once, tasks, workers=2, backend="loky"))


def test_dask_workers_that_cannot_see_the_inputs_are_refused(tmp_path, dask_cluster):
    seen = tmp_path / "seen.jpg"
    seen.write_bytes(b"x")
    address = dask_cluster.scheduler_address
    got = list(run_tasks(_square, [(2,)], workers=2, backend="dask", scheduler=address,
                         need_paths=[seen]))  # fmt: skip
    assert got == [4]
    unseen = tmp_path / "elsewhere" / "photo.jpg"  # as a path only the client has would be
    with pytest.raises(ParallelError, match=r"Dask worker tcp://.* cannot read .*photo\.jpg"):
        list(run_tasks(_square, [(2,)], workers=2, backend="dask", scheduler=address,
                       need_paths=[unseen]))  # fmt: skip


def test_local_cluster_workers_run_without_monitors_and_results_come_direct():
    """The LocalCluster `--backend dask` starts: every worker process has the settings that keep
    its background sampling off the cores (BENCHMARKS.md), and the client fetches results from
    the workers directly; results through it are the plain ones."""
    pytest.importorskip("dask.distributed")
    import dask

    from pg2kit.parallel import LOCAL_CLUSTER_CONFIG, local_cluster

    cluster, client = local_cluster(2)
    with cluster, client:
        keys = list(LOCAL_CLUSTER_CONFIG)
        seen = client.run(lambda: {k: dask.config.get(k) for k in keys})
        assert len(seen) == 2
        assert all(v == LOCAL_CLUSTER_CONFIG for v in seen.values()), seen
        assert dask.config.get("distributed.worker.profile.enabled") is True  # caller untouched
        assert client.direct_to_workers is True
        got = list(run_tasks(_square, [(i,) for i in range(6)], workers=2, backend="dask",
                             scheduler=client))  # fmt: skip
        assert got == [i * i for i in range(6)]


@pytest.mark.slow
def test_prepare_on_local_ray_is_byte_identical_to_loky(tmp_path):
    """Ray (an optional extra, so a slow test): a local Ray instance of 2 CPUs gives the same
    shards as loky. The work function must be importable on the workers (pg2kit's is; a test
    module's is not), as on any cluster."""
    pytest.importorskip("ray")
    from click.testing import CliRunner

    from pg2kit.cli import cli

    common = ["prepare", "synthetic", "--ids", "5", "--poses", "8", "--shard-size", "16",
              "--workers", "2", "--quiet"]  # fmt: skip
    r = CliRunner().invoke(cli, [*common, "-o", str(tmp_path / "loky")])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(cli, [*common, "-o", str(tmp_path / "ray"), "--backend", "ray",
                                 "--retries", "1"])  # fmt: skip
    assert r.exit_code == 0, r.output
    assert _shard_digests(tmp_path / "loky") == _shard_digests(tmp_path / "ray")


def _shard_digests(root: Path) -> dict[str, str]:
    import hashlib

    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted((root / "shards").glob("*.h5"))
    }


def test_prepare_on_dask_local_cluster_is_byte_identical_to_loky(tmp_path, dask_cluster):
    """issue 11: a real dask.distributed LocalCluster (2 worker processes) gives the same shards,
    byte for byte, as the loky run."""
    from click.testing import CliRunner

    from pg2kit.cli import cli

    common = ["prepare", "synthetic", "--ids", "5", "--poses", "8", "--shard-size", "16",
              "--workers", "2", "--quiet"]  # fmt: skip
    r = CliRunner().invoke(cli, [*common, "-o", str(tmp_path / "loky")])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(cli, [*common, "-o", str(tmp_path / "dask"), "--backend", "dask",
                                 "--scheduler", dask_cluster.scheduler_address])  # fmt: skip
    assert r.exit_code == 0, r.output
    loky, dask = _shard_digests(tmp_path / "loky"), _shard_digests(tmp_path / "dask")
    assert len(loky) == 3 and loky == dask  # 40 samples in shards of 16
