"""Structural variants of a fibril, in place of MD frames: twist plus thermal displacement.

Twist. Molecular dynamics of finite cellulose I-beta microfibrils in water finds them twisting
right-handedly about their axis, away from the straight crystal, the more so the thinner the
fibril: of the order of 1-3 degrees/nm for 18- to 36-chain fibrils, more for thinner ones,
depending on the force field (Matthews et al. 2006, Carbohydr. Res. 341, 138; Paavilainen,
Rog & Vattulainen 2011, J. Phys. Chem. B 115, 3747; Hadden, French & Woods 2013, Biopolymers
99, 746, and 2014, Cellulose 21, 879; Zhao et al. 2013, J. Phys. Chem. A 117, 2580).
Variant v of V turns each atom about the fibril axis (z, through the centre of geometry) by
``rate_v * z`` with ``rate_v = twist_max * v / (V - 1)``: variant 0 is the straight crystal and
the last one the most twisted, the order of the paper's figures. The default `TWIST_MAX`,
3 degrees/nm (+-31 degrees at the ends of a 207 angstrom fibril), is the upper end of those
reports; one range serves every size. A positive rate is a right-handed twist.

Thermal motion. Each chain moves as a whole by a Gaussian vector (``chain_sigma`` angstrom RMS
per axis) and each atom by its own (``atom_sigma``), like isotropic B-factors,
B = 8 pi^2 sigma^2. The default `ATOM_SIGMA`, 0.19 angstrom, is the square root of the isotropic
displacement U_iso = 0.036 angstrom^2 refined for the deposited I-beta structure (Nishiyama,
Langan & Chanzy 2002).

Every variant has its own random generator, seeded from (seed, molecule, variant), so any
variant can be made alone and comes out the same.
"""

from __future__ import annotations

import zlib

import numpy as np

from .fibril import Fibril

TWIST_MAX = 3.0      # degrees per nm, the most twisted variant
ATOM_SIGMA = 0.19    # angstrom RMS per axis, each atom
CHAIN_SIGMA = 0.10   # angstrom RMS per axis, each chain as a whole


def twist_rate(variant: int, variants: int, twist_max: float = TWIST_MAX) -> float:
    """Twist of a variant, degrees per nm: 0 for the first, ``twist_max`` for the last."""
    return 0.0 if variants < 2 else twist_max * variant / (variants - 1)


def twist(positions: np.ndarray, rate: float) -> np.ndarray:
    """Turn each atom about the z axis by ``rate`` (degrees/nm) times its z (angstrom).

    The fibril must be centred: the axis passes through x = y = 0 and z = 0 stays put.
    """
    angle = np.deg2rad(rate / 10.0) * positions[:, 2]
    cos, sin = np.cos(angle), np.sin(angle)
    x, y = positions[:, 0], positions[:, 1]
    return np.column_stack([cos * x - sin * y, sin * x + cos * y, positions[:, 2]])


def variant_rng(seed: int, name: str, variant: int) -> np.random.Generator:
    """The random generator of one variant of one molecule."""
    # crc32 of the name, not hash(): the same in every process and Python version
    return np.random.default_rng([int(seed), zlib.crc32(name.encode()), int(variant)])


def variant_positions(fibril: Fibril, variant: int, variants: int, *, seed: int = 0,
                      twist_max: float = TWIST_MAX, atom_sigma: float = ATOM_SIGMA,
                      chain_sigma: float = CHAIN_SIGMA) -> np.ndarray:
    """Atom positions of one structural variant.

    Parameters
    ----------
    fibril : Fibril
        The relaxed fibril (centred).
    variant, variants : int
        Which variant, of how many; the twist grows linearly from 0 to ``twist_max``.
    seed : int
        Non-negative; with the molecule's name and the variant, it seeds the displacements.
    twist_max : float
        Twist of the last variant, degrees per nm.
    atom_sigma, chain_sigma : float
        Thermal displacement, angstrom RMS per axis, of each atom and of each chain.

    Returns
    -------
    ndarray, shape (n_atoms, 3), float64
    """
    rng = variant_rng(seed, fibril.name, variant)
    # draw both always, so that one amplitude set to 0 leaves the other's numbers unchanged
    chain_shift = rng.standard_normal((fibril.n_chains, 3)) * chain_sigma
    atom_shift = rng.standard_normal((fibril.n_atoms, 3)) * atom_sigma
    positions = twist(fibril.positions, twist_rate(variant, variants, twist_max))
    return positions + chain_shift[fibril.atom_chain] + atom_shift
