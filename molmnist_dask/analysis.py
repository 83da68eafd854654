"""Analysis of a dataset's diffraction patterns, lazily with dask: the data distribution of the
seed paper's Fig. 3 (log-sum of low- against high-frequency intensities) and radial averages.

Both take a dataset as `molmnist_dask.open_dataset` or `build_dataset` return it (dask-backed)
and return labelled DataArrays that stay lazy until computed; nothing is loaded whole.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse
import xarray as xr

from .errors import InputError
from .validate import is_int, is_real

#: Default low/high frequency split, cycles per angstrom: 1/(10 A). Features larger than 10 A
#: (the fibril's outline, its overall size and twist) fall below it; chain packing (4-8 A
#: lattice spacings) and atomic detail above it. Being physical, it means the same on any grid.
DEFAULT_SPLIT = 0.1

_Q = ("qy", "qx")


def _diffraction(data, what: str) -> xr.DataArray:
    """The diffraction DataArray of a Dataset (or a DataArray itself), checked for q coordinates."""
    if isinstance(data, xr.Dataset):
        if "diffraction" not in data.variables:
            raise InputError(f"{what}: the dataset has no 'diffraction' variable")
        data = data["diffraction"]
    elif not isinstance(data, xr.DataArray):
        raise InputError(f"{what}: needs an xarray Dataset or DataArray, got {type(data).__name__}")
    for dim in _Q:
        if dim not in data.dims:
            raise InputError(f"{what}: the diffraction has no '{dim}' dimension (dims: {', '.join(map(str, data.dims))})")
        if dim not in data.coords:
            raise InputError(f"{what}: the diffraction has no '{dim}' coordinate")
    return data


def q_radius(data) -> xr.DataArray:
    """|q| of every pixel of the pattern, cycles per angstrom, as a (qy, qx) DataArray."""
    d = _diffraction(data, "q_radius")
    return np.hypot(d.qy, d.qx).rename("q")


def _nyquist(d: xr.DataArray) -> float:
    return float(min(np.abs(d.qy).max(), np.abs(d.qx).max()))


def default_split(data) -> float:
    """`DEFAULT_SPLIT`, or half the Nyquist frequency on grids too coarse to reach it."""
    d = _diffraction(data, "default_split")
    nyquist = _nyquist(d)
    return DEFAULT_SPLIT if DEFAULT_SPLIT < nyquist else nyquist / 2


def check_split(pattern, split) -> float:
    """``split`` (default: `default_split`) checked to lie inside the pattern's q range."""
    if split is None:
        return default_split(pattern)
    q_max = float(q_radius(pattern).max())
    if not is_real(split) or not 0 < split < q_max:
        raise InputError(f"split must be a radius in (0, {q_max:.4g}) cycles per angstrom, "
                         f"the dataset's q range; got {split!r}")
    return float(split)


def distribution(ds, split: float | None = None) -> xr.DataArray:
    """Log-sum of low- and high-frequency diffraction intensities per pattern (paper, Fig. 3).

    Parameters
    ----------
    ds : xarray.Dataset or DataArray
        With ``diffraction`` over (..., qy, qx) and its ``qy``, ``qx`` coordinates.
    split : float, optional
        Radius in cycles per angstrom: pixels with ``|q| <= split`` are low frequency, the
        others high. Default `DEFAULT_SPLIT` (1/(10 A)), or half the Nyquist frequency where
        the grid does not reach it.

    Returns
    -------
    xarray.DataArray
        ``log10`` of the summed intensities, dims (molecule, variant, feature) with
        ``feature = ["low", "high"]``; lazy if the diffraction is. The zero-frequency pixel
        (the squared electron count) is in the low sum.

    Raises
    ------
    InputError
        Without diffraction or its coordinates, or for a split outside the q range.
    """
    d = _diffraction(ds, "distribution")
    radius = q_radius(d)
    split = check_split(d, split)
    low = (radius <= split).astype(np.float64)
    intensity = d.astype(np.float64)
    sums = [xr.dot(intensity, mask, dim=list(_Q)) for mask in (low, 1 - low)]
    with np.errstate(divide="ignore"):
        out = np.log10(xr.concat(sums, dim="feature"))
    out = out.assign_coords(feature=["low", "high"]).transpose(*[x for x in d.dims if x not in _Q], "feature")
    out.name = "distribution"
    out.attrs = {"long_name": "log10 of summed diffraction intensity below (low) and above (high) "
                              "the split radius",
                 "units": f"log10({d.attrs.get('units', 'intensity')})",
                 "split": float(split), "split_units": "cycles per angstrom"}
    return out


