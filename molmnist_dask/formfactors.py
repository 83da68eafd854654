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
    return FormFactorPatterns(elements, grid)(images)


class FormFactorPatterns:
    """`diffraction_form_factors` for one set of elements on one grid: the form factors are
    tabulated once, on the half plane of |q| a real FFT gives, for any number of calls."""

    def __init__(self, elements, grid: Grid):
        self.m = m = grid.qsize
        q = q_magnitude(grid)[:, : m // 2 + 1]
        self.f0 = [form_factor(symbol, q) for symbol in elements]

    def __call__(self, images: np.ndarray) -> np.ndarray:
        """Patterns, float32 (frames, qsize, qsize), of images (frames, elements, size, size)."""
        m = self.m
        images = np.asarray(images, dtype=np.float64)
        amplitude = np.zeros((images.shape[0], m, m // 2 + 1), dtype=np.complex128)
        for e, f0 in enumerate(self.f0):
            amplitude += f0 * scipy.fft.rfft2(images[:, e], s=(m, m), workers=1)
        power = amplitude.real ** 2 + amplitude.imag ** 2
        # the other half by Hermitian symmetry (f0 is real and even in q, so F stays Hermitian)
        full = np.empty((images.shape[0], m, m), dtype=np.float64)
        h = m // 2 + 1
        full[..., :h] = power
        if m - h:
            cols = np.arange(h, m)
            rows = (-np.arange(m)) % m
            full[..., h:] = power[:, rows][:, :, (m - cols)]
        return np.fft.fftshift(full, axes=(-2, -1)).astype(np.float32)


def render_form_factors(positions, weights: np.ndarray, index: np.ndarray, elements, grid: Grid,
                        center: str | None = "geometry", rotations=None):
    """`render.render` with form-factor diffraction: same shapes and counts, other patterns.

    It runs the electron renderer's own per-frame loop (`render.frame_loop`: one workspace,
    each atom binned once), and counts each element's atoms per pixel from the same bins.

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
    rotations : ndarray, (frames, 3, 3), optional
        As `render.render` takes them.
    """
    from .render import Rendered, _Shapes, frame_loop

    n, m = grid.size, grid.qsize
    patterns = FormFactorPatterns(elements, grid)
    counts = _ElementCounts(index, len(elements), n)
    block = _Shapes(positions, n)
    out = []
    for i, image, n_lost, e_lost, flat in frame_loop(positions, weights, grid, center, rotations):
        block.add(i, image, n_lost, e_lost)
        out.append(patterns(counts(flat)[np.newaxis])[0])
    shapes, lost_atoms, lost_electrons = block.finish()
    diffraction = np.stack(out) if out else np.zeros((0, m, m), np.float32)
    return Rendered(shape=shapes, diffraction=diffraction, lost_atoms=lost_atoms,
                    lost_electrons=lost_electrons)


class _ElementCounts:
    """Atoms of each element per pixel, from the bins of a frame's atoms (bordered, raveled)."""

    def __init__(self, index: np.ndarray, n_elements: int, size: int):
        index = np.asarray(index)
        self.atoms = np.flatnonzero(index >= 0)  # atoms without an element scatter nothing
        self.area = (size + 2) ** 2
        self.offset = index[self.atoms] * self.area  # element e's image starts at e * area
        self.shape = (n_elements, size + 2, size + 2)
        self.buffer = np.empty(len(self.atoms), np.intp)

    def __call__(self, flat: np.ndarray) -> np.ndarray:
        """(elements, size, size) float64 counts."""
        combined = np.take(flat, self.atoms, out=self.buffer)
        combined += self.offset
        images = np.bincount(combined, minlength=self.shape[0] * self.area).reshape(self.shape)
        return images[:, 1:-1, 1:-1].astype(np.float64)
