"""Atomic X-ray form factors: diffraction with f0(|q|) in place of the atomic number Z.

With ``scattering="form_factors"`` each element's atoms are projected onto their own image
(atoms per pixel), the images are transformed, weighted by the element's form factor at each
pixel's |q| and summed in reciprocal space::

    F(q) = sum_e f0_e(|q|) * FFT2(n_e)(q),     diffraction = fftshift(|F|^2)

The shape stays the electron-count image (sum_e Z_e n_e), and at q = 0, f0_e(0) ~ Z_e, so the
two kinds of pattern agree at the centre and differ at high |q|, where the atoms' electron
clouds make f0 fall off.

Form factors are the Waasmaier & Kirfel (1995) five-Gaussian fits to the International Tables
values (neutral atoms), as tabulated by the ``periodictable`` package. Those tables are
functions of ``s = sin(theta)/lambda`` in 1/angstrom (2 theta the scattering angle). This
package's ``q`` is a spatial frequency in cycles per angstrom, ``|q| = 2 sin(theta)/lambda``
(Bragg: 1/d = 2 sin(theta)/lambda), so ``s = |q| / 2``; in crystallographers' momentum
transfer ``Q = 4 pi sin(theta)/lambda = 2 pi |q|``.
"""

from __future__ import annotations

import functools

import numpy as np
import scipy.fft

from .errors import InputError
from .grid import Grid

SOURCE = ("Waasmaier & Kirfel (1995) Acta Cryst. A51, 416, neutral atoms, from the periodictable "
          "package (periodictable.cromermann); s = sin(theta)/lambda = |q|/2")


@functools.lru_cache(maxsize=None)
def _formula(symbol: str):
    """periodictable's Waasmaier-Kirfel formula of a neutral element, or None."""
    try:
        from periodictable.cromermann import getCMformula
    except ImportError:  # pragma: no cover - periodictable is a dependency
        raise InputError("scattering='form_factors' needs the periodictable package "
                         "(pip install periodictable)") from None
    symbol = symbol.strip().title()
    if not symbol.isalpha():  # ions carry a charge suffix such as "Ca2+": neutral atoms only
        return None
    try:
        return getCMformula(symbol)
    except KeyError:
        return None


def known(symbol: str) -> bool:
    """Whether a form factor is tabulated for this element symbol."""
    return _formula(str(symbol)) is not None


def form_factor(symbol: str, q) -> np.ndarray:
    """Atomic form factor f0 of a neutral atom, in electrons.

    Parameters
    ----------
    symbol : str
        Element symbol, any case ("C", "CL", "Cl").
    q : array_like
        Spatial frequency |q| in cycles per angstrom (as the ``qx``/``qy`` coordinates);
        ``sin(theta)/lambda = |q|/2``.

    Raises
    ------
    InputError
        If the element is not tabulated.
    """
    formula = _formula(str(symbol))
    if formula is None:
        raise InputError(f"no X-ray form factor for element {symbol!r}")
    s = np.abs(np.asarray(q, dtype=np.float64)) / 2
    return formula.atstol(s)


def element_groups(symbols, weights, molecule: str = "?"):
    """Distinct elements of a molecule and each atom's index into them.

    Atoms without an element (empty symbol: virtual sites, dummies) get index -1 and scatter
    nothing, as they carry no electrons in the shape. Any other symbol must be tabulated.

    Returns
    -------
    elements : list of str
    index : ndarray of intp, (atoms,)

    Raises
    ------
    InputError
        For an element with no tabulated form factor, naming it and the molecule.
    """
    symbols = np.array([str(s).strip() for s in symbols], dtype=object)
    scatters = (symbols != "") & (np.asarray(weights) > 0)
    unknown = sorted({s for s in symbols if s and not known(s)})
    if unknown:
        raise InputError(f"molecule '{molecule}': no X-ray form factor for element '{unknown[0]}' "
                         "(scattering='form_factors' knows neutral atoms H to Cf)")
    index = np.full(len(symbols), -1, dtype=np.intp)
    elements = []
    for symbol in sorted(set(symbols[scatters])):
        index[(symbols == symbol) & scatters] = len(elements)
        elements.append(symbol)
    return elements, index