def _edges(d: xr.DataArray, bins) -> np.ndarray:
    dq = min(float(np.abs(np.diff(d.qy.values)).min()), float(np.abs(np.diff(d.qx.values)).min())) \
        if d.sizes["qy"] > 1 and d.sizes["qx"] > 1 else 1.0
    nyquist = _nyquist(d)
    if bins is None:
        n = int(round(nyquist / dq))
        return np.concatenate([[0.0], (np.arange(n + 1) + 0.5) * dq])
    if is_int(bins):
        if bins < 1:
            raise InputError(f"bins must be a positive number of bins or increasing edges, got {bins!r}")
        return np.linspace(0.0, nyquist, int(bins) + 1)
    edges = np.asarray(bins, dtype=np.float64)
    if edges.ndim != 1 or len(edges) < 2 or not (np.diff(edges) > 0).all() or edges[0] < 0:
        raise InputError("bins must be a positive number of bins or increasing, non-negative edges "
                         "in cycles per angstrom")
    return edges


def radial_average(data, bins=None) -> xr.DataArray:
    """Azimuthal average of diffraction patterns over rings of |q|.

    Parameters
    ----------
    data : xarray.Dataset or DataArray
        A dataset with ``diffraction``, or a DataArray over (..., qy, qx) with coordinates.
    bins : int or sequence of float, optional
        Number of equal rings from 0 to the Nyquist frequency, or ring edges in cycles per
        angstrom. Default: rings one pixel wide centred on multiples of the q spacing, from
        the centre (a ring of the zero-frequency pixel alone) to the Nyquist frequency.

    Returns
    -------
    xarray.DataArray
        Mean intensity per ring, the (qy, qx) dims replaced by ``q`` (ring centres, cycles per
        angstrom, with ``q_low``, ``q_high`` and ``pixels`` per ring as coordinates); lazy if the input
        is. A ring holding no pixel is NaN.
    """
    d = _diffraction(data, "radial_average")
    edges = _edges(d, bins)
    radius = q_radius(d).values.ravel()
    n_rings = len(edges) - 1
    ring = np.searchsorted(edges, radius, side="right") - 1  # rings are [low, high), the last closed
    ring[radius == edges[-1]] = n_rings - 1
    inside = (ring >= 0) & (ring < n_rings)
    counts = np.bincount(ring[inside], minlength=n_rings).astype(np.float64)
    weights = np.divide(1.0, counts, out=np.full(n_rings, np.nan), where=counts > 0)
    # a sparse (pixels, rings) matrix of 1/count: one product averages every ring of a chunk
    matrix = scipy.sparse.csr_matrix((weights[ring[inside]], (np.flatnonzero(inside), ring[inside])),
                                     shape=(radius.size, n_rings))
    empty = counts == 0

    def average(images):
        flat = images.reshape(-1, radius.size).astype(np.float64)
        out = np.asarray(flat @ matrix)
        out[:, empty] = np.nan
        return out.reshape(images.shape[:-2] + (n_rings,))

    out = xr.apply_ufunc(average, d, input_core_dims=[list(_Q)], output_core_dims=[["q"]],
                         dask="parallelized", output_dtypes=[np.float64],
                         dask_gufunc_kwargs={"output_sizes": {"q": n_rings}})
    centres = (edges[:-1] + edges[1:]) / 2
    if bins is None:
        centres[0] = 0.0
    out = out.assign_coords(
        q=("q", centres, {"long_name": "ring centre |q|", "units": "angstrom-1"}),
        q_low=("q", edges[:-1], {"long_name": "ring inner edge", "units": "angstrom-1"}),
        q_high=("q", edges[1:], {"long_name": "ring outer edge", "units": "angstrom-1"}),
        pixels=("q", counts.astype(np.int64), {"long_name": "pixels in the ring", "units": "1"}))
    out.name = "radial_average"
    out.attrs = {"long_name": "azimuthally averaged diffraction intensity",
                 "units": d.attrs.get("units", "")}
    return out
