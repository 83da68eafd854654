"""The default Molecular-MNIST build, end to end through the CLI (issue 3)."""

import subprocess
import sys

import numpy as np
import pytest
import xarray as xr

from molmnist_dask.cellulose import MOLECULES
from molmnist_dask.cli import main

NAMES = ["2x2", "3x3", "4x4", "5x5", "6x6", "7x7", "8x8", "9x9", "hex24", "hex36"]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("default")
    out = root / "mnist.nc"
    cmd = [sys.executable, "-m", "molmnist_dask.cli", "build", "-o", str(out), "--variants", "3",
           "--size", "64", "--workers", "2", "--no-progress"]
    run = subprocess.run(cmd, capture_output=True, text=True, cwd=root, timeout=600)
    assert run.returncode == 0, run.stderr
    return root, out, run


def test_default_build_opens_with_plain_xarray(built):
    root, out, run = built
    assert "dashboard" in run.stdout
    with xr.open_dataset(out) as ds:
        assert list(ds.molecule.values) == NAMES == list(MOLECULES)
        assert list(ds.label.values) == list(range(10))
        assert ds["shape"].shape == (10, 3, 64, 64)
        assert ds["diffraction"].dtype == np.float32
        # every molecule lies inside the default field of view, whole
        assert float(ds.lost_electrons.max()) == 0
        electrons = ds["shape"].sum(("y", "x")).values
        assert np.allclose(electrons, np.asarray(ds["n_electrons"].values)[:, None])
    assert (root / "molmnist-cellulose" / "run.toml").exists()
    assert not (root / "mnist.nc.parts").exists()


def test_default_build_reuses_trajectories(built):
    root, out, _ = built
    dcd = root / "molmnist-cellulose" / "2x2.dcd"
    before = dcd.stat().st_mtime_ns
    store = root / "again"
    assert main(["build", "-o", str(store), "--variants", "3", "--size", "64", "--workers", "1",
                 "--no-progress", "--synth-dir", str(root / "molmnist-cellulose")]) == 0
    assert dcd.stat().st_mtime_ns == before
    with xr.open_dataset(out) as single:
        from molmnist_dask import open_dataset

        again = open_dataset(store)
        assert np.array_equal(again["shape"].values, single["shape"].values)


@pytest.mark.parametrize("args, named", [
    (["--molecules", "2x2,10x10"], "10x10"),
    (["--variants", "0"], "variants"),
    (["--seed", "one"], "seed"),
    (["--size", "-3"], "size"),
])
def test_synth_bad_input(tmp_path, capsys, args, named):
    try:
        code = main(["synth", "-o", str(tmp_path / "s"), "--no-progress", *args])
    except SystemExit as exit:  # argparse's own checks
        code = exit.code
    assert code == 2
    err = capsys.readouterr().err
    assert named in err and err.count("\n") == 1
    assert not (tmp_path / "s" / "synth.json").exists()
