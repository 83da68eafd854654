"""Orientations: which way each molecule is turned before it is projected along z.

An orientation is an *active* rotation ``R`` applied to each frame's centred positions
``r`` (``r' = R @ r``; with ``center=None``, the positions as they are, turned about the
origin); the image is then the projection of ``r'`` along z, exactly as for an unrotated
molecule (``shape = histogram2d(r'_y, r'_x, ...)``), atoms outside the field of view of the
turned molecule dropped and counted. Each image's rotation is recorded as a unit quaternion,
**scalar last** ``(x, y, z, w)`` with ``w >= 0`` (the convention of
``scipy.spatial.transform.Rotation.as_quat``), so that

    R = [[1 - 2(y²+z²), 2(xy - zw),    2(xz + yw)],
         [2(xy + zw),    1 - 2(x²+z²), 2(yz - xw)],
         [2(xz - yw),    2(yz + xw),    1 - 2(x²+y²)]]

The ``orientation`` option names the rotation:

``"z"``
    No rotation (the default; the kernel then takes its unrotated path, bit for bit).
``"x"``, ``"y"`` or a 3-vector ``d``
    A view along the direction ``d`` (``"x"`` is ``(1, 0, 0)``, ``"y"`` is ``(0, 1, 0)``):
    ``R`` is the shortest-arc rotation taking ``d/|d|`` onto +z, so projecting the rotated
    molecule along z projects the molecule along ``d``. The in-plane axes follow from it: the
    rotation turns about ``d x z`` only, so the direction perpendicular to both ``d`` and z
    stays put. For ``"x"``: image x axis = the molecule's -z, image y axis = its y. For
    ``"y"``: image x axis = its x, image y axis = its -z. ``d`` pointing along -z is the
    half turn about x (image x = x, image y = -y).
``"random"``
    A rotation drawn uniformly from SO(3) for each (``orientation_seed``, molecule name,
    variant index), so that any image can be regenerated alone, whatever the blocks, parts or
    scheduler. Each (seed, molecule) has a 64-bit key (numpy's ``SeedSequence`` of
    ``[seed, crc32(name), stream tag]``, as `molmnist_dask.noise` seeds its generators);
    variant v takes draws 4v..4v+2 of the SplitMix64 sequence of that key (random access:
    a million variants' orientations in about a second, where a generator per variant takes
    about a minute), and Shoemake's formula turns those three
    uniforms into a quaternion uniform on the unit sphere, hence a rotation uniform on SO(3)
    (K. Shoemake, "Uniform random rotations", Graphics Gems III, 1992).
"""

from __future__ import annotations

import math
import zlib

import numpy as np

from .errors import InputError
from .validate import is_number

NAMES = ("z", "x", "y", "random")
AXES = {"z": (0.0, 0.0, 1.0), "x": (1.0, 0.0, 0.0), "y": (0.0, 1.0, 0.0)}

#: Mixed into the seed of the "random" generator, so that orientation_seed = noise_seed
#: never gives the rotations and the photon noise the same random stream.
_STREAM = 0x6F7269  # "ori"

CONVENTION = ("unit quaternion (x, y, z, w), scalar last, w >= 0, of the active rotation applied "
              "to the centred positions before projecting along z")


def parse(spec):
    """Check an orientation and return it in canonical form.

    Parameters
    ----------
    spec : str or sequence of 3 numbers
        ``"z"``, ``"x"``, ``"y"``, ``"random"``, a view direction as a sequence of three
        numbers, or as text ``"1,0,0"``.

    Returns
    -------
    str or tuple of 3 floats
        The name, or the direction as given (not normalised).

    Raises
    ------
    InputError
        One line naming ``orientation``: an unknown name, not three numbers, a zero or
        non-finite vector.
    """
    if isinstance(spec, str):
        if spec in NAMES:
            return spec
        if "," not in spec:
            raise InputError(f"orientation must be 'z', 'x', 'y', 'random' or a view direction "
                             f"such as '1,0,0', got {spec!r}")
        try:
            spec = [float(c) for c in spec.split(",")]
        except ValueError:
            raise InputError(f"orientation: a view direction needs three numbers, got {spec!r}") from None
    try:
        vector = tuple(spec)
    except TypeError:
        raise InputError(f"orientation must be a name or a 3-vector, got {spec!r}") from None
    if len(vector) != 3 or not all(is_number(c) for c in vector):
        raise InputError(f"orientation: a view direction needs three numbers, got {spec!r}")
    vector = tuple(float(c) for c in vector)
    if not all(math.isfinite(c) for c in vector):
        raise InputError(f"orientation: the view direction must be finite, got {vector!r}")
    if not any(vector):
        raise InputError(f"orientation: the view direction must not be zero, got {vector!r}")
    return vector


def text(spec) -> str:
    """An orientation as text (for attributes and the CLI): the name, or ``"x,y,z"``."""
    spec = parse(spec)
    return spec if isinstance(spec, str) else ",".join(repr(c) for c in spec)


