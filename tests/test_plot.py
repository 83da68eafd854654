"""molmnist plot: the paper's three figures, written as PNG and PDF from a lazy dataset."""

from __future__ import annotations


import dask
import numpy as np
import pytest
from conftest import adk_store

import molmnist_dask as mm
from molmnist_dask import plot
from molmnist_dask.errors import InputError


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return adk_store(tmp_path_factory.mktemp("plot") / "store", {"adk": "all", "ca": "name CA", "bb": "backbone"}, size=32, variants=7, block_size=4)


def test_gallery_variants_spread_first_to_last():
    assert list(plot.gallery_variants(100, 5)) == [0, 25, 50, 74, 99]
    assert list(plot.gallery_variants(3, 5)) == [0, 1, 2]
    assert list(plot.gallery_variants(7, 1)) == [0]
    with pytest.raises(InputError, match="rows"):
        plot.gallery_variants(7, 0)


def test_plot_all_writes_png_and_pdf(store, tmp_path):
    written = plot.plot_all(store, tmp_path / "figs", rows=3)
    names = sorted(p.name for p in written)
    assert names == sorted(f"{s}.{e}" for s in ("shapes", "diffraction", "distribution") for e in ("png", "pdf"))
    for path in written:
        data = path.read_bytes()
        assert len(data) > 5000, path
        assert data.startswith(b"\x89PNG" if path.suffix == ".png" else b"%PDF"), path
    from matplotlib.image import imread

    image = imread(tmp_path / "figs" / "distribution.png")
    assert image.shape[0] > 300 and image[..., :3].std() > 0.05  # not blank


