"""Where the work runs: a local cluster, a running scheduler, or Slurm through dask-jobqueue.

`get_client` is the one entry point: it returns a `distributed.Client` and prints the dashboard
link. `connect` is the same as a context manager that closes what it started and nothing else.
"""

from __future__ import annotations

import logging
import os
from contextlib import contextmanager

from .errors import InputError

CONNECT_TIMEOUT = "10s"


def _say(client, how: str) -> None:
    link = getattr(client, "dashboard_link", None)
    print(f"dask: {how}; dashboard: {link}" if link else f"dask: {how}", flush=True)


#: Worker environment: keep freed memory for reuse. distributed's default
#: MALLOC_TRIM_THRESHOLD_=65536 hands every large temporary (binning, FFT and HDF5 buffers)
#: back to the system at once, so the next block page-faults it in anew: tasks ran 1.3x (200 px)
#: to 2x (1024 px) slower (benchmarks/bench_build.py). Worker memory stays bounded by the block.
WORKER_MALLOC = {"MALLOC_TRIM_THRESHOLD_": str(2**28), "MALLOC_MMAP_THRESHOLD_": str(2**26)}


def _worker_malloc() -> None:
    """Make new local workers start with `WORKER_MALLOC`.

    malloc reads these when a process starts, so they must be in the environment the nanny
    spawns from: its ``pre-spawn-environ`` config, which values in ``os.environ`` override.
    """
    import dask

    for key, value in WORKER_MALLOC.items():
        os.environ[key] = value
        dask.config.set({f"distributed.nanny.pre-spawn-environ.{key}": value})


def local_cluster(n_workers: int | None = None, threads_per_worker: int = 1, **kwargs):
    """A `distributed.LocalCluster` sized to the machine: one single-threaded worker per core.

    One thread per worker process because reading trajectories holds the GIL; memory is
    split evenly between the workers. Workers keep freed memory for reuse (`WORKER_MALLOC`).
    """
    from distributed import LocalCluster

    _worker_malloc()
    n_workers = n_workers or max(1, (os.cpu_count() or 1) // threads_per_worker)
    kwargs.setdefault("dashboard_address", ":0")
    # A failing task reaches the caller as its own exception; the workers' log lines about it
    # would bury the one-line error under a dozen.
    kwargs.setdefault("silence_logs", logging.CRITICAL)
    return LocalCluster(n_workers=n_workers, threads_per_worker=threads_per_worker, **kwargs)


def slurm_cluster(jobs: int = 1, **kwargs):
    """A `dask_jobqueue.SLURMCluster` from dask's jobqueue config (``~/.config/dask/jobqueue.yaml``
    or ``DASK_JOBQUEUE__SLURM__...`` variables), scaled to ``jobs`` batch jobs.

    Keyword arguments override the config (``cores``, ``memory``, ``account``, ``queue``,
    ``walltime``, ``job_extra_directives``, ...). See ``deploy/nersc/jobqueue.yaml``.
    SLURMCluster reads that config again for every job it submits, so give settings in the
    YAML file or ``DASK_JOBQUEUE__SLURM__*`` variables, not a temporary ``dask.config.set``.
    """
    try:
        from dask_jobqueue import SLURMCluster
    except ImportError:  # pragma: no cover - a dependency, but say what to install
        raise InputError("the Slurm cluster needs dask-jobqueue: pip install 'molmnist-dask[nersc]'") from None
    cluster = SLURMCluster(**kwargs)
    cluster.scale(jobs=jobs)
    return cluster


def _client(address=None, scheduler_file=None):
    from distributed import Client

    where = scheduler_file or address
    if scheduler_file and not os.path.exists(scheduler_file):
        raise InputError(f"scheduler file not found: {scheduler_file}")
    try:
        return Client(address, scheduler_file=scheduler_file, timeout=CONNECT_TIMEOUT)
    except (OSError, TimeoutError) as err:
        raise InputError(f"cannot reach the dask scheduler at {where} within {CONNECT_TIMEOUT}: "
                         f"{' '.join(str(err).split())[:200]}") from None


def get_client(where: str | None = None, *, n_workers: int | None = None, jobs: int = 1,
               wait_workers: int = 1, wait_timeout: float | None = None, **cluster_kwargs):
    """A `distributed.Client` for ``where`` (see `connect`), printing its dashboard link.

    A cluster it starts is ``client.cluster``; ``client.shutdown()`` stops both. With Slurm
    it waits for ``wait_workers`` workers, at most ``wait_timeout`` seconds (None: no limit,
    as a job may queue for hours).
    """
    if where is None:
        from .progress import active_client

        client = active_client()
        if client is not None:
            _say(client, f"using the active client {client.scheduler.address}")
            return client
        where = "local"
    if where in ("local", "slurm"):
        from distributed import Client

        if where == "local":
            cluster = local_cluster(n_workers=n_workers, **cluster_kwargs)
            client = Client(cluster)
            _say(client, f"local cluster of {len(cluster.workers)} workers")
        else:
            cluster = slurm_cluster(jobs=jobs, **cluster_kwargs)
            try:  # whatever goes wrong, leave no batch job queued behind
                client = Client(cluster)
                _say(client, f"Slurm cluster, {jobs} job(s) submitted; waiting for {wait_workers} "
                             "worker(s) (see squeue --me)")
                if wait_workers > 0:
                    client.wait_for_workers(wait_workers, timeout=wait_timeout)
            except BaseException:
                cluster.close()
                raise
        return client
    if "://" in where:
        client = _client(address=where)
    elif where.endswith(".json") or os.path.exists(where):
        client = _client(scheduler_file=where)
    else:
        raise InputError(f"cluster must be 'local', 'slurm', a scheduler address or a scheduler "
                         f"file, got {where!r}")
    _say(client, f"scheduler {client.scheduler.address}")
    return client


@contextmanager
def connect(where: str | None = None, **kwargs):
    """``with connect(where) as client:`` a `get_client` that stops, on leaving, only what it started.

    Parameters
    ----------
    where : str, optional
        ``None``: the client already active in this session, else a new local cluster.
        ``"local"``: a new local cluster. ``"slurm"``: a `SLURMCluster` of ``jobs`` jobs.
        ``"tcp://HOST:PORT"`` (any scheduler address): that scheduler.
        A path to a JSON scheduler file (``dask scheduler --scheduler-file``): that scheduler.
    **kwargs
        ``n_workers`` (local), ``jobs`` and ``wait_workers`` (Slurm), and cluster options.
    """
    from .progress import active_client

    before = active_client() if where is None else None
    client = get_client(where, **kwargs)
    try:
        yield client
    finally:
        if client is not before:
            cluster = getattr(client, "cluster", None)
            client.close()
            if cluster is not None:
                cluster.close()
