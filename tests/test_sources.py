"""Trajectory sources, and every kind of bad input: one-line InputErrors naming what is wrong."""

import os
import pickle

import numpy as np
import pytest

import molmnist_dask as mm
from conftest import computed, quiet_universe
from molmnist_dask import InputError, TrajectorySource


def test_source_holds_paths_and_pickles_small(md):
    src = TrajectorySource("adk", md.PSF, md.DCD, selection="protein", start=1, stop=9, step=2)
    assert src.trajectory == (md.DCD,) and src.files == (md.PSF, md.DCD)
    assert len(pickle.dumps(src)) < 2000  # paths and strings, no Universe
    assert pickle.loads(pickle.dumps(src)) == src
    two = TrajectorySource("adk", md.PSF, [md.DCD, md.DCD])
    assert two.trajectory == (md.DCD, md.DCD)


def test_several_trajectory_files_read_as_one(md):
    ds = mm.build_dataset([TrajectorySource("adk", md.PSF, [md.DCD, md.DCD])], size=16, extent=90.0,
                          variants=3)
    np.testing.assert_array_equal(ds.frame.values[0], [0, 98, 195])
    one = computed(mm.build_dataset([TrajectorySource("adk", md.PSF, md.DCD, stop=1)], size=16, extent=90.0))
    two = computed(ds)
    # frame 98 of the chain is frame 0 of the second copy
    np.testing.assert_array_equal(two["shape"].values[0, 1], one["shape"].values[0, 0])


@pytest.mark.parametrize("kwargs,match", [
    (dict(name=""), "name"),
    (dict(name=3), "name"),
    (dict(selection=5), "selection"),
    (dict(start=-1), "start"),
    (dict(stop=1.5), "stop"),
    (dict(step=0), "step"),
    (dict(step=True), "step"),
])
def test_source_rejects_bad_fields(md, kwargs, match):
    args = {"name": "adk", "topology": md.PSF, "trajectory": md.DCD, **kwargs}
    with pytest.raises(InputError, match=match):
        TrajectorySource(**args)


def _one_line(err) -> str:
    text = str(err.value)
    assert "\n" not in text and text.strip() == text and text
    return text


def _bad_sources(md, made, tmp_path):
    """(id, sources, build kwargs, words the message must contain)."""
    folder = tmp_path / "a-folder.dcd"
    folder.mkdir()
    return [
        ("missing-file", [TrajectorySource("adk", md.PSF, str(tmp_path / "gone.dcd"))], {},
         ["adk", "gone.dcd", "not found"]),
        ("missing-topology", [TrajectorySource("adk", str(tmp_path / "gone.psf"), md.DCD)], {},
         ["adk", "gone.psf"]),
        ("unreadable-folder", [TrajectorySource("adk", md.PSF, str(folder))], {},
         ["adk", "a-folder.dcd"]),
        ("not-a-dcd", [TrajectorySource("adk", md.PSF, made.not_dcd)], {}, ["adk", "x.dcd"]),
        ("not-a-topology", [TrajectorySource("adk", made.not_dcd, md.DCD)], {}, ["adk", "x.dcd"]),
        ("atom-count-mismatch", [TrajectorySource("adk", md.PSF, md.XTC)], {},
         ["adk", "adk.psf", "adk_oplsaa.xtc"]),
        ("invalid-selection", [TrajectorySource("adk", md.PSF, md.DCD, selection="protein and")], {},
         ["adk", "invalid selection", "protein and"]),
        ("empty-selection", [TrajectorySource("adk", md.PSF, md.DCD, selection="resname XYZ")], {},
         ["adk", "resname XYZ", "no atoms"]),
        ("start-beyond", [TrajectorySource("adk", md.PSF, md.DCD, start=200)], {},
         ["adk", "start=200", "98 frames"]),
        ("stop-beyond", [TrajectorySource("adk", md.PSF, md.DCD, stop=99)], {},
         ["adk", "stop=99", "98 frames"]),
        ("empty-range", [TrajectorySource("adk", md.PSF, md.DCD, start=5, stop=5)], {},
         ["adk", "no frames"]),
        ("duplicate-names", [TrajectorySource("adk", md.PSF, md.DCD), TrajectorySource("adk", md.PSF, md.DCD)],
         {}, ["duplicate", "adk"]),
        ("frame-counts-differ", [TrajectorySource("adk", md.PSF, md.DCD), TrajectorySource("gro", md.GRO, md.XTC)],
         {}, ["adk: 98", "gro: 10", "variants"]),
        ("variants-beyond-frames", [TrajectorySource("gro", md.GRO, md.XTC)], {"variants": 11},
         ["gro", "variants=11", "10 frames"]),
        ("variants-zero", [TrajectorySource("adk", md.PSF, md.DCD)], {"variants": 0}, ["variants"]),
        ("size-zero", [TrajectorySource("adk", md.PSF, md.DCD)], {"size": 0}, ["size"]),
        ("size-negative", [TrajectorySource("adk", md.PSF, md.DCD)], {"size": -32}, ["size"]),
        ("extent-zero", [TrajectorySource("adk", md.PSF, md.DCD)], {"extent": 0.0}, ["extent"]),
        ("extent-negative", [TrajectorySource("adk", md.PSF, md.DCD)], {"extent": -10.0}, ["extent"]),
        ("bad-center", [TrajectorySource("adk", md.PSF, md.DCD)], {"center": "mass"}, ["center", "mass"]),
        ("bad-block-size", [TrajectorySource("adk", md.PSF, md.DCD)], {"block_size": 0}, ["block_size"]),
        ("no-molecules", [], {}, ["no molecules"]),
        ("nan-in-frame-0", [TrajectorySource("nanmol", md.PSF, made.nan0)], {},
         ["nanmol", "NaN", "frame 0"]),
    ]


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")  # MDAnalysis
def test_bad_inputs_are_one_line_input_errors(md, made, tmp_path):
    failures = []
    for case_id, sources, kwargs, words in _bad_sources(md, made, tmp_path):
        kwargs = {"size": 16, **kwargs}
        with pytest.raises(InputError) as err:
            mm.build_dataset(sources, **kwargs)
        text = _one_line(err)
        missing = [w for w in words if w not in text]
        if missing:
            failures.append(f"{case_id}: {text!r} lacks {missing}")
    assert not failures, "\n".join(failures)


