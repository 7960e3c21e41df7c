"""Run independent tasks on local processes, a Dask cluster or a Ray cluster, results in order.

Every backend goes through joblib (`joblib.parallel_config(backend=...)`), so the work function
and its arguments are the same whatever runs them, and the results come back in task order: a
caller that writes them in that order writes the same bytes with any backend.

    for result in run_tasks(process_chunk, [(chunk, adapter, cfg) for chunk in chunks],
                            workers=8, backend="dask", scheduler="tcp://head:8786"):
        ...

Dask and Ray are optional extras (``pip install "pg2kit[dask]"`` / ``"pg2kit[ray]"``) and are
imported only when asked for. Workers must see the same files as the caller (a shared file
system): tasks carry paths, not file contents. See docs/cluster.md.
"""

from __future__ import annotations

import os
import re
import traceback
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack
from typing import Any

BACKENDS = ("loky", "dask", "ray")

_EXTRA_HINT = {
    "dask": ("dask.distributed", 'pip install "pg2kit[dask]"'),
    "ray": ("ray", 'pip install "pg2kit[ray]"'),
}


class ParallelError(RuntimeError):
    """A backend that cannot be used, or a task that failed on every attempt (one-line message)."""


class TaskFailed(ParallelError):
    """A task raised (or lost its worker) on its first attempt and on every retry."""

    def __init__(self, message: str, index: int, attempts: int, detail: str = ""):
        super().__init__(message)
        self.index = index
        self.attempts = attempts
        self.detail = detail  # the worker's traceback text, when there was one


class _Failure:
    """What a task returns instead of raising, so the caller knows which task failed."""

    def __init__(self, exc: BaseException):
        self.summary = _plain(f"{type(exc).__name__}: {exc}")
        self.detail = "".join(traceback.format_exception(exc))