def test_galleries_read_only_the_images_they_show(store, monkeypatch):
    from molmnist_dask.store import backend

    reads = []
    original = backend.PartsArray._read

    def counting(self, key):
        out = original(self, key)
        reads.append((self.var, out.size // (out.shape[-2] * out.shape[-1])))  # images read
        return out

    monkeypatch.setattr(backend.PartsArray, "_read", counting)
    ds = mm.open_dataset(store)
    plot.shape_gallery(ds, rows=2)
    assert sum(n for var, n in reads if var == "shape") == 3 * 2
    assert not [r for r in reads if r[0] == "diffraction"]
    reads.clear()
    plot.diffraction_gallery(ds, rows=4)
    assert sum(n for var, n in reads if var == "diffraction") == 3 * 4
    assert not [r for r in reads if r[0] == "shape"]


def test_cli_plot(store, tmp_path, capsys):
    from molmnist_dask.cli import main

    rc = main(["plot", str(store), "-o", str(tmp_path / "out"), "--rows", "2", "--split", "0.2"])
    out = capsys.readouterr().out
    assert rc == 0
    assert out.count("wrote ") == 6 and (tmp_path / "out" / "distribution.pdf").exists()
    rc = main(["plot", str(store), "-o", str(tmp_path / "bad"), "--split", "9"])
    assert rc == 2 and "split" in capsys.readouterr().err
    rc = main(["plot", str(tmp_path / "nothing"), "-o", str(tmp_path / "x")])
    assert rc == 2


def test_plot_all_on_a_netcdf_file(store, tmp_path):
    nc = mm.consolidate(store, tmp_path / "one.nc", progress=False)
    written = plot.plot_all(nc, tmp_path / "figs", rows=2)
    assert len(written) == 6 and all(p.stat().st_size > 0 for p in written)


# -- issue 10: figures a reader can use ------------------------------------------------------------

def test_no_molecule_hides_under_another(store, tmp_path):
    fig = plot.distribution_figure(mm.open_dataset(store))
    main = fig.axes[0]
    markers = [c.get_paths()[0].vertices.tobytes() for c in main.collections]
    assert len(set(markers)) == len(markers) == 3            # a shape of its own each
    assert all(len(c.get_facecolors()) == 0 or c.get_facecolors()[:, 3].max() == 0
               for c in main.collections)                     # hollow: outlines show through
    assert not main.child_axes                                # apart: no inset needed
    # two molecules on top of each other (as 6x6 and hex36): shown again, magnified
    same = adk_store(tmp_path / "same", {"adk": "all", "protein": "protein", "ca": "name CA"},
                     size=32, variants=7)
    fig = plot.distribution_figure(mm.open_dataset(same))
    inset, = fig.axes[0].child_axes
    assert len(inset.collections) == 2 and inset.get_title() == "adk and protein, magnified"


def test_diffraction_gallery_crops_to_qmax(store, tmp_path, capsys):
    ds = mm.open_dataset(store)
    full = plot.diffraction_gallery(ds, rows=2)
    crop = plot.diffraction_gallery(ds, rows=2, qmax=0.1)
    shown = crop.axes[0].get_images()[0].get_array().shape
    assert shown[0] < full.axes[0].get_images()[0].get_array().shape[0]
    assert shown[0] == int((np.abs(ds.qy.values) <= 0.1).sum())
    with pytest.raises(InputError, match="qmax"):
        plot.diffraction_gallery(ds, rows=2, qmax=1e-9)
    import subprocess
    import sys

    from conftest import cli_env

    run = subprocess.run([sys.executable, "-m", "molmnist_dask.cli", "plot", str(store), "-o",
                          str(tmp_path / "q"), "--rows", "2", "--qmax", "0.1"],
                         capture_output=True, text=True, env=cli_env())
    assert run.returncode == 0 and run.stdout.count("wrote ") == 6, run.stderr


def _with_twist(ds, twist):
    return ds.assign_coords(twist=(("molecule", "variant"), np.asarray(twist, float),
                                   {"long_name": "twist", "units": "degree/nm"}))


def test_rows_are_labelled_by_the_twist_coordinate(store):
    ds = mm.open_dataset(store)
    rising = np.tile(np.linspace(0, 3, ds.sizes["variant"]), (ds.sizes["molecule"], 1))
    rows, panels = plot.row_labels(_with_twist(ds, rising), [0, 3, 6])
    assert rows == ["0.00\u00b0/nm twist", "1.50\u00b0/nm twist", "3.00\u00b0/nm twist"] and panels is None
    fig = plot.shape_gallery(_with_twist(ds, rising), rows=3)
    labels = [ax.get_ylabel() for ax in fig.axes if ax.get_ylabel().startswith("variant")]
    assert labels == ["variant 0\n0.00\u00b0/nm twist", "variant 3\n1.50\u00b0/nm twist",
                      "variant 6\n3.00\u00b0/nm twist"]
    # twists that differ between molecules (measured ones, say) go in each panel
    measured = rising * np.array([[1.0], [0.5], [2.0]])
    measured[2, :] = np.nan  # a molecule without the label
    rows, panels = plot.row_labels(_with_twist(ds, measured), [0, 6])
    assert rows is None and panels == [["0.00\u00b0/nm twist"] * 2 + [""],
                                       ["3.00\u00b0/nm twist", "1.50\u00b0/nm twist", ""]]
    fig = plot.diffraction_gallery(_with_twist(ds, measured), rows=2)
    assert sorted(t.get_text() for ax in fig.axes for t in ax.texts) == \
        ["0.00\u00b0/nm", "0.00\u00b0/nm", "1.50\u00b0/nm", "3.00\u00b0/nm"]


def test_rows_of_the_cellulose_fibrils_are_labelled_by_their_twist(tmp_path):
    """Saved, with the .cellvar folder removed: the rows' twist comes from the store alone."""
    import shutil

    from molmnist_dask.cellulose import write_sources

    sources = write_sources(tmp_path / "variants", 9, molecules=["2x2", "3x3"])
    ds = mm.build_dataset(sources, size=16, extent=90.0, variants=5)
    assert np.allclose(ds["twist"].values, [0, 0.75, 1.5, 2.25, 3.0])  # frames 0, 2, 4, 6, 8 of 9
    with dask.config.set(scheduler="sync"):
        mm.save_dataset(ds, tmp_path / "store", progress=False)
    shutil.rmtree(tmp_path / "variants")
    saved = mm.open_dataset(tmp_path / "store")
    with dask.config.set(scheduler="sync"):
        fig = plot.shape_gallery(saved, rows=3)
    labels = [ax.get_ylabel() for ax in fig.axes if ax.get_ylabel().startswith("variant")]
    assert labels == ["variant 0\n0.00\u00b0/nm twist", "variant 2\n1.50\u00b0/nm twist",
                      "variant 4\n3.00\u00b0/nm twist"]


def test_without_a_twist_coordinate_rows_are_variants_and_nothing_beside_is_read(store):
    (store.parent / "synth.json").write_text('{"config": {"variants": 7, "twist_max": 3.0}}')
    ds = mm.open_dataset(store)
    assert plot.row_labels(ds, [0, 1]) == (None, None)
    fig = plot.shape_gallery(ds, rows=2)
    assert all("twist" not in ax.get_ylabel() for ax in fig.axes)
    assert [ax.get_ylabel() for ax in fig.axes if ax.get_ylabel()][:2] == ["variant 0", "variant 6"]


# -- issue 18: quick, with progress, --qmax redoes only the diffraction gallery ----------------------

def test_distribution_features_equal_the_analysis(store):
    from molmnist_dask.analysis import distribution

    ds = mm.open_dataset(store, chunks=None)
    for split in (None, 0.2):
        mine = plot.distribution_features(ds, split)
        ref = distribution(mm.open_dataset(store), split).compute()
        assert mine.attrs["split"] == ref.attrs["split"]
        np.testing.assert_allclose(mine.values, ref.values, rtol=1e-12)
        assert mine.dims == ref.dims and list(mine.feature.values) == ["low", "high"]


def _count_reads(monkeypatch):
    from molmnist_dask.store import backend

    reads = {"shape": 0, "diffraction": 0}
    original = backend.PartsArray._read

    def counting(self, key):
        out = original(self, key)
        reads[self.var] += out.size // (out.shape[-2] * out.shape[-1])
        return out

    monkeypatch.setattr(backend.PartsArray, "_read", counting)
    return reads


def test_plot_reads_each_pattern_once_and_a_rerun_only_the_galleries(store, tmp_path, monkeypatch):
    reads = _count_reads(monkeypatch)
    plot.plot_all(store, tmp_path / "figs", rows=2)
    assert reads == {"shape": 3 * 2, "diffraction": 3 * 2 + 3 * 7}
    reads.update(shape=0, diffraction=0)
    plot.plot_all(store, tmp_path / "figs", rows=2, qmax=0.2)  # the distribution's sums are cached
    assert reads == {"shape": 3 * 2, "diffraction": 3 * 2}
    reads.update(shape=0, diffraction=0)
    plot.plot_all(store, tmp_path / "figs", rows=2, split=0.2)  # another split: read again
    assert reads["diffraction"] == 3 * 2 + 3 * 7


def test_plot_reads_in_blocks_of_read_bytes(store, monkeypatch):
    reads = []
    from molmnist_dask.store import backend

    original = backend.PartsArray._read

    def counting(self, key):
        out = original(self, key)
        reads.append(out.size // (out.shape[-2] * out.shape[-1]))
        return out

    monkeypatch.setattr(backend.PartsArray, "_read", counting)
    ds = mm.open_dataset(store, chunks=None)
    image = 4 * ds.sizes["qy"] * ds.sizes["qx"]
    monkeypatch.setattr(plot, "READ_BYTES", 3 * image)
    plot.distribution_features(ds)
    assert reads == [3, 3, 1] * 3  # 7 variants of each molecule, 3 at a time


def test_cli_plot_shows_progress(store, tmp_path):
    import subprocess
    import sys

    from conftest import cli_env

    cmd = [sys.executable, "-m", "molmnist_dask.cli", "plot", str(store), "-o", str(tmp_path / "p"), "--rows", "2"]
    run = subprocess.run(cmd, capture_output=True, text=True, env=cli_env())
    assert run.returncode == 0 and "molmnist plot: reading" in run.stderr and "33/33" in run.stderr, run.stderr
    run = subprocess.run(cmd + ["--no-progress"], capture_output=True, text=True, env=cli_env())
    assert run.returncode == 0 and run.stderr == "" and run.stdout.count("wrote ") == 6
