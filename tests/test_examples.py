"""Every script in examples/ runs, on small inputs, as a user runs it: a subprocess from a
fresh working directory, so a change of the data contract breaks a test, not a first try."""

from __future__ import annotations

import subprocess
import sys
import warnings

import dask
import pytest

from conftest import REPO, cli_env

EXAMPLES = REPO / "examples"
TESTED = {"quickstart.py", "lazy_slicing.py", "orientations.py", "train_inversion.py"}


def _run(script, *args, cwd, timeout=300):
    done = subprocess.run([sys.executable, str(EXAMPLES / script), *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, env=cli_env(), timeout=timeout)
    assert done.returncode == 0, f"{script} failed:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
    return done.stdout


def test_every_example_is_tested():
    assert {p.name for p in EXAMPLES.glob("*.py")} == TESTED


@pytest.fixture(scope="module")
def adk_store(tmp_path_factory):
    """quickstart.py's store (adk, 20 variants at 128 px): it is the first example, and
    lazy_slicing.py reads its output."""
    cwd = tmp_path_factory.mktemp("quickstart")
    out = _run("quickstart.py", "adk-store", cwd=cwd)
    return cwd / "adk-store", out


def test_quickstart(adk_store):
    store, out = adk_store
    assert "variant 5: " in out and "electrons in view (of " in out and "atoms outside it" in out
    assert "diffraction at q = 0" in out and (store / "index.nc").exists()


def test_lazy_slicing(adk_store, tmp_path):
    store, _ = adk_store
    out = _run("lazy_slicing.py", store, "adk", cwd=tmp_path)
    assert "molecule 'adk', variants [0, 10]...: read 2 images" in out


def test_orientations(tmp_path):
    out = _run("orientations.py", "gallery.png", cwd=tmp_path)
    assert "wrote gallery.png" in out
    assert (tmp_path / "gallery.png").read_bytes().startswith(b"\x89PNG")


@pytest.fixture(scope="module")
def small_store(tmp_path_factory):
    """Three adk selections x 40 variants at 32 px: enough for every split of train_inversion."""
    import molmnist_dask as mm
    from MDAnalysisTests.datafiles import DCD, PSF

    path = tmp_path_factory.mktemp("inversion") / "store"
    sources = [mm.TrajectorySource(name, PSF, DCD, selection=sel)
               for name, sel in {"adk": "all", "ca": "name CA", "bb": "backbone"}.items()]
    with warnings.catch_warnings(), dask.config.set(scheduler="sync"):
        warnings.simplefilter("ignore")
        mm.save_dataset(mm.build_dataset(sources, size=32, extent=64.0, variants=40), path, progress=False)
    return path


@pytest.mark.parametrize("by", ["variant", "molecule"])
def test_train_inversion(small_store, tmp_path, by):
    pytest.importorskip("torch")
    import json

    out = _run("train_inversion.py", small_store, "-o", "out", "--by", by, "--size", "16",
               "--minutes", "0.1", "--max-epochs", "2", "--eval-images", "4", "--pr-iterations", "10",
               "--threads", "1", cwd=tmp_path)
    assert "wrote out/metrics.json" in out and "HIO+ER, 10 it" in out
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["held_out"] == by and metrics["scored_items"] == 4
    assert all(1 <= len(h) <= 2 for h in metrics["history"].values())  # --max-epochs 2
    assert (tmp_path / "out" / "predictions.png").stat().st_size > 5000


def test_train_inversion_without_a_store_says_how_to_build_one(tmp_path):
    done = subprocess.run([sys.executable, str(EXAMPLES / "train_inversion.py"), "nothing"], cwd=tmp_path,
                          capture_output=True, text=True, env=cli_env(), timeout=120)
    assert done.returncode == 2 and "molmnist build -o nothing" in done.stderr
