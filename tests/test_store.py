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
        assert ds.attrs["grid_size"] == 32 and ds["shape"].attrs["units"] == "1"
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


# --- outputs never clobber --------------------------------------------------------------------

def test_existing_nc_of_the_same_build_is_left_as_it_is(built):
    before = (built.nc.stat().st_ino, built.nc.stat().st_mtime_ns)
    save_sync(built.lazy, built.nc)
    assert (built.nc.stat().st_ino, built.nc.stat().st_mtime_ns) == before


def test_existing_nc_of_another_build_is_refused(built, tmp_path):
    other = tmp_path / "other.nc"
    shutil.copy(built.nc, other)
    before = other.read_bytes()
    smaller = mm.build_dataset([TrajectorySource("adk", *_adk_files())],
                               size=16, extent=80.0, variants=4)
    with pytest.raises(InputError, match="holds another dataset") as err:
        save_sync(smaller, other)
    assert "\n" not in str(err.value) and other.read_bytes() == before
    text = tmp_path / "notes.nc"
    text.write_text("mine")
    with pytest.raises(InputError, match="not a molmnist dataset"):
        save_sync(smaller, text)
    assert text.read_text() == "mine"


def _adk_files():
    from MDAnalysisTests.datafiles import DCD, PSF

    return PSF, DCD


def test_output_that_is_an_input_is_refused(md, tmp_path, capsys):
    """An AMBER NetCDF trajectory named like the output: the build must not destroy it."""
    import MDAnalysis as mda

    from conftest import quiet_universe, run_cli
    from molmnist_dask.runfile import write_run_file

    u = quiet_universe(md.PSF, md.DCD)
    traj = tmp_path / "out.nc"
    with mda.Writer(str(traj), u.atoms.n_atoms) as w:
        for _ in u.trajectory[:3]:
            w.write(u.atoms)
    before = traj.read_bytes()
    lazy = mm.build_dataset([TrajectorySource("adk", md.PSF, str(traj))], size=16, extent=80.0)
    with pytest.raises(InputError, match="one of the build's inputs"):
        save_sync(lazy, traj)
    run = write_run_file(tmp_path / "run.toml", [TrajectorySource("adk", md.PSF, str(traj))],
                         grid={"size": 16, "extent": 80.0})
    rc, _, stderr = run_cli(["build", run, "-o", traj, "--no-progress", "--workers", "1"], capsys)
    assert rc == 2 and "one of the build's inputs" in stderr and len(stderr.strip().splitlines()) == 1
    assert traj.read_bytes() == before


# --- files every reader opens -----------------------------------------------------------------

_H5_READER = """
import json, sys
import h5netcdf
import numpy as np
out = {}
for path in sys.argv[1:]:
    with h5netcdf.File(path, "r") as f:
        out[path] = {v: float(np.asarray(f.variables[v][...], dtype=np.float64).sum())
                     for v in ("shape", "diffraction")}
assert "netCDF4" not in sys.modules, "netCDF4 was imported"
print(json.dumps(out))
"""


def test_parts_and_consolidated_file_read_with_h5netcdf_alone(built):
    """h5py/h5netcdf read every part and the .nc file in a process without netCDF4 (no plugin
    filter: deflate, shuffle and Fletcher-32 are built into every HDF5)."""
    import subprocess
    import sys

    files = [str(p) for p in part_files(built.store)] + [str(built.nc)]
    done = subprocess.run([sys.executable, "-c", _H5_READER, *files], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    sums = json.loads(done.stdout)
    for path in files:
        ds = xr.open_dataset(path)
        for var in ("shape", "diffraction"):
            assert sums[path][var] == pytest.approx(float(ds[var].values.astype(np.float64).sum()), rel=1e-12)


@pytest.mark.skipif(shutil.which("ncdump") is None, reason="ncdump is not installed (Debian: netcdf-bin)")
def test_ncdump_reads_a_part_and_the_consolidated_file(built):
    import subprocess

    for path in (part_files(built.store)[0], built.nc):
        done = subprocess.run(["ncdump", "-v", "shape", str(path)], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        assert "shape =" in done.stdout and "NetCDF: Filter error" not in done.stdout


def test_two_stores_of_one_configuration_have_distinct_dask_keys(built, tmp_path):
    """Keys come from what is on disk (path and modification time), as xarray tokenizes
    open_dataset, never from the configuration alone."""
    copy = tmp_path / "copy"
    shutil.copytree(built.store, copy)
    a, b = mm.open_dataset(built.store), mm.open_dataset(copy)
    assert a["shape"].data.name != b["shape"].data.name
    assert mm.open_dataset(built.store)["shape"].data.name == a["shape"].data.name  # same files: same keys


# --- damage is named ----------------------------------------------------------------------------

def test_info_names_a_deleted_part(store_copy, capsys):
    from conftest import run_cli

    victim = part_files(store_copy)[3]
    victim.unlink()
    rc, stdout, _ = run_cli(["info", store_copy], capsys)
    assert "INCOMPLETE" in stdout and victim.name in stdout and "missing" in stdout and "5/6" in stdout
    with pytest.raises(InputError, match=victim.name):
        mm.open_dataset(store_copy)


def test_info_on_a_store_without_its_index(store_copy, capsys):
    from conftest import run_cli

    (store_copy / "index.nc").unlink()
    rc, _, stderr = run_cli(["info", store_copy], capsys)
    assert rc == 2 and "no index.nc: an interrupted build?" in stderr and len(stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("garbage", [b"not netcdf at all", b""])
def test_index_of_the_wrong_shape_is_one_line_naming_it(store_copy, capsys, garbage):
    from conftest import run_cli

    (store_copy / "index.nc").write_bytes(garbage)
    for argv in (["info", store_copy], ["consolidate", store_copy, store_copy.parent / "o.nc"]):
        rc, _, stderr = run_cli(argv, capsys)
        assert rc == 2 and "index.nc" in stderr and len(stderr.strip().splitlines()) == 1, argv
    with pytest.raises(InputError, match="index.nc"):
        xr.open_dataset(store_copy)


def test_index_that_is_netcdf_but_not_an_index(store_copy, capsys):
    from conftest import run_cli

    xr.Dataset({"a": ("x", [1, 2])}).to_netcdf(store_copy / "index.nc")
    rc, _, stderr = run_cli(["info", store_copy], capsys)
    assert rc == 2 and "index.nc" in stderr and "not a molmnist store index" in stderr


def test_consolidate_names_the_part_it_cannot_read(store_copy, capsys):
    from conftest import run_cli

    victim = part_files(store_copy)[2]
    with open(victim, "r+b") as f:
        f.truncate(victim.stat().st_size // 2)
    rc, _, stderr = run_cli(["consolidate", store_copy, store_copy.parent / "o.nc", "--no-progress"], capsys)
    assert rc == 2 and victim.name in stderr and "o.nc" not in stderr.split(victim.name)[0][-40:]
    assert not (store_copy.parent / "o.nc").exists()
