"""The image grid: size, field of view and oversampling, and the coordinates they give."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .errors import InputError


@dataclass(frozen=True)
class Grid:
    """A square real-space grid and its reciprocal grid.

    Parameters
    ----------
    size : int
        Pixels per side of the shape image.
    extent : float
        Side of the field of view in angstrom, centred on the origin.
    oversampling : int
        The shape is zero-padded to ``oversampling * size`` before the transform.
    """

    size: int = 200
    extent: float = 100.0
    oversampling: int = 1

    def __post_init__(self):
        if isinstance(self.size, bool) or not isinstance(self.size, (int, np.integer)) or self.size < 1:
            raise InputError(f"size must be a positive integer, got {self.size!r}")
        if not isinstance(self.extent, (int, float, np.number)) or not math.isfinite(self.extent) \
                or self.extent <= 0:
            raise InputError(f"extent must be a positive number of angstrom, got {self.extent!r}")
        if isinstance(self.oversampling, bool) or not isinstance(self.oversampling, (int, np.integer)) \
                or self.oversampling < 1:
            raise InputError(f"oversampling must be a positive integer, got {self.oversampling!r}")
        object.__setattr__(self, "size", int(self.size))
        object.__setattr__(self, "extent", float(self.extent))
        object.__setattr__(self, "oversampling", int(self.oversampling))

    @property
    def pixel(self) -> float:
        """Pixel side in angstrom."""
        return self.extent / self.size

    @property
    def qsize(self) -> int:
        """Pixels per side of the diffraction pattern."""
        return self.size * self.oversampling

    @property
    def edges(self) -> np.ndarray:
        """Bin edges in angstrom, as numpy.histogram2d makes them."""
        return np.linspace(-self.extent / 2, self.extent / 2, self.size + 1)

    @property
    def centers(self) -> np.ndarray:
        """Pixel centres in angstrom (the ``x`` and ``y`` coordinates)."""
        edges = self.edges
        return (edges[:-1] + edges[1:]) / 2

    @property
    def q(self) -> np.ndarray:
        """Spatial frequencies in cycles per angstrom (the ``qx`` and ``qy`` coordinates)."""
        return np.fft.fftshift(np.fft.fftfreq(self.qsize, d=self.pixel))

    def attrs(self) -> dict:
        """The grid as dataset attributes."""
        return {"grid_size": self.size, "grid_extent": self.extent,
                "pixel_size": self.pixel, "oversampling": self.oversampling}
