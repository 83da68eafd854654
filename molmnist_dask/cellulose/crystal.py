"""The cellulose I-beta crystal: unit cell and the residues that fill it.

The coordinates come from `cellulose-modeler`, which reads the deposited structure of
Nishiyama, Langan & Chanzy (2002), J. Am. Chem. Soc. 124, 9074 (COD 4114994; P2_1,
a = 7.784, b = 8.201, c = 10.380 angstrom, gamma = 96.55 degrees), expands the 2_1 screw along
the chains and orients the cell with a along x and the chain axis c along z. Heavy atoms and
carbon-bound hydrogens are the deposited ones; the deposit has no hydroxyl hydrogens, which
cellulose-modeler places by a steric rotamer search (O-H 0.96 angstrom).

That search compares every hydroxyl with every atom (pure Python, quadratic), far too slow for a
81-chain fibril. So the residues are taken once from a small block (19 chains, 4 or 5
residues long), from a chain buried in it, and copied over the lattice: every residue of the
fibril then carries the hydroxyl rotamers of the bulk crystal.

There are two chain types, the "origin" chain (type 0, at fractional (0, 0)) and the "center"
chain (type 1, at (1/2, 1/2)); each repeats along c every two residues (residue parity 0 and 1).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

# The block the templates are cut from: rows of 3, 4, 5, 4, 3 chains, so that each chain type
# has a chain with neighbours on every side.
BLOCK_ROWS = (3, 4, 5, 4, 3)


def reference():
    """The cellulose-modeler crystallographic reference of cellulose I-beta."""
    from cellulose_modeler.reference import get_reference

    return get_reference("ibeta")


def cell() -> dict:
    """Unit cell parameters (angstrom, degrees) of the deposited I-beta structure."""
    ref = reference()
    return {"a": ref.a, "b": ref.b, "c": ref.c, "alpha": ref.alpha, "beta": ref.beta, "gamma": ref.gamma}


def lattice_vectors() -> np.ndarray:
    """Cartesian cell vectors a, b, c as rows (angstrom): a along x, c along z."""
    ref = reference()
    return np.array([ref.vector_a, ref.vector_b, ref.vector_c], dtype=float)


def d_spacing(h: int, k: int, l: int = 0) -> float:
    """Interplanar spacing d(hkl) of the cell, in angstrom."""
    reciprocal = np.linalg.inv(lattice_vectors()).T  # rows: a*, b*, c* (no 2 pi)
    return 1.0 / float(np.linalg.norm(h * reciprocal[0] + k * reciprocal[1] + l * reciprocal[2]))


@dataclass(frozen=True)
class Residue:
    """One glucose residue of one chain type, placed at the chain's site in cell (0, 0, 0).

    ``positions`` are angstrom, for the residue's first cellobiose repeat; residue ``r``
    (1-based) of a chain lies ``(r - 1) // 2`` repeats (of c) further along z.
    """

    names: tuple
    elements: tuple
    positions: np.ndarray


@dataclass(frozen=True)
class ChainTemplate:
    """The residues one chain of a given type is made of."""

    first: Residue        # residue 1: the non-reducing end, with HO4 on O4
    inner: tuple          # (parity 0, parity 1) residues inside the chain
    last: Residue         # residue n: the reducing end, with O1 and HO1 on C1


def chain_template(chain_type: int, last_parity: int) -> ChainTemplate:
    """Residue templates of an origin (0) or center (1) chain.

    Parameters
    ----------
    chain_type : {0, 1}
        Origin or center chain.
    last_parity : {0, 1}
        Parity ``(n - 1) % 2`` of the chain's last residue (n residues).
    """
    return _templates(4 + (last_parity == 0))[chain_type]


@lru_cache(maxsize=None)
def _templates(units: int) -> tuple:
    """(origin, center) chain templates cut from a block ``units`` residues long."""
    from cellulose_modeler import build_structure

    block = build_structure(units, list(BLOCK_ROWS))
    chains = [(chain, *_chain_type_and_shift(chain, units)) for chain in block.chains]
    centre = np.mean([_chain_xy(chain) for chain in block.chains], axis=0)
    result = []
    for chain_type in (0, 1):
        # the buried chain of this type: nearest the block's axis
        chain, _, shift = min(
            (item for item in chains if item[1] == chain_type),
            key=lambda item: np.linalg.norm(_chain_xy(item[0]) - centre),
        )
        residues = [_residue(res, shift) for res in chain.residues]
        result.append(ChainTemplate(first=residues[0], inner=(residues[2], residues[1]),
                                    last=residues[-1]))
    return tuple(result)


def _chain_xy(chain) -> np.ndarray:
    return np.mean([atom.position[:2] for res in chain.residues for atom in res.atoms], axis=0)


def _chain_type_and_shift(chain, units: int):
    """Which chain type a block chain is, and the translation from its type's site 0.

    The block's heavy atoms are the reference's, moved by one translation per chain; check that
    they are, so that a change in cellulose-modeler cannot pass unnoticed.
    """
    ref = reference()
    for chain_type in (0, 1):
        moves = []
        for res in chain.residues:
            expected = {a.name: a.position for a in ref.residue_atoms(chain_type, res.number, (0, 0, 0), units)}
            moves += [np.subtract(a.position, expected[a.name]) for a in res.atoms
                      if a.name in expected and a.element != "H"]
        moves = np.array(moves)
        if np.ptp(moves, axis=0).max() < 1e-6:
            return chain_type, moves[0]
    raise RuntimeError("cellulose-modeler block chain matches neither I-beta chain of the reference")


def _residue(res, shift: np.ndarray) -> Residue:
    """A block residue moved to its type's site 0 and to the first cellobiose repeat."""
    c = lattice_vectors()[2]
    positions = np.array([a.position for a in res.atoms], dtype=float) - shift
    positions -= ((res.number - 1) // 2) * c
    return Residue(names=tuple(a.name for a in res.atoms),
                   elements=tuple(a.element for a in res.atoms),
                   positions=positions)
