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
    assert cluster.status.name == "closed"


def test_connect_uses_the_active_client_and_leaves_it_open(client, capsys):
    with connect() as c:
        assert c is client
        assert "active client" in capsys.readouterr().out
    assert client.status == "running"
