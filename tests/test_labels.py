"""Per-frame labels: the built-in variants' nominal twist, MDAnalysis' time, labels CSV files;
as (molecule, variant) coordinates that survive every way of saving and opening a dataset."""

import warnings
from types import SimpleNamespace

import numpy as np
import pytest
import xarray as xr

import molmnist_dask as mm
from conftest import computed, part_files, quiet_universe, save_sync
from molmnist_dask import InputError, TrajectorySource
from molmnist_dask.cellulose import virtual
from molmnist_dask.cellulose.variants import TWIST_MAX, twist_rate
from molmnist_dask.labels import frame_times, read_labels

TINY = dict(size=16, extent=120.0)


def _times(topology, trajectory, frames):
    u = quiet_universe(topology, trajectory)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return np.array([u.trajectory[int(f)].time for f in frames])


@pytest.fixture(scope="module")
def fibril(tmp_path_factory):
    """The built-in 2x2 fibril, 5 variants, 3 of them taken."""
    folder = tmp_path_factory.mktemp("cellvar")
    sources = virtual.write_sources(folder, 5, molecules=["2x2"], twist_max=2.0)
    return SimpleNamespace(folder=folder, sources=sources,
                           ds=mm.build_dataset(sources, size=16, variants=3))


def test_twist_is_the_generators_nominal_twist(fibril):
    ds = fibril.ds
    expected = [twist_rate(int(f), 5, 2.0) for f in ds.frame.values[0]]
    assert expected == [0.0, 1.0, 2.0]
    assert ds.twist.dims == ("molecule", "variant") and ds.twist.dtype == np.float64
    np.testing.assert_array_equal(ds.twist.values[0], expected)
    assert ds.twist.attrs["units"] == "degree/nm" and "twist" in ds.twist.attrs["long_name"]
    assert "time" not in ds.coords  # generated variants have no simulation time


def test_variants_attributes_say_how_they_were_made(fibril):
    a = fibril.ds.attrs
    assert a["variants_seed"] == 0 and a["variants_twist_min"] == 0.0 and a["variants_twist_max"] == 2.0
    assert a["variants_atom_sigma"] == 0.19 and a["variants_chain_sigma"] == 0.10
    assert a["variants_generator_version"] == virtual.VERSION
    assert "molmnist_dask.cellulose.variants" in a["variants_generator"]


def test_synthesised_dcds_carry_the_same_twist(fibril, tmp_path):
    from molmnist_dask.cellulose import synthesize
    from molmnist_dask.runfile import load_run_file

    run = load_run_file(synthesize(tmp_path, variants=5, molecules=["2x2"], twist_max=2.0, progress=False))
    assert run.sources[0].labels == str(tmp_path / "2x2.labels.csv")
    ds = mm.build_dataset(run.sources, size=16, variants=3)
    np.testing.assert_array_equal(ds.twist.values, fibril.ds.twist.values)
    assert ds.twist.attrs == fibril.ds.twist.attrs


def test_default_twist_range(tmp_path):
    sources = virtual.write_sources(tmp_path, 3, molecules=["2x2"])
    ds = mm.build_dataset(sources, size=16)
    np.testing.assert_array_equal(ds.twist.values[0], [0.0, TWIST_MAX / 2, TWIST_MAX])


@pytest.mark.parametrize("which", ["dcd", "xtc"])
def test_time_is_mdanalysis_ts_time(md, which):
    top, traj = (md.PSF, md.DCD) if which == "dcd" else (md.GRO, md.XTC)
    ds = mm.build_dataset([TrajectorySource("m", top, traj, selection="name CA", step=2)], variants=4, **TINY)
    frames = ds.frame.values[0]
    np.testing.assert_array_equal(ds.time.values[0], _times(top, traj, frames))
    assert ds.time.attrs["units"] == "ps" and ds.time.dtype == np.float64
    assert "twist" not in ds.coords


@pytest.mark.parametrize("which", ["xyz", "dcd", "xtc"])
def test_time_is_computed_without_reading_frames_where_that_is_exact(md, which, monkeypatch):
    from MDAnalysisTests.datafiles import XYZ, XYZ_psf

    # XYZ stores no time (dt * frame); the DCD reader computes it from the header; an XTC
    # frame's header holds it
    args = {"xyz": (XYZ_psf, XYZ), "dcd": (md.PSF, md.DCD), "xtc": (md.GRO, md.XTC)}[which]
    reader = quiet_universe(*args, **({"dt": 2.5} if which == "xyz" else {})).trajectory
    expected = [reader[f].time for f in (0, 3, 5, 3)]
    reader[0]
    monkeypatch.setattr(type(reader), "__getitem__", lambda self, i: 1 / 0)
    np.testing.assert_array_equal(frame_times(reader, [0, 3, 5, 3]), expected)


def test_no_time_where_mdanalysis_would_assume_one_ps(md):
    from MDAnalysisTests.datafiles import XYZ, XYZ_psf

    assert frame_times(quiet_universe(XYZ_psf, XYZ).trajectory, [0, 1]) is None
    ds = mm.build_dataset([TrajectorySource("xyz", XYZ_psf, XYZ)], variants=2, **TINY)
    assert "time" not in ds.coords


def _adk_labels(path, n=98, header="twist [degree/nm],time [ps],rmsd [angstrom],score"):
    rows = [header] + [f"{0.1 * i},{1000 + i},{i / 7},{-i}" for i in range(n)]
    path.write_text("\n".join(rows) + "\n")
    return path