def q_magnitude(grid: Grid) -> np.ndarray:
    """|q| of every pixel of the unshifted transform (fft order), cycles per angstrom."""
    f = np.fft.fftfreq(grid.qsize, d=grid.pixel)
    return np.hypot(f[:, None], f[None, :])


def diffraction_form_factors(images: np.ndarray, elements, grid: Grid) -> np.ndarray:
    """Diffraction patterns from per-element images weighted by their form factors.

    Parameters
    ----------
    images : ndarray, (frames, elements, size, size)
        Atoms of each element per pixel.
    elements : sequence of str
        The elements, in the order of axis 1.
    grid : Grid
        Pixel size and oversampling (each image is zero-padded to ``grid.qsize``).

    Returns
    -------
    ndarray, float32, (frames, qsize, qsize)
        ``fftshift(|sum_e f0_e(|q|) FFT2(n_e)|^2)``.
    """
    m = grid.qsize
    images = np.asarray(images, dtype=np.float64)
    q = q_magnitude(grid)[:, : m // 2 + 1]  # the half plane a real FFT gives
    amplitude = np.zeros((images.shape[0], m, m // 2 + 1), dtype=np.complex128)
    for e, symbol in enumerate(elements):
        spectrum = scipy.fft.rfft2(images[:, e], s=(m, m), workers=1)
        amplitude += form_factor(symbol, q) * spectrum
    power = amplitude.real ** 2 + amplitude.imag ** 2
    # the other half by Hermitian symmetry (f0 is real and even in q, so F stays Hermitian)
    full = np.empty((images.shape[0], m, m), dtype=np.float64)
    h = m // 2 + 1
    full[..., :h] = power
    rest = m - h
    if rest:
        cols = np.arange(h, m)
        rows = (-np.arange(m)) % m
        full[..., h:] = power[:, rows][:, :, (m - cols)]
    return np.fft.fftshift(full, axes=(-2, -1)).astype(np.float32)


def render_form_factors(positions, weights: np.ndarray, index: np.ndarray, elements, grid: Grid,
                        center: str | None = "geometry"):
    """`render.render` with form-factor diffraction: same shapes and counts, other patterns.

    Parameters
    ----------
    positions : iterable of ndarray (atoms, 3)
        Each frame's positions in angstrom.
    weights : ndarray, (atoms,)
        Electrons per atom (for the shape and the centre).
    index, elements
        As `element_groups` returns them.
    grid : Grid
    center : {"geometry", "electrons", None}
    """
    from .render import NonFiniteCoordinates, Rendered, center_positions, project

    ones = np.ones(len(index), dtype=np.float64)
    members = [np.flatnonzero(index == e) for e in range(len(elements))]
    shapes, per_element, lost_atoms, lost_electrons = [], [], [], []
    for i, pos in enumerate(positions):
        if not np.isfinite(pos).all():
            raise NonFiniteCoordinates(i)
        pos = center_positions(pos, weights, center)
        image, n_lost, e_lost = project(pos, weights, grid)
        shapes.append(image.astype(np.float32))
        per_element.append([project(pos[m], ones[m], grid)[0] for m in members])
        lost_atoms.append(n_lost)
        lost_electrons.append(e_lost)
    n = grid.size
    shapes = np.stack(shapes) if shapes else np.zeros((0, n, n), np.float32)
    per_element = np.array(per_element, dtype=np.float64).reshape(len(shapes), len(elements), n, n)
    return Rendered(shape=shapes, diffraction=diffraction_form_factors(per_element, elements, grid),
                    lost_atoms=np.array(lost_atoms, dtype=np.int64),
                    lost_electrons=np.array(lost_electrons, dtype=np.float64))
