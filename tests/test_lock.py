"""The lease that keeps two builds from one folder, on one host or several (issue 9, item 4)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import dask
import numpy as np
import pytest

from conftest import cli_env
from molmnist_dask.errors import InputError
from molmnist_dask.lock import StoreLock

FAST = {"molmnist.lock.lease": 1.0, "molmnist.lock.renew": 0.2}
FAST_ENV = {"DASK_MOLMNIST__LOCK__LEASE": "2", "DASK_MOLMNIST__LOCK__RENEW": "0.25"}

HOLD = """
import sys, time, dask
from molmnist_dask.lock import StoreLock
with dask.config.set({"molmnist.lock.lease": 1.0, "molmnist.lock.renew": 0.2}):
    with StoreLock(sys.argv[1]):
        print("held", flush=True)
        time.sleep(60)
"""


def holder(folder, host=None):
    """A process that takes the lock and keeps it (renewing) until killed."""
    env = {**cli_env(), **({"MOLMNIST_LOCK_HOST": host} if host else {})}
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(folder)], stdout=subprocess.PIPE,
                            text=True, env=env)
    assert proc.stdout.readline() == "held\n"
    return proc


def record(folder) -> dict:
    return json.loads((folder / ".lock").read_bytes())


def test_held_released_and_renewed(tmp_path):
    with dask.config.set(FAST), StoreLock(tmp_path) as lock:
        first = record(tmp_path)
        assert first["pid"] == os.getpid() and first["token"] == lock.token
        time.sleep(0.7)
        assert record(tmp_path)["beat"] > first["beat"]          # the lease is renewed
        with pytest.raises(InputError) as err:
            StoreLock(tmp_path).__enter__()
        assert "\n" not in str(err.value) and "alive" in str(err.value)
    assert list(tmp_path.iterdir()) == []


def test_a_live_holder_on_another_host_is_refused(tmp_path):
    proc = holder(tmp_path, host="other-node")
    try:
        start = time.monotonic()
        with dask.config.set(FAST), pytest.raises(InputError, match="other-node"):
            StoreLock(tmp_path).__enter__()
        assert time.monotonic() - start < 1.0    # it beat within a renewal: no need to wait a lease
    finally:
        proc.kill()
        proc.wait()


def test_a_dead_holder_on_this_host_is_taken_over_at_once(tmp_path):
    proc = holder(tmp_path)
    proc.kill()
    proc.wait()
    start = time.monotonic()
    with dask.config.set({"molmnist.lock.lease": 30.0, "molmnist.lock.renew": 5.0}), StoreLock(tmp_path):
        assert record(tmp_path)["pid"] == os.getpid()
    assert time.monotonic() - start < 1.0


def test_a_dead_holder_on_another_host_is_taken_over_after_its_lease(tmp_path):
    proc = holder(tmp_path, host="vanished-node")
    proc.kill()
    proc.wait()
    start = time.monotonic()
    with dask.config.set(FAST), StoreLock(tmp_path):
        assert record(tmp_path)["host"] != "vanished-node"
    assert 1.0 <= time.monotonic() - start < 5.0


def test_a_garbled_old_lock_is_taken_over(tmp_path):
    (tmp_path / ".lock").write_text("half a record")
    past = time.time() - 10
    os.utime(tmp_path / ".lock", (past, past))
    with dask.config.set(FAST), StoreLock(tmp_path):
        assert record(tmp_path)["pid"] == os.getpid()


def test_lease_settings_are_checked(tmp_path):
    with dask.config.set({"molmnist.lock.lease": 1.0, "molmnist.lock.renew": 2.0}):
        with pytest.raises(InputError, match="molmnist.lock.renew"):
            StoreLock(tmp_path).__enter__()


# -- a build killed on one host resumes on another ---------------------------------------------------

def _unshare_works() -> bool:
    if shutil.which("unshare") is None:
        return False
    run = subprocess.run(["unshare", "--uts", "sh", "-c", "hostname other-node && hostname"],
                         capture_output=True, text=True)
    return run.returncode == 0 and run.stdout.strip() == "other-node"


def _on_other_host(cmd: list) -> tuple:
    """``cmd`` as run on host "other-node": its own UTS namespace (root), else a faked name."""
    if _unshare_works():
        line = " ".join(f"'{c}'" for c in cmd)
        return ["unshare", "--uts", "sh", "-c", f"hostname other-node && exec {line}"], {}
    if os.environ.get("CI"):
        pytest.fail("unshare --uts is not available (run the tests as root in CI)")
    return cmd, {"MOLMNIST_LOCK_HOST": "other-node"}


def build_cmd(out) -> list:
    return [sys.executable, "-m", "molmnist_dask.cli", "build", "-o", str(out), "--variants", "60",
            "--size", "64", "--workers", "1", "--no-progress"]


def test_a_build_killed_on_one_host_resumes_on_another(tmp_path):
    # many small parts, so that the build is killed with some written and some not
    env = {**cli_env(), **FAST_ENV, "DASK_MOLMNIST__PART_FRAMES": "20", "DASK_MOLMNIST__BLOCK_FRAMES": "20"}
    out = tmp_path / "store"
    cmd, extra = _on_other_host(build_cmd(out))
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**env, **extra}, cwd=tmp_path, start_new_session=True)
    try:
        deadline = time.monotonic() + 240
        while not list(out.rglob("*.nc")) and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.1)
        assert proc.poll() is None, proc.stderr.read()
    finally:
        os.killpg(proc.pid, signal.SIGKILL)    # the node vanishes: build, workers and all
        proc.wait()
    assert record(out)["host"] == "other-node"
    resumed = subprocess.run(build_cmd(out), capture_output=True, text=True, env=env, cwd=tmp_path,
                             timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    clean = subprocess.run(build_cmd(tmp_path / "clean"), capture_output=True, text=True, env=env,
                           cwd=tmp_path, timeout=600)
    assert clean.returncode == 0, clean.stderr
    import molmnist_dask as mm

    a, b = mm.open_dataset(out), mm.open_dataset(tmp_path / "clean")
    for var in ("shape", "diffraction", "lost_atoms", "lost_electrons"):
        assert np.array_equal(a[var].values, b[var].values), var
    assert not (out / ".lock").exists()
