"""The paper's cellulose I-beta microfibrils, their variants and the synthesised files."""

from __future__ import annotations

import json
import math
import os
import warnings

import numpy as np
import pytest
from scipy.signal import argrelmax
from scipy.spatial import cKDTree

from molmnist_dask.cellulose import (
    DEFAULT_EXTENT, MOLECULES, RESIDUES, build_fibril, chain_sites, default_run, label, rows,
    synthesize, twist_rate, variant_positions,
)
from molmnist_dask.cellulose import synth as synth_module
from molmnist_dask.cellulose.crystal import cell, d_spacing
from molmnist_dask.errors import InputError

CHAINS = {"2x2": 4, "3x3": 9, "4x4": 16, "5x5": 25, "6x6": 36, "7x7": 49, "8x8": 64, "9x9": 81,
          "hex24": 24, "hex36": 36}
Z = {"H": 1, "C": 6, "O": 8}


def universe(folder, name):
    import MDAnalysis as mda

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return mda.Universe(str(folder / f"{name}.pdb"), str(folder / f"{name}.dcd"))


def layer_twist(reference, moved, layer, z):
    """Fitted twist (degrees/nm) of ``moved`` against ``reference``: one 2D rotation per residue
    layer (least squares about the layer's centroid), then a straight line through angle vs z."""
    angles, heights = [], []
    for index in np.unique(layer):
        sel = layer == index
        a = reference[sel, :2] - reference[sel, :2].mean(axis=0)
        b = moved[sel, :2] - moved[sel, :2].mean(axis=0)
        cross = np.sum(a[:, 0] * b[:, 1] - a[:, 1] * b[:, 0])
        angles.append(np.degrees(np.arctan2(cross, np.sum(a * b))))
        heights.append(z[sel].mean() / 10.0)
    return np.polyfit(heights, angles, 1)[0]


# -- molecules and their structure -----------------------------------------------------------------

def test_molecules_in_the_papers_order():
    assert MOLECULES == ("2x2", "3x3", "4x4", "5x5", "6x6", "7x7", "8x8", "9x9", "hex24", "hex36")
    assert [label(m) for m in MOLECULES] == list(range(10))
    assert rows("4x4") == (1, 2, 3, 4, 3, 2, 1)
    assert rows("hex24") == (3, 4, 5, 5, 4, 3)
    assert rows("hex36") == (3, 4, 5, 6, 6, 5, 4, 3)
    assert {m: sum(rows(m)) for m in MOLECULES} == CHAINS


@pytest.mark.parametrize("name", MOLECULES)
def test_counts_per_molecule(name):
    fibril = build_fibril(name)
    chains = CHAINS[name]
    # per residue C6H10O5: 21 atoms, 86 electrons; per chain one water more:
    # H on O4 of residue 1 (non-reducing end), O1 and its H on C1 of residue 40 (reducing end)
    assert fibril.n_chains == chains
    assert fibril.n_residues == chains * RESIDUES == chains * 40
    assert fibril.n_atoms == chains * (21 * 40 + 3)
    assert fibril.n_electrons == chains * (86 * 40 + 10)
    per_residue = np.bincount(fibril.atom_residue).reshape(chains, RESIDUES)
    assert (per_residue[:, 0] == 22).all() and (per_residue[:, -1] == 23).all()
    assert (per_residue[:, 1:-1] == 21).all()
    assert set(fibril.elements) == {"C", "H", "O"}
    assert np.allclose(fibril.positions.mean(axis=0), 0, atol=1e-9)
    # ~200 angstrom long: 40 residues of c/2 = 5.19 angstrom
    assert 205 < np.ptp(fibril.positions[:, 2]) < 215


def test_chemistry_of_every_atom():
    fibril = build_fibril("3x3")
    p, e = fibril.positions, fibril.elements
    tree = cKDTree(p)
    pairs = tree.query_pairs(1.7, output_type="ndarray")
    length = np.linalg.norm(p[pairs[:, 0]] - p[pairs[:, 1]], axis=1)
    with_h = (e[pairs[:, 0]] == "H") | (e[pairs[:, 1]] == "H")
    bonds = pairs[np.where(with_h, length < 1.15, True)]
    valence = np.bincount(bonds.ravel(), minlength=len(p))
    assert (valence[e == "C"] == 4).all() and (valence[e == "O"] == 2).all() and (valence[e == "H"] == 1).all()
    # glycosidic C1(i)-O4(i+1) bonds along every chain
    c1 = p[fibril.names == "C1"].reshape(fibril.n_chains, RESIDUES, 3)
    o4 = p[fibril.names == "O4"].reshape(fibril.n_chains, RESIDUES, 3)
    glycosidic = np.linalg.norm(c1[:, :-1] - o4[:, 1:], axis=-1)
    assert glycosidic.min() > 1.38 and glycosidic.max() < 1.46
    # chain axis along z: residue i + 2 is residue i moved by c
    assert np.allclose(c1[:, 2:] - c1[:, :-2], [0, 0, 10.38], atol=1e-9)
    # no two chains overlap: heavy atoms of different chains stay > 2.5 angstrom apart
    heavy = e != "H"
    chain = fibril.atom_chain[heavy]
    close = cKDTree(p[heavy]).query_pairs(2.5, output_type="ndarray")
    assert (chain[close[:, 0]] == chain[close[:, 1]]).all()


