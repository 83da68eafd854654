"""TOML run files: written and read back; every unknown, mistyped or missing key named."""

import shutil

import numpy as np
import pytest

import molmnist_dask as mm
from molmnist_dask import InputError, TrajectorySource
from molmnist_dask.runfile import load_run_file, write_run_file


def test_write_then_load_round_trips(md, tmp_path):
    srcs = [TrajectorySource("adk", md.PSF, md.DCD, selection="protein", start=2, stop=90, step=3),
            TrajectorySource("gro", md.GRO, [md.XTC, md.XTC])]
    path = write_run_file(tmp_path / "run.toml", srcs,
                          grid={"size": 48, "extent": 130.0, "oversampling": 2},
                          options={"variants": 4, "center": "electrons", "block_size": 3})
    run = load_run_file(path)
    assert run.sources == srcs
    assert run.options.non_default() == {"size": 48, "extent": 130.0, "oversampling": 2, "variants": 4,
                           "center": "electrons", "block_size": 3}
    ds = mm.build_dataset(run.sources, run.options)
    assert ds.sizes["x"] == 48 and ds.sizes["qx"] == 96 and ds.sizes["variant"] == 4


def test_any_text_round_trips(tmp_path):
    """Control characters, quotes and backslashes in names, paths and selections, and
    non-ASCII text, come back as they were written (tomli-w escapes what TOML needs escaped)."""
    odd = "a\x01b\tc\x7f\"d\\e\n"                  # in paths too: any locale's file names hold them
    text = f"{odd}\u00e9\U0001f600"
    inside, outside = tmp_path / "runs" / f"top{odd}.psf", tmp_path / f"far{odd}" / "t.dcd"
    source = dict(name=f"mol{text}", selection=f'name CA and segid "{text}"', start=0, stop=5, step=2)
    (tmp_path / "runs").mkdir()
    trajectory = [outside, inside.with_suffix(".dcd")]
    path = write_run_file(tmp_path / "runs" / "run.toml", [TrajectorySource(topology=inside, trajectory=trajectory, **source)],
                          options={"selection": text, "variants": 2})
    assert "\x01" not in path.read_text(encoding="utf-8")   # written escaped, not raw
    run = load_run_file(path)
    assert run.sources == [TrajectorySource(topology=str(inside), trajectory=[str(t) for t in trajectory], **source)]
    assert run.options.variants == 2


def test_a_run_file_that_is_not_utf8_is_one_line(tmp_path):
    run = tmp_path / "run.toml"
    run.write_bytes('[[molecule]]\nname = "caf\u00e9"\n'.encode("latin-1"))
    with pytest.raises(InputError, match=r"run.toml: not valid TOML \(not UTF-8"):
        load_run_file(run)


def test_numpy_values_are_written_as_numbers(md, tmp_path):
    path = write_run_file(tmp_path / "run.toml", [TrajectorySource("adk", md.PSF, md.DCD)],
                          grid={"size": np.int64(16), "extent": np.float64(80.0)},
                          options={"orientation": (1.0, 0.0, 0.0)})
    options = load_run_file(path).options
    assert (options.size, options.extent, options.orientation) == (16, 80.0, (1.0, 0.0, 0.0))


@pytest.mark.parametrize("center", [None, "none"])
def test_no_centring_round_trips(md, tmp_path, center):
    path = write_run_file(tmp_path / "run.toml", [TrajectorySource("adk", md.PSF, md.DCD)],
                          options={"center": center})
    assert load_run_file(path).options["center"] is None


def test_block_size_zero_means_automatic(md, tmp_path):
    path = write_run_file(tmp_path / "run.toml", [TrajectorySource("adk", md.PSF, md.DCD)],
                          options={"block_size": 0})
    assert load_run_file(path).options["block_size"] is None


def test_paths_are_relative_to_the_run_file(md, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    shutil.copy(md.PSF, data / "adk.psf")
    shutil.copy(md.DCD, data / "adk.dcd")
    run = tmp_path / "runs" / "run.toml"
    run.parent.mkdir()
    run.write_text('[[molecule]]\nname = "adk"\ntopology = "../data/adk.psf"\ntrajectory = "../data/adk.dcd"\n')
    src = load_run_file(run).sources[0]
    assert src.topology == str(run.parent / "../data/adk.psf")
    assert src.selection == "all" and src.trajectory == (str(run.parent / "../data/adk.dcd"),)
    # write_run_file writes paths under its folder relatively, so the folder can move
    moved = write_run_file(data / "run.toml", [TrajectorySource("adk", data / "adk.psf", data / "adk.dcd")])
    assert 'topology = "adk.psf"' in moved.read_text()
    elsewhere = tmp_path / "elsewhere"
    shutil.copytree(data, elsewhere)
    assert load_run_file(elsewhere / "run.toml").sources[0].topology == str(elsewhere / "adk.psf")


def test_default_selection_from_options(md, tmp_path):
    run = tmp_path / "run.toml"
    run.write_text(f'[options]\nselection = "name CA"\n\n[[molecule]]\nname = "a"\ntopology = "{md.PSF}"\n'
                   f'trajectory = ["{md.DCD}"]\n\n[[molecule]]\nname = "b"\ntopology = "{md.PSF}"\n'
                   f'trajectory = ["{md.DCD}"]\nselection = "protein"\n')
    cfg = load_run_file(run)
    assert [s.selection for s in cfg.sources] == ["name CA", "protein"]
    assert "selection" not in cfg.options.names()


MOLECULE = '[[molecule]]\nname = "adk"\ntopology = "{psf}"\ntrajectory = ["{dcd}"]\n'


@pytest.mark.parametrize("text,words", [
    ('[grid]\nsise = 32\n' + MOLECULE, ["sise", "[grid]"]),
    ('[options]\nvariant = 3\n' + MOLECULE, ["variant", "[options]"]),
    ('[gird]\nsize = 32\n' + MOLECULE, ["gird"]),
    (MOLECULE + 'selecton = "protein"\n', ["selecton", "molecule"]),
    ('[grid]\nsize = "32"\n' + MOLECULE, ["size", "int"]),
    ('[grid]\nsize = true\n' + MOLECULE, ["size", "int"]),
    ('[grid]\nextent = "wide"\n' + MOLECULE, ["extent", "float"]),
    ('[options]\nvariants = 2.5\n' + MOLECULE, ["variants", "int"]),
    (MOLECULE + 'start = "0"\n', ["start", "int"]),
    ('[grid]\nsize = 32\n', ["molecule"]),
    ('[[molecule]]\nname = "adk"\ntopology = "{psf}"\n', ["trajectory"]),
    ('[[molecule]]\ntopology = "{psf}"\ntrajectory = "{dcd}"\n', ["name"]),
    ('[grid\nsize = 32\n', ["TOML"]),
])
def test_bad_run_files_name_the_file_and_key(md, tmp_path, text, words):
    run = tmp_path / "bad.toml"
    run.write_text(text.format(psf=md.PSF, dcd=md.DCD))
    with pytest.raises(InputError) as err:
        load_run_file(run)
    message = str(err.value)
    assert "\n" not in message and "bad.toml" in message
    for w in words:
        assert w in message


def test_missing_run_file(tmp_path):
    with pytest.raises(InputError, match="nothere.toml"):
        load_run_file(tmp_path / "nothere.toml")


def test_write_run_file_refuses_unknown_keys(md, tmp_path):
    with pytest.raises(InputError, match="colour"):
        write_run_file(tmp_path / "run.toml", [TrajectorySource("adk", md.PSF, md.DCD)], grid={"colour": 1})
