"""Bit-identity with the first landed version (0.1.0): tests/data/landed-v0.1.0.nc was written by
it (commit 88850e1: adk PSF/DCD and GRO/XTC from MDAnalysisTests, protein, 48 px, 120 A,
5 variants, oversampling 2, raw images). Today's build, in memory and saved through the
streaming store with any part size, gives the same bytes."""

from pathlib import Path

import numpy as np
import pytest
import xarray as xr

import molmnist_dask as mm
from conftest import computed, save_sync
from molmnist_dask import TrajectorySource

LANDED = Path(__file__).parent / "data" / "landed-v0.1.0.nc"
VARS = ("shape", "diffraction", "lost_atoms", "lost_electrons")
COORDS = ("molecule", "label", "variant", "frame", "y", "x", "qy", "qx")


@pytest.fixture(scope="module")
def landed():
    with xr.open_dataset(LANDED) as ds:
        return ds.load()


@pytest.fixture(scope="module")
def lazy(md):
    srcs = [TrajectorySource("adk", md.PSF, md.DCD, selection="protein"),
            TrajectorySource("gro", md.GRO, md.XTC, selection="protein")]
    return mm.build_dataset(srcs, size=48, extent=120.0, variants=5, oversampling=2)


def _same_bytes(ds, landed):
    for v in VARS + COORDS:
        a, b = np.asarray(ds[v].values), np.asarray(landed[v].values)
        assert a.dtype == b.dtype and a.shape == b.shape, v
        assert a.tobytes() == b.tobytes() if a.dtype.kind not in "US" else list(a) == list(b), v


def test_in_memory_build_equals_the_landed_version(lazy, landed):
    _same_bytes(computed(lazy), landed)


@pytest.mark.parametrize("part_frames", [1, 2, 5])
def test_saved_store_equals_the_landed_version(lazy, landed, tmp_path, part_frames):
    out = save_sync(lazy, tmp_path / "store", part_frames=part_frames)
    with xr.open_dataset(out) as ds:
        _same_bytes(ds.load(), landed)