def test_crystal_is_the_deposited_one_and_cellulose_modeler_agrees():
    from cellulose_modeler import build_structure

    assert cell() == pytest.approx({"a": 7.784, "b": 8.201, "c": 10.380, "alpha": 90, "beta": 90, "gamma": 96.55})
    assert d_spacing(1, -1) == pytest.approx(5.96, abs=0.01)
    assert d_spacing(1, 1) == pytest.approx(5.31, abs=0.01)
    assert d_spacing(2, 0) == pytest.approx(3.87, abs=0.01)
    # heavy atoms are exactly cellulose-modeler's where its row placement is the same as ours
    for name in ("2x2", "hex36"):
        theirs = build_structure(6, list(rows(name)))
        xyz = np.array([a.position for c in theirs.chains for r in c.residues for a in r.atoms if a.element != "H"])
        fibril = build_fibril(name, residues=6)
        ours = fibril.positions[fibril.elements != "H"]
        distance, _ = cKDTree(xyz - xyz.mean(axis=0)).query(ours - ours.mean(axis=0))
        assert len(xyz) == len(ours) and distance.max() < 1e-6


@pytest.mark.parametrize("name", MOLECULES)
def test_cross_sections_are_centrosymmetric_with_110_faces(name):
    sites = chain_sites(rows(name))
    fractional = sites[:, 2:] + sites[:, 1:2] / 2          # (a, b) of each chain axis
    mirrored = fractional.max(axis=0) + fractional.min(axis=0) - fractional
    # the fibril maps onto itself through its centre (cellulose-modeler's own 3x3 does not)
    assert {tuple(x) for x in fractional} == {tuple(x) for x in mirrored}
    for row in range(len(rows(name)) - 1):
        this, below = (fractional[sites[:, 0] == r, 1] for r in (row, row + 1))
        # each side steps half a b per sheet: a (110) or (1-10) face
        assert abs(below.min() - this.min()) == 0.5 and abs(below.max() - this.max()) == 0.5


def test_diffraction_shows_the_equatorial_reflections():
    fibril = build_fibril("9x9")
    electrons = np.array([Z[e] for e in fibril.elements])
    pixel, extent = 0.25, 400.0       # fine pixels; the wide field samples q finely (1/400 per A)
    n = int(extent / pixel)
    image, _, _ = np.histogram2d(fibril.positions[:, 1], fibril.positions[:, 0], bins=n,
                                 range=[[-extent / 2, extent / 2]] * 2, weights=electrons)
    intensity = np.abs(np.fft.fft2(image)) ** 2
    q = np.fft.fftfreq(n, d=pixel)
    ring = np.rint(np.hypot(q[None, :], q[:, None]) * extent).astype(int).ravel()
    radial = np.bincount(ring, intensity.ravel()) / np.maximum(np.bincount(ring), 1)
    q_ring = np.arange(len(radial)) / extent
    peaks = q_ring[argrelmax(radial, order=3)[0]]
    for d in (5.96, 5.31, 3.87):       # d(1-10), d(110), d(200), angstrom
        assert np.min(np.abs(peaks - 1 / d)) * d < 0.03, f"no peak within 3% of d = {d}"
    window = (q_ring > 0.1) & (q_ring < 0.35)
    assert abs(q_ring[window][np.argmax(radial[window])] * 3.87 - 1) < 0.03   # (200) strongest


# -- variants --------------------------------------------------------------------------------------

def test_twist_without_noise_is_exact():
    fibril = build_fibril("2x2")
    for variant, expected in ((0, 0.0), (2, 2.5), (4, 5.0)):
        moved = variant_positions(fibril, variant, 5, twist_max=5.0, atom_sigma=0, chain_sigma=0)
        measured = layer_twist(fibril.positions, moved, fibril.atom_residue % RESIDUES, fibril.positions[:, 2])
        # within a layer z spreads over ~5 angstrom, so the one-angle fit is close, not exact
        assert measured == pytest.approx(expected, abs=1e-3)
        assert np.allclose(np.hypot(*moved[:, :2].T), np.hypot(*fibril.positions[:, :2].T))