def test_nan_coordinates_in_a_later_frame_name_the_frame_and_file(md, made, tmp_path):
    lazy = mm.build_dataset([TrajectorySource("nanmol", md.PSF, made.nan)], size=16, extent=100.0,
                            block_size=2)
    assert list(lazy.frame.values[0]) == [0, 1, 2, 3, 4]
    with pytest.raises(InputError) as err:
        computed(lazy)
    text = _one_line(err)
    assert "nanmol" in text and "frame 2" in text and os.path.basename(made.nan) in text
    # the frames before it are fine
    ok = computed(lazy.isel(variant=slice(0, 2)))
    assert np.isfinite(ok["shape"].values).all()


def test_universe_is_opened_on_the_worker_from_paths(md):
    """A source's task carries paths only; opening is cached per thread (not re-parsed per block)."""
    from molmnist_dask.sources import open_universe

    src = TrajectorySource("adk", md.PSF, md.DCD)
    u1, u2 = open_universe(src), open_universe(src)
    assert u1 is u2 and len(u1.trajectory) == len(quiet_universe(md.PSF, md.DCD).trajectory)


def test_frames_outside_the_range_are_never_read(md, made):
    ds = mm.build_dataset([TrajectorySource("nanmol", md.PSF, made.nan0, start=1)], size=16)
    assert np.isfinite(computed(ds)["shape"].values).all()


def test_a_topology_without_coordinates_is_one_line(md):
    import molmnist_dask as mm

    for source in (mm.TrajectorySource("adk", md.PSF), mm.TrajectorySource("adk", md.PSF, [])):
        with pytest.raises(InputError) as err:
            mm.build_dataset([source], size=16, extent=80.0)
        assert "holds no coordinates" in str(err.value) and "\n" not in str(err.value)


def test_an_unreadable_trajectory_leaves_no_del_noise(md, made):
    """MDAnalysis' half-made reader fails again in __del__; nothing of it reaches stderr."""
    code = ("import molmnist_dask as mm, gc\n"
            f"s = mm.TrajectorySource('x', {md.PSF!r}, {made.not_dcd!r})\n"
            "try:\n    mm.build_dataset([s], size=16, extent=80.0)\n"
            "except mm.InputError as e:\n    print(e)\n"
            "gc.collect()\n")
    import subprocess
    import sys

    from conftest import cli_env

    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=cli_env())
    assert "cannot read" in run.stdout and run.stderr == "", run.stderr
