"""The seed paper's figures from a saved dataset: shape gallery (Fig. 1), diffraction gallery
(Fig. 2) and data distribution (Fig. 3, left), as PNG and PDF.

Galleries read only the images they show, one at a time. The distribution reads every pattern
once, in contiguous reads of about `READ_BYTES` (within a part file of a store), and keeps
only two sums per pattern; `plot_all` caches those sums in the output folder, so plotting the
same dataset again (another ``qmax``, say) reads only the galleries' images. Rows are labelled
by the dataset's ``twist`` coordinate where it has one. Figures are drawn on plain matplotlib
`Figure` objects (Agg for PNG), never through pyplot's global state.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import xarray as xr
from matplotlib.colors import LogNorm, Normalize
from matplotlib.figure import Figure

from .analysis import check_split, q_radius
from .errors import InputError
from .validate import positive_int

FORMATS = ("png", "pdf")
DPI = 150
#: Diffraction galleries show this many decades below each figure's brightest pixel.
DECADES = 8
#: Bytes of images the distribution reads at once (a few hundred 200 px patterns).
READ_BYTES = 64 * 2**20


def intensity_units(ds: xr.Dataset) -> str:
    """What a pattern's pixels count, for axis labels: photons (with ``fluence``) or
    electrons squared (the CF units are "1"; the long_name says what is counted)."""
    return "photons" if "fluence" in ds.attrs else "electrons\u00b2"


def gallery_variants(n_variants: int, rows: int) -> np.ndarray:
    """Variant indices evenly spread from the first to the last (at most ``n_variants``)."""
    positive_int("rows", rows)
    return np.unique(np.round(np.linspace(0, n_variants - 1, min(rows, n_variants))).astype(int))


def _open(data) -> xr.Dataset:
    """A dataset as given, or a store or .nc file opened lazily without dask: indexing reads
    exactly the images asked for, and a slice of variants one contiguous range per part."""
    if isinstance(data, xr.Dataset):
        return data
    from .store import open_dataset

    return open_dataset(data, chunks=None)


def _need(ds: xr.Dataset, variables) -> None:
    for name in variables:
        if name not in ds.variables:
            raise InputError(f"the dataset has no '{name}' variable")


class _NoBar:
    def update(self, n=1):
        pass


def _images(array: xr.DataArray, variants, bar=None) -> xr.DataArray:
    """``array`` (molecule, variant, a, b) at ``variants``, read one image at a time (a lazy
    store reads each image alone), as (variant, molecule, a, b) in memory."""
    bar = bar or _NoBar()
    picked = array.isel(variant=variants)
    if picked.chunks is not None:  # dask: one computation, which reads (or renders) just these
        picked = picked.load()
        bar.update(picked.sizes["molecule"] * picked.sizes["variant"])
        return picked.transpose("variant", "molecule", *picked.dims[2:])
    values = np.empty((len(variants), array.sizes["molecule"], *picked.shape[2:]), array.dtype)
    for m in range(array.sizes["molecule"]):
        for r in range(len(variants)):
            values[r, m] = np.asarray(picked[m, r].values)
            bar.update(1)
    return xr.DataArray(values, dims=("variant", "molecule", *picked.dims[2:]),
                        coords={k: c for k, c in picked.coords.items()
                                if set(c.dims) <= {"variant", "molecule", *picked.dims[2:]}})


def row_labels(ds: xr.Dataset, variants) -> tuple:
    """Row labels from the dataset's ``twist`` coordinate (degrees/nm), and per-panel labels.

    Returns ``(rows, panels)``: where the molecules of every row share a twist, ``rows[r]``
    labels row ``r`` and ``panels`` is None; else ``rows`` is None and ``panels[r][m]`` labels
    each panel. Both are None without a ``twist`` coordinate (or where it is NaN throughout);
    a NaN twist (a molecule without the label) is an empty label.
    """
    if "twist" not in ds.coords:
        return None, None
    twist = ds["twist"].broadcast_like(ds["molecule"]).broadcast_like(ds["variant"])
    twist = twist.transpose("molecule", "variant").values[:, variants].T  # (rows, molecules)
    if np.isnan(twist).all():
        return None, None
    text = lambda t: "" if np.isnan(t) else f"{t:.2f}\u00b0/nm twist"  # noqa: E731
    uniform = np.array([np.nanmax(r) - np.nanmin(r) < 5e-3 if not np.isnan(r).all() else True
                        for r in twist])
    if uniform.all():
        return [text(np.nanmax(r)) if not np.isnan(r).all() else "" for r in twist], None
    return None, [[text(t) for t in r] for r in twist]


def _gallery(images: xr.DataArray, ycoord: str, xcoord: str, norm, cmap: str, title: str,
             colorbar: str, axis_label: str, labels=(None, None)) -> Figure:
    """One column per molecule, one row per variant; ``labels`` as `row_labels` returns them."""
    rows_text, panels_text = labels
    n_rows, n_cols = images.sizes["variant"], images.sizes["molecule"]
    y, x = images[ycoord].values, images[xcoord].values
    half_y, half_x = (y[1] - y[0]) / 2 if len(y) > 1 else 0.5, (x[1] - x[0]) / 2 if len(x) > 1 else 0.5
    extent = [x[0] - half_x, x[-1] + half_x, y[0] - half_y, y[-1] + half_y]
    panel = 1.25
    left = 0.9 if rows_text is None else 1.2
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
                if rows_text is not None and rows_text[r]:
                    label += f"\n{rows_text[r]}"
                ax.set_ylabel(label, fontsize=8)
            if panels_text is not None and panels_text[r][c]:
                ax.text(0.04, 0.04, panels_text[r][c].replace(" twist", ""), transform=ax.transAxes,
                        fontsize=6, color="white", va="bottom")
    fig.suptitle(title, fontsize=11)
    fig.text(0.5, 0.1 / fig.get_figheight(), axis_label, ha="center", va="bottom", fontsize=8, wrap=True)
    cax = fig.add_axes([1 - 0.8 / fig.get_figwidth(), 0.6 / fig.get_figheight(), 0.12 / fig.get_figwidth(),
                        1 - 1.3 / fig.get_figheight()])
    fig.colorbar(mappable, cax=cax).set_label(colorbar, fontsize=8)
    return fig


def _rows_are(labels) -> str:
    if labels == (None, None):
        return "variants from the first to the last"
    return "variants from the first to the last, with their twist (degrees per nm)"


def shape_gallery(ds: xr.Dataset, rows: int = 5, bar=None) -> Figure:
    """Fig. 1: shapes, one column per molecule, ``rows`` variants from the first to the last.

    Rows are labelled by the dataset's ``twist`` coordinate where it has one (`row_labels`).
    ``bar``: a progress bar (tqdm) advanced by each image read.
    """
    _need(ds, ["shape"])
    variants = gallery_variants(ds.sizes["variant"], rows)
    images = _images(ds["shape"], variants, bar)  # molecules x rows images, no more
    norm = Normalize(vmin=0, vmax=max(float(images.max()), 1e-12))
    fov = float(ds.x.values[-1] - ds.x.values[0] + (ds.x.values[1] - ds.x.values[0]))
    labels = row_labels(ds, variants)
    return _gallery(images, "y", "x", norm, "magma",
                    "Shape images (electron count projected along z)", "electrons per pixel",
                    f"each panel: x (horizontal) and y (vertical) over a {fov:g} \u00c5 field of view, "
                    f"centred on the molecule; rows: {_rows_are(labels)}", labels)


def diffraction_gallery(ds: xr.Dataset, rows: int = 5, qmax: float | None = None, bar=None) -> Figure:
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
    variants = gallery_variants(ds.sizes["variant"], rows)
    images = _images(pattern, variants, bar)
    vmax = float(images.max())
    positive = images.values[images.values > 0]
    vmin = max(vmax * 10.0 ** -DECADES, float(positive.min()) if positive.size else 1e-12)
    norm = LogNorm(vmin=vmin, vmax=max(vmax, vmin * 10), clip=True)
    shown = float(np.abs(images.qx.values).max())
    units = intensity_units(ds)
    labels = row_labels(ds, variants)
    return _gallery(images, "qy", "qx", norm, "inferno", "Diffraction patterns |FFT2(shape)|\u00b2, log scale",
                    f"intensity ({units})",
                    f"each panel: q\u2093 (horizontal) and q\u1d67 (vertical) from {-shown:.3g} to "
                    f"{shown:.3g} cycles/\u00c5; rows: {_rows_are(labels)}", labels)


def distribution_features(ds: xr.Dataset, split: float | None = None, bar=None) -> xr.DataArray:
    """`molmnist_dask.analysis.distribution`, computed here by reading every pattern once in
    contiguous reads of about `READ_BYTES` and keeping only two sums of each.

    Returns
    -------
    xarray.DataArray
        log10 of the summed intensity at ``|q| <= split`` ("low") and above ("high"), dims
        (molecule, variant, feature), in memory; ``attrs["split"]`` the split used.
    """
    _need(ds, ["diffraction"])
    pattern = ds["diffraction"].transpose("molecule", "variant", "qy", "qx")
    split = check_split(pattern, split)
    low = (q_radius(pattern) <= split).values.ravel()
    n_molecules, n_variants = pattern.sizes["molecule"], pattern.sizes["variant"]
    step = max(1, READ_BYTES // (pattern.dtype.itemsize * pattern.sizes["qy"] * pattern.sizes["qx"]))
    sums = np.empty((n_molecules, n_variants, 2))
    bar = bar or _NoBar()
    for m in range(n_molecules):
        for start in range(0, n_variants, step):
            block = np.asarray(pattern[m, start:start + step].values)
            flat = block.reshape(len(block), -1)
            inner = flat[:, low].sum(axis=1, dtype=np.float64)
            # high = all - low: a float64 sum of the whole image costs half a copy of its high part
            sums[m, start:start + len(block), 0] = inner
            sums[m, start:start + len(block), 1] = flat.sum(axis=1, dtype=np.float64) - inner
            bar.update(len(block))
    with np.errstate(divide="ignore"):
        values = np.log10(sums)
    units = intensity_units(ds)
    return xr.DataArray(values, dims=("molecule", "variant", "feature"),
                        coords={"molecule": pattern.molecule.values, "variant": pattern.variant.values,
                                "feature": ["low", "high"]},
                        name="distribution",
                        attrs={"split": split, "split_units": "cycles per angstrom",
                               "units": f"log10({units})"})


MARKERS = ("o", "s", "^", "D", "v", "P", "X", "<", ">", "*")


def distribution_figure(ds: xr.Dataset, split: float | None = None, features=None, bar=None) -> Figure:
    """Fig. 3, left: log-sum of low- against high-frequency intensity, one colour per molecule.

    No molecule hides under another: each has its own colour and hollow marker shape, and the
    two molecules whose clouds overlap most (6x6 and hex36, both 36 chains, in Molecular-MNIST)
    are shown again, magnified, in an inset. ``features``: `distribution_features` of ``ds``
    if already at hand (then nothing is read).
    """
    import matplotlib

    if features is None:
        features = distribution_features(ds, split, bar)
    split = features.attrs["split"]
    units = intensity_units(ds)
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


def _fingerprint(path) -> str | None:
    """Names, sizes and times of a store's or .nc file's files (nothing read); None for a
    dataset in memory."""
    if isinstance(path, xr.Dataset):
        return None
    path = Path(path).resolve()
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*.nc"))
    h = hashlib.sha256(str(path).encode())
    for f in files:
        st = f.stat()
        h.update(f"{f.relative_to(path.parent)}:{st.st_size}:{st.st_mtime_ns};".encode())
    return h.hexdigest()[:16]


def _cached_features(ds, path, outdir: Path, split: float, bar) -> xr.DataArray:
    """`distribution_features`, kept in ``outdir/.distribution-<key>.nc`` (key: the dataset's
    files and the split), so that plotting the same dataset again reads no pattern for it."""
    print_ = _fingerprint(path)
    if print_ is None:
        return distribution_features(ds, split, bar)
    key = hashlib.sha256(f"{print_}:{split!r}".encode()).hexdigest()[:12]
    cache = outdir / f".distribution-{key}.nc"
    try:
        with xr.open_dataarray(cache) as cached:
            return cached.load()
    except (OSError, ValueError, KeyError):
        pass
    features = distribution_features(ds, split, bar)
    for old in outdir.glob(".distribution-*.nc"):  # one cache per output folder
        old.unlink(missing_ok=True)
    tmp = outdir / f".{cache.name}.{os.getpid()}.tmp"
    try:
        features.to_netcdf(tmp)
        os.replace(tmp, cache)
    except OSError:
        tmp.unlink(missing_ok=True)
    return features


def plot_all(path, outdir, rows: int = 5, split: float | None = None,
             qmax: float | None = None, progress: bool = False) -> list:
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
    progress : bool
        A progress bar (stderr) over the images read.

    Returns
    -------
    list of pathlib.Path
        The files written.
    """
    from tqdm.auto import tqdm

    ds = _open(path)
    _need(ds, ["shape", "diffraction"])
    split = check_split(ds["diffraction"], split)
    outdir = Path(outdir)
    try:
        outdir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise InputError(f"{outdir}: cannot create the output folder ({err.strerror or err})") from None
    n_molecules, n_variants = ds.sizes["molecule"], ds.sizes["variant"]
    shown = n_molecules * len(gallery_variants(n_variants, rows))
    written = []
    with tqdm(total=2 * shown + n_molecules * n_variants, desc="molmnist plot: reading", unit="image",
              disable=not progress, mininterval=0.5) as bar:
        written += save(shape_gallery(ds, rows, bar), outdir / "shapes")
        written += save(diffraction_gallery(ds, rows, qmax, bar), outdir / "diffraction")
        features = _cached_features(ds, path, outdir, split, bar)
        bar.update(bar.total - bar.n)  # what the cache saved reading
        written += save(distribution_figure(ds, features=features), outdir / "distribution")
    return written
