"""CF-1.11 and ACDD-1.3: the IOOS compliance checker on every kind of file a user shares (a
part, index.nc, a consolidated file, a random-orientation .nc); discovery attributes;
provenance of the inputs; build-only attributes that do not break a resume."""

import datetime
import os
import re
import shutil
import warnings
from types import SimpleNamespace

import netCDF4
import numpy as np
import pytest
import xarray as xr

import molmnist_dask as mm
from conftest import part_files, save_sync
from molmnist_dask import TrajectorySource
from molmnist_dask.cellulose import virtual
from molmnist_dask.provenance import file_digest, fingerprint, same_file

pytest.importorskip("compliance_checker")

#: The checker's own failure on string coordinate variables (``molecule``): it subtracts
#: strings. CF allows string coordinates; nothing in the file is at fault.
CHECKER_BUGS = {"check_coordinate_variables_strict_monotonicity"}
HIGH, MEDIUM = 3, 2


def failing_checks(path, test="cf:1.11") -> list:
    """The failing checks of high or medium priority, as (priority, name, messages)."""
    from compliance_checker.runner import CheckSuite

    suite = CheckSuite()
    suite.load_all_available_checkers()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dataset = suite.load_dataset(str(path))
        try:
            groups, errors = suite.run_all(dataset, [test], skip_checks=[])[test]
        finally:
            dataset.close()  # HDF5 misbehaves with a file open twice in a process
    unexpected = set(errors) - CHECKER_BUGS
    assert not unexpected, f"the checker failed: {unexpected}"
    out = []
    for r in groups:
        scored, total = r.value if isinstance(r.value, tuple) else (bool(r.value), True)
        if scored < total and r.weight >= MEDIUM:
            out.append((r.weight, r.name, r.msgs))
    return out


@pytest.fixture(scope="module")
def files(md, tmp_path_factory):
    """Every kind of file, from a build with labels (twist, time) and provenance."""
    root = tmp_path_factory.mktemp("cf")
    fibril = virtual.write_sources(root / "cellvar", 3, molecules=["2x2"])
    adk = TrajectorySource("adk", md.PSF, md.DCD, selection="protein")
    lazy = mm.build_dataset([*fibril, adk], size=16, extent=120.0, variants=3)
    store = save_sync(lazy, root / "store", part_frames=2)
    consolidated = mm.consolidate(store, root / "consolidated.nc", progress=False)
    turned = mm.build_dataset([adk], size=16, extent=120.0, variants=3, orientation="random")
    random_nc = save_sync(turned, root / "random.nc")
    return SimpleNamespace(lazy=lazy, store=store, part=part_files(store)[0], index=store / "index.nc",
                           consolidated=consolidated, random=random_nc, root=root)


@pytest.mark.parametrize("kind", ["part", "index", "consolidated", "random"])
def test_cf_checker_finds_no_high_or_medium_failure(files, kind):
    assert failing_checks(getattr(files, kind)) == []


@pytest.mark.parametrize("kind", ["part", "index", "consolidated", "random"])
def test_no_fill_value_on_coordinates(files, kind):
    with xr.open_dataset(getattr(files, kind)) as ds:
        coords = list(ds.coords)
    with netCDF4.Dataset(getattr(files, kind)) as nc:
        for name in coords:
            assert "_FillValue" not in nc.variables[name].ncattrs(), name


def test_random_orientation_is_linked_by_ancillary_variables(files):
    with netCDF4.Dataset(files.random) as nc:
        for var in ("shape", "diffraction"):
            assert nc.variables[var].ancillary_variables == "orientation"
            assert "orientation" not in getattr(nc.variables[var], "coordinates", "")
    with xr.open_dataset(files.random) as ds:
        assert "orientation" in ds.coords  # and still a coordinate for xarray


def test_units_and_axes(files):
    ds = files.lazy
    assert ds.shape.attrs["units"] == "1" and "electrons" in ds.shape.attrs["long_name"]
    assert ds.diffraction.attrs["units"] == "1" and "electrons^2" in ds.diffraction.attrs["long_name"]
    assert ds.lost_electrons.attrs["units"] == "1" and ds.n_electrons.attrs["units"] == "1"
    assert (ds.x.attrs["axis"], ds.y.attrs["axis"]) == ("X", "Y")
    assert ds.x.attrs["standard_name"] == "projection_x_coordinate"
    assert (ds.qx.attrs["units"], ds.twist.attrs["units"], ds.time.attrs["units"]) == ("angstrom-1", "degree/nm", "ps")


