"""A fibril as an OpenMM topology that GLYCAM06j-1 parameterises.

OpenMM's bundled CHARMM36 files have no linked beta-glucose, but it bundles GLYCAM06j-1
(``amber14/GLYCAM_06j-1.xml``, whose atom types come with ``amber14/protein.ff14SB.xml``).
GLYCAM names residues by their linkage and hydroxyl hydrogens by their oxygen, so the fibril's
CHARMM-style names (`fibril.RESNAME`) are translated here:

- the first residue of a chain (non-reducing end, free O4) is ``0GB`` (terminal
  beta-D-glucopyranose), the others ``4GB`` (linked at O4);
- the reducing end's O1 and its hydrogen HO1 move into an ``ROH`` residue after the last
  glucose (GLYCAM's hydroxyl cap, bonded to C1);
- hydroxyl hydrogens HO2/HO3/HO4/HO6 are H2O/H3O/H4O/H6O.

The PDB of a fibril has no bonds; they are added: within a residue by distance (covalent radii),
between residues C1(i)-O4(i+1) (the beta-1,4 link, residue i nearer the non-reducing end) and
C1-O1 to the ROH cap. The glucan is neutral: every chain's charges sum to 0.

OpenMM's atom order is the fibril's except for each chain's ROH, which follows its last glucose;
`Prepared.order` maps one to the other.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import InputError
from .fibril import Fibril

FORCEFIELD_FILES = ("amber14/protein.ff14SB.xml", "amber14/GLYCAM_06j-1.xml")
HYDROXYL_H = {"HO2": "H2O", "HO3": "H3O", "HO4": "H4O", "HO6": "H6O"}
CAP_ATOMS = ("O1", "HO1")       # the reducing end's hydroxyl: GLYCAM's ROH residue
COVALENT_RADIUS = {"H": 0.31, "C": 0.76, "O": 0.66}   # angstrom (Cordero et al. 2008)
BOND_TOLERANCE = 0.35           # angstrom beyond the sum of the covalent radii


def require_openmm():
    """Import OpenMM, or an `InputError` naming the ``md`` extra that installs it."""
    try:
        import openmm
        import openmm.app  # noqa: F401
    except ImportError:
        raise InputError("molmnist simulate needs OpenMM (the md extra): "
                         "pip install 'molmnist-dask[md]'") from None
    return openmm


@dataclass(frozen=True)
class Prepared:
    """A fibril as OpenMM sees it.

    Attributes
    ----------
    topology : openmm.app.Topology
        GLYCAM residue and atom names, bonds, one chain per glucan chain.
    positions : ndarray, shape (n_atoms, 3)
        Nanometres, in OpenMM's atom order.
    order : ndarray of int, shape (n_atoms,)
        The fibril atom of each OpenMM atom: ``openmm_positions = fibril_positions[order]``.
    """

    topology: object
    positions: np.ndarray
    order: np.ndarray

    def to_fibril_order(self, positions: np.ndarray) -> np.ndarray:
        """Positions in OpenMM's order (n_atoms, 3) put back into the fibril's order."""
        out = np.empty_like(positions)
        out[self.order] = positions
        return out


def glycam_residues(fibril: Fibril) -> list:
    """Per fibril residue, its GLYCAM name: ``0GB`` first in each chain, ``4GB`` after."""
    return ["0GB" if r == 1 else "4GB" for r in fibril.resids]


def glycam_name(name: str) -> str:
    """An atom's GLYCAM name (hydroxyl hydrogens renamed, the rest as they are)."""
    return HYDROXYL_H.get(name, name)


