"""Issue 17 items 1-3: the plan as an object (`Build`), any dataset written by the workers,
the allocator's settings on any cluster.

- a build, a selection of it and any other dataset (a computation, numpy data, an opened
  store) are written part by part by tasks; a part's bytes do not depend on which path wrote
  it, and equal the landed version (tests/data/landed-v0.1.0.nc) where they overlap;
- a selection is recognised as a smaller plan from the dataset's graph alone (no registry),
  and what is not a plain selection is not;
- on a real cluster the tasks run on the workers, never on the client;
- the workers of a bare ``distributed.LocalCluster`` keep freed memory once a save ran.
"""

from __future__ import annotations

import filecmp
import warnings
from pathlib import Path

import dask
import numpy as np
import pytest
import xarray as xr

import molmnist_dask as mm
from conftest import DATA_VARS, computed, index, part_files, save_sync
from molmnist_dask import TrajectorySource
from molmnist_dask.dataset import build_of
from molmnist_dask.store import write

LANDED = Path(__file__).parent / "data" / "landed-v0.1.0.nc"


@pytest.fixture(scope="module")
def three(md):
    srcs = [TrajectorySource(name, md.PSF, md.DCD, selection=sel)
            for name, sel in (("adk", "protein"), ("ca", "name CA"), ("bb", "backbone"))]
    return mm.plan(srcs, size=24, extent=80.0, variants=10, block_size=3)


@pytest.fixture(scope="module")
def landed_build(md):
    srcs = [TrajectorySource("adk", md.PSF, md.DCD, selection="protein"),
            TrajectorySource("gro", md.GRO, md.XTC, selection="protein")]
    return mm.plan(srcs, size=48, extent=120.0, variants=5, oversampling=2)


@pytest.fixture(scope="module")
def landed():
    with xr.open_dataset(LANDED) as ds:
        return ds.load()


def from_arrays(ds, path, **kwargs):
    """Save through the array path even where the plan is known (what any other dataset takes)."""
    original = write.build_of
    write.build_of = lambda ds: None
    try:
        return save_sync(ds, path, **kwargs)
    finally:
        write.build_of = original


def same_parts(a, b) -> None:
    pa, pb = part_files(a), part_files(b)
    assert [p.name for p in pa] == [p.name for p in pb] and pa
    for x, y in zip(pa, pb):
        assert filecmp.cmp(x, y, shallow=False), f"{x.name} differs"


def same_values(ds, ref, variables=DATA_VARS) -> None:
    for v in variables:
        a, b = np.asarray(ds[v].values), np.asarray(ref[v].values)
        assert a.dtype == b.dtype and a.shape == b.shape, v
        assert a.tobytes() == b.tobytes(), f"{v} differs"


# --- the plan as an object ------------------------------------------------------------------

def test_plan_is_a_public_build_object(three, md):
    assert isinstance(three, mm.Build) and three.shape == (3, 10) and three.is_whole
    assert "3 molecules" in repr(three) and "24 px" in repr(three)
    again = mm.build_dataset(three.sources, size=24, extent=80.0, variants=10, block_size=3)
    ds = three.to_dataset()
    assert ds["shape"].data.name == again["shape"].data.name  # the same graph, same keys
    small = three.select(molecule=[0, 2], variant=slice(0, None, 2))
    assert small.shape == (2, 5) and not small.is_whole
    assert list(small.variants) == [0, 2, 4, 6, 8] and [small.source(m).name for m in (0, 1)] == ["adk", "bb"]
    assert small.select(variant=[1]).variants.tolist() == [2]  # selections compose
    xr.testing.assert_identical(small.to_dataset(), ds.isel(molecule=[0, 2], variant=slice(0, None, 2)))
    with pytest.raises(mm.InputError, match="variant"):
        three.select(variant=[12])


def test_no_registry_of_plans():
    from molmnist_dask import dataset

    for name in ("_PLANS", "remember", "plan_of"):
        assert not hasattr(dataset, name)
    assert not hasattr(write, "_write_from_arrays")


def test_the_33rd_build_of_a_process_is_still_a_plan(md):
    """No registry of the last builds: the plan travels with each dataset's graph."""
    src = [TrajectorySource("adk", md.PSF, md.DCD)]
    first = mm.build_dataset(src, size=8, extent=80.0, variants=2)
    for size in range(9, 42):
        mm.build_dataset(src, size=size, extent=80.0, variants=2)
    assert build_of(first.isel(variant=[1])).variants.tolist() == [1]