def test_acdd_attributes(files):
    with xr.open_dataset(files.consolidated) as ds:
        a = ds.attrs
    assert a["Conventions"] == "CF-1.11, ACDD-1.3"
    for key in ("title", "summary", "keywords", "references", "source", "history", "date_created",
                "product_version", "comment", "processing_level"):
        assert isinstance(a.get(key), str) and a[key], key
    assert "10.48550/arXiv.1911.07644" in a["references"]
    assert a["product_version"] == mm.__version__
    assert datetime.datetime.fromisoformat(a["date_created"].replace("Z", "+00:00")).tzinfo is not None
    assert f"molmnist_dask {mm.__version__}" in a["history"] and a["date_created"] in a["history"]


def test_acdd_checker_highly_recommended_attributes(files):
    """ACDD's highly recommended global attributes are all there (the variables' standard_name,
    which no quantity here has, is the checker's one other high-priority complaint)."""
    failures = [f for f in failing_checks(files.consolidated, "acdd:1.3") if f[0] == HIGH]
    assert all(name.startswith("variable ") and msgs == ["standard_name"] for _, name, msgs in failures), failures


def test_history_names_the_command(md, monkeypatch):
    import sys

    monkeypatch.setattr(sys, "argv", ["/usr/bin/molmnist", "build", "run file.toml", "-o", "out"])
    ds = mm.build_dataset([TrajectorySource("adk", md.PSF, md.DCD)], size=8, extent=120.0, variants=2)
    assert ds.attrs["history"].endswith("molmnist build 'run file.toml' -o out")


def test_build_attributes_do_not_break_a_resume(md, tmp_path, monkeypatch):
    import molmnist_dask.planning as planning

    top, traj = shutil.copy(md.PSF, tmp_path), shutil.copy(md.DCD, tmp_path)
    source = TrajectorySource("adk", top, traj, selection="name CA")
    save_sync(mm.build_dataset([source], size=8, extent=120.0, variants=2), tmp_path / "store")
    monkeypatch.setattr(planning, "now", lambda: "2031-01-01T00:00:00Z")
    os.utime(traj, (0, 0))  # a touched input with the same content
    again = mm.build_dataset([source], size=8, extent=120.0, variants=2)
    assert again.attrs["date_created"] == "2031-01-01T00:00:00Z"
    save_sync(again, tmp_path / "store")  # the same configuration: kept, no error
    save_sync(again, tmp_path / "store.nc")
    save_sync(again, tmp_path / "store.nc")  # an existing .nc of the same dataset is kept


def test_provenance_coordinates(files, md):
    ds = files.lazy
    assert ds.topology.values[1] == md.PSF and ds.trajectory.values[1] == md.DCD
    assert ds.topology_resolved.values[1] == os.path.realpath(md.PSF)
    assert ds.trajectory_resolved.values[1] == os.path.realpath(md.DCD)
    assert ds.topology_fingerprint.values[1] == fingerprint(md.PSF)
    assert re.fullmatch(r"size=\d+ mtime=\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ blake2b=[0-9a-f]{32}",
                        str(ds.trajectory_fingerprint.values[1]))
    assert f"size={os.path.getsize(md.DCD)} " in str(ds.trajectory_fingerprint.values[1])


def test_input_files_still_found(files, md):
    from molmnist_dask.store.write import input_files

    with xr.open_dataset(files.store) as ds:
        found = input_files(ds)
    assert os.path.realpath(md.DCD) in map(str, found) and os.path.realpath(md.PSF) in map(str, found)


def test_fingerprint_recognises_a_moved_file(tmp_path):
    small, big = tmp_path / "small.bin", tmp_path / "big.bin"
    small.write_bytes(b"abc" * 1000)
    big.write_bytes(np.random.default_rng(0).bytes(5 * 2**20))
    for path in (small, big):
        recorded = fingerprint(path)
        moved = path.rename(tmp_path / ("moved-" + path.name))
        os.utime(moved, (0, 0))
        assert same_file(moved, recorded) and fingerprint(moved) != recorded  # only mtime differs
    data = bytearray((tmp_path / "moved-big.bin").read_bytes())
    data[-1] ^= 1  # a change in the last MiB
    (tmp_path / "changed.bin").write_bytes(bytes(data))
    assert file_digest(tmp_path / "changed.bin") != file_digest(tmp_path / "moved-big.bin")
    assert not same_file(tmp_path / "changed.bin", fingerprint(tmp_path / "moved-big.bin"))
