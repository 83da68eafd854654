"""molmnist plot: the paper's three figures, written as PNG and PDF from a lazy dataset."""

from __future__ import annotations


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