def test_thermal_displacement_has_the_asked_amplitude():
    fibril = build_fibril("9x9")
    moved = variant_positions(fibril, 0, 3, seed=1, atom_sigma=0.3, chain_sigma=0.2)
    assert moved.dtype == np.float32    # what a DCD stores: the files hold exactly these numbers
    shift = moved - fibril.positions
    per_chain = np.array([shift[fibril.atom_chain == c].mean(axis=0) for c in range(fibril.n_chains)])
    own = shift - per_chain[fibril.atom_chain]
    assert own.std(axis=0) == pytest.approx([0.3] * 3, rel=0.02)
    assert per_chain.std() == pytest.approx(0.2, rel=0.2)        # 243 draws
    assert shift.std() == pytest.approx(math.hypot(0.3, 0.2), rel=0.1)


def test_quantised_normals_are_standard():
    from molmnist_dask.cellulose.variants import gaussians, normal_table

    table = normal_table().astype(np.float64)
    assert table.mean() == pytest.approx(0, abs=1e-6) and table.std() == pytest.approx(1, abs=2e-5)
    draws = gaussians(np.random.default_rng(0), (3, 200_000), 2.0)
    assert draws.dtype == np.float32 and draws.shape == (3, 200_000)
    assert draws.mean() == pytest.approx(0, abs=0.01) and draws.std() == pytest.approx(2, rel=0.005)


@pytest.fixture(scope="module")
def folder_3x3(tmp_path_factory):
    folder = tmp_path_factory.mktemp("synth3x3")
    synthesize(folder, variants=5, seed=3, molecules=["3x3"], twist_max=4.0, progress=False)
    return folder


def test_twist_measured_from_the_files(folder_3x3):
    u = universe(folder_3x3, "3x3")
    assert len(u.trajectory) == 5 and set(u.atoms.elements) == {"C", "H", "O"}
    reference = build_fibril("3x3")
    layer = u.atoms.resids                      # residue layer 1..40 across all chains
    measured = []
    for ts in u.trajectory:
        measured.append(layer_twist(reference.positions, ts.positions, layer, reference.positions[:, 2]))
    expected = [twist_rate(v, 5, 4.0) for v in range(5)]
    assert measured == pytest.approx(expected, abs=0.05)
    assert np.all(np.diff(measured) > 0)        # least to most twisted


def test_any_variant_can_be_made_alone(folder_3x3):
    u = universe(folder_3x3, "3x3")
    u.trajectory[3]
    alone = variant_positions(build_fibril("3x3"), 3, 5, seed=3, twist_max=4.0)
    assert np.allclose(u.atoms.positions, alone, atol=1e-4)


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path):
    for folder, seed in (("a", 7), ("b", 7), ("c", 8)):
        synthesize(tmp_path / folder, variants=3, seed=seed, molecules=["2x2"], progress=False)
    read = lambda folder, ext: (tmp_path / folder / f"2x2.{ext}").read_bytes()  # noqa: E731
    assert read("a", "pdb") == read("b", "pdb") and read("a", "dcd") == read("b", "dcd")
    assert read("a", "dcd") != read("c", "dcd")


def test_default_extent_holds_the_largest_fibril_at_its_most_twisted():
    fibril = build_fibril("9x9")
    moved = variant_positions(fibril, 9, 10, seed=0)
    moved -= moved.mean(axis=0)                 # the renderer centres each frame
    assert np.hypot(moved[:, 0], moved[:, 1]).max() < DEFAULT_EXTENT / 2 - 5


# -- synthesis -------------------------------------------------------------------------------------

def test_synthesis_of_all_ten_reads_back(tmp_path):
    from molmnist_dask.runfile import load_run_file

    run_file = synthesize(tmp_path, variants=2, size=64, progress=False)
    assert run_file == tmp_path / "run.toml"
    run = load_run_file(run_file)
    assert [s.name for s in run.sources] == list(MOLECULES)
    assert (run.options.variants, run.options.size, run.options.extent) == (2, 64, DEFAULT_EXTENT)
    for name in MOLECULES:
        u = universe(tmp_path, name)
        chains = CHAINS[name]
        assert len(u.segments) == chains and len(u.residues) == chains * 40
        assert u.atoms.n_atoms == chains * 843 and len(u.trajectory) == 2
        assert sum(Z[e] for e in u.atoms.elements) == chains * 3450
    record = json.loads((tmp_path / "synth.json").read_text())
    assert record["config"]["variants"] == 2 and [m["name"] for m in record["molecules"]] == list(MOLECULES)
    # a rerun finds everything there and rewrites nothing
    stamps = {p.name: p.stat().st_mtime_ns for p in tmp_path.glob("*.dcd")}
    synthesize(tmp_path, variants=2, size=64, progress=False)
    assert stamps == {p.name: p.stat().st_mtime_ns for p in tmp_path.glob("*.dcd")}
    assert not list(tmp_path.glob(".*"))        # no lock, no temporary file left


