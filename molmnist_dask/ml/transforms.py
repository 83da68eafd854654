"""Image transforms of the Dataset, applied to whole batches: binning, cropping, log scaling."""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import scipy.sparse

LOGS = ("log1p", "log10", None)


@lru_cache(maxsize=16)
def _resample_matrix(n: int, k: int, dtype: str) -> scipy.sparse.csr_matrix:
    """(k, n) overlaps of k equal output pixels with n input pixels (sums kept), sparse."""
    edges = np.linspace(0, n, k + 1)
    lo, hi = edges[:-1, None], edges[1:, None]
    pixel = np.arange(n)[None, :]
    weights = np.clip(np.minimum(hi, pixel + 1) - np.maximum(lo, pixel), 0, None)
    # sparse (a few overlaps per row): no BLAS call, whose threads fight torch's on small CPUs
    return scipy.sparse.csr_matrix(weights.astype(dtype))


def area_resample(image: np.ndarray, k: int) -> np.ndarray:
    """An (..., n, n) image binned to (..., k, k) by area overlap; the total is kept.

    For a shape this is a coarser detector: each output pixel holds the electrons that fall in
    it. float32 in, float32 out (any other dtype is computed in float64).
    """
    image = np.asarray(image)
    n = image.shape[-1]
    if k == n:
        return image
    dtype = "float32" if image.dtype == np.float32 else "float64"
    image = image.astype(dtype, copy=False)
    one = binning(n, k, dtype)
    stack = image.reshape(-1, n, n)
    out = np.empty((len(stack), k, k), dtype)
    for b, image_b in enumerate(stack):
        out[b] = one(image_b)
    return out.reshape(*image.shape[:-2], k, k)


def binning(n: int, k: int, dtype: str = "float32"):
    """A function that bins one (n, n) image of ``dtype`` to (k, k), as `area_resample` does."""
    r = _resample_matrix(n, k, dtype)
    # two small sparse products on contiguous rows: 2x faster than one product over a stack
    # of images, whose transposed copies cost more than the arithmetic
    return lambda image: (r @ (r @ image).T).T


def crop_slice(m: int, k: int) -> slice:
    """The central ``k`` of ``m`` fftshifted frequencies, keeping q = 0 at index k // 2."""
    start = m // 2 - k // 2
    return slice(start, start + k)


def center_crop(pattern: np.ndarray, k: int) -> np.ndarray:
    """The central (k, k) of an fftshifted pattern, keeping q = 0 at index k // 2.

    The crop of a pattern is the pattern of the same field of view on a coarser grid (the low
    |q| a detector of k pixels sees), so it pairs with `area_resample` of the shape.
    """
    s = crop_slice(pattern.shape[-1], k)
    return pattern[..., s, s]


def log_scale(pattern: np.ndarray, log: str | None, floor: float = 1.0) -> np.ndarray:
    """``log1p(max(I, 0))``, ``log10(max(I, floor))`` or ``I``, in the pattern's dtype."""
    if log == "log1p":
        # log(1 + I) rather than log1p(I): numpy's log is vectorised and its log1p is not (5x
        # here); for I >= 0 the two differ by under 1e-6, below float32's step at the result
        out = np.maximum(pattern, 0)
        out += 1
        return np.log(out, out=out)
    if log == "log10":
        return np.log10(np.maximum(pattern, pattern.dtype.type(floor)))
    return pattern
