"""The store's public face of its layout (`molmnist_dask.store.parts`, `locate`, `check`):
where every image lies, file by file, for a store folder and a single .nc alike, and the
checks `molmnist info` and `verify` report."""

from __future__ import annotations

import shutil
from pathlib import Path

import netCDF4
import numpy as np
import pytest

import molmnist_dask as mm
from conftest import save_sync
from molmnist_dask import InputError
from molmnist_dask.info import verify
from molmnist_dask.store import check, locate, parts


@pytest.fixture(scope="module")
def saved(md, tmp_path_factory):
    srcs = [mm.TrajectorySource("adk", md.PSF, md.DCD, selection="protein"),
            mm.TrajectorySource("ca", md.PSF, md.DCD, selection="name CA")]
    lazy = mm.build_dataset(srcs, size=16, extent=80.0, variants=7)
    root = tmp_path_factory.mktemp("catalog")
    return save_sync(lazy, root / "store", part_frames=3), save_sync(lazy, root / "one.nc")


def _image(part, variant):
    """The shape image at ``variant`` of a part, read with plain netCDF4 from where `parts` says."""
    with netCDF4.Dataset(part.path) as nc:
        return np.asarray(nc.variables["shape"][part.row, variant - part.start])


@pytest.mark.parametrize("which", ["store", "nc"])
def test_parts_say_where_every_image_lies(saved, which):
    path = saved[0] if which == "store" else saved[1]
    found = parts(path)
    assert len(found) == (6 if which == "store" else 2)    # 7 variants in 3 parts a molecule, or one file
    assert all(Path(p.path).is_file() for p in found)
    ds = mm.open_dataset(saved[1])
    items = np.array([(m, v) for m in range(2) for v in range(7)])
    which_part, offset = locate(found, items)
    assert (offset == items[:, 1] - [found[w].start for w in which_part]).all()
    for (m, v), w in zip(items, which_part):
        assert found[w].molecule == m and found[w].start <= v < found[w].stop
        assert np.array_equal(_image(found[w], v), ds["shape"].values[m, v])


def test_locate_refuses_what_the_parts_do_not_cover(saved):
    found = [p for p in parts(saved[0]) if not (p.molecule == 0 and p.start <= 3 < p.stop)]
    assert locate(found, [[1, 3]])[1].tolist() == [3 - [p.start for p in found if p.molecule == 1 and p.start <= 3][-1]]
    with pytest.raises(InputError, match="does not cover"):
        locate(found, [[0, 3]])


def test_check_finds_missing_resized_and_damaged_parts(saved, tmp_path):
    store = tmp_path / "copy"
    shutil.copytree(saved[0], store)
    assert check(store) == [] and check(store, full=True) == [] and check(saved[1], full=True) == []
    files = [Path(p.path) for p in parts(store)]
    files[0].unlink()
    with open(files[1], "ab") as f:
        f.write(b"x")
    data = bytearray(files[2].read_bytes())
    data[-len(data) // 3:] = bytes(len(data) // 3)              # images zeroed: checksums fail
    files[2].write_bytes(data)
    problems = dict(check(store, full=True))
    assert problems[str(files[0])] == "missing" and "the index recorded" in problems[str(files[1])]
    assert str(files[2]) in problems and len(problems) == 3
    assert dict(verify(store)) == problems


def test_what_is_not_a_store_is_one_line_naming_it(saved, tmp_path):
    with pytest.raises(InputError, match="no such store or file"):
        check(tmp_path / "nothing")
    folder = tmp_path / "store"
    shutil.copytree(saved[0], folder)
    (folder / "index.nc").unlink()
    for call in (check, parts):
        with pytest.raises(InputError, match=r"store: no index.nc: an interrupted build\? run it again, or open the parts with xr.open_mfdataset"):
            call(folder)
    text = tmp_path / "x.nc"
    text.write_text("not netcdf")
    with pytest.raises(InputError, match="x.nc: cannot open"):
        parts(text)
    assert [problem for _, problem in check(text)]
