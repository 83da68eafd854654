"""Running on a real distributed.LocalCluster: same bits as the local scheduler, whatever the
workers or blocks; the active-client rule; reaching (or not) a scheduler."""

import time
from types import SimpleNamespace

import dask
import xarray as xr
import numpy as np
import pytest
from distributed import get_task_stream

import molmnist_dask as mm
from conftest import DATA_VARS, assert_same, closed_port, computed, save_sync
from molmnist_dask import InputError, TrajectorySource
from molmnist_dask.cluster import connect, get_client


@pytest.fixture(scope="module")
def sources(md):
    return [TrajectorySource("adk", md.PSF, md.DCD, selection="protein"),
            TrajectorySource("gro", md.GRO, md.XTC, selection="protein")]


@pytest.fixture(scope="module")
def reference(sources):
    """Synchronous, blocks of 4 variants: the baseline the other runs must equal."""
    lazy = mm.build_dataset(sources, size=32, extent=120.0, variants=6, oversampling=2, block_size=4)
    return SimpleNamespace(lazy=lazy, ds=computed(lazy))


def test_cluster_save_equals_sync_bit_for_bit(client, reference, tmp_path):
    with get_task_stream(client) as ts:
        out = mm.save_dataset(reference.lazy, tmp_path / "on-cluster", progress=False)
    assert_same(mm.open_dataset(out), reference.ds)
    # the active client was used: its workers rendered and wrote every part
    writes = [t for t in ts.data if "write-part" in str(t["key"])]
    # 12 frames on 2 worker threads, 2 parts a thread: three frames a part, one task each
    assert len(writes) == 2 * 2 and len(ts.data) <= len(writes) + 1  # + the shared header
    assert {t["worker"] for t in ts.data} <= set(client.scheduler_info()["workers"])


def test_cluster_compute_equals_sync(client, reference):
    ds = reference.lazy.compute()  # the active client computes it
    for v in DATA_VARS:
        assert np.array_equal(ds[v].values, reference.ds[v].values), v


@pytest.mark.parametrize("part_frames", [1, 4, 6])
def test_saved_bytes_do_not_depend_on_the_part_size(client, reference, tmp_path, part_frames):
    out = mm.save_dataset(reference.lazy, tmp_path / "parts", progress=False, part_frames=part_frames)
    xr.testing.assert_identical(xr.open_dataset(out).load(), reference.ds)


def test_saved_bytes_do_not_depend_on_the_sub_block(reference, tmp_path):
    with dask.config.set({"molmnist.sub-block-bytes": 1}):  # one frame at a time
        out = save_sync(reference.lazy, tmp_path / "one-at-a-time")
    xr.testing.assert_identical(xr.open_dataset(out).load(), reference.ds)


@pytest.mark.parametrize("num_workers", [1, 2, 3])
def test_result_does_not_depend_on_the_number_of_workers(reference, num_workers):
    with dask.config.set(scheduler="threads", num_workers=num_workers):
        ds = reference.lazy.compute()
    assert_same(ds, reference.ds)


@pytest.fixture(scope="module", params=[1, 5, None])
def reblocked(request, sources):
    block_size = request.param
    lazy = mm.build_dataset(sources, size=32, extent=120.0, variants=6, oversampling=2,
                            block_size=block_size)
    expected = (6,) if block_size is None else tuple(min(block_size, 6 - i) for i in range(0, 6, block_size))
    assert lazy["shape"].chunks[1] == expected
    return computed(lazy)


def test_shapes_do_not_depend_on_the_block_size(reblocked, reference):
    for v in ("shape", "lost_atoms", "lost_electrons"):
        assert np.array_equal(reblocked[v].values, reference.ds[v].values), v


def test_diffraction_does_not_depend_on_the_block_size(reblocked, reference):
    assert np.array_equal(reblocked["diffraction"].values, reference.ds["diffraction"].values)


def test_save_with_threads_equals_sync(reference, tmp_path):
    with dask.config.set(scheduler="threads", num_workers=2):
        out = mm.save_dataset(reference.lazy, tmp_path / "threads", progress=False)
    assert_same(mm.open_dataset(out), reference.ds)
    assert_same(mm.open_dataset(save_sync(reference.lazy, tmp_path / "sync")), reference.ds)