def _plain(text: str) -> str:
    """First line of an error text, without terminal colour codes (Ray adds them), cut short."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", text).strip()
    return (text.splitlines() or [""])[0][:300]


class _Call:
    """Picklable wrapper: func(*args), with exceptions turned into a _Failure."""

    def __init__(self, func: Callable[..., Any]):
        self.func = func

    def __call__(self, args: tuple) -> Any:
        try:
            return self.func(*args)
        except Exception as e:  # noqa: BLE001 - reported to the caller with the task named
            return _Failure(e)


def _missing_extra(backend: str, error: ImportError) -> ParallelError:
    module, hint = _EXTRA_HINT[backend]
    return ParallelError(f"backend {backend!r} needs {module} ({error}); install it: {hint}")


def check_backend(backend: str) -> None:
    """Raise ParallelError (one line, with the install command) if `backend` cannot be used."""
    if backend not in BACKENDS:
        raise ParallelError(f"unknown backend {backend!r} (choose from {', '.join(BACKENDS)})")
    try:
        if backend == "dask":
            import dask.distributed  # noqa: F401
        elif backend == "ray":
            import ray  # noqa: F401
            import ray.util.joblib  # noqa: F401
    except ImportError as e:
        raise _missing_extra(backend, e) from None


# Settings of the LocalCluster pg2kit starts itself. Each worker otherwise samples its own stack
# every 10 ms (the dashboard's profiler) and polls its memory every 100 ms and the host every
# 500 ms: on a machine whose cores are all busy with workers, that is time the work loses
# (bench/backends.py, BENCHMARKS.md). No dashboard is served, so the profiles were never seen.
LOCAL_CLUSTER_CONFIG = {
    "distributed.worker.profile.enabled": False,
    "distributed.worker.memory.monitor-interval": "2s",
    "distributed.admin.system-monitor.interval": "5s",
}


def local_cluster(workers: int) -> tuple[Any, Any]:
    """A dask LocalCluster of `workers` single-threaded worker processes, and a client for it.

    The client fetches results straight from the workers (`direct_to_workers`), which on one
    machine saves a hop through the scheduler. Both are context managers; close the client
    first. Used by ``--backend dask`` without ``--scheduler``, and by bench/backends.py.
    """
    import dask
    from dask.distributed import Client, LocalCluster

    with dask.config.set(LOCAL_CLUSTER_CONFIG):  # worker processes take a copy at start
        cluster = LocalCluster(
            n_workers=max(1, workers),
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
        )
    return cluster, Client(cluster, direct_to_workers=True)


def _enter_backend(
    stack: ExitStack,
    backend: str,
    workers: int | None,
    scheduler: Any,
    ray_address: str | None,
) -> int:
    """Set up `backend` inside `stack` (clients, clusters, parallel_config); returns n_jobs."""
    from joblib import parallel_config

    if backend == "loky":
        stack.enter_context(parallel_config(backend="loky"))
        return max(1, workers or 1)
    if backend == "dask":
        from dask.distributed import Client

        if scheduler is None:
            cluster, client = local_cluster(workers or 1)
            stack.enter_context(cluster)
            stack.enter_context(client)
        elif isinstance(scheduler, Client):
            client = scheduler
        else:
            try:
                client = stack.enter_context(Client(scheduler, timeout="30s"))
            except OSError as e:
                raise ParallelError(f"cannot reach the Dask scheduler {scheduler}: {e}") from None
        stack.enter_context(parallel_config(backend="dask", client=client))
        return -1  # joblib's dask backend uses every worker thread of the cluster
    # ray
    import ray
    from ray.util.joblib import register_ray

    register_ray()
    if not ray.is_initialized():
        try:
            if ray_address:
                ray.init(address=ray_address, log_to_driver=False)
            else:
                ray.init(num_cpus=max(1, workers or 1), log_to_driver=False)
        except (ConnectionError, RuntimeError, ValueError) as e:
            where = ray_address or "a local Ray instance"
            raise ParallelError(f"cannot start or reach {where}: {e}") from None
        stack.callback(ray.shutdown)
    stack.enter_context(parallel_config(backend="ray"))
    return workers if workers else -1


def _label(tasks: Sequence[tuple], index: int, label: Callable[[tuple], str] | None) -> str:
    if label is not None:
        try:
            return f"task {index} ({label(tasks[index])})"
        except Exception:  # noqa: BLE001 - a label must never hide the real error
            pass
    return f"task {index}"


def _unreadable(paths: Sequence[str]) -> list[str]:
    """The paths this process cannot open for reading (runs on a worker)."""
    return [p for p in paths if not os.access(p, os.R_OK)]


def _check_dask_workers_see(paths: Sequence[str | os.PathLike]) -> None:
    """Workers read the inputs themselves: refuse to start when one cannot see them."""
    from dask.distributed import default_client

    wanted = [os.fspath(p) for p in paths]
    try:
        answers = default_client().run(_unreadable, wanted)
    except Exception as e:  # noqa: BLE001 - an unreachable worker is the cluster's own error
        raise ParallelError(f"could not ask the Dask workers about their files: {e}") from None
    for worker, missing in sorted(answers.items()):
        if missing:
            raise ParallelError(
                f"Dask worker {worker} cannot read {missing[0]}: workers read the inputs "
                "themselves, so every worker needs them at the same path (a shared filesystem; "
                "see docs/cluster.md)"
            )


def run_tasks(
    func: Callable[..., Any],
    tasks: Sequence[tuple],
    *,
    workers: int | None,
    backend: str = "loky",
    scheduler: Any = None,
    ray_address: str | None = None,
    retries: int = 0,
    progress: Callable[[int], Any] | None = None,
    label: Callable[[tuple], str] | None = None,
    need_paths: Sequence[str | os.PathLike] = (),
) -> Iterator[Any]:
    """Yield func(*task) for every task, in task order, computed by `backend`.

    workers: processes for "loky" (1 runs in this process, no pool), worker processes of the
        LocalCluster started when "dask" has no `scheduler`, CPUs of the local Ray instance
        started when "ray" has no `ray_address` (and the joblib job count on Ray).
    scheduler: a Dask scheduler address ("tcp://host:8786"), or a dask.distributed.Client.
    retries: a task that raises, or whose worker dies, is submitted again up to `retries`
        times; then TaskFailed names the task (and `label(task)` if given) and the error. A
        worker lost while tasks run in parallel is traced first: the tasks from there run one
        at a time until one loses its worker alone, and only that task is charged.
    progress: called with 1 after each task's result is yielded (tqdm's ``bar.update`` fits).
    need_paths: files every worker must be able to read (on "dask", each worker is asked before
        any task runs; a worker that cannot see one is a ParallelError naming both).

    A failed task restarts the remaining work from that task (results already yielded are
    kept, tasks in flight behind it are submitted again), so memory stays bounded and the
    order holds. Raises ParallelError for an unknown or uninstalled backend.
    """
    check_backend(backend)
    if retries < 0:
        raise ValueError(f"retries must be >= 0, got {retries}")
    tasks = list(tasks)
    attempts = [0] * len(tasks)
    call = _Call(func)
    head = 0  # first task whose result has not been yielded yet

    def failed(index: int, summary: str, detail: str = "") -> None:
        attempts[index] += 1
        if attempts[index] > retries:
            tries = f"{attempts[index]} attempt" + ("s" if attempts[index] > 1 else "")
            raise TaskFailed(
                f"{_label(tasks, index, label)} failed after {tries} "
                f"(backend {backend}): {summary}",
                index,
                attempts[index],
                detail,
            )

    def result_of(run: Callable[[tuple], Any]) -> tuple[Any, bool]:
        """tasks[head] run by `run` until it gives a result, each failure charged to it
        (`failed` raises once its attempts are spent); and whether it lost a worker."""
        lost = False
        while True:
            try:
                out = run(tasks[head])
            except (TaskFailed, GeneratorExit):
                raise
            except Exception as e:  # noqa: BLE001 - the task lost its worker
                lost = True
                failed(head, _plain(f"{type(e).__name__}: {e}"))
                continue
            if not isinstance(out, _Failure):
                return out, lost
            failed(head, out.summary, out.detail)

    sequential = backend == "loky" and (workers or 1) <= 1
    if sequential:
        while head < len(tasks):
            yield result_of(call)[0]
            head += 1
            if progress is not None:
                progress(1)
        return

    from joblib import Parallel, delayed

    with ExitStack() as stack:
        n_jobs = _enter_backend(stack, backend, workers, scheduler, ray_address)
        if backend == "dask" and need_paths:
            _check_dask_workers_see(need_paths)
        # A lost worker breaks every task in flight, and the error surfaces at whichever task
        # is awaited first, not at the one that lost it. So after a loss the next `span` tasks
        # run one at a time (still on the workers): a loss there is that task's. A loss in
        # parallel after a span that lost nothing doubles the span (tasks are dispatched ahead
        # in batches); losses that no task repeats alone (short of memory, say) thus end in a
        # run that goes on one task at a time rather than in a wrong name.
        span = 4 * (n_jobs if n_jobs > 0 else os.cpu_count() or 8)
        alone_until, span_lost = 0, True
        while head < len(tasks):
            if head < alone_until:
                out, lost = result_of(lambda t: Parallel(n_jobs=n_jobs)([delayed(call)(t)])[0])
                span_lost = span_lost or lost
                yield out
                head += 1
                if progress is not None:
                    progress(1)
                continue
            if backend == "ray":  # joblib's Ray backend has no generator mode: ordered windows
                results = _windows(call, tasks, head, n_jobs, window=4 * max(workers or 8, 1))
            else:
                runner = Parallel(n_jobs=n_jobs, return_as="generator")
                results = runner(delayed(call)(tasks[i]) for i in range(head, len(tasks)))
            restart = False
            try:
                for out in results:
                    if isinstance(out, _Failure):
                        failed(head, out.summary, out.detail)
                        restart = True
                        break
                    yield out
                    head += 1
                    if progress is not None:
                        progress(1)
            except (TaskFailed, GeneratorExit):
                raise
            except Exception:  # noqa: BLE001 - a lost worker, a broken pool, a dead node
                if not span_lost:
                    span *= 2
                alone_until, span_lost = head + span, False
                restart = True
            finally:
                if restart or head < len(tasks):
                    with warnings.catch_warnings():  # joblib warns about the cancelled tasks
                        warnings.simplefilter("ignore")
                        results.close()  # abort what is still queued before submitting again


def _windows(call: _Call, tasks: list, start: int, n_jobs: int, window: int) -> Iterator[Any]:
    """Results of tasks[start:] through blocking Parallel calls of `window` tasks each."""
    from joblib import Parallel, delayed

    for lo in range(start, len(tasks), window):
        hi = min(lo + window, len(tasks))
        yield from Parallel(n_jobs=n_jobs)(delayed(call)(tasks[i]) for i in range(lo, hi))
