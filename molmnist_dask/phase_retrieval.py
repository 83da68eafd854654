"""Iterative phase retrieval, the classical baseline for diffraction inversion (numpy FFTs).

Hybrid input-output (HIO, Fienup 1982) with a real, non-negative object, a support found from
the pattern's autocorrelation and tightened by shrink-wrap (Marchesini et al. 2003), finished
by error-reduction (ER) iterations. A pattern determines its object only up to a translation
and a point inversion (the "twin"); `align` removes both before an estimate is compared with
the truth.

The pattern must be oversampled (the object smaller than half the field in each direction,
``oversampling >= 2`` in `build_dataset`) for the phases to be determined; on patterns of
objects that fill more of the field, retrieval has too few constraints and may not converge.
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import gaussian_filter

from .errors import InputError


def _check(pattern) -> np.ndarray:
    pattern = np.asarray(pattern, dtype=np.float64)
    if pattern.ndim != 2 or pattern.shape[0] != pattern.shape[1]:
        raise InputError(f"phase retrieval needs one square pattern, got shape {pattern.shape}")
    return pattern


def autocorrelation_support(pattern, threshold: float = 0.04) -> np.ndarray:
    """A loose support: where the autocorrelation (inverse FFT of the pattern) exceeds
    ``threshold`` of its maximum; it holds the object wherever the object sits. Boolean, in
    the pattern's real-space layout (centre at n // 2)."""
    pattern = _check(pattern)
    auto = np.fft.fftshift(np.fft.ifft2(np.fft.ifftshift(pattern)).real)
    return auto > threshold * auto.max()


def retrieve(pattern, *, iterations: int = 200, beta: float = 0.9, er_iterations: int = 20,
             shrinkwrap_every: int = 20, sigma=(3.0, 1.0), threshold: float = 0.12, seed: int = 0,
             support=None) -> np.ndarray:
    """Retrieve a real, non-negative object from its far-field intensity.

    Parameters
    ----------
    pattern : ndarray, (n, n)
        ``fftshift(|FFT2(object)|**2)``, as the dataset's ``diffraction``.
    iterations : int
        Total iterations: HIO, then the last ``er_iterations`` as error reduction.
    beta : float
        HIO feedback.
    shrinkwrap_every : int
        Iterations between support updates (0: keep the starting support).
    sigma : (float, float)
        Shrink-wrap blur in pixels, from the first update to the last.
    threshold : float
        Shrink-wrap keeps pixels above this fraction of the blurred estimate's maximum.
    seed : int
        Seed of the random starting phases.
    support : ndarray of bool, optional
        Starting support (object layout, centre at n // 2); default `autocorrelation_support`.

    Returns
    -------
    ndarray, (n, n)
        The object, centre at ``n // 2`` (as the dataset's shapes), in the pattern's units'
        square root (electrons for electron-count patterns), up to translation and twin.
    """
    pattern = _check(pattern)
    n = pattern.shape[0]
    magnitude = np.sqrt(np.clip(np.fft.ifftshift(pattern), 0, None))
    s = autocorrelation_support(pattern) if support is None else np.asarray(support, bool)
    s = np.fft.ifftshift(s)  # work in FFT layout throughout
    rng = np.random.default_rng(seed)
    g = np.fft.ifft2(magnitude * np.exp(2j * np.pi * rng.random((n, n)))).real
    updates = max(1, (iterations - er_iterations) // shrinkwrap_every) if shrinkwrap_every else 1
    sigmas = np.geomspace(sigma[0], sigma[1], updates) if updates > 1 else np.array([sigma[1]])
    update = 0
    for it in range(iterations):
        spectrum = np.fft.fft2(g)
        gp = np.fft.ifft2(magnitude * np.exp(1j * np.angle(spectrum))).real
        good = s & (gp >= 0)
        if it >= iterations - er_iterations:
            g = np.where(good, gp, 0.0)  # error reduction
        else:
            g = np.where(good, gp, g - beta * gp)  # hybrid input-output
        if shrinkwrap_every and it < iterations - er_iterations and (it + 1) % shrinkwrap_every == 0:
            blurred = gaussian_filter(np.clip(g, 0, None), sigmas[min(update, len(sigmas) - 1)], mode="wrap")
            s = blurred > threshold * blurred.max()
            update += 1
    return np.fft.fftshift(np.clip(g, 0, None))


def align(estimate, truth) -> np.ndarray:
    """The translate of ``estimate`` or of its twin (point inversion) that best matches ``truth``.

    Circular cross-correlation picks the shift; the twin with the higher peak wins.
    """
    estimate, truth = np.asarray(estimate, np.float64), np.asarray(truth, np.float64)
    best, best_score = estimate, -np.inf
    ft = np.conj(np.fft.fft2(truth))
    for candidate in (estimate, np.roll(estimate[::-1, ::-1], 1, axis=(0, 1))):
        xcorr = np.fft.ifft2(np.fft.fft2(candidate) * ft).real
        shift = np.unravel_index(np.argmax(xcorr), xcorr.shape)
        if xcorr[shift] > best_score:
            best_score = xcorr[shift]
            best = np.roll(candidate, (-shift[0], -shift[1]), axis=(0, 1))
    return best
