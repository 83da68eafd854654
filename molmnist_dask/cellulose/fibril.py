"""One atomistic cellulose I-beta microfibril, hydrogens included, as numpy arrays."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..validate import integer
from .crystal import chain_template, lattice_vectors
from .profiles import chain_sites, label, rows

RESIDUES = 40          # glucose residues per chain: 40 x c/2 = 207.6 angstrom, the paper's ~200
RESNAME = "BGLC"       # beta-D-glucopyranose, the CHARMM36 carbohydrate residue name
ATOMIC_NUMBER = {"H": 1, "C": 6, "O": 8}


@dataclass(frozen=True)
class Fibril:
    """A relaxed (crystalline, untwisted) microfibril.

    Attributes
    ----------
    name : str
        Molecule name, one of `MOLECULES`.
    rows : tuple of int
        Chains per (200) sheet of the cross-section.
    positions : ndarray, shape (n_atoms, 3)
        Angstrom, centre of geometry at the origin, chain axis along z.
    names, elements : ndarray of str, shape (n_atoms,)
    atom_residue : ndarray of int, shape (n_atoms,)
        Residue index (0-based, over the whole fibril) of each atom.
    residue_chain : ndarray of int, shape (n_residues,)
        Chain index of each residue.
    resids : ndarray of int, shape (n_residues,)
        Residue number within its chain, 1 (non-reducing end) to n (reducing end).
    """

    name: str
    rows: tuple
    positions: np.ndarray
    names: np.ndarray
    elements: np.ndarray
    atom_residue: np.ndarray
    residue_chain: np.ndarray
    resids: np.ndarray

    @property
    def label(self) -> int:
        return label(self.name)

    @property
    def n_atoms(self) -> int:
        return len(self.positions)

    @property
    def n_residues(self) -> int:
        return len(self.resids)

    @property
    def n_chains(self) -> int:
        return int(sum(self.rows))

    @property
    def atom_chain(self) -> np.ndarray:
        """Chain index of each atom."""
        return self.residue_chain[self.atom_residue]

    @property
    def atomic_numbers(self) -> np.ndarray:
        return np.array([ATOMIC_NUMBER[e] for e in self.elements], dtype=int)

    @property
    def n_electrons(self) -> int:
        return int(self.atomic_numbers.sum())

    @property
    def segids(self) -> list:
        """One segment per chain: C001, C002, ..."""
        return [f"C{i + 1:03d}" for i in range(self.n_chains)]


def build_fibril(name: str, residues: int = RESIDUES) -> Fibril:
    """Build the relaxed I-beta microfibril of one of the paper's molecules.

    Parameters
    ----------
    name : str
        One of `MOLECULES`: "2x2" ... "9x9" (diamonds), "hex24", "hex36".
    residues : int
        Glucose residues per chain (at least 2); 40 makes the paper's ~200 angstrom fibrils.

    Returns
    -------
    Fibril
        Per chain, 21 atoms (C6H10O5, 86 electrons) per residue, plus 3 atoms and
        10 electrons for the chain ends: H on O4 at the non-reducing end (residue 1), O1 and
        its H on C1 at the reducing end (residue n), i.e. one water.

    Examples
    --------
    >>> fibril = build_fibril("2x2")
    >>> fibril.n_chains, fibril.n_atoms, fibril.n_electrons
    (4, 3372, 13800)
    """
    integer("residues", residues, minimum=2)
    row_counts = rows(name)
    sites = chain_sites(row_counts)
    chains = [_chain(kind, i, j, residues) for _, kind, i, j in sites]
    positions = np.concatenate([c[0] for c in chains])
    positions -= positions.mean(axis=0)
    per_residue = [len(n) for c in chains for n in c[1]]
    n_res = residues * len(chains)
    return Fibril(
        name=name,
        rows=tuple(row_counts),
        positions=positions,
        names=np.array([a for c in chains for n in c[1] for a in n]),
        elements=np.array([a for c in chains for e in c[2] for a in e]),
        atom_residue=np.repeat(np.arange(n_res), per_residue),
        residue_chain=np.repeat(np.arange(len(chains)), residues),
        resids=np.tile(np.arange(1, residues + 1), len(chains)),
    )


def _chain(kind: int, i: int, j: int, residues: int):
    """Positions, per-residue names and elements of one chain at cell (i, j)."""
    a, b, c = lattice_vectors()
    template = chain_template(kind, (residues - 1) % 2)
    parts = [template.first] + [template.inner[(r - 1) % 2] for r in range(2, residues)] + [template.last]
    site = i * a + j * b
    positions = [p.positions + site + ((r - 1) // 2) * c for r, p in enumerate(parts, start=1)]
    return np.concatenate(positions), [p.names for p in parts], [p.elements for p in parts]
