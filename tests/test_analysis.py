"""analysis.distribution and analysis.radial_average: lazy, labelled, equal to direct numpy."""

from __future__ import annotations


import dask.array as da
import numpy as np
import pytest
from conftest import adk_store
import xarray as xr

import molmnist_dask as mm
from molmnist_dask import analysis
from molmnist_dask.errors import InputError


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return adk_store(tmp_path_factory.mktemp("analysis") / "store", {"adk": "all", "ca": "name CA"}, size=40, variants=5, block_size=3)


@pytest.fixture
def ds(store):
    return mm.open_dataset(store)


def _direct(pattern, qy, qx, split):
    r = np.hypot(qy[:, None], qx[None, :])
    p = pattern.astype(np.float64)
    return np.log10(p[r <= split].sum()), np.log10(p[r > split].sum())


def test_distribution_equals_numpy(ds):
    out = analysis.distribution(ds, split=0.12)
    assert isinstance(out.data, da.Array)  # lazy
    assert out.dims == ("molecule", "variant", "feature")
    assert list(out.feature.values) == ["low", "high"]
    assert list(out.molecule.values) == ["adk", "ca"]
    assert out.attrs["split"] == 0.12
    values = out.compute()
    patterns = ds.diffraction.values
    for m in range(2):
        for v in range(5):
            low, high = _direct(patterns[m, v], ds.qy.values, ds.qx.values, 0.12)
            np.testing.assert_allclose(values.values[m, v], [low, high], rtol=1e-12)


def test_distribution_default_split(ds):
    out = analysis.distribution(ds)
    assert out.attrs["split"] == analysis.DEFAULT_SPLIT == 0.1
    coarse = ds.isel(qy=slice(16, 24), qx=slice(16, 24))  # |q| < 0.0625: half Nyquist instead
    assert analysis.distribution(coarse).attrs["split"] == pytest.approx(float(np.abs(coarse.qx).max()) / 2)


@pytest.mark.parametrize("split", [0, -0.1, 5.0, float("nan"), "low"])
def test_distribution_split_outside_range(ds, split):
    with pytest.raises(InputError, match=r"split must be a radius in \(0, 0\.4419\) cycles per angstrom"):
        analysis.distribution(ds, split=split)


def test_missing_variables_and_coordinates(ds):
    with pytest.raises(InputError, match="no 'diffraction' variable"):
        analysis.distribution(ds.drop_vars("diffraction"))
    with pytest.raises(InputError, match="no 'qx' coordinate"):
        analysis.distribution(ds.drop_vars("qx"))
    with pytest.raises(InputError, match="no 'qy' dimension"):
        analysis.radial_average(ds.shape)
    with pytest.raises(InputError, match="Dataset or DataArray"):
        analysis.radial_average(np.zeros((4, 4)))
    with pytest.raises(InputError, match="bins"):
        analysis.radial_average(ds, bins=[0.3, 0.1])


def test_radial_average_equals_numpy(ds):
    out = analysis.radial_average(ds)
    assert isinstance(out.data, da.Array)
    assert out.dims == ("molecule", "variant", "q") and out.q.attrs["units"] == "angstrom-1"
    dq = float(ds.qx[1] - ds.qx[0])
    np.testing.assert_allclose(out.q.values, np.arange(out.sizes["q"]) * dq, atol=1e-12)
    assert out.pixels.values[0] == 1  # the centre ring holds q = 0 alone
    values = out.isel(variant=slice(0, 2)).compute().values
    r = np.hypot(ds.qy.values[:, None], ds.qx.values[None, :])
    ring = np.floor(r / dq + 0.5).astype(int)
    for m in range(2):
        for v in range(2):
            p = ds.diffraction.values[m, v].astype(np.float64)
            expected = [p[ring == i].mean() for i in range(out.sizes["q"])]
            np.testing.assert_allclose(values[m, v], expected, rtol=1e-10)


def test_radial_average_bins_and_dataarray(ds):
    one = ds.diffraction.isel(molecule=0, variant=0)
    nyquist = 0.5 * 40 / 64.0
    out = analysis.radial_average(one, bins=4)
    assert out.dims == ("q",) and out.sizes["q"] == 4
    np.testing.assert_allclose(out.q_high.values, np.linspace(0, nyquist, 5)[1:])
    dq = 1 / 64.0
    edges = (np.array([0, 3, 7, 12, 19]) + 0.37) * dq  # no pixel lies on an edge
    out = analysis.radial_average(one, bins=edges)
    r = np.hypot(ds.qy.values[:, None], ds.qx.values[None, :])
    p = one.values.astype(np.float64)
    for i in range(4):
        sel = (r >= edges[i]) & (r < edges[i + 1])
        assert out.pixels.values[i] == sel.sum()
        np.testing.assert_allclose(out.values[i], p[sel].mean(), rtol=1e-10)
    sparse = analysis.radial_average(one, bins=[0.0, 1e-4, 2e-4, 0.3])
    assert np.isnan(sparse.values[1]) and sparse.pixels.values[1] == 0
    assert isinstance(analysis.radial_average(xr.DataArray(one.values, coords=one.coords, dims=one.dims)),
                      xr.DataArray)
