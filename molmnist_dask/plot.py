"""The seed paper's figures from a saved dataset: shape gallery (Fig. 1), diffraction gallery
(Fig. 2) and data distribution (Fig. 3, left), as PNG and PDF.

Galleries index the lazy dataset, so they read only the images they show; the distribution
reads every pattern once, chunk by chunk, through dask. Figures are drawn on plain matplotlib
`Figure` objects (Agg for PNG), never through pyplot's global state.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import xarray as xr
from matplotlib.colors import LogNorm, Normalize
from matplotlib.figure import Figure

from .analysis import default_split, distribution
from .errors import InputError

FORMATS = ("png", "pdf")
DPI = 150
#: Diffraction galleries show this many decades below each figure's brightest pixel.
DECADES = 8


def gallery_variants(n_variants: int, rows: int) -> np.ndarray:
    """Variant indices evenly spread from the first to the last (at most ``n_variants``)."""
    if isinstance(rows, bool) or not isinstance(rows, (int, np.integer)) or rows < 1:
        raise InputError(f"rows must be a positive integer, got {rows!r}")
    return np.unique(np.round(np.linspace(0, n_variants - 1, min(rows, n_variants))).astype(int))


def _open(data) -> xr.Dataset:
    if isinstance(data, xr.Dataset):
        return data
    from .store import open_dataset

    return open_dataset(data)


def _need(ds: xr.Dataset, variables) -> None:
    for name in variables:
        if name not in ds.variables:
            raise InputError(f"the dataset has no '{name}' variable")


def _gallery(images: xr.DataArray, ycoord: str, xcoord: str, norm, cmap: str, title: str,
             colorbar: str, axis_label: str) -> Figure:
    """One column per molecule, one row per variant."""
    n_rows, n_cols = images.sizes["variant"], images.sizes["molecule"]
    y, x = images[ycoord].values, images[xcoord].values
    half_y, half_x = (y[1] - y[0]) / 2 if len(y) > 1 else 0.5, (x[1] - x[0]) / 2 if len(x) > 1 else 0.5
    extent = [x[0] - half_x, x[-1] + half_x, y[0] - half_y, y[-1] + half_y]
    panel = 1.25
    fig = Figure(figsize=(0.9 + panel * n_cols + 0.9, 0.7 + panel * n_rows + 0.6))
    grid = fig.add_gridspec(n_rows, n_cols, left=0.9 / fig.get_figwidth(),
                            right=1 - 0.95 / fig.get_figwidth(), bottom=0.6 / fig.get_figheight(),
                            top=1 - 0.7 / fig.get_figheight(), wspace=0.06, hspace=0.06)
    values = images.transpose("variant", "molecule", ycoord, xcoord).values
    mappable = None
    for r in range(n_rows):
        for c in range(n_cols):
            ax = fig.add_subplot(grid[r, c])
            mappable = ax.imshow(values[r, c], origin="lower", extent=extent, norm=norm, cmap=cmap,
                                 interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(str(images.molecule.values[c]), fontsize=9)
            if c == 0:
                ax.set_ylabel(f"variant {int(images.variant.values[r])}", fontsize=8)
    fig.suptitle(title, fontsize=11)
    fig.text(0.5, 0.2 / fig.get_figheight(), axis_label, ha="center", fontsize=8)
    cax = fig.add_axes([1 - 0.8 / fig.get_figwidth(), 0.6 / fig.get_figheight(), 0.12 / fig.get_figwidth(),
                        1 - 1.3 / fig.get_figheight()])
    fig.colorbar(mappable, cax=cax).set_label(colorbar, fontsize=8)
    return fig


def shape_gallery(ds: xr.Dataset, rows: int = 5) -> Figure:
    """Fig. 1: shapes, one column per molecule, rows from least to most twisted variant."""
    _need(ds, ["shape"])
    picked = ds["shape"].isel(variant=gallery_variants(ds.sizes["variant"], rows))
    images = picked.load()  # reads molecules x rows images, no more
    norm = Normalize(vmin=0, vmax=max(float(images.max()), 1e-12))
    fov = float(ds.x.values[-1] - ds.x.values[0] + (ds.x.values[1] - ds.x.values[0]))
    return _gallery(images, "y", "x", norm, "magma",
                    "Shape images (electron count projected along z)", "electrons per pixel",
                    f"each panel: x (horizontal) and y (vertical) over a {fov:g} \u00c5 field of view, "
                    "centred on the molecule; rows: variants from first (least twisted) to last")


def diffraction_gallery(ds: xr.Dataset, rows: int = 5) -> Figure:
    """Fig. 2: diffraction patterns on a log scale, laid out as `shape_gallery`."""
    _need(ds, ["diffraction"])
    picked = ds["diffraction"].isel(variant=gallery_variants(ds.sizes["variant"], rows))
    images = picked.load()
    vmax = float(images.max())
    positive = images.values[images.values > 0]
    vmin = max(vmax * 10.0 ** -DECADES, float(positive.min()) if positive.size else 1e-12)
    norm = LogNorm(vmin=vmin, vmax=max(vmax, vmin * 10), clip=True)
    qmax = float(np.abs(ds.qx.values).max())
    units = ds["diffraction"].attrs.get("units", "electrons^2").replace("^2", "\u00b2")
    return _gallery(images, "qy", "qx", norm, "inferno", "Diffraction patterns |FFT2(shape)|\u00b2, log scale",
                    f"intensity ({units})",
                    f"each panel: q\u2093 (horizontal) and q\u1d67 (vertical) from {-qmax:.3g} to "
                    f"{qmax:.3g} cycles/\u00c5; rows: variants from first (least twisted) to last")


def distribution_figure(ds: xr.Dataset, split: float | None = None) -> Figure:
    """Fig. 3, left: log-sum of low- against high-frequency intensity, one colour per molecule."""
    features = distribution(ds, split=split).compute()
    split = features.attrs["split"]
    units = ds["diffraction"].attrs.get("units", "electrons^2").replace("^2", "\u00b2")
    fig = Figure(figsize=(6.4, 5.0))
    ax = fig.add_subplot()
    cmap = __import__("matplotlib").colormaps["tab10" if features.sizes["molecule"] <= 10 else "tab20"]
    for i, name in enumerate(features.molecule.values):
        f = features.sel(molecule=name)
        ax.scatter(f.sel(feature="high"), f.sel(feature="low"), s=10, alpha=0.75,
                   color=cmap(i % cmap.N), label=str(name), edgecolors="none")
    ax.set_xlabel(f"log\u2081\u2080 \u03a3 I over |q| > {split:.3g} \u00c5\u207b\u00b9 (I in {units})")
    ax.set_ylabel(f"log\u2081\u2080 \u03a3 I over |q| \u2264 {split:.3g} \u00c5\u207b\u00b9 (I in {units})")
    ax.set_title("Data distribution: low- vs high-frequency intensity")
    ax.legend(title="molecule", fontsize=8, title_fontsize=8, markerscale=1.8, loc="best")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def save(fig: Figure, stem: Path) -> list:
    """Write ``stem.png`` and ``stem.pdf``; returns their paths."""
    paths = []
    for ext in FORMATS:
        path = stem.with_suffix(f".{ext}")
        fig.savefig(path, dpi=DPI)
        paths.append(path)
    return paths


def plot_all(path, outdir, rows: int = 5, split: float | None = None) -> list:
    """Write the paper's three figures for a dataset, as PNG and PDF.

    Parameters
    ----------
    path : path-like or xarray.Dataset
        A store folder or ``.nc`` file (opened lazily), or a dataset.
    outdir : path-like
        Folder for ``shapes``, ``diffraction`` and ``distribution`` ``.png``/``.pdf``.
    rows : int
        Variants per molecule in the galleries, evenly spread from the first to the last.
    split : float, optional
        Low/high frequency split in cycles per angstrom (`molmnist_dask.analysis.distribution`);
        default `molmnist_dask.analysis.DEFAULT_SPLIT`, 1/(10 A).

    Returns
    -------
    list of pathlib.Path
        The files written.
    """
    ds = _open(path)
    _need(ds, ["shape", "diffraction"])
    if split is None:
        split = default_split(ds)
    outdir = Path(outdir)
    try:
        outdir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise InputError(f"{outdir}: cannot create the output folder ({err.strerror or err})") from None
    written = []
    for stem, make in (("shapes", lambda: shape_gallery(ds, rows)),
                       ("diffraction", lambda: diffraction_gallery(ds, rows)),
                       ("distribution", lambda: distribution_figure(ds, split))):
        written += save(make(), outdir / stem)
    return written
