"""End-to-end tests against a real Slurm: dask-jobqueue submits real batch jobs.

Start a one-machine Slurm with ``sudo .ci/slurm.sh``. Without a Slurm that answers these tests
skip, except under CI (``CI=true``), where a missing Slurm is a failure: CI must run them.
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import dask
import numpy as np
import pytest

pytestmark = pytest.mark.slurm

IN_CI = os.environ.get("CI", "").lower() == "true"
REPO = Path(__file__).resolve().parents[1]

# One small job per cluster: a worker of one thread, well under the CI node's memory. Workers
# and scheduler on loopback: the jobs run on this machine, and loopback exists in any container.
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


def _slurm_problem():
    """Why Slurm cannot run our jobs here, or None when it can."""
    if shutil.which("sinfo") is None or shutil.which("sbatch") is None:
        return "sinfo/sbatch not found: Slurm is not installed (run `sudo .ci/slurm.sh`)"
    try:
        out = subprocess.run(["sinfo", "-h", "-o", "%t"], capture_output=True, text=True, timeout=20)
    except subprocess.TimeoutExpired:
        return "sinfo did not answer within 20 s"
    if out.returncode != 0:
        return f"sinfo failed: {out.stderr.strip() or out.stdout.strip()}"
    states = {s.rstrip("*~#!%$@^-") for s in out.stdout.split()}
    if not states & {"idle", "mix", "alloc", "comp"}:
        return f"no Slurm node can take jobs (node states: {sorted(states) or 'none'})"
    return None


@pytest.fixture(scope="module")
def slurm():
    problem = _slurm_problem()
    if problem is None:
        return
    if IN_CI:
        pytest.fail(f"CI=true but Slurm is not usable: {problem}", pytrace=False)
    pytest.skip(f"no usable Slurm: {problem}")


@pytest.fixture
def jobdirs(tmp_path):
    """Worker scratch and Slurm job logs under tmp, never in the working directory."""
    local, logs = tmp_path / "worker-space", tmp_path / "slurm-logs"
    local.mkdir()
    logs.mkdir()
    return dict(local_directory=str(local), log_directory=str(logs))


def _job_ids(cluster):
    return {str(job.job_id) for job in cluster.workers.values() if job.job_id}


def _assert_gone(job_ids):
    """Our jobs are no longer queued or running; cancel them if they are."""
    if not job_ids:
        return
    out = subprocess.run(
        ["squeue", "-h", "-o", "%i %t", "-j", ",".join(sorted(job_ids))],
        capture_output=True,
        text=True,
        timeout=20,
    ).stdout.split("\n")
    alive = [line for line in out if line.strip() and line.split()[1] not in ("CG", "CD", "CA")]
    if alive:
        subprocess.run(["scancel", *sorted(job_ids)], timeout=20)
    assert not alive, f"jobs left behind after cluster.close(): {alive}"


def _worker_env(client, name):
    """{worker address: value of environment variable `name` in that worker}.

    os.getenv travels by reference; a function of this module would not (the worker cannot
    import the test module).
    """
    return client.run(os.getenv, name)


def test_slurmcluster_runs_a_dask_computation_in_a_slurm_job(slurm, jobdirs):
    from dask_jobqueue import SLURMCluster
    from distributed import Client

    import dask.array as da

    job_ids = set()
    cluster = SLURMCluster(**JOB, **jobdirs)
    try:
        assert "#SBATCH --mem=2G" in cluster.job_script()
        cluster.scale(jobs=1)
        with Client(cluster) as client:
            client.wait_for_workers(1, timeout=90)
            job_ids = _job_ids(cluster)

            x = da.arange(10_000, chunks=1_000)
            assert int((x * 2).sum().compute()) == 2 * sum(range(10_000))

            (job_id,) = _worker_env(client, "SLURM_JOB_ID").values()
            assert job_id in job_ids, (job_id, job_ids)
            assert set(_worker_env(client, "SLURM_JOB_NAME").values()) == {"dask-worker"}
    finally:
        job_ids |= _job_ids(cluster)
        cluster.close()
    _assert_gone(job_ids)


def test_build_on_slurm_equals_a_local_synchronous_build(slurm, jobdirs, tmp_path):
    import molmnist_dask as mm
    from molmnist_dask.cluster import get_client
    from MDAnalysisTests.datafiles import DCD, PSF

    source = mm.TrajectorySource("adk", PSF, DCD)
    kwargs = dict(size=32, variants=6)
    with dask.config.set(scheduler="synchronous"):
        local = mm.build_dataset([source], **kwargs).compute()

    # The site settings a user keeps in ~/.config/dask/jobqueue.yaml; the entry point must
    # honour them. PYTHONPATH lets the job import this checkout even when it is not installed.
    settings = {f"jobqueue.slurm.{k.replace('_', '-')}": v for k, v in {**JOB, **jobdirs}.items()}
    settings["jobqueue.slurm.job-script-prologue"] = [
        f"export PYTHONPATH={REPO}${{PYTHONPATH:+:$PYTHONPATH}}"
    ]
    job_ids = set()
    with dask.config.set(settings):
        client = get_client("slurm")
    cluster = client.cluster
    try:
        if not cluster.workers:  # the entry point may leave scaling to us
            cluster.scale(jobs=1)
        client.wait_for_workers(1, timeout=90)
        job_ids = _job_ids(cluster)
        assert set(_worker_env(client, "SLURM_JOB_ID").values()) <= job_ids

        out = tmp_path / "adk-store"
        mm.save_dataset(mm.build_dataset([source], **kwargs), out, client=client, progress=False)
    finally:
        job_ids |= _job_ids(cluster)
        client.close()
        cluster.close()
    _assert_gone(job_ids)

    remote = mm.open_dataset(out).load()
    assert set(local.data_vars) <= set(remote.data_vars)
    for name in ("molecule", "label", "variant", "frame", "y", "x", "qy", "qx"):
        np.testing.assert_array_equal(remote[name].values, local[name].values, err_msg=name)
    np.testing.assert_array_equal(remote["shape"].values, local["shape"].values)
    np.testing.assert_allclose(remote["diffraction"].values, local["diffraction"].values, rtol=1e-6)
    assert remote["shape"].shape == (1, 6, 32, 32)