def test_labels_file_gives_coordinates_and_time_wins(md, tmp_path):
    labels = _adk_labels(tmp_path / "adk.labels.csv")
    ds = mm.build_dataset([TrajectorySource("adk", md.PSF, md.DCD, selection="name CA", start=10,
                                            labels=labels)], variants=3, **TINY)
    frames = ds.frame.values[0]
    np.testing.assert_allclose(ds.twist.values[0], 0.1 * frames)
    np.testing.assert_array_equal(ds.time.values[0], 1000.0 + frames)  # not MDAnalysis' time
    np.testing.assert_array_equal(ds.score.values[0], -frames)
    assert ds.rmsd.attrs == {"long_name": "rmsd", "units": "angstrom"}
    assert "units" not in ds.score.attrs
    assert list(ds.coords).index("twist") < list(ds.coords).index("time") < list(ds.coords).index("rmsd")


def test_a_molecule_without_a_label_gets_nan(md, fibril):
    adk = TrajectorySource("adk", md.PSF, md.DCD, selection="name CA")
    ds = mm.build_dataset([*fibril.sources, adk], variants=3, size=16, extent=120.0)
    assert np.isnan(ds.twist.values[1]).all() and not np.isnan(ds.twist.values[0]).any()
    assert np.isnan(ds.time.values[0]).all()
    np.testing.assert_array_equal(ds.time.values[1], _times(md.PSF, md.DCD, ds.frame.values[1]))


@pytest.mark.parametrize("text, message", [
    (None, "not found"),
    ("", "empty"),
    ("twist [degree/nm],2nd\n", "bad header"),
    ("twist [degree/nm],twist\n", "appears twice"),
    ("frame\n", "already uses"),
    ("twist [degrees]\n", "must be in degree/nm"),
    ("twist\n1.0\n", "1 rows of labels, but the trajectory has 98 frames"),
    ("twist,time\n" + "1.0,2.0\n" * 97 + "1.0\n", "line 99 has 1 values"),
    ("twist\n" + "1.0\n" * 50 + "abc\n" + "1.0\n" * 47, "line 52 holds something other than numbers"),
])
def test_bad_labels_files_are_one_line_errors(md, tmp_path, text, message):
    path = tmp_path / "bad.csv"
    if text is not None:
        path.write_text(text)
    source = TrajectorySource("adk", md.PSF, md.DCD, labels=path)
    with pytest.raises(InputError) as err:
        mm.build_dataset([source], **TINY)
    text = str(err.value)
    assert message in text and str(path) in text and "molecule 'adk'" in text and "\n" not in text


def test_labels_must_be_a_path(md):
    with pytest.raises(InputError, match="labels must be a path"):
        TrajectorySource("adk", md.PSF, md.DCD, labels=3)


def test_read_labels_keeps_every_frame(tmp_path):
    labels = read_labels(str(_adk_labels(tmp_path / "l.csv", n=4)), 4, "m")
    assert list(labels) == ["twist", "time", "rmsd", "score"]
    np.testing.assert_array_equal(labels["time"].values, [1000, 1001, 1002, 1003])


def test_run_file_labels_key(md, tmp_path):
    from molmnist_dask.runfile import load_run_file, write_run_file

    labels = _adk_labels(tmp_path / "adk.labels.csv")
    run = tmp_path / "run.toml"
    run.write_text(f'[[molecule]]\nname = "adk"\ntopology = "{md.PSF}"\ntrajectory = "{md.DCD}"\n'
                   'labels = "adk.labels.csv"\n')
    cfg = load_run_file(run)
    assert cfg.sources[0].labels == str(labels)
    again = load_run_file(write_run_file(tmp_path / "again.toml", cfg.sources))
    assert again.sources == cfg.sources


@pytest.fixture(scope="module")
def labelled(md, fibril, tmp_path_factory):
    """A dataset with twist (the fibril) and time (adk), saved every way."""
    adk = TrajectorySource("adk", md.PSF, md.DCD, selection="name CA")
    lazy = mm.build_dataset([*fibril.sources, adk], variants=3, size=16, extent=120.0)
    root = tmp_path_factory.mktemp("labelled")
    store = save_sync(lazy, root / "store", part_frames=2)
    nc = save_sync(lazy, root / "one.nc")
    mm.consolidate(store, root / "consolidated.nc", progress=False)
    return SimpleNamespace(lazy=lazy, ref=computed(lazy), store=store, nc=nc,
                           consolidated=root / "consolidated.nc")


def _same_labels(ds, ref):
    for name in ("twist", "time"):
        assert ds[name].dims == ("molecule", "variant") and ds[name].dtype == np.float64, name
        np.testing.assert_array_equal(ds[name].values, ref[name].values)
        assert ds[name].attrs == ref[name].attrs, name


@pytest.mark.parametrize("how", ["store", "xr_store", "nc", "consolidated"])
def test_labels_survive_saving(labelled, how):
    path = {"store": labelled.store, "xr_store": labelled.store, "nc": labelled.nc,
            "consolidated": labelled.consolidated}[how]
    ds = xr.open_dataset(path) if how == "xr_store" else mm.open_dataset(path)
    _same_labels(ds, labelled.ref)
    assert "twist" in ds.coords and "time" in ds.coords


def test_labels_survive_open_mfdataset_of_the_parts(labelled):
    with xr.open_mfdataset(part_files(labelled.store), combine="by_coords") as ds:
        _same_labels(ds.load(), labelled.ref)


def test_labels_follow_a_selection(labelled):
    ds = mm.open_dataset(labelled.store).isel(molecule=1, variant=[2, 0])
    np.testing.assert_array_equal(ds.time.values, labelled.ref.time.values[1, [2, 0]])
