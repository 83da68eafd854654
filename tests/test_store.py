"""Saving and opening: a store folder of part files and one .nc file, read back with this package
and with plain xarray; lazy opening; incomplete stores."""

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import netCDF4
import numpy as np
import pytest
import xarray as xr

import molmnist_dask as mm
from conftest import assert_same, computed, index, looks_complete, mark_incomplete, part_files, save_sync
from molmnist_dask import InputError, TrajectorySource
from molmnist_dask.info import describe


@pytest.fixture(scope="module")
def built(md, tmp_path_factory):
    srcs = [TrajectorySource("adk", md.PSF, md.DCD, selection="protein"),
            TrajectorySource("ca", md.PSF, md.DCD, selection="name CA")]
    lazy = mm.build_dataset(srcs, size=32, extent=80.0, variants=8, block_size=3, oversampling=2)
    root = tmp_path_factory.mktemp("store")
    store = save_sync(lazy, root / "adk-store", part_frames=3)
    nc = save_sync(lazy, root / "adk.nc", part_frames=3)
    return SimpleNamespace(lazy=lazy, ref=computed(lazy), store=store, nc=nc, root=root)


def test_store_layout(built):
    idx = index(built.store)
    assert idx.complete is True
    assert [(p.molecule, p.start, p.stop) for p in idx.parts] == [(m, a, b) for m in (0, 1)
                                                                  for a, b in ((0, 3), (3, 5), (5, 8))]
    assert sorted(built.store / p.name for p in idx.parts) == part_files(built.store)
    assert (built.store / "index.nc").exists() and not (built.store / ".lock").exists()
    assert not list((built.store / "parts").glob(".*"))  # no temporary files left
    assert built.nc.is_file() and not (built.root / "adk.nc.parts").exists()


def test_parts_are_netcdf4_one_chunk_per_image_with_checksums(built):
    with netCDF4.Dataset(part_files(built.store)[0]) as nc:
        assert nc.data_model == "NETCDF4"
        for var, (ny, nx) in (("shape", (32, 32)), ("diffraction", (64, 64))):
            v = nc.variables[var]
            assert v.chunking() == [1, 1, ny, nx]
            assert v.filters()["fletcher32"] is True
        shape_filters = nc.variables["shape"].filters()
        assert shape_filters["zlib"] and shape_filters["shuffle"]  # deflate: every reader has it
        assert not nc.variables["diffraction"].filters()["zlib"]
        assert nc.variables["lost_electrons"].filters()["fletcher32"] is True


def test_reopened_store_equals_the_dataset_saved(built):
    ds = mm.open_dataset(built.store)
    assert ds["shape"].chunks[1] == (1,) * 8  # one image per chunk by default
    assert_same(ds, built.ref)
    by_part = mm.open_dataset(built.store, chunks="part")
    assert by_part["diffraction"].chunks[1] == (3, 2, 3)
    assert_same(by_part, built.ref)


def test_nc_file_equals_the_dataset_saved(built):
    assert_same(mm.open_dataset(built.nc), built.ref)


def test_plain_xarray_opens_the_store(built):
    with xr.open_dataset(built.store) as ds:  # the molmnist backend, found by guess_can_open
        assert_same(ds, built.ref)
    with xr.open_dataset(built.store, engine="molmnist", chunks={}) as ds:
        assert ds["shape"].chunks[1] == (1,) * 8
        xr.testing.assert_identical(ds.compute(), built.ref)


def test_plain_xarray_reads_the_parts_without_the_index(built):
    with xr.open_mfdataset(str(built.store / "parts" / "*.nc"), combine="by_coords") as ds:
        ds = ds.sortby("label")
        assert_same(ds, built.ref, attrs=False)


def test_plain_xarray_reads_the_nc_file_as_the_readme_says(built):
    with xr.open_dataset(built.nc, chunks={}) as ds:  # one dask chunk per stored image
        assert ds["shape"].chunks[:2] == ((1, 1), (1,) * 8)
        assert ds["diffraction"].chunks[2:] == ((64,), (64,))
        assert_same(ds, built.ref, attrs=False)
        assert ds.attrs["grid_size"] == 32 and ds["shape"].attrs["units"] == "electrons"
    with netCDF4.Dataset(built.nc) as nc:
        assert nc.data_model == "NETCDF4"


