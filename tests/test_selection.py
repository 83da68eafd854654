"""Selections through the store backend are exact (issue 16): every indexing xarray can send
returns what the same selection of the consolidated .nc file and of the in-memory build
returns, with and without dask; only the images asked for are read; a folder without its
index says so."""

from __future__ import annotations

import pickle
import shutil
import subprocess
import sys
import warnings
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from types import SimpleNamespace

import numpy as np
import pytest
import xarray as xr
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

import molmnist_dask as mm
from conftest import cli_env, computed, save_sync
from molmnist_dask import InputError
from molmnist_dask.store import read_index
from molmnist_dask.store.backend import PartsArray

SIZES = {"molecule": 3, "variant": 7, "y": 16, "x": 16, "qy": 32, "qx": 32}
DIMS = tuple(SIZES)
EXAMPLES = settings(max_examples=40, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
FEWER = settings(EXAMPLES, max_examples=25)


SAME_WAY = {"xr.open_dataset(store)": "xr.open_dataset(nc)",
            "xr.open_dataset(store, chunks={})": "xr.open_dataset(nc, chunks={})",
            "mm.open_dataset(store)": "xr.open_dataset(nc, chunks={})",
            "mm.open_dataset(store, chunks='part')": "xr.open_dataset(nc, chunks={})"}


class Small(SimpleNamespace):
    def __repr__(self):  # hypothesis prints the fixture with every falsifying example
        return "small"


@pytest.fixture(scope="module")
def small(md, tmp_path_factory):
    """3 molecules x 7 variants at 16 px (diffraction 32 px) in parts of at most 3 variants,
    its consolidated .nc, the in-memory build, and each opened every way a user opens it."""
    srcs = [mm.TrajectorySource(name, md.PSF, md.DCD, selection=sel)
            for name, sel in (("adk", "protein"), ("ca", "name CA"), ("bb", "backbone"))]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        lazy = mm.build_dataset(srcs, size=16, extent=64.0, variants=7, oversampling=2)
        root = tmp_path_factory.mktemp("selection")
        store = save_sync(lazy, root / "store", part_frames=3)
        nc = mm.consolidate(store, root / "one.nc", progress=False)
        ref = computed(lazy)
    opened = {  # SAME_WAY: each way of opening the store, and the file's opened the same way
        "xr.open_dataset(store)": xr.open_dataset(store),
        "xr.open_dataset(store, chunks={})": xr.open_dataset(store, chunks={}),
        "mm.open_dataset(store)": mm.open_dataset(store),
        "mm.open_dataset(store, chunks='part')": mm.open_dataset(store, chunks="part"),
        "xr.open_dataset(nc)": xr.open_dataset(nc),
        "xr.open_dataset(nc, chunks={})": xr.open_dataset(nc, chunks={}),
    }
    parts = read_index(store).parts  # (0, 2), (2, 5), (5, 7) for each molecule
    yield Small(store=store, nc=nc, ref=ref, opened=opened, parts=parts)
    for ds in opened.values():
        ds.close()


def assert_selected(small, select):
    """``select`` of every opened dataset equals ``select`` of the in-memory build: values,
    dims, coordinates and dtypes (and a lazy selection's dims agree with what it reads).

    xarray and dask fail on a few selections whatever the file (dask on some empty pointwise
    ones; xarray's netCDF4 backend on an empty slice of negative step): where the store fails,
    the consolidated file opened the same way fails the same."""
    want = select(small.ref)
    done = {how: _outcome(select, ds) for how, ds in small.opened.items()}
    for how, (lazy, got) in done.items():
        if isinstance(got, Exception):
            if how in SAME_WAY:
                file = done[SAME_WAY[how]][1]
                if type(file) is not type(got) or str(file) != str(got):
                    raise AssertionError(f"{how}: {type(got).__name__}: {got}") from got
            continue
        try:
            xr.testing.assert_equal(got, want)
            for name, var in want.variables.items():
                # strings: the width xarray decodes from a file follows what is selected
                assert got[name].dtype == var.dtype or got[name].dtype.kind == var.dtype.kind == "U", name
                assert got[name].shape == lazy[name].shape == var.shape, name
        except AssertionError as err:
            raise AssertionError(f"{how}: {err}") from None


def _outcome(select, ds) -> tuple:
    """(the lazy selection, what it computes to, or the error raised on the way)."""
    try:
        lazy = select(ds)
        return lazy, lazy.compute()
    except Exception as err:  # noqa: BLE001 (compared with the consolidated file's)
        return None, err


# --- property-based: random selections of every kind --------------------------------------

def positions(n):
    return st.integers(-n, n - 1)


def slices(n):
    bound = st.none() | st.integers(-n - 2, n + 2)
    keys = st.builds(slice, bound, bound, st.none() | st.integers(-n - 1, n + 1).filter(bool))
    return keys.filter(lambda k: not reversed_empty(k, n))


def reversed_empty(key, n) -> bool:
    """An empty slice of negative step: xarray's lazy indexing, whatever the backend, reads
    some as the whole axis (``isel(y=slice(-17, None, -1))`` of 16 rows gives 16, not 0;
    `test_an_empty_reversed_slice_reads_as_the_file_does`)."""
    return isinstance(key, slice) and (key.step or 1) < 0 and not len(range(*key.indices(n)))


def basic_key(n):
    return positions(n) | slices(n)


def outer_key(n):
    """An int, a slice (any step), a list (any order, repeats, empty) or a boolean mask."""
    return (basic_key(n) | st.lists(positions(n), max_size=n + 3)
            | arrays(bool, n))


@st.composite
def outer_selection(draw):
    dims = draw(st.lists(st.sampled_from(DIMS), unique=True))
    return {d: draw(outer_key(SIZES[d])) for d in dims}


@st.composite
def vectorized_selection(draw):
    """Some dims indexed pointwise by arrays on shared new dims (1-D or 2-D, maybe empty),
    the others by any outer key or not at all."""
    shape = draw(st.sampled_from([(0,), (1,), (3,), (5,), (2, 3), (1, 2)]))
    new = ("point",) if len(shape) == 1 else ("row", "point")
    pointwise = draw(st.lists(st.sampled_from(DIMS), min_size=1, max_size=4, unique=True))
    out = {d: xr.DataArray(draw(arrays(np.int64, shape, elements=positions(SIZES[d]))), dims=new)
           for d in pointwise}
    others = draw(st.lists(st.sampled_from([d for d in DIMS if d not in pointwise]), unique=True))
    out.update({d: draw(outer_key(SIZES[d])) for d in others})
    return out


@EXAMPLES
@given(key=outer_selection())
def test_outer_selections_are_exact(small, key):
    assert_selected(small, lambda ds: ds.isel(key))


@EXAMPLES
@given(key=vectorized_selection())
def test_vectorized_selections_are_exact(small, key):
    assert_selected(small, lambda ds: ds.isel(key))


@FEWER
@given(first=outer_selection(), then=outer_selection())
def test_a_selection_of_a_selection_is_exact(small, first, then):
    """Lazy indexing composes keys before reading: an int after a slice, a list after a list."""
    def select(ds):
        ds = ds.isel(first)
        return ds.isel({d: k for d, k in then.items() if d in ds.dims and _fits(k, ds.sizes[d])
                        and not reversed_empty(k, ds.sizes[d])})

    assert_selected(small, select)


def _fits(key, n) -> bool:
    """Whether ``key`` (drawn for the full size) is valid for a dimension now of size ``n``."""
    try:
        np.arange(n)[key if not isinstance(key, list) else np.array(key, int)]
        return True
    except IndexError:
        return False


@FEWER
@given(y=st.floats(-40, 40), qx=st.floats(-0.2, 0.2), molecule=st.sampled_from(["adk", "ca", "bb"]),
       variants=st.lists(st.integers(0, 6), max_size=5))
def test_label_selections_are_exact(small, y, qx, molecule, variants):
    assert_selected(small, lambda ds: ds.sel(y=y, qx=qx, method="nearest").sel(molecule=molecule,
                                                                                variant=variants))


# --- the cases of the issue, one by one ----------------------------------------------------

@pytest.mark.parametrize("key", [
    {"molecule": 2, "y": 8}, {"molecule": 2, "x": 8}, {"molecule": 2, "qy": 16}, {"qx": -1},
    {"molecule": 0, "variant": 3, "y": 2, "x": 5},  # one pixel
    {"molecule": -1, "variant": -2, "qy": 16, "qx": slice(None, None, -1)},
    {"molecule": []}, {"variant": []}, {"y": []}, {"molecule": [], "qy": 3},
    {"variant": [6, 0, 0, 3]}, {"variant": slice(None, None, -2)}, {"variant": np.array([1, 0, 1, 0, 1, 0, 1], bool)},
    {"molecule": xr.DataArray([[0, 0, 0], [0, 0, 0]], dims=("row", "point"))},  # every key repeats along row
    {"molecule": xr.DataArray([2, 0, 2], dims="point"), "variant": xr.DataArray([6, 1, 6], dims="point"), "qy": 16},
])
def test_issue_selections(small, key):
    assert_selected(small, lambda ds: ds.isel(key))


@pytest.mark.parametrize("key", [slice(0, 0, -1), slice(-17, None, -1), slice(-20, -18, -2), slice(3, 5, -1)])
def test_an_empty_reversed_slice_reads_as_the_file_does(small, key):
    """xarray's lazy indexing mistakes some of these for the whole axis reversed, through
    its own netCDF4 backend as through the store's (whose result is the same); ``slice(0, 0,
    -1)``, which xarray's netCDF4 backend fails on (IndexError), is read right."""
    def read(ds):
        try:
            return ds["shape"].isel(molecule=1, variant=key).values
        except IndexError as err:
            return str(err)

    for how in ("xr.open_dataset(store)", "xr.open_dataset(store, chunks={})"):
        store, file = read(small.opened[how]), read(small.opened[SAME_WAY[how]])
        if isinstance(file, str):
            np.testing.assert_array_equal(store, small.ref["shape"].isel(molecule=1, variant=key).values)
        else:
            np.testing.assert_array_equal(store, file)


def test_int_on_an_image_axis_drops_it(small):
    """The issue's first case: dims and values agree (they were ('variant', 'x') and (7, 1, 16))."""
    line = xr.open_dataset(small.store)["shape"].isel(molecule=2, y=8)
    assert line.dims == ("variant", "x") and line.values.shape == (7, 16)
    profile = xr.open_dataset(small.store, chunks={})["diffraction"].isel(qy=16).isel(variant=[0, 6])
    assert profile.dims == ("molecule", "variant", "qx") and profile.values.shape == (3, 2, 32)


@pytest.mark.parametrize("how", ["xr", "xr-dask", "mm"])
def test_nearest_label_on_an_image_axis(small, how):
    ds = {"xr": lambda: xr.open_dataset(small.store), "xr-dask": lambda: xr.open_dataset(small.store, chunks={}),
          "mm": lambda: mm.open_dataset(small.store)}[how]()
    got = ds["shape"].sel(y=3.1, method="nearest").sel(molecule="ca")
    want = small.ref["shape"].sel(y=3.1, method="nearest").sel(molecule="ca")
    assert got.dims == ("variant", "x")
    np.testing.assert_array_equal(got.values, want.values)


# --- only the images asked for are read ----------------------------------------------------

@pytest.fixture
def reads(monkeypatch):
    """The (part file, variant) of every image read, one entry per image (one HDF5 chunk)."""
    done = []
    read_run = PartsArray._read_run

    def counting(variable, lo, hi, ybox, xbox):
        done.extend((variable.group().filepath().rsplit("/", 1)[-1], v) for v in range(lo, hi))
        return read_run(variable, lo, hi, ybox, xbox)

    monkeypatch.setattr(PartsArray, "_read_run", staticmethod(counting))
    return done


def _part(small, molecule, variant) -> tuple:
    """(part file, variant within it) of an image."""
    part = next(p for p in small.parts if p.molecule == molecule and p.start <= variant < p.stop)
    return part.name.split("/")[-1], variant - part.start


@pytest.mark.parametrize("variants", [[0, 6], [6, 0, 3, 3], [0, 2, 3, 6], list(range(7))])
def test_a_scattered_selection_reads_only_its_images(small, reads, variants):
    ds = xr.open_dataset(small.store)
    got = ds["diffraction"].isel(molecule=1, variant=variants).values
    np.testing.assert_array_equal(got, small.ref["diffraction"].isel(molecule=1, variant=variants).values)
    assert sorted(reads) == sorted(_part(small, 1, v) for v in set(variants))  # each image once, none between


def test_images_picked_pointwise_read_only_those(small, reads):
    """16 scattered images as a user picks them: pairs, not every variant of every molecule."""
    point = lambda a: xr.DataArray(a, dims="image")  # noqa: E731
    key = {"molecule": point([0, 2, 2, 1, 2]), "variant": point([6, 0, 6, 3, 0]), "y": slice(None, None, -3)}
    got = xr.open_dataset(small.store)["shape"].isel(key)
    assert got.dims == ("image", "y", "x")
    np.testing.assert_array_equal(got.values, small.ref["shape"].isel(key).values)
    assert sorted(reads) == sorted({_part(small, m, v) for m, v in [(0, 6), (2, 0), (2, 6), (1, 3)]})


def test_a_line_profile_reads_one_chunk_per_image(small, reads):
    ds = xr.open_dataset(small.store)
    ds["diffraction"].isel(qy=16, variant=[1, 5]).values
    assert sorted(reads) == sorted(_part(small, m, v) for m in range(3) for v in (1, 5))


def test_an_empty_selection_reads_nothing(small, reads):
    assert xr.open_dataset(small.store)["shape"].isel(variant=[]).values.shape == (3, 0, 16, 16)
    assert reads == []


# --- pickled to another process -----------------------------------------------------------

def test_a_pickled_store_reads_the_same_in_a_spawned_process(small):
    """What dask's distributed workers do: the lazy dataset travels pickled and is read there."""
    plain = xr.open_dataset(small.store).isel(y=3, qx=[5, 1, 5])  # ints on an image axis: the fix
    chunked = mm.open_dataset(small.store).isel(variant=[6, 0], qy=-2)
    with ProcessPoolExecutor(1, mp_context=get_context("spawn")) as pool:
        got = [pool.submit(xr.Dataset.load, pickle.loads(pickle.dumps(ds))).result(timeout=120)
               for ds in (plain, chunked)]
    xr.testing.assert_equal(got[0], small.ref.isel(y=3, qx=[5, 1, 5]))
    xr.testing.assert_equal(got[1], small.ref.isel(variant=[6, 0], qy=-2))


# --- a folder without its index ------------------------------------------------------------

MISSING = "no index.nc: an interrupted build? run it again, or open the parts with xr.open_mfdataset("


@pytest.fixture
def no_index(small, tmp_path):
    copy = tmp_path / "interrupted"
    shutil.copytree(small.store, copy)
    (copy / "index.nc").unlink()
    return copy


@pytest.mark.parametrize("opener", [mm.open_dataset, xr.open_dataset,
                                    lambda p: xr.open_dataset(p, engine="molmnist"),
                                    lambda p: mm.consolidate(p, p.parent / "out.nc", progress=False)])
def test_a_missing_index_is_named_by_the_api(no_index, opener):
    with pytest.raises(InputError) as err:
        opener(no_index)
    assert str(err.value).startswith(f"{no_index}: {MISSING}")


def test_the_missing_index_recipe_opens_the_parts(small, no_index):
    recipe = str(pytest.raises(InputError, mm.open_dataset, no_index).value).split("parts with ")[1]
    with eval(recipe, {"xr": xr}) as ds:  # the recipe in the message, as a user would paste it
        xr.testing.assert_equal(ds[["shape", "diffraction"]].compute(), small.ref[["shape", "diffraction"]])


def test_a_missing_index_is_named_by_info(no_index):
    done = subprocess.run([sys.executable, "-m", "molmnist_dask.cli", "info", str(no_index)],
                          capture_output=True, text=True, env=cli_env(), timeout=120)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.splitlines() == [f"molmnist: error: {no_index}: {MISSING}"
                                        f'"{no_index}/parts/*.nc", combine="by_coords").sortby("label")']


def test_an_unrelated_folder_is_not_a_store(tmp_path):
    with pytest.raises(InputError, match="not a molmnist store"):
        mm.open_dataset(tmp_path)
