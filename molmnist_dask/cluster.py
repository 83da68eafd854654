"""Where the work runs: a local cluster, a running scheduler, or Slurm through dask-jobqueue.

`get_client` is the one entry point: it returns a `distributed.Client` and prints the dashboard
link. `connect` is the same as a context manager that closes what it started and nothing else.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import threading
import time
from contextlib import contextmanager

from .errors import InputError

CONNECT_TIMEOUT = "10s"


def _say(client, how: str) -> None:
    # distributed prints a link even when it cannot serve the page (no bokeh>=3.1)
    link = getattr(client, "dashboard_link", None) if _has_bokeh() else None
    print(f"dask: {how}; dashboard: {link}" if link else f"dask: {how}", flush=True)


def local_cluster(n_workers: int | None = None, threads_per_worker: int = 1, **kwargs):
    """A `distributed.LocalCluster` sized to the machine: one single-threaded worker per core.

    One thread per worker process because reading trajectories holds the GIL; memory is
    split evenly between the workers. Workers keep freed memory for reuse (`malloc`), as
    do those of any other cluster a save runs on.
    """
    from distributed import LocalCluster

    n_workers = n_workers or max(1, (os.cpu_count() or 1) // threads_per_worker)
    kwargs.setdefault("dashboard_address", ":0" if _has_bokeh() else None)
    # A failing task reaches the caller as its own exception; the workers' log lines about it
    # would bury the one-line error under a dozen.
    kwargs.setdefault("silence_logs", logging.CRITICAL)
    # Ctrl-C at a terminal goes to the whole process group: each worker would die with its
    # own traceback (60 lines for two) before the client's one-line message. Workers load
    # this module, whose `dask_setup` makes them ignore SIGINT; the client alone handles it
    # and closes the cluster, which stops the workers.
    kwargs.setdefault("preload", [__name__])
    return LocalCluster(n_workers=n_workers, threads_per_worker=threads_per_worker, **kwargs)


def dask_setup(worker) -> None:
    """Worker preload (see `local_cluster`): ignore SIGINT, which the client handles; keep
    freed memory for reuse from the start (`malloc.apply`)."""
    from .malloc import apply

    apply()
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.SIG_IGN)


def _has_bokeh() -> bool:
    """Whether the dashboard can be served (distributed needs bokeh>=3.1 for it)."""
    try:
        from importlib.metadata import version

        major, minor = (int(x) for x in version("bokeh").split(".")[:2])
        return (major, minor) >= (3, 1)
    except Exception:  # not installed, or an odd version string
        return False


def quiet() -> None:
    """Silence distributed's loggers: after Ctrl-C, closing a cluster logs what it cancels."""
    for name in ("distributed", "tornado", "asyncio", "dask_jobqueue"):
        logging.getLogger(name).setLevel(logging.CRITICAL + 1)


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
    _check_slurm_config(kwargs)
    cluster = SLURMCluster(**kwargs)
    cluster.scale(jobs=jobs)
    return cluster


def _check_slurm_config(kwargs: dict) -> None:
    """Cores and memory per job must be set somewhere: say where, rather than a traceback."""
    import dask

    missing = [key for key in ("cores", "memory")
               if kwargs.get(key) is None and dask.config.get(f"jobqueue.slurm.{key}", None) is None]
    if missing:
        keys = " and ".join(f"jobqueue.slurm.{key}" for key in missing)
        flags = " and ".join(f"--{key}" for key in missing)
        raise InputError(f"--cluster slurm needs {' and '.join(missing)} per job: set {keys} in "
                         f"~/.config/dask/jobqueue.yaml (see deploy/nersc/jobqueue.yaml) or give {flags}")


def read_scheduler_file(path, wait: float = 5.0) -> str:
    """The scheduler address in a scheduler file (``dask scheduler --scheduler-file``).

    A file that is not valid JSON yet may be being written: it is read again for ``wait``
    seconds before it is an `InputError`, as is one without an address.
    """
    if not os.path.exists(path):
        raise InputError(f"scheduler file not found: {path}")
    deadline = time.monotonic() + wait
    while True:
        try:
            with open(path) as handle:
                info = json.load(handle)
            break
        except (ValueError, UnicodeDecodeError):
            if time.monotonic() > deadline:
                raise InputError(f"scheduler file {path} is not valid JSON (is the scheduler still "
                                 "starting? wait until it has written the file)") from None
            time.sleep(0.25)
        except OSError as err:
            raise InputError(f"cannot read scheduler file {path} ({err.strerror or err})") from None
    address = info.get("address") if isinstance(info, dict) else None
    if not isinstance(address, str) or "://" not in address:
        raise InputError(f"scheduler file {path} holds no scheduler address (not written by "
                         "dask scheduler --scheduler-file?)")
    return address


def _client(address=None, scheduler_file=None):
    from distributed import Client

    where = scheduler_file or address
    if scheduler_file:
        address = read_scheduler_file(scheduler_file)
    try:
        return Client(address, timeout=CONNECT_TIMEOUT)
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
    except KeyboardInterrupt:
        quiet()
        raise
    finally:
        if client is not before:
            cluster = getattr(client, "cluster", None)
            client.close()
            if cluster is not None:
                cluster.close()