@pytest.fixture
def store_copy(built, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(built.store, copy)
    return copy


def test_opening_reads_no_image_until_indexed(built, store_copy, tmp_path):
    ds = mm.open_dataset(store_copy)
    aside = tmp_path / "aside"
    shutil.move(store_copy / "parts", aside)
    (store_copy / "parts").mkdir()
    # metadata, coordinates and the small variables come from the index
    assert ds["shape"].shape == (2, 8, 32, 32) and ds.sizes["qx"] == 64
    np.testing.assert_array_equal(ds.lost_atoms.values, built.ref.lost_atoms.values)
    with pytest.raises(InputError, match="0001-0000000-0000003.nc"):
        ds["shape"].isel(molecule=1, variant=0).values
    # one part back: a selection inside it reads it, and only it
    shutil.copy(aside / "0001-0000003-0000005.nc", store_copy / "parts")
    sel = ds["shape"].sel(molecule="ca", variant=slice(3, 4)).values
    np.testing.assert_array_equal(sel, built.ref["shape"].sel(molecule="ca", variant=slice(3, 4)).values)
    diff = ds["diffraction"].sel(molecule="ca", variant=[4, 3]).values
    np.testing.assert_array_equal(diff, built.ref["diffraction"].sel(molecule="ca", variant=[4, 3]).values)
    with pytest.raises(InputError, match="0001-0000000-0000003.nc"):  # variant 2: the part not put back
        ds["shape"].sel(molecule="ca", variant=slice(2, 4)).values


@pytest.fixture
def incomplete(store_copy):
    mark_incomplete(store_copy, 2)
    return store_copy


def test_incomplete_store_is_refused_telling_to_resume(incomplete):
    with pytest.raises(InputError) as err:
        mm.open_dataset(incomplete)
    assert "4/6" in str(err.value) and "resume" in str(err.value) and str(incomplete) in str(err.value)
    text = describe(incomplete)
    assert "parts: 4/6" in text and "INCOMPLETE" in text
    with pytest.raises(InputError):
        mm.consolidate(incomplete, incomplete.parent / "out.nc")
    assert not (incomplete.parent / "out.nc").exists()


def test_describe_a_complete_store(built):
    text = describe(built.store)
    assert "parts: 6/6" in text and "complete" in text
    assert "adk" in text and "ca" in text and "32 x 32" in text


def test_consolidate_equals_the_store(built, tmp_path):
    out = mm.consolidate(built.store, tmp_path / "one.nc", progress=False)
    assert_same(mm.open_dataset(out), built.ref)
    assert not list(tmp_path.glob(".*tmp"))


def test_saving_again_keeps_every_part(built, store_copy):
    before = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in part_files(store_copy)}
    save_sync(built.lazy, store_copy)
    assert {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in part_files(store_copy)} == before


def test_in_memory_dataset_saves_too(built, tmp_path):
    out = save_sync(built.ref, tmp_path / "mem")
    assert_same(mm.open_dataset(out), built.ref)


@pytest.mark.parametrize("what", ["folder", "text-nc", "missing"])
def test_opening_what_is_not_a_dataset(tmp_path, what):
    path = {"folder": tmp_path, "text-nc": tmp_path / "x.nc", "missing": tmp_path / "gone"}[what]
    if what == "text-nc":
        path.write_text("not netcdf")
    with pytest.raises(InputError, match=str(path.name)):
        mm.open_dataset(path)


def test_output_folder_holding_other_files_is_refused(built, tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(InputError, match="not a molmnist store"):
        save_sync(built.lazy, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


@pytest.mark.parametrize("where", ["under-a-file", "under-a-file-nc", "proc"])
def test_unwritable_output_is_an_input_error(built, tmp_path, where):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    out = {"under-a-file": blocker / "store", "under-a-file-nc": blocker / "out.nc",
           "proc": Path("/proc/molmnist-test-store")}[where]
    with pytest.raises(InputError) as err:
        save_sync(built.lazy, out)
    assert out.name in str(err.value) and "\n" not in str(err.value)
    assert not looks_complete(out)


def test_saving_is_one_task_per_part(tmp_path):
    """A part is one task that renders and writes its frames: no render or getter tasks."""
    import dask
    from MDAnalysisTests.datafiles import DCD, PSF

    from molmnist_dask.store import write
    from molmnist_dask.store.layout import cut

    ds = mm.build_dataset([mm.TrajectorySource("adk", PSF, DCD)], size=16, variants=12, block_size=4)
    parts = cut(1, 12, 5)
    tasks = write._tasks(ds, tmp_path / "s", parts, {})
    graph = dict(dask.delayed(tasks).__dask_graph__())
    writes = [k for k in graph if str(k).startswith("write-part-")]
    assert len(writes) == len(parts) == 3
    assert len(graph) <= len(parts) + 2  # the writes, the shared header, the list