def test_unreachable_scheduler_is_a_quick_clear_error(monkeypatch):
    import molmnist_dask.cluster as cluster_module

    monkeypatch.setattr(cluster_module, "CONNECT_TIMEOUT", "3s")
    address = f"tcp://127.0.0.1:{closed_port()}"
    t = time.monotonic()
    with pytest.raises(InputError) as err:
        get_client(address)
    assert time.monotonic() - t < 20
    assert address in str(err.value) and "\n" not in str(err.value)


def test_get_client_by_address_and_scheduler_file(cluster, tmp_path, capsys):
    client = get_client(cluster.scheduler_address)
    try:
        printed = capsys.readouterr().out
        assert cluster.scheduler_address in printed and "dashboard: http" in printed
        assert client.submit(sum, [1, 2]).result() == 3
        client.write_scheduler_file(str(tmp_path / "scheduler.json"))
    finally:
        client.close()
    by_file = get_client(str(tmp_path / "scheduler.json"))
    try:
        assert by_file.scheduler.address == cluster.scheduler_address
    finally:
        by_file.close()
    assert cluster.status.name == "running"  # closing our clients left the cluster alone


@pytest.mark.parametrize("where,match", [("nowhere", "nowhere"), ("/no/such/scheduler.json", "scheduler.json")])
def test_get_client_bad_where(where, match):
    with pytest.raises(InputError, match=match):
        get_client(where)


def test_connect_local_prints_dashboard_and_stops_what_it_started(capsys):
    with connect("local", n_workers=2) as client:
        printed = capsys.readouterr().out
        assert "dashboard: http" in printed and "2 workers" in printed
        assert len(client.scheduler_info()["workers"]) == 2
        cluster = client.cluster
        assert client.submit(lambda: 42).result() == 42
        # its workers keep freed memory from the start (the preload), before any save
        assert set(client.run(_allocator).values()) == {True}
    assert cluster.status.name == "closed"


def _allocator() -> bool:
    from molmnist_dask.malloc import SETTINGS, applied

    return applied == SETTINGS


def test_connect_uses_the_active_client_and_leaves_it_open(client, capsys):
    with connect() as c:
        assert c is client
        assert "active client" in capsys.readouterr().out
    assert client.status == "running"


# -- errors through the CLI: one line on stderr, exit 2 (issue 10) -----------------------------------

def molmnist(*args, env=None, timeout=300):
    import subprocess
    import sys

    from conftest import cli_env

    return subprocess.run([sys.executable, "-m", "molmnist_dask.cli", *map(str, args)], capture_output=True,
                          text=True, env={**cli_env(), **(env or {})}, timeout=timeout)


@pytest.fixture(scope="module")
def adk_run(md, tmp_path_factory):
    from molmnist_dask.runfile import write_run_file

    root = tmp_path_factory.mktemp("run")
    return write_run_file(root / "adk.toml", [TrajectorySource("adk", md.PSF, md.DCD)],
                          grid={"size": 16, "extent": 80.0}, options={"variants": 2})


def assert_one_line(result, *named):
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("molmnist: error: "), result.stderr
    for text in named:
        assert text in result.stderr, result.stderr


@pytest.mark.parametrize("flags, named", [
    ([], ["jobqueue.slurm.cores", "jobqueue.slurm.memory", "--cores", "--memory", "jobqueue.yaml"]),
    (["--cores", "4"], ["jobqueue.slurm.memory", "--memory"]),
])
def test_slurm_without_cores_or_memory(adk_run, tmp_path, flags, named):
    empty = tmp_path / "dask-config"   # no ~/.config/dask/jobqueue.yaml of this machine
    empty.mkdir()
    result = molmnist("build", adk_run, "-o", tmp_path / "out", "--cluster", "slurm", *flags,
                      "--no-progress", env={"DASK_CONFIG": str(empty)})
    assert_one_line(result, *named)
    if flags:
        assert "jobqueue.slurm.cores" not in result.stderr


