"""An independent, plain-numpy implementation of the data contract (docs/design.md).

It shares no code with ``molmnist_dask``: it reads the trajectory with MDAnalysis, takes each
atom's atomic number from its element (``MDAnalysis.guesser.tables.SYMB2Z``; elements guessed
from atom names with MDAnalysis' own ``guess_TopologyAttrs`` where the topology has none),
centres the float64 positions, optionally rotates them (an explicit matrix per frame, or
one from a scalar-last quaternion by Rodrigues' formula), bins them with
``numpy.histogram2d`` and transforms them with ``numpy.fft.fft2`` in double precision. It is slow and obvious on purpose.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import MDAnalysis as mda
import numpy as np
from MDAnalysis.guesser.tables import SYMB2Z

_Z = {symbol.lower(): z for symbol, z in SYMB2Z.items()}


def universe(topology, trajectory=()):
    """An MDAnalysis Universe of a topology and zero, one or several trajectory files."""
    trajectory = [trajectory] if isinstance(trajectory, str) else list(trajectory)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if not trajectory:
            return mda.Universe(topology)
        if len(trajectory) == 1:
            return mda.Universe(topology, trajectory[0])
        return mda.Universe(topology, trajectory)


def atomic_numbers(atoms) -> np.ndarray:
    """Z of each atom (float64): the topology's elements, else MDAnalysis' guess from names.

    An empty or unknown element (a virtual site, a dummy) is 0.
    """
    if not hasattr(atoms, "elements"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            atoms.universe.guess_TopologyAttrs(to_guess=["elements"])
        atoms = atoms.universe.atoms[atoms.indices]
    return np.array([_Z.get(str(e).strip().lower(), 0) for e in atoms.elements], dtype=np.float64)


@dataclass
class Oracle:
    shape: np.ndarray  # (frames, size, size) float64
    diffraction: np.ndarray  # (frames, k*size, k*size) float64
    lost_atoms: np.ndarray
    lost_electrons: np.ndarray
    z: np.ndarray  # per selected atom
    x: np.ndarray  # pixel centres
    q: np.ndarray  # spatial frequencies


def positions(topology, trajectory, selection, frames, center="geometry"):
    """Centred float64 positions of the selected atoms at each frame, and their Z."""
    u = universe(topology, trajectory)
    atoms = u.select_atoms(selection)
    z = atomic_numbers(atoms)
    out = []
    for f in frames:
        u.trajectory[int(f)]
        pos = atoms.positions.astype(np.float64)
        if center == "geometry":
            pos = pos - pos.mean(axis=0)
        elif center == "electrons":
            pos = pos - np.average(pos, axis=0, weights=z)
        elif center is not None:
            raise ValueError(center)
        out.append(pos)
    return out, z


def rotation_matrix(quaternion) -> np.ndarray:
    """The active rotation of a unit quaternion (x, y, z, w), scalar last, by Rodrigues:
    ``R = I + 2 w [u]x + 2 [u]x^2`` with ``u = (x, y, z)``."""
    x, y, z, w = np.asarray(quaternion, dtype=np.float64)
    u = np.array([[0, -z, y], [z, 0, -x], [-y, x, 0]])
    return np.eye(3) + 2 * w * u + 2 * u @ u


def render(topology, trajectory, selection, frames, size, extent, center="geometry",
           oversampling=1, rotations=None) -> Oracle:
    """The contract's shape and diffraction of the given frames, computed the obvious way.

    ``rotations``: None, or per frame a (3, 3) matrix or a (4,) quaternion (x, y, z, w),
    applied to the centred positions (``pos @ R.T``) before projecting along z.
    """
    frames_pos, z = positions(topology, trajectory, selection, frames, center)
    if rotations is not None:
        matrices = [rotation_matrix(r) if np.shape(r) == (4,) else np.asarray(r, dtype=np.float64)
                    for r in rotations]
        frames_pos = [pos @ r.T for pos, r in zip(frames_pos, matrices, strict=True)]
    half = extent / 2
    n = oversampling * size
    shapes, diffs, lost_atoms, lost_electrons = [], [], [], []
    for pos in frames_pos:
        h = np.histogram2d(pos[:, 1], pos[:, 0], bins=size, range=[[-half, half], [-half, half]],
                           weights=z)[0]
        inside = (pos[:, 0] >= -half) & (pos[:, 0] <= half) & (pos[:, 1] >= -half) & (pos[:, 1] <= half)
        shapes.append(h)
        diffs.append(np.fft.fftshift(np.abs(np.fft.fft2(h, s=(n, n))) ** 2))
        lost_atoms.append(int((~inside).sum()))
        lost_electrons.append(float(z[~inside].sum()))
    pixel = extent / size
    x = -half + (np.arange(size) + 0.5) * pixel
    q = np.fft.fftshift(np.fft.fftfreq(n, d=pixel))
    return Oracle(np.array(shapes), np.array(diffs), np.array(lost_atoms), np.array(lost_electrons),
                  z, x, q)


def relative_error(value, reference) -> float:
    """‖value − reference‖ / ‖reference‖ in double precision."""
    value = np.asarray(value, dtype=np.float64)
    reference = np.asarray(reference, dtype=np.float64)
    return float(np.linalg.norm(value - reference) / np.linalg.norm(reference))
