"""The kernel: atom positions -> electron-count images (shapes) -> diffraction patterns.

Plain numpy/scipy on in-memory arrays: nothing here knows of dask, files or xarray, so it can
be tested and timed alone (and moved to a GPU later). What it computes is the data contract of
docs/design.md, exactly:

- positions in angstrom (float64), minus their centre (of geometry, of electrons, or none),
  then, when a rotation R is given for the frame (`molmnist_dask.orientation`), ``R @ r``;
- ``shape = numpy.histogram2d(y, x, bins=size, range=[[-extent/2, extent/2]] * 2, weights=Z)[0]``,
  atoms outside the field of view dropped and counted;
- ``diffraction = fftshift(abs(fft2(shape, s=(k*size, k*size)))**2)``.

It gives exactly that, faster (benchmarks/bench_build.py, bench_freud.py): only x and y are
centred and binned (with a rotation, only rows 0 and 1 of R are applied, straight from the
frame's buffer into the workspace: bench_orientation.py); a bin index computed by arithmetic
(and checked against the edges where it lies near one) replaces ``histogram2d``'s sorted
search; the weights are added in atom order, as ``bincount`` adds them, into an image with
a border of outlier bins (as ``histogramdd`` lays them out) instead of masking the atoms
outside; per-atom buffers and the image are reused from frame to frame. A float32 real FFT
of the image's occupied rows (half the spectrum, the other half by Hermitian symmetry, the
quadrants swapped on the way) replaces a complex128 ``fft2`` and ``fftshift`` per frame
(within 2e-7 of it, relative norm).
"""

from __future__ import annotations

import operator
from dataclasses import dataclass

import numpy as np
import scipy.fft

from .grid import Grid

CENTERS = ("geometry", "electrons", None)


@dataclass
class Rendered:
    """A block of rendered frames.

    Attributes
    ----------
    shape : ndarray, float32, (frames, size, size)
    diffraction : ndarray, float32, (frames, qsize, qsize)
    lost_atoms : ndarray, int64, (frames,)
        Atoms outside the field of view, per frame.
    lost_electrons : ndarray, float64, (frames,)
        Their electrons.
    """

    shape: np.ndarray
    diffraction: np.ndarray
    lost_atoms: np.ndarray
    lost_electrons: np.ndarray


class NonFiniteCoordinates(ValueError):
    """A frame has NaN or infinite coordinates; ``index`` is its place in the block."""

    def __init__(self, index: int):
        super().__init__(f"NaN or infinite coordinates in frame {index} of the block")
        self.index = index


def center_positions(positions: np.ndarray, weights: np.ndarray, center: str | None) -> np.ndarray:
    """Positions as float64 minus their centre of geometry, of electrons, or as they are."""
    pos = np.asarray(positions, dtype=np.float64)
    c = _centre(pos, weights, center)
    return pos if c is None else pos - c


def _centre(pos: np.ndarray, weights: np.ndarray, center: str | None):
    """The centre `center_positions` subtracts (None for none), from float64 positions."""
    if center is None:
        return None
    if center == "geometry":
        return pos.mean(axis=0)
    if center == "electrons":
        w = np.asarray(weights, dtype=np.float64)
        if w.sum() <= 0:
            raise ValueError("center='electrons' needs atoms with electrons")
        return (w @ pos) / w.sum()
    raise ValueError(f"center must be 'geometry', 'electrons' or None, got {center!r}")


def _centred_xy(pos: np.ndarray, weights: np.ndarray, center: str | None, ws: "_Workspace"):
    """``center_positions(pos, ...)[:, [1, 0]].T`` into ``ws.v``, bit for bit, z untouched.

    numpy's ``mean(axis=0)`` of an (atoms, 3) array adds each column in order, atom after atom
    (its pairwise summation needs the contiguous axis), so a cumulative sum of the float64
    column ends on the same number, several times faster.
    """
    v, n = ws.v, len(pos)
    np.copyto(v[0], pos[:, 1])
    np.copyto(v[1], pos[:, 0])
    if center == "geometry" and n:
        cy = np.cumsum(v[0], out=ws.acc)[-1] / n
        cx = np.cumsum(v[1], out=ws.acc)[-1] / n
    else:
        c = _centre(np.asarray(pos, dtype=np.float64), weights, center) if n else None
        if c is None:
            return v
        cx, cy = c[0], c[1]
    v[0] -= cy
    v[1] -= cx
    return v