def test_a_selection_is_recognised_as_a_smaller_plan(three):
    ds = three.to_dataset()
    assert build_of(ds).is_whole
    for sel, molecules, variants in (
            (ds.isel(molecule=[0, 2], variant=slice(0, None, 2)), [0, 2], [0, 2, 4, 6, 8]),
            (ds.sel(molecule=["bb"]).isel(variant=[7, 1]), [2], [7, 1]),
            (ds.isel(variant=slice(3, 6)).isel(molecule=[1]), [1], [3, 4, 5])):
        b = build_of(sel)
        assert b is not None and b.molecules.tolist() == molecules and b.variants.tolist() == variants


@pytest.mark.parametrize("change", ["log1p", "flip", "crop", "rechunk", "astype", "numpy", "relabel"])
def test_what_is_not_a_plain_selection_is_not_a_plan(three, change):
    ds = three.to_dataset()
    other = {
        "log1p": lambda: ds.assign(diffraction=np.log1p(ds.diffraction)),
        # raw dask data flipped under unchanged coordinates: must not be taken for the plan
        "flip": lambda: ds.assign(shape=(ds.shape.dims, ds.shape.data[..., ::-1], ds.shape.attrs)),
        "crop": lambda: ds.isel(x=slice(2, 20)),
        "rechunk": lambda: ds.chunk({"variant": 5}),
        "astype": lambda: ds.assign(shape=ds.shape.astype("float32", copy=True) * 1),
        "numpy": lambda: computed(ds.isel(variant=[0, 1])),
        "relabel": lambda: ds.assign_coords(variant=ds.variant.values[::-1]),
    }[change]()
    assert build_of(other) is None


# --- one write path: the bytes of a part do not depend on it -------------------------------------

def test_whole_build_parts_equal_whatever_path_wrote_them(three, tmp_path):
    ds = three.to_dataset()
    plan_path = save_sync(ds, tmp_path / "plan", part_frames=4)
    same_parts(plan_path, from_arrays(ds, tmp_path / "arrays", part_frames=4))
    same_parts(plan_path, save_sync(computed(ds), tmp_path / "numpy", part_frames=4))
    with dask.config.set(scheduler="sync"):
        same_parts(plan_path, three.save(tmp_path / "build", progress=False, part_frames=4))


def test_selection_parts_equal_whatever_path_wrote_them(three, tmp_path):
    sel = three.to_dataset().isel(molecule=[0, 2], variant=slice(0, None, 2))
    plan_path = save_sync(sel, tmp_path / "plan", part_frames=2)
    same_parts(plan_path, from_arrays(sel, tmp_path / "arrays", part_frames=2))
    with dask.config.set(scheduler="sync"):
        three.select(molecule=[0, 2], variant=slice(0, None, 2)).save(tmp_path / "build", progress=False,
                                                                      part_frames=2)
    same_parts(plan_path, tmp_path / "build")
    same_values(mm.open_dataset(plan_path).compute(), computed(sel))


@pytest.mark.parametrize("chunks", ["image", "part", None])
def test_a_store_opened_and_saved_again_is_the_same(three, tmp_path, chunks):
    first = save_sync(three.to_dataset(), tmp_path / "first", part_frames=4)
    again = save_sync(mm.open_dataset(first, chunks=chunks), tmp_path / "again", part_frames=4)
    same_parts(first, again)


@pytest.mark.parametrize("options", [dict(fluence=1e5, noise_seed=3),
                                     dict(orientation="random", orientation_seed=5)])
def test_a_selection_keeps_its_noise_and_orientations(md, tmp_path, options):
    """Noise and rotations are seeded by each image's variant in the whole build: a selection
    rendered from the plan has the same images as the whole build there."""
    b = mm.plan([TrajectorySource("adk", md.PSF, md.DCD)], size=16, extent=80.0, variants=6, **options)
    ref = computed(b.to_dataset()).isel(variant=[5, 1, 3])
    out = save_sync(b.to_dataset().isel(variant=[5, 1, 3]), tmp_path / "s", part_frames=2)
    same_values(mm.open_dataset(out).compute(), ref)


