"""End-to-end tests against a real Slurm: dask-jobqueue submits real batch jobs.

Start a one-machine Slurm with ``sudo MOLMNIST_SLURM=1 bash .ci/run`` (or ``sudo .ci/slurm.sh``;
root, Debian). Without a Slurm that answers these tests skip, with one line saying why and how
to run them, except under CI (``CI=true``), where a missing Slurm is a failure: CI must run
them (tests/test_ci.py checks that skip as a user without root or Slurm).
"""

import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import dask
import numpy as np
import pytest

pytestmark = pytest.mark.slurm

IN_CI = os.environ.get("CI", "").lower() == "true"
REPO = Path(__file__).resolve().parents[1]
WAIT = 90  # seconds for a job to start and its worker to connect (about 3 s on an idle node)

# One small job per cluster: one worker of one thread, well under the CI node's memory.
# Scheduler and workers on loopback: the jobs run on this machine, and every container has
# `lo` (the scheduler takes `interface` too unless scheduler_options names another).
JOB = dict(
    cores=1,
    processes=1,
    memory="2GB",
    walltime="00:10:00",
    interface="lo",
    python=sys.executable,
    death_timeout=60,
    scheduler_options={"dashboard_address": ":0"},
)


HOW = ("to run these tests, start a one-machine Slurm (root, Debian): sudo MOLMNIST_SLURM=1 bash .ci/run, "
       "or sudo .ci/slurm.sh then python -m pytest tests/test_slurm.py")


def _slurm_problem():
    """Why Slurm cannot run our jobs here, or None when it can."""
    if shutil.which("sinfo") is None or shutil.which("sbatch") is None:
        return "sinfo/sbatch not found: Slurm is not installed"
    try:
        out = subprocess.run(["sinfo", "-h", "-o", "%t"], capture_output=True, text=True, timeout=10)
    except subprocess.TimeoutExpired:
        return "sinfo did not answer within 10 s"
    if out.returncode != 0:
        return f"sinfo failed: {out.stderr.strip() or out.stdout.strip()}"
    states = {s.rstrip("*~#!%$@^-") for s in out.stdout.split()}
    if not states & {"idle", "mix", "alloc", "comp"}:
        return f"no Slurm node can take jobs (node states: {sorted(states) or 'none'})"
    return None


PROBLEM = _slurm_problem()
if PROBLEM is not None and not IN_CI:  # one line for the module, not one per test
    pytest.skip(f"no usable Slurm ({PROBLEM}); {HOW}", allow_module_level=True)


@pytest.fixture(scope="module")
def slurm():
    if PROBLEM is not None:
        pytest.fail(f"CI=true but Slurm is not usable: {PROBLEM}", pytrace=False)


def _queued(name):
    """Our jobs (by job name) that Slurm still holds, as 'JOBID STATE' lines."""
    out = subprocess.run(["squeue", "-h", "--name", name, "-o", "%i %t"],
                         capture_output=True, text=True, timeout=30).stdout
    return [line for line in out.splitlines() if line.split()[1:] not in (["CG"], ["CD"], ["CA"])]


@pytest.fixture
def job(slurm, tmp_path):
    """SLURMCluster options for one test: a job name of its own, worker scratch and job logs
    under tmp (never in the working directory). Afterwards no job of that name is left: the
    test's cluster.close() must have cancelled them; any left are cancelled and reported."""
    name = f"molmnist-test-{uuid.uuid4().hex[:8]}"  # sbatch -J
    local, logs = tmp_path / "worker-space", tmp_path / "slurm-logs"
    local.mkdir()
    logs.mkdir()
    yield dict(JOB, job_name=name, local_directory=str(local), log_directory=str(logs))
    left = _queued(name)
    if left:
        subprocess.run(["scancel", "--name", name], timeout=30)
    assert not left, f"Slurm jobs left behind after cluster.close(): {left}"


def _job_ids(cluster):
    return {str(j.job_id) for j in cluster.workers.values() if getattr(j, "job_id", None)}


def _worker_env(client, name):
    """{worker address: value of environment variable `name` in that worker}.

    os.getenv travels by reference; a function of this module would not (the workers cannot
    import the test module).
    """
    return client.run(os.getenv, name)


def test_slurmcluster_runs_a_dask_computation_in_a_slurm_job(job):
    import dask.array as da
    from dask_jobqueue import SLURMCluster
    from distributed import Client

    cluster = SLURMCluster(**job)
    try:
        assert "#SBATCH --mem=2G" in cluster.job_script()
        cluster.scale(jobs=1)
        with Client(cluster) as client:
            client.wait_for_workers(1, timeout=WAIT)

            x = da.arange(10_000, chunks=1_000)
            assert int((x * 2).sum().compute()) == 2 * sum(range(10_000))

            # The worker really is a Slurm job: the one the cluster submitted.
            (job_id,) = _worker_env(client, "SLURM_JOB_ID").values()
            assert job_id in _job_ids(cluster)
            assert set(_worker_env(client, "SLURM_JOB_NAME").values()) == {job["job_name"]}
    finally:
        cluster.close()


def test_build_on_slurm_equals_a_local_synchronous_build(job, tmp_path):
    from MDAnalysisTests.datafiles import DCD, PSF

    import molmnist_dask as mm
    from distributed import get_task_stream
    from molmnist_dask.cluster import get_client

    source = mm.TrajectorySource("adk", PSF, DCD)
    kwargs = dict(size=32, variants=6, extent=90.0)  # adk fits in 90 A
    with dask.config.set(scheduler="synchronous"):
        local = mm.build_dataset([source], **kwargs).compute()

    # PYTHONPATH lets the job import this checkout even where it is not installed.
    prologue = [f"export PYTHONPATH={REPO}${{PYTHONPATH:+:$PYTHONPATH}}"]
    out = tmp_path / "adk-store"
    # get_client waits for the first worker (the fixture cancels the job if it raises).
    client = get_client("slurm", jobs=1, job_script_prologue=prologue, **job)
    cluster = client.cluster
    try:
        assert set(_worker_env(client, "SLURM_JOB_ID").values()) <= _job_ids(cluster)
        # save_dataset runs on the active client, the one get_client made: every block is
        # rendered and written by the worker in the Slurm job.
        with get_task_stream(client) as tasks:
            mm.save_dataset(mm.build_dataset([source], **kwargs), out, progress=False)
        assert tasks.data, "no task ran on the Slurm cluster"
        assert {t["worker"] for t in tasks.data} <= set(client.scheduler_info()["workers"])
    finally:
        client.close()
        cluster.close()

    remote = mm.open_dataset(out).load()
    assert remote["shape"].shape == (1, 6, 32, 32)
    assert set(local.data_vars) <= set(remote.data_vars)
    for name in ("molecule", "label", "variant", "frame", "y", "x", "qy", "qx"):
        np.testing.assert_array_equal(remote[name].values, local[name].values, err_msg=name)
    np.testing.assert_array_equal(remote["shape"].values, local["shape"].values)
    np.testing.assert_allclose(remote["diffraction"].values, local["diffraction"].values, rtol=1e-6)

