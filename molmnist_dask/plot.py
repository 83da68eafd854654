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
from .validate import positive_int

FORMATS = ("png", "pdf")
DPI = 150
#: Diffraction galleries show this many decades below each figure's brightest pixel.
DECADES = 8


def gallery_variants(n_variants: int, rows: int) -> np.ndarray:
    """Variant indices evenly spread from the first to the last (at most ``n_variants``)."""
    positive_int("rows", rows)
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
             colorbar: str, axis_label: str, row_labels=None) -> Figure:
    """One column per molecule, one row per variant (labelled by ``row_labels`` if given)."""
    n_rows, n_cols = images.sizes["variant"], images.sizes["molecule"]
    y, x = images[ycoord].values, images[xcoord].values
    half_y, half_x = (y[1] - y[0]) / 2 if len(y) > 1 else 0.5, (x[1] - x[0]) / 2 if len(x) > 1 else 0.5
    extent = [x[0] - half_x, x[-1] + half_x, y[0] - half_y, y[-1] + half_y]
    panel = 1.25
    left = 0.9 if row_labels is None else 1.2
    fig = Figure(figsize=(left + panel * n_cols + 0.9, 0.7 + panel * n_rows + 0.6))
    grid = fig.add_gridspec(n_rows, n_cols, left=left / fig.get_figwidth(),
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
                label = f"variant {int(images.variant.values[r])}"
                if row_labels is not None:
                    label += f"\n{row_labels[r]}"
                ax.set_ylabel(label, fontsize=8)
    fig.suptitle(title, fontsize=11)
    fig.text(0.5, 0.2 / fig.get_figheight(), axis_label, ha="center", fontsize=8)
    cax = fig.add_axes([1 - 0.8 / fig.get_figwidth(), 0.6 / fig.get_figheight(), 0.12 / fig.get_figwidth(),
                        1 - 1.3 / fig.get_figheight()])
    fig.colorbar(mappable, cax=cax).set_label(colorbar, fontsize=8)
    return fig


def shape_gallery(ds: xr.Dataset, rows: int = 5) -> Figure:
    """Fig. 1: shapes, one column per molecule, rows from least to most twisted variant.

    Rows of the built-in cellulose fibrils are labelled by their twist (degrees per nm).
    """
    _need(ds, ["shape"])
    variants = gallery_variants(ds.sizes["variant"], rows)
    picked = ds["shape"].isel(variant=variants)
    images = picked.load()  # reads molecules x rows images, no more
    norm = Normalize(vmin=0, vmax=max(float(images.max()), 1e-12))
    fov = float(ds.x.values[-1] - ds.x.values[0] + (ds.x.values[1] - ds.x.values[0]))
    twists = cellulose_twists(ds)
    labels = None if twists is None else [f"{t:.2f}\u00b0/nm twist" for t in twists[variants]]
    rows_are = "variants from first (least twisted) to last" if twists is None else \
        "variants by twist, degrees per nm, from the straight crystal to the most twisted"
    return _gallery(images, "y", "x", norm, "magma",
                    "Shape images (electron count projected along z)", "electrons per pixel",
                    f"each panel: x (horizontal) and y (vertical) over a {fov:g} \u00c5 field of view, "
                    f"centred on the molecule; rows: {rows_are}", labels)


def cellulose_twists(ds: xr.Dataset):
    """Twist (degrees/nm) of each variant if every molecule is a built-in cellulose fibril
    made with the same settings (a ``.cellvar`` trajectory, or `molmnist synth`'s DCD with its
    ``synth.json``); else None."""
    from .cellulose.variants import twist_rate

    specs = [_cellulose_spec(path) for path in _trajectories(ds)]
    if not specs or any(s is None for s in specs) or len({tuple(sorted(s.items())) for s in specs}) > 1:
        return None
    frames = np.asarray(ds["frame"].values)
    if frames.ndim == 2:
        if not (frames == frames[:1]).all():
            return None
        frames = frames[0]
    spec = specs[0]
    return np.array([twist_rate(int(f), spec["variants"], spec["twist_max"]) for f in frames])


def _trajectories(ds: xr.Dataset) -> list:
    """Each molecule's first trajectory file, from a variable along molecule or the attributes."""
    if "trajectory" in ds.variables and ds["trajectory"].dims == ("molecule",):
        values = [str(v) for v in ds["trajectory"].values]
    else:
        values = ds.attrs.get("trajectory")
        if values is None:
            return []
        values = [values] if isinstance(values, str) else [str(v) for v in np.atleast_1d(values)]
    if len(values) != ds.sizes["molecule"]:
        return []
    return [v.split(",")[0].strip() for v in values]


def _cellulose_spec(path: str):
    """(variants, twist_max) of a built-in cellulose trajectory, or None for any other file."""
    import json

    try:
        if path.endswith(".cellvar"):
            from .cellulose.virtual import read_spec

            spec = read_spec(path)
        elif path.endswith(".dcd"):
            record = json.loads((Path(path).parent / "synth.json").read_text())
            spec = record["config"]
        else:
            return None
        return {"variants": int(spec["variants"]), "twist_max": float(spec["twist_max"])}
    except (OSError, ValueError, KeyError, TypeError, InputError):
        return None


def diffraction_gallery(ds: xr.Dataset, rows: int = 5, qmax: float | None = None) -> Figure:
    """Fig. 2: diffraction patterns on a log scale, laid out as `shape_gallery`.

    ``qmax`` (cycles per angstrom) crops each pattern to ``|qx|, |qy| <= qmax``, where the
    features of a molecule are; all of it by default.
    """
    _need(ds, ["diffraction"])
    pattern = ds["diffraction"]
    if qmax is not None:
        if not qmax > 0:
            raise InputError(f"qmax must be positive (cycles per angstrom), got {qmax!r}")
        pattern = pattern.sel(qy=slice(-qmax, qmax), qx=slice(-qmax, qmax))
        if pattern.sizes["qx"] < 2 or pattern.sizes["qy"] < 2:
            step = float(ds.qx.values[1] - ds.qx.values[0])
            raise InputError(f"qmax={qmax:g} keeps less than two pixels (the q step is {step:.3g} per angstrom)")
    images = pattern.isel(variant=gallery_variants(ds.sizes["variant"], rows)).load()
    vmax = float(images.max())
    positive = images.values[images.values > 0]
    vmin = max(vmax * 10.0 ** -DECADES, float(positive.min()) if positive.size else 1e-12)
    norm = LogNorm(vmin=vmin, vmax=max(vmax, vmin * 10), clip=True)
    shown = float(np.abs(images.qx.values).max())
    units = ds["diffraction"].attrs.get("units", "electrons^2").replace("^2", "\u00b2")
    twists = cellulose_twists(ds)
    labels = None if twists is None else \
        [f"{t:.2f}\u00b0/nm twist" for t in twists[gallery_variants(ds.sizes["variant"], rows)]]
    rows_are = "variants from first (least twisted) to last" if twists is None else \
        "variants by twist, degrees per nm, from the straight crystal to the most twisted"
    return _gallery(images, "qy", "qx", norm, "inferno", "Diffraction patterns |FFT2(shape)|\u00b2, log scale",
                    f"intensity ({units})",
                    f"each panel: q\u2093 (horizontal) and q\u1d67 (vertical) from {-shown:.3g} to "
                    f"{shown:.3g} cycles/\u00c5; rows: {rows_are}", labels)


MARKERS = ("o", "s", "^", "D", "v", "P", "X", "<", ">", "*")


def distribution_figure(ds: xr.Dataset, split: float | None = None) -> Figure:
    """Fig. 3, left: log-sum of low- against high-frequency intensity, one colour per molecule.

    No molecule hides under another: each has its own colour and hollow marker shape, and the
    two molecules whose clouds overlap most (6x6 and hex36, both 36 chains, in Molecular-MNIST)
    are shown again, magnified, in an inset.
    """
    import matplotlib

    features = distribution(ds, split=split).compute()
    split = features.attrs["split"]
    units = ds["diffraction"].attrs.get("units", "electrons^2").replace("^2", "\u00b2")
    fig = Figure(figsize=(7.2, 5.6))
    ax = fig.add_subplot()
    cmap = matplotlib.colormaps["tab10" if features.sizes["molecule"] <= 10 else "tab20"]
    points = {str(name): (features.sel(molecule=name, feature="high").values,
                          features.sel(molecule=name, feature="low").values)
              for name in features.molecule.values}
    style = {name: dict(marker=MARKERS[i % len(MARKERS)], color=cmap(i % cmap.N))
             for i, name in enumerate(points)}
    for name, (x, y) in points.items():
        _scatter(ax, x, y, style[name], label=name)
    ax.set_xlabel(f"log\u2081\u2080 \u03a3 I over |q| > {split:.3g} \u00c5\u207b\u00b9 (I in {units})")
    ax.set_ylabel(f"log\u2081\u2080 \u03a3 I over |q| \u2264 {split:.3g} \u00c5\u207b\u00b9 (I in {units})")
    ax.set_title("Data distribution: low- vs high-frequency intensity")
    ax.legend(title="molecule", fontsize=8, title_fontsize=8, markerscale=1.5, loc="upper left")
    ax.grid(alpha=0.3)
    pair = _most_overlapping(points)
    if pair is not None:
        _inset(ax, pair, points, style)
    fig.tight_layout()
    return fig


def _scatter(ax, x, y, style: dict, label=None) -> None:
    # hollow markers of different shapes: where clouds overlap, each still shows its outline
    ax.scatter(x, y, s=16, marker=style["marker"], facecolors="none", edgecolors=style["color"],
               linewidths=0.8, alpha=0.8, label=label)


def _most_overlapping(points: dict):
    """The two molecules whose clouds overlap most, if they overlap at all; else None."""
    names = list(points)
    best, pair = 1.0, None
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            (xa, ya), (xb, yb) = points[a], points[b]
            spread = np.hypot(np.std(np.r_[xa, xb]), np.std(np.r_[ya, yb])) + 1e-12
            gap = np.hypot(np.mean(xa) - np.mean(xb), np.mean(ya) - np.mean(yb)) / spread
            if gap < best:
                best, pair = gap, (a, b)
    return pair


def _inset(ax, pair, points: dict, style: dict) -> None:
    """Magnify the region where the two molecules of ``pair`` lie, in the lower right corner."""
    x = np.concatenate([points[n][0] for n in pair])
    y = np.concatenate([points[n][1] for n in pair])
    pad_x, pad_y = 0.08 * (np.ptp(x) or 1.0), 0.08 * (np.ptp(y) or 1.0)
    inset = ax.inset_axes([0.58, 0.05, 0.4, 0.4])
    for name in pair:
        _scatter(inset, *points[name], style[name])
    inset.set_xlim(x.min() - pad_x, x.max() + pad_x)
    inset.set_ylim(y.min() - pad_y, y.max() + pad_y)
    inset.tick_params(labelsize=6)
    inset.set_title(f"{pair[0]} and {pair[1]}, magnified", fontsize=7)
    ax.indicate_inset_zoom(inset, edgecolor="0.4")


def save(fig: Figure, stem: Path) -> list:
    """Write ``stem.png`` and ``stem.pdf``; returns their paths."""
    paths = []
    for ext in FORMATS:
        path = stem.with_suffix(f".{ext}")
        fig.savefig(path, dpi=DPI)
        paths.append(path)
    return paths


def plot_all(path, outdir, rows: int = 5, split: float | None = None,
             qmax: float | None = None) -> list:
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
    qmax : float, optional
        Crop the diffraction gallery to ``|q| <= qmax`` cycles per angstrom (each axis).

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
                       ("diffraction", lambda: diffraction_gallery(ds, rows, qmax)),
                       ("distribution", lambda: distribution_figure(ds, split))):
        written += save(make(), outdir / stem)
    return written
