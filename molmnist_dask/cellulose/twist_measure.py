"""A fibril frame's twist, measured: degrees per nm about its own axis, right-handed > 0.

The twist is the rate at which the cross-section turns about the fibril axis along that axis.
The frame is first superposed on the straight (relaxed) fibril, whose axis is z (least squares
over the heavy atoms: rigid-body motion is removed, so the frame need not be aligned). A layer
of the cross-section is the residues of one number along their chains (one glucose thick,
5.2 angstrom); its rotation about the axis is the angle that best turns the reference layer onto
it about the layer's own centre (2-D Procrustes over its heavy atoms, each weighted by its
distance from the centre squared, as in `numpy.arctan2` of the summed cross and dot products).
The twist is the slope of a straight line fitted to the layers' rotations against their
height. A layer's own drift sideways (bending) does not turn it; a whole chain displaced
sideways would, where the layers are turned, so each chain's mean displacement from the
reference twisted as measured is removed and the fit made again (`ITERATIONS`).

On the model's variants (`variants.variant_positions`, thermal noise included) it recovers the
nominal twist within 0.025 degree/nm for the 2x2 fibril, 0.01 for the 3x3 and 0.003 for the
larger ones (noise-free: 1e-4). Fibrils of a few residues are too short for that precision:
0.2 angstrom of thermal noise alone makes some 0.3 degree/nm of scatter over four residues.
"""

from __future__ import annotations

import numpy as np

from .fibril import Fibril
from .variants import twist

ITERATIONS = 2    # of the chain-displacement correction: the second changes < 1e-4 degree/nm


def superpose(positions: np.ndarray, reference: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """``positions`` moved rigidly onto ``reference`` (least squares, Kabsch), float64.

    Both (n_atoms, 3); the result is centred where ``reference``'s (weighted) centroid is.
    """
    p, q = np.asarray(positions, dtype=np.float64), np.asarray(reference, dtype=np.float64)
    w = np.ones(len(p)) if weights is None else np.asarray(weights, dtype=np.float64)
    pc, qc = np.average(p, axis=0, weights=w), np.average(q, axis=0, weights=w)
    h = ((p - pc) * w[:, None]).T @ (q - qc)
    u, _, vt = np.linalg.svd(h)
    d = np.sign(np.linalg.det(vt.T @ u.T))       # a proper rotation, never a reflection
    rotation = vt.T @ np.diag([1.0, 1.0, d]) @ u.T
    return (p - pc) @ rotation.T + qc


def measure_twist(fibril: Fibril, positions: np.ndarray, reference: np.ndarray | None = None) -> float:
    """The twist of one frame, degrees per nm (positive: right-handed).

    Parameters
    ----------
    fibril : Fibril
        The fibril whose atoms ``positions`` holds, in its order.
    positions : ndarray, shape (n_atoms, 3)
        Angstrom; any rigid-body placement.
    reference : ndarray, shape (n_atoms, 3), optional
        The straight fibril, chain axis along z, that the turns are measured against; the
        relaxed ``fibril.positions`` by default.

    Returns
    -------
    float
    """
    heavy = fibril.elements != "H"
    ref = np.asarray(fibril.positions if reference is None else reference, dtype=np.float64)[heavy]
    ref = ref - ref.mean(axis=0)
    now = superpose(np.asarray(positions)[heavy], ref)
    chains = fibril.atom_chain[heavy]
    layers = fibril.resids[fibril.atom_residue[heavy]]
    rate = _layer_fit(now, ref, layers)
    for _ in range(ITERATIONS):
        # each chain's mean sideways displacement from the reference twisted as measured: it
        # turns no layer but, with the layers turned, would tilt their fit
        expected = twist(ref, rate)
        moved = now.copy()
        for axis in (0, 1):
            shift = np.bincount(chains, now[:, axis] - expected[:, axis]) / np.bincount(chains)
            moved[:, axis] -= shift[chains]
        rate = _layer_fit(moved, ref, layers)
    return float(rate)


def _layer_fit(now: np.ndarray, ref: np.ndarray, layers: np.ndarray) -> float:
    """Slope (degrees/nm) of the layers' rotations about their centres against their heights."""
    angles, heights = [], []
    for layer in np.unique(layers):
        a, b = now[layers == layer], ref[layers == layer]
        a, b = a - a.mean(axis=0), b - b.mean(axis=0)
        cross = np.sum(b[:, 0] * a[:, 1] - b[:, 1] * a[:, 0])
        dot = np.sum(b[:, 0] * a[:, 0] + b[:, 1] * a[:, 1])
        angles.append(np.arctan2(cross, dot))
        heights.append(now[layers == layer, 2].mean())
    # neighbouring layers turn by a few degrees at most: unwrap across +-180
    slope = np.polyfit(heights, np.unwrap(angles), 1)[0]        # radians per angstrom
    return float(np.rad2deg(slope) * 10.0)


def measure_twists(fibril: Fibril, frames, reference: np.ndarray | None = None) -> np.ndarray:
    """`measure_twist` of each frame of an iterable of (n_atoms, 3) arrays."""
    return np.array([measure_twist(fibril, p, reference) for p in frames], dtype=np.float64)


__all__ = ["measure_twist", "measure_twists", "superpose"]
