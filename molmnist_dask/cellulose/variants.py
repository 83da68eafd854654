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
variant can be made alone and comes out the same: in `molmnist synth`'s DCD files or on a
worker by the virtual reader. Positions are float32 throughout (the DCD's own type), the
normals quantised Gaussians (`normal_table`): a 68k-atom variant takes about 2 ms.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from functools import lru_cache

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


@lru_cache(maxsize=1)
def normal_table() -> np.ndarray:
    """The 65,536 quantiles ``(k + 1/2) / 65536`` of the standard normal, float32.

    A 16-bit random integer picks one: a Gaussian quantised to 65,536 levels, cut at
    4.3 sigma, whose variance is 1 within 2e-5. For thermal displacements this is as good as
    ziggurat normals, and 4x cheaper here (16 random bits a number, one table look-up).
    """
    from scipy.special import ndtri

    return ndtri((np.arange(2**16) + 0.5) / 2**16).astype(np.float32)


def gaussians(rng: np.random.Generator, shape, sigma: float) -> np.ndarray:
    """Float32 normals of standard deviation ``sigma`` from ``rng``'s raw bits (`normal_table`)."""
    n = int(np.prod(shape))
    # random_raw gives 64 bits a call: four 16-bit draws, read little-endian on every machine
    raw = rng.bit_generator.random_raw((n + 3) // 4).astype("<u8", copy=False)
    picks = raw.view("<u2")[:n].astype(np.intp)   # take() is twice as fast with intp indices
    return _scaled_table(float(sigma)).take(picks).reshape(shape)


@lru_cache(maxsize=16)
def _scaled_table(sigma: float) -> np.ndarray:
    return normal_table() * np.float32(sigma)


@dataclass(frozen=True)
class _Prepared:
    """Per-fibril float32 arrays the variants are made from (made once per process)."""

    x: np.ndarray
    y: np.ndarray
    z: np.ndarray
    chain_starts: np.ndarray   # first atom of each chain (atoms of a chain are contiguous)
    chain_sizes: np.ndarray
    z_levels: np.ndarray       # the distinct z (chains repeat along a and b: ~1,700 of 68k atoms)
    z_index: np.ndarray        # each atom's z level


_prepared: dict = {}


def _prepare(fibril: Fibril) -> _Prepared:
    key = id(fibril)
    entry = _prepared.get(key)
    if entry is None or entry[0] is not fibril:
        if len(_prepared) >= 32:
            _prepared.pop(next(iter(_prepared)))
        p = fibril.positions.astype(np.float32)
        chains = fibril.atom_chain
        if np.any(np.diff(chains) < 0):
            raise ValueError("a fibril's chains must be contiguous runs of atoms")
        sizes = np.bincount(chains, minlength=fibril.n_chains)
        levels, index = np.unique(p[:, 2], return_inverse=True)
        prepared = _Prepared(p[:, 0].copy(), p[:, 1].copy(), p[:, 2].copy(),
                             np.concatenate([[0], np.cumsum(sizes)[:-1]]), sizes,
                             levels, index.astype(np.intp).ravel())
        entry = _prepared[key] = (fibril, prepared)
    return entry[1]


def variant_positions(fibril: Fibril, variant: int, variants: int, *, seed: int = 0,
                      twist_max: float = TWIST_MAX, atom_sigma: float = ATOM_SIGMA,
                      chain_sigma: float = CHAIN_SIGMA, out: np.ndarray | None = None) -> np.ndarray:
    """Atom positions of one structural variant, float32 as trajectories store them.

    Computed in float32 from start to end, so that a DCD file written from these positions
    holds exactly these numbers: frames read back from `molmnist synth`'s files and frames
    made on a worker by the virtual reader (`molmnist_dask.cellulose.virtual`) are the same bits.

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
    out : ndarray, shape (n_atoms, 3), float32, optional
        Where to write them (a Timestep's positions, say).

    Returns
    -------
    ndarray, shape (n_atoms, 3), float32
    """
    p = _prepare(fibril)
    rng = variant_rng(seed, fibril.name, variant)
    # draw both always, so that one amplitude set to 0 leaves the other's numbers unchanged
    chain_shift = gaussians(rng, (3, fibril.n_chains), chain_sigma)
    atom_shift = gaussians(rng, (3, fibril.n_atoms), atom_sigma)
    # per atom: its chain's shift plus its own (atoms of a chain are one run)
    for axis in range(3):
        atom_shift[axis] += np.repeat(chain_shift[axis], p.chain_sizes)
    rate = np.float32(np.deg2rad(twist_rate(variant, variants, twist_max)) / 10.0)  # radians/A
    angle = p.z_levels * rate     # the angle depends on z alone: once per level, then per atom
    cos, sin = np.cos(angle).take(p.z_index), np.sin(angle).take(p.z_index)
    if out is None:
        out = np.empty((fibril.n_atoms, 3), dtype=np.float32)
    out[:, 0] = cos * p.x - sin * p.y + atom_shift[0]
    out[:, 1] = sin * p.x + cos * p.y + atom_shift[1]
    out[:, 2] = p.z + atom_shift[2]
    return out
