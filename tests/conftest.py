"""Shared fixtures: real MD files (MDAnalysisTests, and a few written here with MDAnalysis),
one LocalCluster of two worker processes for the session, and comparison helpers."""

from __future__ import annotations

import contextlib
import os
import socket
import sys
import warnings
from pathlib import Path
from types import SimpleNamespace

import dask
import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent
if str(TESTS) not in sys.path:  # tests/oracle.py
    sys.path.insert(0, str(TESTS))

IMAGE_VARS = ("shape", "diffraction")
DATA_VARS = ("shape", "diffraction", "lost_atoms", "lost_electrons")


def quiet_universe(*args, **kwargs):
    import MDAnalysis as mda

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return mda.Universe(*args, **kwargs)


@pytest.fixture(scope="session")
def md():
    """Paths of the real MD files of MDAnalysisTests used throughout."""
    from MDAnalysisTests import datafiles as d

    return SimpleNamespace(PSF=d.PSF, DCD=d.DCD, GRO=d.GRO, XTC=d.XTC, TPR=d.TPR, PDB_small=d.PDB_small)


@pytest.fixture(scope="session")
def made(md, tmp_path_factory):
    """Small MD files written here with MDAnalysis, each for one situation.

    - ``nan``/``nan0``: adk, 5 frames, NaN coordinates for one atom in frame 2 / frame 0 (DCD);
    - ``not_dcd``: a text file named ``x.dcd``;
    - ``blank_pdb``: adk with elements, one atom's element blanked (PDB, with the adk DCD);
    - ``grid_dcd``/``shifted_dcd``/``fraction_dcd``: adk, 3 frames, coordinates on a 1/64 A
      lattice near the origin; the same shifted by (+6, -4, +1.5) A, and by (+0.75, +1.25, 0) A
      (exact in float32, so the binning of a shifted molecule is exactly predictable).
    """
    import MDAnalysis as mda

    root = tmp_path_factory.mktemp("made")
    u = quiet_universe(md.PSF, md.DCD)
    n = u.atoms.n_atoms
    nan, nan0 = root / "nan.dcd", root / "nan0.dcd"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for path, bad in ((nan, 2), (nan0, 0)):
            with mda.Writer(str(path), n) as w:
                for i, _ in enumerate(u.trajectory[:5]):
                    if i == bad:
                        p = u.atoms.positions.copy()
                        p[10] = np.nan
                        u.atoms.positions = p
                    w.write(u.atoms)

    not_dcd = root / "x.dcd"
    not_dcd.write_text("this is a text file, not a DCD trajectory\n" * 20)

    blank_pdb = root / "blank.pdb"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        e = quiet_universe(md.PSF, md.DCD)
        e.guess_TopologyAttrs(to_guess=["elements"])
        elements = np.array(e.atoms.elements, dtype=object)
        elements[5] = ""  # atom 6 (HA of MET 1): no element
        e.add_TopologyAttr("elements", elements)
        e.atoms.write(str(blank_pdb))

    grid_dcd, shifted_dcd, fraction_dcd = root / "grid.dcd", root / "shifted.dcd", root / "fraction.dcd"
    u.trajectory[0]
    origin = np.round(u.atoms.positions.astype(np.float64).mean(axis=0))
    frames = []
    for ts in u.trajectory[[0, 40, 97]]:
        frames.append(np.round((u.atoms.positions.astype(np.float64) - origin) * 64) / 64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for path, shift in ((grid_dcd, (0.0, 0.0, 0.0)), (shifted_dcd, (6.0, -4.0, 1.5)),
                            (fraction_dcd, (0.75, 1.25, 0.0))):
            with mda.Writer(str(path), n) as w:
                for p in frames:
                    u.atoms.positions = (p + np.array(shift)).astype(np.float32)
                    w.write(u.atoms)
    return SimpleNamespace(root=root, nan=str(nan), nan0=str(nan0), not_dcd=str(not_dcd), blank_pdb=str(blank_pdb),
                           grid_dcd=str(grid_dcd), shifted_dcd=str(shifted_dcd),
                           fraction_dcd=str(fraction_dcd))


@pytest.fixture(scope="session")
def cluster():
    """One LocalCluster of two single-threaded worker processes for the whole session.

    No client stays open: tests that want one open ``Client(cluster)`` for their duration, so
    that everywhere else no distributed client is active and dask's local schedulers run.
    """
    from distributed import LocalCluster

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        c = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0")
    yield c
    c.close()


@pytest.fixture
def client(cluster):
    from distributed import Client

    with Client(cluster) as c:
        c.wait_for_workers(2, timeout=60)
        yield c


@contextlib.contextmanager
def sync_scheduler():
    with dask.config.set(scheduler="sync"):
        yield


def computed(ds):
    """A lazy dataset computed by dask's single-threaded scheduler."""
    with sync_scheduler():
        return ds.compute()


def save_sync(ds, path, **kwargs):
    import molmnist_dask as mm

    kwargs.setdefault("progress", False)
    with sync_scheduler():
        return mm.save_dataset(ds, path, **kwargs)


def assert_attrs_equal(a: dict, b: dict, skip=()):
    assert sorted(k for k in a if k not in skip) == sorted(k for k in b if k not in skip)
    for k in a:
        if k in skip:
            continue
        va, vb = a[k], b[k]
        if isinstance(va, (list, tuple, np.ndarray)) or isinstance(vb, (list, tuple, np.ndarray)):
            assert list(np.atleast_1d(va)) == list(np.atleast_1d(vb)), k
        else:
            assert va == vb, k


#: Attributes of one build (its time and command line), not of the data.
BUILD_ATTRS = ("history", "date_created")


def assert_same(a, b, attrs=True, skip_attrs=()):
    """Two datasets hold the same data bit for bit, the same coordinates and attributes (but
    `BUILD_ATTRS`: two builds of the same data differ there)."""
    for v in DATA_VARS:
        assert a[v].dims == b[v].dims, v
        assert a[v].dtype == b[v].dtype, v
        va, vb = np.asarray(a[v].values), np.asarray(b[v].values)
        assert va.shape == vb.shape, v
        assert np.array_equal(va, vb), f"{v} differs"
    for c in ("molecule", "label", "variant", "frame", "y", "x", "qy", "qx"):
        assert a[c].dims == b[c].dims, c
        assert np.array_equal(np.asarray(a[c].values), np.asarray(b[c].values)), c
    if attrs:
        assert_attrs_equal(a.attrs, b.attrs, skip=(*skip_attrs, *BUILD_ATTRS))


def index(store):
    """A store's index, read (`molmnist_dask.store.read_index`)."""
    from molmnist_dask.store import read_index

    return read_index(Path(store))


def mark_incomplete(store, n=1) -> None:
    """Remove ``n`` parts of a complete store and mark it incomplete, as a killed build leaves it."""
    from molmnist_dask.store.index import write_index

    idx = index(store)
    for part in part_files(store)[:n]:
        part.unlink()
    ds = idx.dataset
    write_index(Path(store), _with_images(ds, idx), idx.parts, idx.configuration, complete=False)


def _with_images(ds, idx):
    """The index's dataset with empty image variables carrying their attributes."""
    ds = ds.copy()
    for var, dims in (("shape", ("y", "x")), ("diffraction", ("qy", "qx"))):
        ds[var] = (("molecule", "variant", *dims),
                   np.zeros((ds.sizes["molecule"], ds.sizes["variant"], ds.sizes[dims[0]], ds.sizes[dims[1]]),
                            np.float32), idx.image_attrs[var])
    return ds


def part_files(store) -> list:
    return sorted((Path(store) / "parts").glob("*.nc"))


def looks_complete(out) -> bool:
    """Whether ``out`` looks like finished output: a .nc file, or a store marked complete."""
    out = Path(out)
    if out.suffix == ".nc":
        return out.exists()
    idx = index(out) if (out / "index.nc").exists() else None
    return idx is not None and idx.complete


def run_cli(argv, capsys):
    """``molmnist ARGV`` in this process: (exit status, stdout, stderr)."""
    from molmnist_dask.cli import main

    capsys.readouterr()
    try:
        rc = main([str(a) for a in argv])
    except SystemExit as exc:  # argparse usage errors
        rc = exc.code
    out, err = capsys.readouterr()
    return rc, out, err


def closed_port() -> int:
    """A TCP port on 127.0.0.1 with nothing listening."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def cli_env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def adk_store(path, selections: dict, **options) -> Path:
    """A small store of adk (MDAnalysisTests' PSF + DCD), one molecule per named selection,
    built with the synchronous scheduler (extent 64 A; ``options`` go to build_dataset)."""
    import molmnist_dask as mm
    from MDAnalysisTests.datafiles import DCD, PSF

    sources = [mm.TrajectorySource(name, PSF, DCD, selection=sel) for name, sel in selections.items()]
    with warnings.catch_warnings(), dask.config.set(scheduler="sync"):
        warnings.simplefilter("ignore")
        mm.save_dataset(mm.build_dataset(sources, extent=64.0, **options), path, progress=False)
    return path