def test_selection_and_computation_equal_the_landed_version(landed_build, landed, tmp_path):
    ds = landed_build.to_dataset()
    picks = dict(molecule=[1], variant=[0, 2, 4])
    out = save_sync(ds.isel(**picks), tmp_path / "sel", part_frames=2)
    same_values(mm.open_dataset(out).compute(), landed.isel(**picks))
    logged = ds.assign(diffraction=np.log1p(ds.diffraction))
    out = save_sync(logged, tmp_path / "log", part_frames=2)
    back = mm.open_dataset(out).compute()
    same_values(back, landed, ("shape", "lost_atoms", "lost_electrons"))
    assert back.diffraction.values.tobytes() == np.log1p(landed.diffraction.values).tobytes()


def test_array_path_streams_chunk_aligned_sub_blocks():
    assert write._steps(10, 4, ()) and write._steps(50, 1, {10, 20, 30, 40}) == [(0, 50)]
    with dask.config.set({"molmnist.sub-block-bytes": 25}):
        assert write._steps(50, 1, {10, 20, 30, 40}) == [(0, 20), (20, 40), (40, 50)]
        assert write._steps(100, 1, {}) == [(0, 25), (25, 50), (50, 75), (75, 100)]
        assert write._steps(100, 1, {60}) == [(0, 60), (60, 100)]  # a chunk is never split


# --- on a cluster: the workers write --------------------------------------------------------

@pytest.mark.parametrize("kind", ["selection", "computed", "persisted"])
def test_a_sliced_save_runs_on_the_workers(client, three, tmp_path, monkeypatch, kind):
    from distributed import get_task_stream

    ds = three.to_dataset()
    ds = (ds.isel(molecule=[0, 2], variant=slice(0, None, 2)) if kind == "selection"
          else ds.isel(variant=slice(1, 9)).assign(diffraction=lambda d: np.log1p(d.diffraction)))
    ref = computed(ds)
    if kind == "persisted":  # chunks already on the workers: brought to the write tasks
        ds = ds.persist()

    def nowhere(*args, **kwargs):
        raise AssertionError("the client rendered or wrote a part")

    # the client's own copies: the workers import theirs
    monkeypatch.setattr(write, "PartWriter", nowhere)
    monkeypatch.setattr(write, "render_block", nowhere)
    with get_task_stream(client) as stream:
        out = mm.save_dataset(ds, tmp_path / "s", progress=False, part_frames=2)
    writes = [r for r in stream.data if str(r["key"]).startswith("write-part-")]
    assert len(writes) == len(part_files(out)) == len(index(out).parts) >= 4
    assert {r["worker"] for r in writes} <= set(client.scheduler_info()["workers"])
    if kind == "selection":  # rendered from the plan: no render tasks of the lazy graph
        assert not [r for r in stream.data if "render" in str(r["key"])]
    same_values(mm.open_dataset(out).compute(), ref)


def _kept_after_free() -> tuple:
    """Inside a task: MiB of a freed 48 MiB array the process keeps, and the settings made."""
    import psutil

    from molmnist_dask import malloc

    p = psutil.Process()
    a = np.ones(6 * 2**20)
    before = p.memory_info().rss
    del a
    return (before - p.memory_info().rss) / 2**20, dict(malloc.applied)


def test_workers_the_package_did_not_start_keep_freed_memory(md, tmp_path):
    """A bare LocalCluster (distributed's MALLOC_TRIM_THRESHOLD_=65536): a save registers the
    plugin, and from then on a task's freed buffers stay in its process for the next one."""
    from distributed import Client, LocalCluster

    from molmnist_dask.malloc import SETTINGS

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cluster = LocalCluster(n_workers=1, threads_per_worker=1, dashboard_address=None)
    with cluster, Client(cluster) as client:
        released, applied = client.submit(_kept_after_free, pure=False).result()
        assert applied == {} and released > 40  # distributed's default: handed back at once
        ds = mm.build_dataset([TrajectorySource("adk", md.PSF, md.DCD)], size=16, extent=80.0, variants=2)
        mm.save_dataset(ds, tmp_path / "s", progress=False)
        released, applied = client.submit(_kept_after_free, pure=False).result()
        assert applied == SETTINGS and released < 8  # kept for the next frame
