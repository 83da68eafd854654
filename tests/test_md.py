"""Molecular dynamics of the fibrils (`molmnist simulate`, OpenMM): the GLYCAM06j-1 topology,
the twist measure, a short run (energies finite, chains intact, frames aligned and in twist
order), a run killed and resumed, a blow-up, the cluster, and bad input through the CLI."""

import subprocess
import sys
from dataclasses import fields

import numpy as np
import pytest

from conftest import cli_env, quiet_universe, run_cli
from molmnist_dask.cellulose import MOLECULES, build_fibril, twist_rate, variant_positions
from molmnist_dask.cellulose.twist_measure import measure_twist, superpose
from molmnist_dask.errors import InputError

from molmnist_dask.cellulose import forcefield, md as sim

try:
    import openmm
except ImportError:      # the md extra: the twist measure's tests run without it
    openmm = None
needs_openmm = pytest.mark.skipif(openmm is None, reason="needs the md extra (OpenMM)")

SHORT = dict(molecules=["2x2"], residues=4, equilibrate=0.2, frames=6, stride=0.1,
             platform="CPU", threads=2, progress=False)


# -- force field -----------------------------------------------------------------------------------

@needs_openmm
def test_glycam_topology_names_bonds_and_charge():
    fibril = build_fibril("2x2", residues=3)
    prepared = forcefield.prepare(fibril)
    top = prepared.topology
    for chain in top.chains():
        assert [r.name for r in chain.residues()] == ["0GB", "4GB", "4GB", "ROH"]
        cap = list(chain.residues())[-1]
        assert sorted(a.name for a in cap.atoms()) == ["HO1", "O1"]
    names = {a.name for a in top.atoms()}
    assert {"H2O", "H3O", "H4O", "H6O"} <= names and not names & {"HO2", "HO3", "HO4", "HO6"}
    # a tree per chain plus one ring per residue
    assert top.getNumBonds() == fibril.n_atoms - fibril.n_chains + fibril.n_residues
    links = [(a.name, b.name) for a, b in top.bonds() if a.residue is not b.residue]
    assert sorted(links).count(("C1", "O4")) == fibril.n_chains * 2
    assert sorted(links).count(("C1", "O1")) == fibril.n_chains
    # the order maps back: OpenMM's positions are the fibril's, permuted
    assert np.allclose(prepared.to_fibril_order(prepared.positions) * 10, fibril.positions)
    system = forcefield.forcefield().createSystem(top)
    nonbonded = next(f for f in system.getForces() if isinstance(f, openmm.NonbondedForce))
    charges = [nonbonded.getParticleParameters(i)[0]._value for i in range(system.getNumParticles())]
    assert abs(sum(charges)) < 1e-6


@needs_openmm
def test_solvents_systems():
    from molmnist_dask.cellulose.md_setup import make_system

    fibril = build_fibril("2x2", residues=2)
    forces = {}
    for solvent in ("vacuum", "implicit", "explicit"):
        system, topology, positions, prepared = make_system(fibril, solvent, 300.0)
        forces[solvent] = {type(f).__name__ for f in system.getForces()}
        assert len(positions) == topology.getNumAtoms() == system.getNumParticles()
        # the fibril's atoms first, as they were
        assert np.allclose(positions[:fibril.n_atoms], prepared.positions)
    assert "GBSAOBCForce" in forces["implicit"] and "GBSAOBCForce" not in forces["vacuum"]
    assert "MonteCarloBarostat" in forces["explicit"]
    assert topology.getNumAtoms() > 3 * fibril.n_atoms        # the water box


# -- twist measure ---------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["2x2", "3x3", "6x6", "9x9", "hex24", "hex36"])
def test_twist_measure_recovers_the_model_variants(name):
    from scipy.spatial.transform import Rotation

    fibril = build_fibril(name)
    n = 7
    for variant in range(n):
        positions = variant_positions(fibril, variant, n, seed=3)
        # the whole fibril turned and moved: rigid-body motion must not count
        turn = Rotation.random(random_state=variant).as_matrix()
        moved = positions @ turn.T + np.array([12.0, -7.0, 30.0])
        assert measure_twist(fibril, moved) == pytest.approx(twist_rate(variant, n), abs=0.05)


def test_twist_measure_sign_and_superpose():
    fibril = build_fibril("4x4")
    left = variant_positions(fibril, 4, 5, twist_max=-2.0, atom_sigma=0, chain_sigma=0)
    assert measure_twist(fibril, left) == pytest.approx(-2.0, abs=1e-3)
    moved = fibril.positions @ np.array([[0, -1, 0], [1, 0, 0], [0, 0, 1.0]]).T + 5.0
    assert np.allclose(superpose(moved, fibril.positions), fibril.positions, atol=1e-6)


# -- a short run -----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def short(tmp_path_factory):
    out = tmp_path_factory.mktemp("md")
    run_file = sim.simulate(out, **SHORT)
    return out, run_file


