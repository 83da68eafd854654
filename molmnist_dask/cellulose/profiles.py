"""Cross-sections of the paper's ten microfibrils: how many chains, and where.

A cross-section is a list of rows. Each row is one hydrogen-bonded sheet of cellulose I-beta,
a (200) lattice plane: its chains lie side by side along b (8.2 angstrom apart), and the rows
stack along a* (the (200) normal, d200 = 3.87 angstrom apart), origin-chain and center-chain
sheets alternating (Nishiyama, Langan & Chanzy 2002). Row 0 is a sheet of origin chains.
This is the construction of the Ding & Himmel (2006, J. Agric. Food Chem. 54, 597) 36-chain
model, and cellulose-modeler's "layers": consecutive rows one chain longer (or shorter), each
shifted by b/2, put the fibril's sides on the (110) and (1-10) planes; the first and last rows
are (200) faces. The rows are placed here rather than by cellulose-modeler, whose rounding
moves the last row of its 1,2,3,2,1 profile one b sideways (its 3x3 is no diamond).

- "NxN" diamonds, N = 2..9: rows 1, 2, ..., N, ..., 2, 1 (N^2 chains), four (110)/(1-10) faces.
- "hex24": rows 3, 4, 5, 5, 4, 3 (24 chains); "hex36": rows 3, 4, 5, 6, 6, 5, 4, 3
  (36 chains): hexagons with two (200) faces and four (110)/(1-10) faces. hex24 is the
  24-chain hexagon of the same family as hex36 (three-chain (200) faces, two equal middle
  sheets), the kind of 24-chain elementary fibril discussed by Fernandes et al. (2011, PNAS
  108, E1195).

Labels are the index in `MOLECULES`, the paper's order.
"""

from __future__ import annotations

import numpy as np

from ..errors import InputError

MOLECULES = ("2x2", "3x3", "4x4", "5x5", "6x6", "7x7", "8x8", "9x9", "hex24", "hex36")

_HEXAGONS = {"hex24": (3, 4, 5, 5, 4, 3), "hex36": (3, 4, 5, 6, 6, 5, 4, 3)}


def rows(name: str) -> tuple:
    """Chains per row (sheet) of a molecule's cross-section.

    Examples
    --------
    >>> rows("3x3")
    (1, 2, 3, 2, 1)
    """
    if name in _HEXAGONS:
        return _HEXAGONS[name]
    if name in MOLECULES:
        n = int(name.split("x")[0])
        return tuple(range(1, n + 1)) + tuple(range(n - 1, 0, -1))
    raise InputError(f"unknown molecule {name!r} (choose from {', '.join(MOLECULES)})")


def label(name: str) -> int:
    """Class label of a molecule: its index in `MOLECULES`."""
    rows(name)  # raises on an unknown name
    return MOLECULES.index(name)


def chain_sites(row_counts) -> np.ndarray:
    """Lattice sites of the chains of a cross-section.

    Parameters
    ----------
    row_counts : sequence of int
        Chains per row, as `rows` gives them.

    Returns
    -------
    ndarray of shape (n_chains, 4), int
        Per chain: row, chain type (0 origin, 1 center), and the cell (i, j) along a and b;
        the chain's axis is at fractional (i + type/2, j + type/2). Chains are ordered row by
        row, each row along +b.
    """
    sites = []
    centre = 0.0
    for row, count in enumerate(row_counts):
        kind = row % 2
        centre = _row_centre(centre, kind, count)
        first = centre - (count - 1) / 2          # fractional b of the row's first chain
        for k in range(count):
            sites.append((row, kind, row // 2, round(first + k - kind / 2)))
    return np.array(sites, dtype=int).reshape(-1, 4)


def _row_centre(previous: float, kind: int, count: int) -> float:
    """Centre (fractional b) of a row, as close as the lattice allows to the row before.

    A row's chains sit at integer b (origin rows) or half-integer b (center rows), so its
    centre is fixed modulo 1; when two positions are equally close (a row as long as the one
    before), the row steps by +b/2: that keeps both (110)-type faces flat.
    """
    phase = (kind / 2 + (count - 1) / 2) % 1.0
    below = np.floor(previous - phase) + phase
    return below if previous - below < 0.5 - 1e-9 else below + 1.0