def towards_z(direction) -> np.ndarray:
    """The quaternion of the shortest-arc rotation taking ``direction`` onto +z.

    Parameters
    ----------
    direction : sequence of 3 numbers
        Non-zero, finite.

    Returns
    -------
    ndarray, float64, (4,)
        ``(x, y, z, w)``, ``w >= 0``.
    """
    d = np.asarray(direction, dtype=np.float64)
    d = d / np.linalg.norm(d)
    # axis d x z = (d_y, -d_x, 0); angle atan2(|d x z|, d . z): the half-angle form stays
    # accurate near both poles, where 1 + d.z would lose digits.
    s = math.hypot(d[0], d[1])
    if s == 0:
        return np.array([0.0, 0.0, 0.0, 1.0]) if d[2] > 0 else np.array([1.0, 0.0, 0.0, 0.0])
    half = math.atan2(s, d[2]) / 2
    return np.array([d[1] / s * math.sin(half), -d[0] / s * math.sin(half), 0.0, math.cos(half)])


#: SplitMix64 (Steele, Lea & Flood 2014; Java's SplittableRandom, the seeder of xoshiro): the
#: n-th output is a fixed mix of key + (n + 1) * GAMMA, so any draw is computed directly.
_GAMMA = np.uint64(0x9E3779B97F4A7C15)
_MIX = (np.uint64(30), np.uint64(0xBF58476D1CE4E5B9), np.uint64(27), np.uint64(0x94D049BB133111EB),
        np.uint64(31))


def _key(seed: int, molecule: str) -> np.uint64:
    """The 64-bit key of one (seed, molecule)."""
    crc = zlib.crc32(str(molecule).encode("utf-8"))
    return np.random.SeedSequence([int(seed), crc, _STREAM]).generate_state(1, np.uint64)[0]


def _splitmix64(key: np.uint64, n: np.ndarray) -> np.ndarray:
    """Outputs ``n`` (uint64 array) of the SplitMix64 sequence seeded with ``key``."""
    a, b, c, d, e = _MIX
    with np.errstate(over="ignore"):  # uint64 arithmetic wraps modulo 2**64 on purpose
        z = key + (n + np.uint64(1)) * _GAMMA
        z = (z ^ (z >> a)) * b
        z = (z ^ (z >> c)) * d
        return z ^ (z >> e)


def random_quaternions(seed: int, molecule: str, variants) -> np.ndarray:
    """The uniformly random orientations of some variants of one molecule, (variants, 4).

    Parameters
    ----------
    seed : int
        ``orientation_seed``.
    molecule : str
        The molecule's name.
    variants : sequence of int
        Variant indices (>= 0); each variant's quaternion depends on nothing else.
    """
    v = np.asarray(variants, dtype=np.uint64).reshape(-1, 1)
    raw = _splitmix64(_key(seed, molecule), v * np.uint64(4) + np.arange(3, dtype=np.uint64))
    u = (raw >> np.uint64(11)).astype(np.float64) * 2.0 ** -53  # 53-bit uniforms in [0, 1)
    # Shoemake: (sqrt(1-u0) sin 2pi u1, sqrt(1-u0) cos 2pi u1, sqrt(u0) sin 2pi u2, sqrt(u0) cos 2pi u2)
    a, b = np.sqrt(1 - u[:, 0]), np.sqrt(u[:, 0])
    t1, t2 = np.ascontiguousarray(2 * np.pi * u[:, 1]), np.ascontiguousarray(2 * np.pi * u[:, 2])
    q = np.stack([a * np.sin(t1), a * np.cos(t1), b * np.sin(t2), b * np.cos(t2)], axis=-1)
    return canonical(q)


def canonical(q: np.ndarray) -> np.ndarray:
    """The quaternion of the pair ``q``, ``-q`` (one rotation) whose scalar ``w`` is >= 0."""
    q = np.asarray(q, dtype=np.float64)
    return np.where(q[..., 3:] < 0, -q, q)


def quaternions(orientation, seed: int, molecule: str, variants) -> np.ndarray:
    """The orientation of each of a molecule's ``variants``: (len(variants), 4) float64.

    Parameters
    ----------
    orientation : str or 3-vector
        As `parse` takes it.
    seed : int
        ``orientation_seed`` (used by ``"random"`` only).
    molecule : str
        The molecule's name.
    variants : sequence of int
        Variant indices.
    """
    orientation = parse(orientation)
    variants = np.asarray(variants, dtype=np.int64).reshape(-1)
    if orientation == "random":
        return random_quaternions(seed, molecule, variants)
    direction = AXES.get(orientation, orientation)
    return np.tile(towards_z(direction), (len(variants), 1))


def matrices(q: np.ndarray) -> np.ndarray:
    """Rotation matrices of unit quaternions ``(..., 4)`` (scalar last): ``(..., 3, 3)``."""
    q = np.asarray(q, dtype=np.float64)
    x, y, z, w = np.moveaxis(q, -1, 0)
    return np.stack([
        np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)], axis=-1),
        np.stack([2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)], axis=-1),
        np.stack([2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)], axis=-1),
    ], axis=-2)


def rotations(orientation, seed: int, molecule: str, variants) -> np.ndarray | None:
    """What the kernel takes: the rotation matrix of each variant, or None for ``"z"``."""
    if parse(orientation) == "z":
        return None
    return matrices(quaternions(orientation, seed, molecule, variants))
