"""The default Molecular-MNIST build, end to end through the CLI (issues 3 and 10).

10 x 2,000 at 200 px is too big for a test: its configuration is checked lazily, and a
scaled-down build (``--variants 3 --size 64``) takes the same path through a subprocess.
"""

import subprocess
import sys

import numpy as np
import pytest
import xarray as xr

from conftest import cli_env
from molmnist_dask.cellulose import DEFAULT_EXTENT, MOLECULES
from molmnist_dask.cli import main

NAMES = ["2x2", "3x3", "4x4", "5x5", "6x6", "7x7", "8x8", "9x9", "hex24", "hex36"]


def molmnist(*args, cwd=None, timeout=600):
    return subprocess.run([sys.executable, "-m", "molmnist_dask.cli", *map(str, args)],
                          capture_output=True, text=True, cwd=cwd, env=cli_env(), timeout=timeout)


def test_the_default_is_the_papers_configuration(tmp_path):
    """What ``molmnist build -o OUT`` builds: the run file its default branch writes."""
    import molmnist_dask as mm
    from molmnist_dask.runfile import load_run_file
    from molmnist_dask.cellulose import default_run

    run = load_run_file(default_run(tmp_path))
    ds = mm.build_dataset(run.sources, **run.options)      # lazy: nothing rendered
    assert ds["shape"].shape == (10, 2000, 200, 200)
    assert ds["diffraction"].shape == (10, 2000, 200, 200)
    assert list(ds.molecule.values) == NAMES
    assert float(ds.x[1] - ds.x[0]) * 200 == pytest.approx(DEFAULT_EXTENT)    # the field of view
    # and the CLI says so
    text = molmnist("build", "--help").stdout
    assert "2000" in text and "200" in text


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("default")
    out = root / "mnist.nc"
    run = molmnist("build", "-o", out, "--variants", 3, "--size", 64, "--workers", 2, "--no-progress",
                   cwd=root)
    assert run.returncode == 0, run.stderr
    return root, out, run


def test_default_build_opens_with_plain_xarray(built):
    root, out, run = built
    assert "dashboard: http" in run.stdout      # bokeh>=3.1 is a dependency: the link works
    with xr.open_dataset(out) as ds:
        assert list(ds.molecule.values) == NAMES == list(MOLECULES)
        assert list(ds.label.values) == list(range(10))
        assert ds["shape"].shape == (10, 3, 64, 64)
        assert ds["diffraction"].dtype == np.float32
        # every molecule lies inside the default field of view, whole
        assert float(ds.lost_electrons.max()) == 0
        electrons = ds["shape"].sum(("y", "x")).values
        assert np.allclose(electrons, np.asarray(ds["n_electrons"].values)[:, None])
    assert not (root / "mnist.nc.parts").exists()


def test_default_build_writes_little_besides_the_dataset(built):
    root, out, _ = built
    folder = root / "molmnist-cellulose" / "3-variants-seed-0"
    assert sorted(p.name for p in folder.iterdir()) == sorted([f"{m}.cellvar" for m in MOLECULES] + ["run.toml"])
    written = sum(p.stat().st_size for p in root.rglob("*") if p.is_file())
    assert written - out.stat().st_size < 20_000      # no trajectories: ten small files
    assert not list(root.rglob("*.dcd"))


def test_a_second_default_build_beside_the_first(built, tmp_path):
    """Another size beside the first has its own folder; the same one reuses the files."""
    root, out, _ = built
    first = root / "molmnist-cellulose" / "3-variants-seed-0" / "2x2.cellvar"
    before = first.stat().st_mtime_ns
    assert main(["build", "-o", str(root / "again"), "--variants", "3", "--size", "64", "--workers", "1",
                 "--no-progress"]) == 0
    assert first.stat().st_mtime_ns == before
    assert main(["build", "-o", str(root / "two"), "--variants", "2", "--size", "32", "--workers", "1",
                 "--no-progress"]) == 0
    assert (root / "molmnist-cellulose" / "2-variants-seed-0" / "2x2.cellvar").exists()
    from molmnist_dask import open_dataset

    with xr.open_dataset(out) as single:
        again = open_dataset(root / "again")
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


def test_a_synth_dir_of_another_configuration_is_one_line(tmp_path, capsys):
    from molmnist_dask.cellulose import default_run

    folder = tmp_path / "mine"
    default_run(folder, variants=5)
    code = main(["build", "-o", str(tmp_path / "out"), "--variants", "3", "--synth-dir", str(folder),
                 "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "--synth-dir" in err and "2x2.cellvar" in err