@needs_openmm
def test_short_run_energies_finite_chains_intact(short):
    out, _ = short
    record = sim.read_checkpoint(out / ".2x2.checkpoint.npz")
    assert len(record["energies"]) == 6 and np.all(np.isfinite(record["energies"]))
    assert record["step"] == 100 + 6 * 50        # 0.2 ps + 6 x 0.1 ps at 2 fs
    fibril = build_fibril("2x2", residues=4)
    u = quiet_universe(str(out / "2x2.pdb"), str(out / "2x2.dcd"))
    assert u.atoms.n_atoms == fibril.n_atoms and len(u.trajectory) == 6
    pairs = np.array(forcefield.bonds(fibril))
    for ts in u.trajectory:
        length = np.linalg.norm(ts.positions[pairs[:, 0]] - ts.positions[pairs[:, 1]], axis=1)
        assert length.max() < 1.9 and length.min() > 0.8      # every bond, C1-O4 links included
        # aligned: centred where the straight fibril is, its axis still z
        assert np.abs(ts.positions.mean(axis=0)).max() < 0.5


@needs_openmm
def test_short_run_labels_in_twist_order(short):
    out, run_file = short
    labels = sim.read_labels(out / "2x2.labels.csv")
    assert (out / "2x2.labels.csv").read_text().splitlines()[0] == "twist [degree/nm],time [ps]"
    assert np.all(np.diff(labels["twist"]) >= 0)
    assert sorted(labels["time"]) == pytest.approx([0.3, 0.4, 0.5, 0.6, 0.7, 0.8])
    u = quiet_universe(str(out / "2x2.pdb"), str(out / "2x2.dcd"))
    fibril = build_fibril("2x2", residues=4)
    measured = [measure_twist(fibril, ts.positions) for ts in u.trajectory]
    assert measured == pytest.approx(labels["twist"], abs=1e-3)
    from molmnist_dask.runfile import load_run_file

    (source,) = load_run_file(run_file).sources  # paths relative to the run file
    assert source.labels == str(out / "2x2.labels.csv") and source.trajectory == (str(out / "2x2.dcd"),)


@needs_openmm
def test_finished_fibril_not_run_again(short, monkeypatch):
    out, _ = short
    before = (out / "2x2.dcd").stat().st_mtime_ns

    def never(*args, **kwargs):
        raise AssertionError("a finished fibril ran again")

    monkeypatch.setattr(sim, "make_simulation", never)
    sim.simulate(out, **SHORT)
    assert (out / "2x2.dcd").stat().st_mtime_ns == before
    with pytest.raises(InputError, match="another configuration"):
        sim.simulate(out, **{**SHORT, "frames": 7})


def _labels_supported() -> bool:
    from molmnist_dask.sources import TrajectorySource

    return "labels" in {f.name for f in fields(TrajectorySource)}


@needs_openmm
@pytest.mark.skipif(not _labels_supported(), reason="needs the per-frame labels of the run file "
                                                    "(TrajectorySource labels, issue 16)")
def test_output_builds_with_twist_rising_along_variant(short, cluster, tmp_path, capsys):
    import molmnist_dask as mm

    out, run_file = short
    store = tmp_path / "store"
    rc, _, stderr = run_cli(["build", run_file, "-o", store, "--size", "16", "--no-progress",
                             "--cluster", cluster.scheduler_address], capsys)
    assert rc == 0, stderr
    ds = mm.open_dataset(store)
    twist = ds["twist"].sel(molecule="2x2").values
    assert ds.sizes["variant"] == 6 and np.all(np.diff(twist) >= 0)
    assert twist == pytest.approx(sim.read_labels(out / "2x2.labels.csv")["twist"])
    assert ds["twist"].attrs.get("units") == "degree/nm"


# -- wall time is not fatal ------------------------------------------------------------------------

class Killed(Exception):
    pass


@needs_openmm
def test_killed_after_first_checkpoint_resumes_to_all_frames(tmp_path, monkeypatch):
    options = {**SHORT, "solvent": "vacuum", "checkpoint_minutes": 0}
    saved = []

    def kill_at_third(name, step):
        saved.append(step)
        if len(saved) == 3:      # after minimisation, equilibration and the first frame
            raise Killed

    monkeypatch.setattr(sim, "_checkpointed", kill_at_third)
    with pytest.raises(Killed):
        sim.simulate(tmp_path, **options)
    assert saved == [0, 100, 150] and not (tmp_path / "2x2.dcd").exists()
    # a frame half written after the checkpoint, as a kill can leave it
    with open(tmp_path / ".2x2.frames.f32", "ab") as handle:
        handle.write(b"\0" * 1000)
    monkeypatch.setattr(sim, "_checkpointed", lambda name, step: saved.append(step))
    sim.simulate(tmp_path, **options)
    assert saved[3] == 200 and saved[-1] == 400       # resumed where it stopped
    labels = sim.read_labels(tmp_path / "2x2.labels.csv")
    assert sorted(labels["time"]) == pytest.approx([0.3, 0.4, 0.5, 0.6, 0.7, 0.8])
    u = quiet_universe(str(tmp_path / "2x2.pdb"), str(tmp_path / "2x2.dcd"))
    assert len(u.trajectory) == 6
    assert not (tmp_path / ".2x2.frames.f32").exists()


