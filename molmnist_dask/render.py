"""The kernel: atom positions -> electron-count images (shapes) -> diffraction patterns.

Plain numpy/scipy on in-memory arrays: nothing here knows of dask, files or xarray, so it can
be tested and timed alone (and moved to a GPU later). What it computes is the data contract of
DESIGN.md, exactly:

- positions in angstrom (float64), minus their centre (of geometry, of electrons, or none);
- ``shape = numpy.histogram2d(y, x, bins=size, range=[[-extent/2, extent/2]] * 2, weights=Z)[0]``,
  atoms outside the field of view dropped and counted;
- ``diffraction = fftshift(abs(fft2(shape, s=(k*size, k*size)))**2)``.

It is faster than that definition: one ``bincount`` of computed bin indices replaces
``histogram2d``'s sorted search, and a float32 real FFT of the whole block (half the spectrum,
the other half filled in by Hermitian symmetry) replaces a complex128 ``fft2`` per frame.
"""

from __future__ import annotations

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
    if center is None:
        return pos
    if center == "geometry":
        return pos - pos.mean(axis=0)
    if center == "electrons":
        w = np.asarray(weights, dtype=np.float64)
        if w.sum() <= 0:
            raise ValueError("center='electrons' needs atoms with electrons")
        return pos - (w @ pos) / w.sum()
    raise ValueError(f"center must be 'geometry', 'electrons' or None, got {center!r}")


def bin_index(values: np.ndarray, edges: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Bin of each value for uniform ``edges``, exactly as numpy.histogram2d bins it.

    Returns the bin indices and a mask of the values inside ``[edges[0], edges[-1]]`` (the last
    edge belongs to the last bin). The index is computed by arithmetic, then nudged by one where
    rounding put a value on the wrong side of an edge, as numpy.histogram does for uniform bins.
    """
    n = len(edges) - 1
    scale = n / (edges[-1] - edges[0])
    idx = np.floor((values - edges[0]) * scale)
    np.clip(idx, 0, n - 1, out=idx)
    idx = idx.astype(np.intp)
    idx -= values < edges[idx]
    idx += (values >= edges[idx + 1]) & (idx != n - 1)
    inside = (values >= edges[0]) & (values <= edges[-1])
    return idx, inside


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
    edges = grid.edges
    iy, in_y = bin_index(positions[:, 1], edges)
    ix, in_x = bin_index(positions[:, 0], edges)
    inside = in_y & in_x
    flat = iy[inside] * grid.size + ix[inside]
    w = np.asarray(weights, dtype=np.float64)
    image = np.bincount(flat, weights=w[inside], minlength=grid.size * grid.size)
    lost = ~inside
    return image.reshape(grid.size, grid.size), int(lost.sum()), float(w[lost].sum())


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
    # Multiplying the image by (-1)**(ix + iy) shifts its spectrum by m/2 on both axes, so the
    # transform comes out already fftshifted; the image stays real, so a real FFT gives half of
    # it and Hermitian symmetry the rest.
    checker = np.where(np.add.outer(np.arange(shapes.shape[-2]), np.arange(shapes.shape[-1])) % 2,
                       np.float32(-1), np.float32(1))
    half = scipy.fft.rfft2(shapes * checker, s=(m, m), workers=1)
    h = m // 2
    out = np.empty(shapes.shape[:-2] + (m, m), dtype=np.float32)
    left = out[..., : h + 1]
    np.multiply(half.real, half.real, out=left)
    left += half.imag * half.imag
    del half
    # out[a, b] for b > m/2 is out[-a mod m, m - b]: row 0 stays, the other rows reverse.
    out[..., 0, h + 1:] = left[..., 0, h - 1: 0: -1]
    out[..., 1:, h + 1:] = left[..., : 0: -1, h - 1: 0: -1]
    return out


def _diffraction_odd(shapes: np.ndarray, m: int) -> np.ndarray:
    """The odd-sized case: a plain shifted power spectrum (no checkerboard shift exists)."""
    spectrum = scipy.fft.fft2(shapes.astype(np.complex64), s=(m, m), workers=1)
    power = (spectrum.real * spectrum.real + spectrum.imag * spectrum.imag).astype(np.float32)
    return np.fft.fftshift(power, axes=(-2, -1))


def render(positions, weights: np.ndarray, grid: Grid, center: str | None = "geometry") -> Rendered:
    """Render a block of frames: shapes, diffraction patterns and out-of-view counts.

    Parameters
    ----------
    positions : iterable of ndarray (atoms, 3)
        Each frame's positions in angstrom (an array of frames or a generator reading them).
    weights : ndarray, (atoms,)
        Electrons per atom.
    grid : Grid
    center : {"geometry", "electrons", None}

    Raises
    ------
    NonFiniteCoordinates
        If a frame has NaN or infinite coordinates.
    """
    images, lost_atoms, lost_electrons = [], [], []
    for i, pos in enumerate(positions):
        if not np.isfinite(pos).all():
            raise NonFiniteCoordinates(i)
        image, n_lost, e_lost = project(center_positions(pos, weights, center), weights, grid)
        images.append(image.astype(np.float32))
        lost_atoms.append(n_lost)
        lost_electrons.append(e_lost)
    shapes = np.stack(images) if images else np.zeros((0, grid.size, grid.size), np.float32)
    return Rendered(shape=shapes, diffraction=diffraction(shapes, grid.oversampling),
                    lost_atoms=np.array(lost_atoms, dtype=np.int64),
                    lost_electrons=np.array(lost_electrons, dtype=np.float64))