def prepare(fibril: Fibril) -> Prepared:
    """The fibril as an OpenMM `Topology` with GLYCAM names and every bond, and its positions.

    Parameters
    ----------
    fibril : Fibril
        From `build_fibril` (any number of residues per chain, at least 2).

    Returns
    -------
    Prepared
    """
    require_openmm()
    from openmm import app

    top = app.Topology()
    resnames = glycam_residues(fibril)
    order, atoms = [], []          # fibril index and OpenMM atom, in OpenMM's order
    residue_atoms = _residue_atoms(fibril)
    for chain_index in range(fibril.n_chains):
        chain = top.addChain(id=fibril.segids[chain_index])
        residues = np.flatnonzero(fibril.residue_chain == chain_index)
        for r in residues:
            residue = top.addResidue(resnames[r], chain, id=str(fibril.resids[r]))
            for i in residue_atoms[r]:
                if fibril.names[i] in CAP_ATOMS:
                    continue
                atoms.append(top.addAtom(glycam_name(str(fibril.names[i])),
                                         app.Element.getBySymbol(str(fibril.elements[i])), residue))
                order.append(i)
        last = residues[-1]
        cap = top.addResidue("ROH", chain, id=str(fibril.resids[last] + 1))
        for i in residue_atoms[last]:
            if fibril.names[i] in CAP_ATOMS:
                atoms.append(top.addAtom(str(fibril.names[i]),
                                         app.Element.getBySymbol(str(fibril.elements[i])), cap))
                order.append(i)
    order = np.asarray(order)
    if len(order) != fibril.n_atoms:
        raise InputError(f"{fibril.name}: {fibril.n_atoms - len(order)} atoms left out of the topology")
    where = np.empty_like(order)     # fibril atom -> OpenMM atom
    where[order] = np.arange(len(order))
    for a, b in bonds(fibril):
        top.addBond(atoms[where[a]], atoms[where[b]])
    positions = fibril.positions[order] / 10.0      # angstrom -> nm
    return Prepared(topology=top, positions=positions, order=order)


def _residue_atoms(fibril: Fibril) -> list:
    """Per residue, its atoms' fibril indices (atoms of a residue are one run)."""
    starts = np.searchsorted(fibril.atom_residue, np.arange(fibril.n_residues + 1))
    return [range(starts[r], starts[r + 1]) for r in range(fibril.n_residues)]


def bonds(fibril: Fibril) -> list:
    """Every covalent bond of a fibril, as pairs of fibril atom indices.

    Within a residue by distance (the sum of the covalent radii plus `BOND_TOLERANCE`), which
    includes C1-O1 of the reducing end; between residues of a chain, C1 of each to O4 of the next.
    """
    pairs = []
    radius = np.array([COVALENT_RADIUS[e] for e in fibril.elements])
    residue_atoms = _residue_atoms(fibril)
    for r, members in enumerate(residue_atoms):
        idx = np.asarray(members)
        p = fibril.positions[idx]
        d = np.linalg.norm(p[:, None] - p[None], axis=-1)
        limit = radius[idx][:, None] + radius[idx][None] + BOND_TOLERANCE
        hydrogen = fibril.elements[idx] == "H"
        ok = (d < limit) & ~(hydrogen[:, None] & hydrogen[None])   # no H-H bonds (H61-H62)
        i, j = np.nonzero(np.triu(ok, 1))
        pairs += [(int(idx[a]), int(idx[b])) for a, b in zip(i, j)]
    for r in range(fibril.n_residues - 1):
        if fibril.residue_chain[r] != fibril.residue_chain[r + 1]:
            continue
        c1 = _atom(fibril, residue_atoms[r], "C1")
        o4 = _atom(fibril, residue_atoms[r + 1], "O4")
        pairs.append((c1, o4))
    return pairs


def _atom(fibril: Fibril, members, name: str) -> int:
    for i in members:
        if fibril.names[i] == name:
            return int(i)
    raise InputError(f"{fibril.name}: a residue has no atom {name}")


def forcefield(*extra: str):
    """GLYCAM06j-1 as OpenMM bundles it (`FORCEFIELD_FILES`), plus ``extra`` files (water)."""
    openmm = require_openmm()
    from openmm import app

    try:
        return app.ForceField(*FORCEFIELD_FILES, *extra)
    except ValueError:     # "Could not locate file": GLYCAM came with OpenMM 8.3
        raise InputError(f"OpenMM {openmm.__version__} has no {FORCEFIELD_FILES[1]}: molmnist "
                         "simulate needs OpenMM 8.3 or later (pip install -U openmm)") from None