KILLED_RUN = """
import os, signal, sys
from molmnist_dask.cellulose import md
saved = []
def kill_at_third(name, step):
    saved.append(step)
    if len(saved) == 3:
        os.kill(os.getpid(), signal.SIGKILL)    # no cleanup at all, as a node lost or scancel -9
md._checkpointed = kill_at_third
md.simulate(sys.argv[1], molecules=["2x2"], residues=4, solvent="vacuum", equilibrate=0.2,
            frames=6, stride=0.1, platform="CPU", threads=1, checkpoint_minutes=0, progress=False)
"""


@needs_openmm
def test_sigkilled_run_resumes_to_all_frames(tmp_path):
    proc = subprocess.run([sys.executable, "-c", KILLED_RUN, str(tmp_path)], env=cli_env(),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == -9, proc.stderr
    assert sim.read_checkpoint(tmp_path / ".2x2.checkpoint.npz")["step"] == 150
    assert (tmp_path / ".lock").exists()           # left behind; this host takes it over
    sim.simulate(tmp_path, **{**SHORT, "solvent": "vacuum", "checkpoint_minutes": 0})
    labels = sim.read_labels(tmp_path / "2x2.labels.csv")
    assert sorted(labels["time"]) == pytest.approx([0.3, 0.4, 0.5, 0.6, 0.7, 0.8])
    assert len(quiet_universe(str(tmp_path / "2x2.pdb"), str(tmp_path / "2x2.dcd")).trajectory) == 6


@needs_openmm
def test_blow_up_names_fibril_and_step_keeps_checkpoint(tmp_path):
    with pytest.raises(sim.SimulationError, match=r"^2x2: NaN energy at .*step.*last good checkpoint") as err:
        sim.simulate(tmp_path, **{**SHORT, "solvent": "vacuum", "timestep": 50.0, "equilibrate": 1.0,
                                  "stride": 1.0})
    assert "\n" not in str(err.value)
    assert sim.read_checkpoint(tmp_path / ".2x2.checkpoint.npz")["step"] == 0
    assert not (tmp_path / "2x2.dcd").exists()


# -- the CLI ---------------------------------------------------------------------------------------

@needs_openmm
def test_cli_on_a_cluster(cluster, tmp_path, capsys):
    rc, stdout, stderr = run_cli(["simulate", "-o", tmp_path, "--molecules", "2x2,3x3", "--residues", "3",
                                  "--solvent", "vacuum", "--equilibrate", "0", "--frames", "2",
                                  "--stride", "0.1", "--platform", "CPU", "--no-progress",
                                  "--cluster", cluster.scheduler_address], capsys)
    assert rc == 0, stderr
    assert f"wrote {tmp_path / 'run.toml'}" in stdout
    for name in ("2x2", "3x3"):
        assert len(sim.read_labels(tmp_path / f"{name}.labels.csv")["twist"]) == 2


@pytest.mark.parametrize("args, option", [
    (["--molecules", "2x2,10x10"], "--molecules"),
    (["--frames", "0"], "--frames"),
    (["--stride", "0"], "--stride"),
    (["--stride", "-2"], "--stride"),
    (["--equilibrate", "-1"], "--equilibrate"),
    (["--residues", "1"], "--residues"),
    (["--timestep", "0"], "--timestep"),
    (["--platform", "CUDA"], "--platform"),
    (["--platform", "OpenCL"], "--platform"),
    (["--resources", "GPU"], "--resources"),
])
@needs_openmm
def test_cli_bad_input(args, option, tmp_path, capsys):
    if option == "--platform" and _has_platform(args[1]):
        pytest.skip(f"{args[1]} is available here")
    rc, stdout, stderr = run_cli(["simulate", "-o", tmp_path / "out", "--residues", "3", *args], capsys)
    assert rc == 2 and option in stderr and len(stderr.strip().splitlines()) == 1, stderr
    assert not (tmp_path / "out").exists()


def _has_platform(name: str) -> bool:
    from molmnist_dask.cellulose.md_setup import _platform_problem

    return _platform_problem(name) is None


def test_cli_without_openmm(tmp_path):
    fake = tmp_path / "fake" / "openmm"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('not installed')\n")
    env = cli_env()
    env["PYTHONPATH"] = f"{fake.parent}:{env['PYTHONPATH']}"
    proc = subprocess.run([sys.executable, "-m", "molmnist_dask.cli", "simulate", "-o", tmp_path / "out"],
                          env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert "md extra" in proc.stderr and "molmnist-dask[md]" in proc.stderr