# -- the default run: variants made on the workers ---------------------------------------------------

def test_default_run_is_the_papers_dataset_in_a_few_small_files(tmp_path):
    from molmnist_dask.runfile import load_run_file

    run_file = default_run(tmp_path)
    run = load_run_file(run_file)
    assert [s.name for s in run.sources] == list(MOLECULES)
    options = run.options
    assert (options.variants, options.size, options.extent) == (2000, 200, DEFAULT_EXTENT)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([f"{m}.cellvar" for m in MOLECULES] + ["run.toml"])
    assert sum(p.stat().st_size for p in tmp_path.iterdir()) < 10_000
    u = quiet_universe(run.sources[7].topology, run.sources[7].trajectory[0])
    assert u.atoms.n_atoms == 68283 and len(u.trajectory) == 2000
    assert set(u.atoms.elements) == {"C", "H", "O"} and len(u.segments) == 81
    # the same run again changes nothing; another configuration in the same folder is refused
    before = {p.name: p.stat().st_mtime_ns for p in tmp_path.iterdir() if p.suffix == ".cellvar"}
    default_run(tmp_path)
    assert before == {p.name: p.stat().st_mtime_ns for p in tmp_path.iterdir() if p.suffix == ".cellvar"}
    with pytest.raises(InputError, match="2x2.cellvar"):
        default_run(tmp_path, variants=10)


def quiet_universe(*files):
    import MDAnalysis as mda

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return mda.Universe(*files)


def _frames(files, variants):
    """Every frame of a Universe (in whatever process this runs), as raw float32 bits."""
    import molmnist_dask.cellulose  # noqa: F401  registers .cellvar

    u = quiet_universe(*files)
    return np.stack([ts.positions.copy() for ts in u.trajectory]), u.atoms.n_atoms


@pytest.fixture(scope="module")
def both(tmp_path_factory):
    """The same variants twice: synthesised as PDB + DCD, and as .cellvar files."""
    from molmnist_dask.cellulose import write_sources

    root = tmp_path_factory.mktemp("both")
    names = ["2x2", "9x9", "hex36"]
    synthesize(root / "dcd", variants=4, seed=5, molecules=names, progress=False)
    virtual = write_sources(root / "virtual", 4, seed=5, molecules=names)
    return root, names, virtual


def test_worker_made_frames_equal_the_dcd_frames_bit_for_bit(both, client):
    root, names, virtual = both
    for name, source in zip(names, virtual):
        made, n = client.submit(_frames, source.files, 4, pure=False).result()
        read, _ = _frames([str(root / "dcd" / f"{name}.pdb"), str(root / "dcd" / f"{name}.dcd")], 4)
        assert made.shape == read.shape == (4, n, 3) and made.dtype == read.dtype == np.float32
        assert made.tobytes() == read.tobytes(), name


def test_a_build_from_the_variants_equals_a_build_from_the_dcds(both, client):
    import molmnist_dask as mm

    root, names, virtual = both
    from_dcd = [mm.TrajectorySource(n, str(root / "dcd" / f"{n}.pdb"), str(root / "dcd" / f"{n}.dcd"))
                for n in names]
    a = mm.build_dataset(from_dcd, size=64, extent=DEFAULT_EXTENT, variants=4).compute()
    b = mm.build_dataset(virtual, size=64, extent=DEFAULT_EXTENT, variants=4).compute()
    for var in ("shape", "diffraction", "lost_atoms", "lost_electrons", "frame", "label"):
        assert np.array_equal(a[var].values, b[var].values), var
    assert list(a.molecule.values) == list(b.molecule.values) == names
    assert float(a["shape"].sum()) > 0


