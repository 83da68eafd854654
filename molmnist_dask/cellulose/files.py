"""Fibril topologies (PDB) and variant trajectories (DCD), written through MDAnalysis.

Both are written under temporary names and renamed only when complete: the PDB first, then the
DCD, so a molecule is complete exactly when its DCD exists (and its PDB carries the run's
stamp). Frames are written one by one: memory does not grow with the number of variants.
"""

from __future__ import annotations

import json
import os
import uuid
import warnings
from pathlib import Path

import numpy as np

from ..errors import InputError
from .fibril import RESNAME, Fibril

# PDB chain IDs are one character; segids (C001, ...) tell the chains apart
CHAIN_IDS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
BOX_PADDING = 10.0   # angstrom of empty space around the fibril in the recorded box


def universe(fibril: Fibril, *, sigma: float = 0.0, remarks=()):
    """An in-memory MDAnalysis Universe of the relaxed fibril, elements included.

    Parameters
    ----------
    fibril : Fibril
    sigma : float
        Total thermal displacement (angstrom RMS per axis), written as B-factors,
        B = 8 pi^2 sigma^2.
    remarks : sequence of str
        REMARK lines of the PDB header.
    """
    import MDAnalysis as mda

    n_chains = fibril.n_chains
    u = mda.Universe.empty(fibril.n_atoms, n_residues=fibril.n_residues, n_segments=n_chains,
                           atom_resindex=fibril.atom_residue, residue_segindex=fibril.residue_chain,
                           trajectory=True)
    n = fibril.n_atoms
    # every attribute the PDB writer looks for, so that it warns of nothing missing
    attrs = {
        "names": fibril.names, "types": fibril.elements, "elements": fibril.elements,
        "record_types": ["ATOM"] * n, "altLocs": [""] * n, "icodes": [""] * fibril.n_residues,
        "occupancies": np.ones(n), "tempfactors": np.full(n, 8 * np.pi**2 * sigma**2),
        "formalcharges": np.zeros(n, dtype=int),
        "chainIDs": [CHAIN_IDS[i % len(CHAIN_IDS)] for i in fibril.atom_chain],
        "resnames": [RESNAME] * fibril.n_residues, "resids": fibril.resids,
        "segids": fibril.segids,
    }
    for name, values in attrs.items():
        u.add_TopologyAttr(name, values)
    u.atoms.positions = fibril.positions
    span = np.ptp(fibril.positions, axis=0) + 2 * BOX_PADDING
    u.dimensions = [*np.round(span, 1), 90.0, 90.0, 90.0]
    u.trajectory.header = "CELLULOSE I-BETA MICROFIBRIL"
    u.trajectory.compound = [f"MOLECULE: {fibril.name}"]
    u.trajectory.remarks = list(remarks)
    return u


def write_topology(u, path, title: str = "") -> None:
    """Write a Universe's current frame as PDB to ``path`` (any name)."""
    from MDAnalysis.coordinates.PDB import PDBWriter

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        with PDBWriter(os.fspath(path), remarks=title) as writer:
            writer.write(u.atoms)


def write_trajectory(u, path, frames) -> int:
    """Write frames (an iterable of (n_atoms, 3) arrays) as DCD to ``path``; return how many."""
    from MDAnalysis.coordinates.DCD import DCDWriter

    count = 0
    with DCDWriter(os.fspath(path), u.atoms.n_atoms) as writer:
        for positions in frames:
            u.atoms.positions = positions
            writer.write(u.atoms)
            count += 1
    return count


def pdb_title(path) -> str:
    """The TITLE record of a PDB file ('' if it has none or cannot be read)."""
    try:
        with open(path, "rb") as handle:
            for _ in range(10):
                line = handle.readline().decode("ascii", "replace")
                if line.startswith("TITLE"):
                    return line[10:].strip()
    except OSError:
        pass
    return ""


def dcd_shape(path) -> tuple:
    """(atoms, frames) of a DCD file, from its header; (0, 0) if it cannot be read."""
    from MDAnalysis.lib.formats.libdcd import DCDFile

    try:
        with DCDFile(os.fspath(path)) as dcd:
            return dcd.header["natoms"], dcd.n_frames
    except (OSError, IOError, ValueError, RuntimeError):
        return 0, 0


def partial(path: Path) -> Path:
    """A unique temporary name to write ``path`` under: hidden, with no usable suffix."""
    return path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.partial")


def publish(renames: dict) -> None:
    """Rename each temporary file to its final name ({final: temporary}), in order."""
    for path, tmp in renames.items():
        os.replace(tmp, path)


def remove_partials(folder: Path) -> None:
    """Remove the temporary files a killed synthesis left in ``folder``."""
    for path in Path(folder).glob(".*.partial"):
        path.unlink(missing_ok=True)


def check_record(path: Path, config: dict, what: str) -> None:
    """Refuse a folder whose record (``path``: synth.json, simulate.json) holds another
    configuration than ``config``; ``what`` names the work ("synthesis", "simulation")."""
    if not path.exists():
        return
    try:
        recorded = json.loads(path.read_text())["config"]
    except (OSError, ValueError, KeyError, TypeError):
        raise InputError(f"{path}: not a {what} record; use another folder or remove it") from None
    if recorded != config:
        diff = ", ".join(f"{k} {recorded.get(k)!r} there, {config.get(k)!r} asked"
                         for k in sorted(set(recorded) | set(config)) if recorded.get(k) != config.get(k))
        raise InputError(f"{path.parent}: holds a {what} with another configuration ({diff}); "
                         "use another folder or remove its files")
