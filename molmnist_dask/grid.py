"""The image grid: size, field of view and oversampling, and the coordinates they give."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .validate import positive_float, positive_int


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
        object.__setattr__(self, "size", positive_int("size", self.size))
        object.__setattr__(self, "extent", positive_float("extent", self.extent, "angstrom"))
        object.__setattr__(self, "oversampling", positive_int("oversampling", self.oversampling))

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