@pytest.mark.parametrize("content, named", [
    ("not json", "not a cellulose variants file"),
    ('{"kind": "molmnist-cellulose-variants", "version": 1, "molecule": "10x10", "variants": 3, '
     '"seed": 0, "twist_max": 3.0, "atom_sigma": 0.1, "chain_sigma": 0.1, "residues": 40}', "10x10"),
    ('{"kind": "molmnist-cellulose-variants", "version": 1, "molecule": "2x2"}', "lacks variants"),
])
def test_a_bad_cellvar_file_is_one_line(tmp_path, content, named):
    import molmnist_dask as mm

    path = tmp_path / "x.cellvar"
    path.write_text(content)
    with pytest.raises(InputError) as err:
        mm.build_dataset([mm.TrajectorySource("x", str(path), str(path))], size=16, extent=90.0)
    assert named in str(err.value) and "\n" not in str(err.value)


def test_another_configuration_is_refused(tmp_path):
    synthesize(tmp_path, variants=2, molecules=["2x2"], progress=False)
    for change in ({"variants": 3}, {"seed": 1}, {"twist_max": 2.0}, {"atom_sigma": 0.5}):
        with pytest.raises(InputError) as err:
            synthesize(tmp_path, **{"variants": 2, "molecules": ["2x2"], "progress": False, **change})
        message = str(err.value)
        assert "\n" not in message and "another configuration" in message and next(iter(change)) in message
    # a topology that is not ours is not overwritten either
    other = tmp_path / "elsewhere"
    other.mkdir()
    (other / "2x2.pdb").write_text("HEADER    SOMEONE ELSE'S\nEND\n")
    with pytest.raises(InputError, match="2x2.pdb"):
        synthesize(other, variants=2, molecules=["2x2"], progress=False)


def test_an_interrupted_run_leaves_nothing_that_looks_complete(tmp_path, monkeypatch):
    real = synth_module.variant_positions

    def failing(fibril, variant, *args, **kwargs):
        if variant == 2:
            raise KeyboardInterrupt
        return real(fibril, variant, *args, **kwargs)

    monkeypatch.setattr(synth_module, "variant_positions", failing)
    with pytest.raises(KeyboardInterrupt):
        synthesize(tmp_path, variants=4, molecules=["2x2"], progress=False)
    assert os.listdir(tmp_path) == []
    monkeypatch.setattr(synth_module, "variant_positions", real)
    synthesize(tmp_path, variants=4, molecules=["2x2"], progress=False)
    assert sorted(os.listdir(tmp_path)) == ["2x2.dcd", "2x2.labels.csv", "2x2.pdb", "run.toml", "synth.json"]


@pytest.mark.parametrize("options, option", [
    ({"molecules": ["2x2", "10x10"]}, "molecules"),
    ({"molecules": []}, "molecules"),
    ({"variants": 0}, "variants"),
    ({"variants": -3}, "variants"),
    ({"variants": 2.5}, "variants"),
    ({"size": 0}, "size"),
    ({"extent": -1.0}, "extent"),
    ({"seed": 1.5}, "seed"),
    ({"seed": "0"}, "seed"),
    ({"seed": -1}, "seed"),
    ({"twist_max": float("nan")}, "twist_max"),
    ({"atom_sigma": -0.1}, "atom_sigma"),
    ({"chain_sigma": "big"}, "chain_sigma"),
])
def test_bad_input_names_the_option(tmp_path, options, option):
    with pytest.raises(InputError) as err:
        synthesize(tmp_path, progress=False, **options)
    assert option in str(err.value) and "\n" not in str(err.value)
    assert not any(tmp_path.iterdir())


# -- synth is safe --------------------------------------------------------------------------------

def test_two_concurrent_syntheses_never_leave_a_corrupt_file(tmp_path):
    import subprocess
    import sys

    from conftest import cli_env

    out = tmp_path / "shared"
    cmd = [sys.executable, "-m", "molmnist_dask.cli", "synth", "-o", str(out), "--variants", "6",
           "--molecules", "2x2,9x9", "--no-progress"]
    runs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             env=cli_env()) for _ in range(2)]
    results = [(p.wait(timeout=300), p.stderr.read()) for p in runs]
    assert any(rc == 0 for rc, _ in results), results
    for rc, err in results:
        if rc != 0:     # refused: one line, exit 2, naming the other synthesis
            assert rc == 2 and err.count("\n") == 1 and "another synthesis" in err, err
    fibril = build_fibril("9x9")
    u = universe(out, "9x9")
    for ts in u.trajectory:
        assert ts.positions.tobytes() == variant_positions(fibril, ts.frame, 6).tobytes()
    assert len(u.trajectory) == 6
    assert sorted(p.name for p in out.iterdir()) == ["2x2.dcd", "2x2.labels.csv", "2x2.pdb", "9x9.dcd",
                                                     "9x9.labels.csv", "9x9.pdb", "run.toml", "synth.json"]
