"""Trajectories for the benchmarks, written once and cached.

- `cellulose`: the paper's ten fibrils (2x2 ... 9x9, hex24, hex36; 3,372 to 68,283 atoms) and
  their variants, from `molmnist_dask.cellulose.synthesize` (a random cloud of the same sizes
  where that is missing);
- `random_cloud`: N atoms of cellulose's elements (C6H10O5) in a 70 A box, F frames, as PDB + DCD;
- `adk` and `gro_xtc`: MDAnalysisTests' files (3,341 atoms x 98 frames; 47,681 atoms x 10 frames).

Data go to ``$MOLMNIST_BENCH_DATA`` (default ``/tmp/molmnist-bench-data``); delete it to start over.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np

from molmnist_dask import TrajectorySource

DATA = Path(os.environ.get("MOLMNIST_BENCH_DATA", "/tmp/molmnist-bench-data"))
#: Atoms of the paper's fibrils, for the fallback when the cellulose module is missing.
FIBRIL_ATOMS = {"2x2": 3372, "3x3": 7587, "4x4": 13488, "5x5": 21075, "6x6": 30348, "7x7": 41307,
                "8x8": 53952, "9x9": 68283, "hex24": 20232, "hex36": 30348}
EXTENT = 90.0  # angstrom: the cellulose module's default field of view (holds the 9x9 fibril)


def cellulose(variants: int, molecules=None, seed: int = 0) -> list:
    """One `TrajectorySource` per fibril, each with ``variants`` frames."""
    names = list(molecules or FIBRIL_ATOMS)
    tag = "all" if molecules is None else "-".join(names)
    folder = DATA / f"cellulose-{tag}-v{variants}-s{seed}"
    try:
        from molmnist_dask.cellulose import synthesize
        from molmnist_dask.runfile import load_run_file
    except ImportError:
        return [random_cloud(FIBRIL_ATOMS[n], variants, seed=i, name=n) for i, n in enumerate(names)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        run = synthesize(folder, variants=variants, seed=seed, molecules=molecules, progress=False)
    return list(load_run_file(run).sources)


def random_cloud(n_atoms: int = 68283, n_frames: int = 200, seed: int = 0, name: str | None = None,
                 box: float = 70.0) -> TrajectorySource:
    """A cloud of atoms (C, H, O in cellulose's 6:10:5) moving a little from frame to frame."""
    import MDAnalysis as mda

    name = name or f"cloud{n_atoms}"
    folder = DATA / f"cloud-{n_atoms}-f{n_frames}-s{seed}"
    top, traj = folder / "cloud.pdb", folder / "cloud.dcd"
    if not traj.exists():
        folder.mkdir(parents=True, exist_ok=True)
        rng = np.random.default_rng(seed)
        elements = np.array((["C"] * 6 + ["H"] * 10 + ["O"] * 5) * (n_atoms // 21 + 1))[:n_atoms]
        u = mda.Universe.empty(n_atoms, n_residues=1, atom_resindex=np.zeros(n_atoms, int),
                               trajectory=True)
        u.add_TopologyAttr("name", elements)
        u.add_TopologyAttr("type", elements)
        u.add_TopologyAttr("elements", elements)
        u.add_TopologyAttr("resname", ["CLD"])
        u.add_TopologyAttr("resid", [1])
        u.add_TopologyAttr("segid", ["A"])
        base = rng.uniform(-box / 2, box / 2, (n_atoms, 3)).astype(np.float32)
        u.atoms.positions = base
        u.dimensions = [box * 2] * 3 + [90.0] * 3
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            u.atoms.write(str(top))
            tmp = traj.with_suffix(".tmp.dcd")
            with mda.Writer(str(tmp), n_atoms) as w:
                for _ in range(n_frames):
                    u.atoms.positions = base + rng.normal(0, 0.3, base.shape).astype(np.float32)
                    w.write(u.atoms)
            os.replace(tmp, traj)
    return TrajectorySource(name, str(top), str(traj))


def adk() -> TrajectorySource:
    """MDAnalysisTests' adenylate kinase: 3,341 atoms, 98 frames (PSF + DCD)."""
    from MDAnalysisTests.datafiles import DCD, PSF

    return TrajectorySource("adk", PSF, DCD)


def gro_xtc() -> TrajectorySource:
    """MDAnalysisTests' solvated system: 47,681 atoms, 10 frames (GRO + XTC)."""
    from MDAnalysisTests.datafiles import GRO, XTC

    return TrajectorySource("gro", GRO, XTC)