def bin_index(values: np.ndarray, edges: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Bin of each value for uniform ``edges``, exactly as numpy.histogram2d bins it.

    Returns the bin indices and a mask of the values inside ``[edges[0], edges[-1]]`` (the last
    edge belongs to the last bin). The index is computed by arithmetic, then nudged by one where
    rounding put a value on the wrong side of an edge, as numpy.histogram does for uniform bins.
    """
    n = len(edges) - 1
    k = _Bins(edges).index(np.asarray(values, dtype=np.float64))
    inside = (k >= 1) & (k <= n)
    np.clip(k, 1, n, out=k)
    k -= 1
    return k, inside


class _Bins:
    """Uniform bins as ``numpy.histogramdd`` numbers them: 1..n inside, 0 below, n+1 above.

    ``lower[k]`` is the lowest value of bin k: -inf, the n left edges, then the number just
    above the last edge (which belongs to bin n), then +inf.
    """

    def __init__(self, edges: np.ndarray):
        edges = np.asarray(edges, dtype=np.float64)
        self.n = n = len(edges) - 1
        self.scale = n / (edges[-1] - edges[0])
        self.offset = 1.0 - edges[0] * self.scale
        self.lower = np.concatenate([[-np.inf], edges[:-1], [np.nextafter(edges[-1], np.inf), np.inf]])
        self.upper = self.lower[1:]
        # A guess whose fraction is this far from 0 and 1 is the right bin: the rounding of the
        # guess and of linspace's edges is below 1e-15 * n bins; a hundredfold margin.
        self.safe = 1e-13 * (n + 2)

    def index(self, v: np.ndarray, ws: "_Workspace | None" = None) -> np.ndarray:
        """Bin numbers (intp) of float64 values: a guess off by at most one, corrected where
        it is near an edge (or clipped). ``ws`` lends the buffers (else they are allocated)."""
        ws = ws or _Workspace(v.shape)
        g = np.multiply(v, self.scale, out=ws.g)
        g += self.offset
        np.clip(g, 0, self.n + 1, out=g)  # non-negative, so the cast below is floor
        k = ws.k
        np.copyto(k, g, casting="unsafe")
        g -= k
        if g.size and g.min() >= self.safe and g.max() <= 1 - self.safe:
            return k
        below = np.less(v, self.lower.take(k, out=ws.e), out=ws.below)
        above = np.greater_equal(v, self.upper.take(k, out=ws.e), out=ws.above)
        k += above
        k -= below
        return k


class _Workspace:
    """Buffers reused from frame to frame: per-atom arrays and the image.

    Allocating fresh ones per frame costs page faults wherever freed memory goes straight back
    to the system, as in dask workers (MALLOC_TRIM_THRESHOLD_=65536): twice the time there.
    """

    def __init__(self, shape, image_size: int = 0):
        self.shape = tuple(shape)
        self.acc = np.empty(self.shape[-1])
        self.v, self.g, self.e = (np.empty(self.shape) for _ in range(3))
        self.k = np.empty(self.shape, np.intp)
        self.below, self.above = np.empty(self.shape, bool), np.empty(self.shape, bool)
        self.image = np.empty((image_size + 2) ** 2) if image_size else None


#: ``np.add.at`` adds in index order like ``bincount`` (the same sums, bit for bit) into a
#: reused buffer; it is as fast only since numpy 1.25.
_FAST_ADD_AT = np.lib.NumpyVersion(np.__version__) >= "1.25.0"


def _project_xy(v: np.ndarray, w: np.ndarray, bins: _Bins, ws: _Workspace):
    """Image of centred ``v = [y, x]`` (float64, (n+2, n+2): the outlier border included; it
    may be ``ws.image``), lost atoms and electrons."""
    n = bins.n
    k = bins.index(v, ws)
    n_lost, e_lost = 0, 0.0
    if k.size and (k.min() == 0 or k.max() == n + 1):
        lost = ((k == 0) | (k == n + 1)).any(axis=0)
        n_lost, e_lost = int(lost.sum()), float(w[lost].sum())
    flat = k[0]
    flat *= n + 2
    flat += k[1]
    if _FAST_ADD_AT and ws.image is not None:
        image = ws.image
        image.fill(0)
        np.add.at(image, flat, w)
    else:
        image = np.bincount(flat, weights=w, minlength=(n + 2) ** 2)
    return image.reshape(n + 2, n + 2), n_lost, e_lost


def project(positions: np.ndarray, weights: np.ndarray, grid: Grid):
    """One frame's electron-count image, projected along z.

    Parameters
    ----------
    positions : ndarray, (atoms, 3)
        Centred positions in angstrom.
    weights : ndarray, (atoms,)
        Electrons per atom.
    grid : Grid

    Returns
    -------
    image : ndarray, float64, (size, size)
        ``image[iy, ix]``, as numpy.histogram2d(y, x, ...) gives it.
    lost_atoms : int
    lost_electrons : float
    """
    w = np.asarray(weights, dtype=np.float64)
    ws = _Workspace((2, len(positions)))
    image, n_lost, e_lost = _project_xy(_centred_xy(positions, w, None, ws), w,
                                        _Bins(grid.edges), ws)
    return image[1:-1, 1:-1].copy(), n_lost, e_lost


def diffraction(shapes: np.ndarray, oversampling: int = 1) -> np.ndarray:
    """``fftshift(abs(fft2(shape, s=(k*n, k*n)))**2)`` for a stack of images, as float32.

    Parameters
    ----------
    shapes : ndarray, (frames, n, n)
    oversampling : int
        Zero-pad each image to ``oversampling * n`` pixels per side first.
    """
    shapes = np.asarray(shapes, dtype=np.float32)
    m = shapes.shape[-1] * oversampling
    if m % 2:
        return _diffraction_odd(shapes, m)
    out = np.empty(shapes.shape[:-2] + (m, m), dtype=np.float32)
    flat_in, flat_out = shapes.reshape(-1, *shapes.shape[-2:]), out.reshape(-1, m, m)
    # Frame by frame: each frame's crop (below) is its own, so a pattern never depends on
    # the other frames of its block, nor on how the frames were cut into blocks.
    for image, pattern in zip(flat_in, flat_out):
        _power_spectrum(image, m, oversampling, pattern)
    return out


def _power_spectrum(image: np.ndarray, m: int, oversampling: int, out: np.ndarray) -> None:
    """One image's shifted power spectrum (even ``m``) into ``out``."""
    h = m // 2
    # |FFT|^2 is blind to a circular shift of the image, so only the rows that hold electrons
    # need transforming (the column transform pads them back to m). Padding costs a copy of
    # the half spectrum: worth it when the rows are padded anyway (oversampling) or when at
    # most half of them hold electrons.
    rows = np.flatnonzero(image.any(axis=-1))
    if len(rows) == 0:
        out.fill(0)
        return
    occupied = image
    if oversampling > 1 or 2 * (rows[-1] + 1 - rows[0]) <= image.shape[-2]:
        occupied = image[rows[0]: rows[-1] + 1, :]
    # A real FFT along x gives the columns 0..m/2 of the spectrum, the column FFT pads to m.
    half = scipy.fft.fft(scipy.fft.rfft(occupied, n=m, axis=-1, workers=1), n=m, axis=-2,
                         workers=1, overwrite_x=True)
    parts = half.view(np.float32)
    np.square(parts, out=parts)
    re, im = parts[..., 0::2], parts[..., 1::2]
    # fftshift moves spectrum (a, b) to (a + m/2, b + m/2) mod m: columns 0..m/2-1 land on the
    # right half, their rows swapped; the Nyquist column m/2 lands on column 0.
    np.add(re[:h, :h], im[:h, :h], out=out[h:, h:])
    np.add(re[h:, :h], im[h:, :h], out=out[:h, h:])
    out[:, 0] = (re[:, h] + im[:, h])[(h - np.arange(m)) % m]
    # The left half by Hermitian symmetry: I(a, b) = I(-a, -b), i.e. out[i, j] = out[-i, -j].
    out[0, 1:h] = out[0, m - 1: h: -1]
    out[1:, 1:h] = out[m - 1: 0: -1, m - 1: h: -1]


def _diffraction_odd(shapes: np.ndarray, m: int) -> np.ndarray:
    """The odd-sized case: a plain shifted power spectrum."""
    spectrum = scipy.fft.fft2(shapes.astype(np.complex64), s=(m, m), workers=1)
    power = (spectrum.real * spectrum.real + spectrum.imag * spectrum.imag).astype(np.float32)
    return np.fft.fftshift(power, axes=(-2, -1))


def render(positions, weights: np.ndarray, grid: Grid, center: str | None = "geometry",
           rotations=None) -> Rendered:
    """Render a block of frames: shapes, diffraction patterns and out-of-view counts.

    Parameters
    ----------
    positions : iterable of ndarray (atoms, 3)
        Each frame's positions in angstrom (an array of frames or a generator reading them;
        each is used before the next is asked for, so a reader may reuse its buffer).
    weights : ndarray, (atoms,)
        Electrons per atom.
    grid : Grid
    center : {"geometry", "electrons", None}
    rotations : ndarray, (frames, 3, 3), optional
        An active rotation per frame, applied to the centred positions before they are
        projected along z (`molmnist_dask.orientation`); None: no rotation.

    Raises
    ------
    NonFiniteCoordinates
        If a frame has NaN or infinite coordinates.
    """
    block = _Shapes(positions, grid.size)
    for i, image, n_lost, e_lost, _ in frame_loop(positions, weights, grid, center, rotations):
        block.add(i, image, n_lost, e_lost)
    shapes, lost_atoms, lost_electrons = block.finish()
    return Rendered(shape=shapes, diffraction=diffraction(shapes, grid.oversampling),
                    lost_atoms=lost_atoms, lost_electrons=lost_electrons)


def frame_loop(positions, weights: np.ndarray, grid: Grid, center: str | None = "geometry",
               rotations=None):
    """The per-frame loop every renderer shares: check, centre (and rotate), bin, project.

    One workspace serves every frame. Yields, per frame, ``(i, image, lost_atoms,
    lost_electrons, flat)``: ``image`` is the electron-count image with a border of outlier
    bins, (size+2, size+2) float64, and ``flat`` each atom's bin in it (raveled, intp); both
    are the workspace's, valid until the next frame. Arguments as `render`'s.
    """
    if center not in CENTERS:
        raise ValueError(f"center must be 'geometry', 'electrons' or None, got {center!r}")
    w = np.asarray(weights, dtype=np.float64)
    if rotations is not None:
        rotations = np.asarray(rotations, dtype=np.float64)
    bins = _Bins(grid.edges)
    ws = _Workspace((2, len(w)), grid.size)
    for i, pos in enumerate(positions):
        pos = np.asarray(pos)
        if not _finite(pos):
            raise NonFiniteCoordinates(i)
        if rotations is None:
            v = _centred_xy(pos, w, center, ws)
        else:
            v = _rotated_xy(pos, rotations[i], w, center, ws)
        image, n_lost, e_lost = _project_xy(v, w, bins, ws)
        yield i, image, n_lost, e_lost, ws.k[0]


def _rotated_xy(pos: np.ndarray, rotation: np.ndarray, w: np.ndarray, center: str | None,
                ws: "_Workspace"):
    """``(R @ centred.T)[[1, 0]]`` into ``ws.v``: the rotated y and x, straight from ``pos``.

    Rows 1 and 0 of R are applied to the positions as they are (float64 arithmetic, read
    from the frame's own buffer: no copy of it), then the rotated coordinates are centred:
    the centre of ``R r`` is ``R`` times the centre of ``r``, so this is the rotation of the
    centred positions (to rounding, about 1e-16 of the coordinates), and z' is never needed.
    No bit-for-bit match with numpy's ``mean`` is owed here, so the centre is a pairwise sum,
    faster than the unrotated path's cumulative one.
    """
    v, tmp = ws.v, ws.g[0]
    for row, r in ((v[0], rotation[1]), (v[1], rotation[0])):
        np.multiply(pos[:, 0], r[0], out=row)  # r[0] is a float64 scalar: float64 arithmetic
        np.multiply(pos[:, 1], r[1], out=tmp)
        row += tmp
        np.multiply(pos[:, 2], r[2], out=tmp)
        row += tmp
    n = v.shape[1]
    if center is None or not n:
        return v
    if center == "geometry":
        centre = v.sum(axis=1) / n
    else:
        centre = _centre(v.T, w, center)
    v -= centre[:, None]
    return v


class _Shapes:
    """The shapes and out-of-view counts of a block, gathered frame by frame (float32)."""

    def __init__(self, positions, size: int):
        self.size = size
        self.expected = operator.length_hint(positions)
        self.block = np.empty((self.expected, size, size), np.float32) if self.expected else None
        self.images, self.lost_atoms, self.lost_electrons = [], [], []

    def add(self, i: int, image: np.ndarray, n_lost: int, e_lost: float) -> None:
        """Frame ``i``'s bordered image and counts."""
        if self.block is not None and i < self.expected:
            np.copyto(self.block[i], image[1:-1, 1:-1], casting="same_kind")
        else:
            self.images.append(image[1:-1, 1:-1].astype(np.float32))
        self.lost_atoms.append(n_lost)
        self.lost_electrons.append(e_lost)

    def finish(self):
        """``(shapes, lost_atoms, lost_electrons)``, as `Rendered` holds them."""
        shapes = _gather(self.block, self.images, len(self.lost_atoms), self.size)
        return (shapes, np.array(self.lost_atoms, dtype=np.int64),
                np.array(self.lost_electrons, dtype=np.float64))


def _finite(pos: np.ndarray) -> bool:
    """Whether every coordinate is finite: a finite sum says so without a boolean copy."""
    with np.errstate(all="ignore"):
        if np.isfinite(pos.sum()):
            return True
    return bool(np.isfinite(pos).all())  # overflowed, or not finite


def _gather(block, images, count: int, size: int) -> np.ndarray:
    """The shapes of a block: the preallocated array, and any frames beyond its length."""
    if block is None:
        return np.stack(images) if images else np.zeros((0, size, size), np.float32)
    if images:
        return np.concatenate([block, np.stack(images)])
    return block if count == len(block) else block[:count].copy()