@pytest.mark.parametrize("content, named", [
    ("{\"type\": \"Scheduler\", \"addr", "not valid JSON"),      # cut short: still being written
    ("[1, 2]", "no scheduler address"),
    ("{\"type\": \"Scheduler\"}", "no scheduler address"),
])
def test_a_bad_scheduler_file(adk_run, tmp_path, content, named):
    path = tmp_path / "scheduler.json"
    path.write_text(content)
    start = time.monotonic()
    result = molmnist("build", adk_run, "-o", tmp_path / "out", "--scheduler-file", path, "--no-progress")
    assert_one_line(result, named, str(path))
    assert time.monotonic() - start < 30


def test_a_topology_without_coordinates(md, tmp_path):
    run = tmp_path / "run.toml"
    run.write_text(f'[[molecule]]\nname = "adk"\ntopology = "{md.PSF}"\ntrajectory = []\n')
    assert_one_line(molmnist("build", run, "-o", tmp_path / "out", "--no-progress"),
                    "holds no coordinates", "adk.psf")


@pytest.mark.parametrize("suffix", ["dcd", "xtc"])
def test_an_unreadable_trajectory_says_one_line_and_nothing_more(md, tmp_path, suffix):
    bad = tmp_path / f"bad.{suffix}"
    bad.write_text("this is a text file, not a trajectory\n" * 20)
    top = md.PSF if suffix == "dcd" else md.GRO
    run = tmp_path / "run.toml"
    run.write_text(f'[[molecule]]\nname = "x"\ntopology = "{top}"\ntrajectory = ["{bad}"]\n')
    result = molmnist("build", run, "-o", tmp_path / "out", "--no-progress")
    assert_one_line(result, "cannot read", str(bad))
    assert "Exception ignored" not in result.stderr


def test_ctrl_c_ends_with_one_line(tmp_path):
    import os
    import signal
    import subprocess
    import sys

    from conftest import cli_env

    cmd = [sys.executable, "-m", "molmnist_dask.cli", "build", "-o", str(tmp_path / "out"),
           "--variants", "300", "--workers", "2", "--no-progress"]
    # a session of its own: Ctrl-C at a terminal signals the whole process group, workers included
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=cli_env(), start_new_session=True, cwd=tmp_path)
    try:
        assert proc.stdout.readline().startswith("dask: local cluster")
        time.sleep(3)  # the workers are rendering
        os.killpg(proc.pid, signal.SIGINT)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130
    assert err == "molmnist: interrupted; run the same command again to resume\n", err


@pytest.mark.parametrize("after", [0.5, 1.5])
def test_ctrl_c_while_the_package_loads_ends_with_one_line(tmp_path, after):
    """The package's names load when first used, so an interrupt while dask, xarray and
    MDAnalysis import lands in the command's own handler, not in Python's traceback."""
    import signal
    import subprocess
    import sys

    from conftest import cli_env

    proc = subprocess.Popen([sys.executable, "-m", "molmnist_dask.cli", "build", "-o", str(tmp_path / "out"),
                             "--variants", "3", "--size", "32", "--no-progress"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=cli_env(), cwd=tmp_path)
    time.sleep(after)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert err == "molmnist: interrupted; run the same command again to resume\n", err


# -- the progress bar counts what it says ------------------------------------------------------------

@pytest.mark.parametrize("on_cluster", [False, True])
def test_progress_counts_frames_not_tasks(cluster, capsys, on_cluster):
    from distributed import Client

    from molmnist_dask.progress import compute_with_progress

    tasks = [dask.delayed(lambda i: i * i, pure=True)(i) for i in range(4)]
    frames = [209, 209, 209, 7]
    if on_cluster:
        with Client(cluster):
            results = compute_with_progress(tasks, desc="build", weights=frames, unit="frame")
    else:
        with dask.config.set(scheduler="sync"):
            results = compute_with_progress(tasks, desc="build", weights=frames, unit="frame")
    assert results == [0, 1, 4, 9]        # in the order of the tasks, whatever order they finish
    err = capsys.readouterr().err
    assert "634/634" in err and "frame" in err, err
