"""Per-atom electron counts: the atomic number of each atom's element."""

from __future__ import annotations

import warnings

import numpy as np
from MDAnalysis.guesser.tables import SYMB2Z

_SYMBOLS = {symbol.upper(): z for symbol, z in SYMB2Z.items()}


def element_symbols(atoms) -> np.ndarray:
    """The elements of an AtomGroup: the topology's where it has them, guessed where it has none.

    Guessing uses MDAnalysis' default guesser (from atom names), as MDAnalysis
    itself does for topologies without elements.
    """
    if hasattr(atoms, "elements"):
        return np.asarray(atoms.elements, dtype=str)
    from MDAnalysis.guesser.default_guesser import DefaultGuesser

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return np.asarray(DefaultGuesser(None).guess_types(atom_types=atoms.names), dtype=str)


def atomic_numbers(symbols) -> np.ndarray:
    """Atomic number of each element symbol; 0 for an empty or unknown one.

    Empty elements are virtual sites and dummies (TIP4P's MW, say): they carry no electrons.
    """
    return np.array([_SYMBOLS.get(str(s).strip().upper(), 0) for s in symbols], dtype=np.int64)


def electron_counts(atoms) -> tuple[np.ndarray, dict]:
    """Electrons per atom of an AtomGroup, with a summary.

    Returns
    -------
    z : ndarray of int64
        Atomic number per atom (0 for atoms without an element).
    summary : dict
        ``n_atoms``, ``n_electrons``, ``n_no_element`` (atoms that weigh 0) and
        ``elements_guessed`` (whether the topology lacked elements).
    """
    symbols = element_symbols(atoms)
    # one lookup per distinct symbol: topologies repeat a handful of elements
    unique, inverse = np.unique(symbols, return_inverse=True)
    z = atomic_numbers(unique)[inverse.ravel()]
    summary = {
        "n_atoms": int(len(z)),
        "n_electrons": int(z.sum()),
        "n_no_element": int((z == 0).sum()),
        "elements_guessed": not hasattr(atoms, "elements"),
    }
    return z, summary
