"""Image metrics for shape reconstruction: mean squared error and SSIM (numpy)."""

from __future__ import annotations

import numpy as np
from scipy.ndimage import gaussian_filter


def mse(prediction, truth) -> float:
    """Mean squared error over all pixels (and images)."""
    p, t = np.asarray(prediction, np.float64), np.asarray(truth, np.float64)
    return float(np.mean((p - t) ** 2))


def ssim(prediction, truth, *, data_range: float | None = None, sigma: float = 1.5) -> float:
    """Structural similarity (Wang et al. 2004) of two images, or the mean over a stack.

    Gaussian-weighted local statistics (``sigma`` = 1.5 pixels, truncated at 3.5 sigma, as
    scikit-image's ``gaussian_weights=True``), ``K1 = 0.01``, ``K2 = 0.03``, sample covariances.

    Parameters
    ----------
    prediction, truth : array_like, (..., H, W)
    data_range : float, optional
        Dynamic range of the images; default the truth's max minus min (per image).
    """
    p, t = np.asarray(prediction, np.float64), np.asarray(truth, np.float64)
    if p.shape != t.shape:
        raise ValueError(f"images differ in shape: {p.shape} and {t.shape}")
    if p.ndim > 2:
        p2, t2 = p.reshape(-1, *p.shape[-2:]), t.reshape(-1, *t.shape[-2:])
        return float(np.mean([ssim(a, b, data_range=data_range, sigma=sigma) for a, b in zip(p2, t2)]))
    rng = float(t.max() - t.min()) if data_range is None else float(data_range)
    rng = rng or 1.0
    c1, c2 = (0.01 * rng) ** 2, (0.03 * rng) ** 2

    def blur(a):
        return gaussian_filter(a, sigma, truncate=3.5, mode="reflect")

    n = (2 * int(3.5 * sigma + 0.5) + 1) ** 2
    cov = n / (n - 1)  # sample covariance, as skimage
    mp, mt = blur(p), blur(t)
    vp = cov * (blur(p * p) - mp * mp)
    vt = cov * (blur(t * t) - mt * mt)
    vpt = cov * (blur(p * t) - mp * mt)
    s = ((2 * mp * mt + c1) * (2 * vpt + c2)) / ((mp ** 2 + mt ** 2 + c1) * (vp + vt + c2))
    pad = (int(3.5 * sigma + 0.5) * 2 + 1 - 1) // 2  # skimage crops the border of half a window
    return float(s[pad:-pad, pad:-pad].mean() if min(s.shape) > 2 * pad else s.mean())
