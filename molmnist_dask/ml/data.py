"""A PyTorch Dataset over a saved molmnist dataset: diffraction in, shape out, read lazily.

Each item reads its own two images (one pattern, one shape) and nothing else; the file or
store is opened lazily in each process that reads (each DataLoader worker opens its own), never
kept open in the parent. Splits are deterministic: held-out variants (every molecule is seen in
training, some of its variants are not) or held-out molecules (whole classes unseen).
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path

import dask.array as da
import numpy as np
import scipy.sparse
import torch
import xarray as xr

from ..errors import InputError

SPLITS = ("train", "val", "test", "all")
BY = ("variant", "molecule")
LOGS = ("log1p", "log10", None)
NORMALIZE = ("image", "dataset", None)
TARGET_SCALE = ("dataset", "image", None)


@dataclass(frozen=True)
class Stats:
    """Dataset statistics of the training split, for normalising every split alike.

    Attributes
    ----------
    mean, std : float
        Of the log-scaled (and cropped) diffraction over all training pixels.
    target_max : float
        Largest (resampled) shape pixel in the training split, electrons.
    """

    mean: float
    std: float
    target_max: float

    def asdict(self) -> dict:
        return asdict(self)


def split_items(n_molecules: int, n_variants: int, *, by: str = "variant",
                fractions=(0.8, 0.1, 0.1), seed: int = 0) -> dict:
    """Deterministic train/val/test split of (molecule, variant) pairs.

    Parameters
    ----------
    n_molecules, n_variants : int
    by : {"variant", "molecule"}
        Hold out variants (the same variant indices for every molecule) or whole molecules.
    fractions : (float, float, float)
        Train, validation and test fractions (normalised to sum 1). A non-zero fraction
        gets at least one variant or molecule.
    seed : int
        Seed of the permutation that assigns variants or molecules to splits.

    Returns
    -------
    dict
        ``{"train": items, "val": items, "test": items, "all": items}``, each an int array of
        (molecule, variant) rows sorted by molecule then variant.
    """
    if by not in BY:
        raise InputError(f"by must be 'variant' or 'molecule', got {by!r}")
    f = np.asarray(fractions, dtype=np.float64)
    if f.shape != (3,) or (f < 0).any() or not f.sum() > 0:
        raise InputError(f"fractions must be three non-negative numbers (train, val, test), got {fractions!r}")
    f = f / f.sum()
    n = n_variants if by == "variant" else n_molecules
    counts = np.floor(f * n + 0.5).astype(int)
    counts[(f > 0) & (counts == 0)] = 1
    counts[0] = n - counts[1:].sum()
    if counts[0] < (1 if f[0] > 0 else 0):
        raise InputError(f"cannot split {n} {by}s into fractions {tuple(fractions)}")
    order = np.random.default_rng(seed).permutation(n)
    groups = np.split(order, np.cumsum(counts)[:-1])
    out = {}
    for name, group in zip(("train", "val", "test"), groups):
        group = np.sort(group)
        if by == "variant":
            m, v = np.meshgrid(np.arange(n_molecules), group, indexing="ij")
        else:
            m, v = np.meshgrid(group, np.arange(n_variants), indexing="ij")
        out[name] = np.stack([m.ravel(), v.ravel()], axis=1).astype(np.int64)
    m, v = np.meshgrid(np.arange(n_molecules), np.arange(n_variants), indexing="ij")
    out["all"] = np.stack([m.ravel(), v.ravel()], axis=1).astype(np.int64)
    return out


def _resample_matrix(n: int, k: int) -> np.ndarray:
    """(k, n) weights of the overlap of k equal output pixels with n input pixels (sums kept)."""
    edges = np.linspace(0, n, k + 1)
    lo, hi = edges[:-1, None], edges[1:, None]
    pixel = np.arange(n)[None, :]
    return np.clip(np.minimum(hi, pixel + 1) - np.maximum(lo, pixel), 0, None)


def area_resample(image: np.ndarray, k: int) -> np.ndarray:
    """An (..., n, n) image binned to (..., k, k) by area overlap; the total is kept.

    For a shape this is a coarser detector: each output pixel holds the electrons that fall in it.
    """
    n = image.shape[-1]
    if k == n:
        return image
    # sparse (a few overlaps per row): no BLAS call, whose threads fight torch's on small CPUs
    r = scipy.sparse.csr_matrix(_resample_matrix(n, k))
    rows = np.moveaxis(image, -2, 0).reshape(n, -1)             # (n, ... * n)
    rows = np.moveaxis((r @ rows).reshape(k, *image.shape[:-2], n), 0, -2)  # (..., k, n)
    cols = np.moveaxis(rows, -1, 0).reshape(n, -1)
    return np.moveaxis((r @ cols).reshape(k, *rows.shape[:-1]), 0, -1)


def center_crop(pattern: np.ndarray, k: int) -> np.ndarray:
    """The central (k, k) of an fftshifted pattern, keeping q = 0 at index k // 2.

    The crop of a pattern is the pattern of the same field of view on a coarser grid (the low
    |q| a detector of k pixels sees), so it pairs with `area_resample` of the shape.
    """
    m = pattern.shape[-1]
    start = m // 2 - k // 2
    return pattern[..., start: start + k, start: start + k]


class DiffractionDataset(torch.utils.data.Dataset):
    """Diffraction patterns (input) and shapes (target) of a saved dataset, one item at a time.

    Parameters
    ----------
    path : path-like
        A store folder or ``.nc`` file written by `molmnist_dask.save_dataset`.
    split : {"train", "val", "test", "all"}
    by : {"variant", "molecule"}
        Hold out variants or whole molecules (`split_items`).
    fractions : (float, float, float)
        Train, validation and test fractions.
    seed : int
        Seed of the split.
    log : {"log1p", "log10", None}
        Log scaling of the diffraction: ``log1p(I)``, or ``log10(max(I, floor))``.
    floor : float
        Floor of ``log10`` scaling, in the pattern's units.
    normalize : {"image", "dataset", None}
        Standardise each input by its own mean and standard deviation, or by those of the
        training split (`Stats`), or not at all.
    target_scale : {"dataset", "image", None}
        Divide each shape by the training split's largest pixel, by its own, or not at all.
    stats : Stats or dict, optional
        Training statistics to use (pass ``train.stats`` to the validation and test sets);
        computed from the training split when needed and not given.
    size : int, optional
        Downsample: shapes are binned to ``size`` x ``size`` (`area_resample`) and patterns
        cropped to their central ``size * oversampling`` pixels (`center_crop`), the same
        field of view at the coarser resolution.
    return_label : bool
        Items are ``(x, y, label)`` instead of ``(x, y)``.

    Notes
    -----
    Items are float32 tensors of shape (1, H, W). `items` lists (molecule, variant) indices.
    """

    def __init__(self, path, split: str = "train", *, by: str = "variant", fractions=(0.8, 0.1, 0.1),
                 seed: int = 0, log: str | None = "log1p", floor: float = 1.0,
                 normalize: str | None = "dataset", target_scale: str | None = "dataset",
                 stats: Stats | dict | None = None, size: int | None = None,
                 return_label: bool = False):
        for name, value, allowed in (("split", split, SPLITS), ("log", log, LOGS),
                                     ("normalize", normalize, NORMALIZE),
                                     ("target_scale", target_scale, TARGET_SCALE)):
            if value not in allowed:
                raise InputError(f"{name} must be one of {', '.join(map(repr, allowed))}, got {value!r}")
        if not floor > 0:
            raise InputError(f"floor must be positive, got {floor!r}")
        self.path = Path(path)
        self.split, self.by, self.log, self.floor = split, by, log, float(floor)
        self.normalize, self.target_scale, self.return_label = normalize, target_scale, return_label
        self._ds, self._pid, self._reader = None, None, None
        ds = self._open_metadata()
        self.molecules = [str(m) for m in ds.molecule.values]
        self.labels = np.asarray(ds.label.values, dtype=np.int64)
        n, m = ds.sizes["x"], ds.sizes["qx"]
        if size is not None and (isinstance(size, bool) or not isinstance(size, (int, np.integer))
                                 or not 1 <= size <= n):
            raise InputError(f"size must be an integer from 1 to {n} (the shape's size), got {size!r}")
        self.size = int(size) if size is not None else n
        self.qsize = self.size * m // n
        self._full_qsize = m
        splits = split_items(len(self.molecules), ds.sizes["variant"], by=by, fractions=fractions, seed=seed)
        self.items = splits[split]
        self._train = splits["train"]
        if isinstance(stats, dict):
            stats = Stats(**stats)
        if stats is None and "dataset" in (normalize, target_scale):
            stats = self.compute_stats()
        self.stats = stats

    # -- files -------------------------------------------------------------------------------

    def _open_metadata(self) -> xr.Dataset:
        """Coordinates and sizes only: opened, read and closed (no image is read)."""
        from ..store import open_dataset

        if not self.path.exists():
            raise InputError(f"{self.path}: no such dataset")
        ds = open_dataset(self.path)
        for var in ("shape", "diffraction"):
            if var not in ds.variables:
                raise InputError(f"{self.path}: the dataset has no '{var}' variable")
        meta = ds.drop_vars(["shape", "diffraction"]).load()
        meta = meta.assign_coords(x=ds.x, qx=ds.qx)
        ds.close()
        _close_handles()
        return meta

    def dataset(self) -> xr.Dataset:
        """The lazy dataset, opened once per process (so each DataLoader worker opens its own)."""
        if self._ds is None or self._pid != os.getpid():
            from ..store import open_dataset

            self._ds, self._pid, self._reader = open_dataset(self.path), os.getpid(), None
        return self._ds

    def reader(self) -> "_Reader":
        """Direct reads of single images (no dask graph per item), opened once per process."""
        if self._reader is None or self._pid != os.getpid():
            self._ds, self._pid, self._reader = None, os.getpid(), _Reader(self.path)
        return self._reader

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_ds"], state["_pid"], state["_reader"] = None, None, None  # no open file to a worker
        return state

    # -- items -------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.items)

    def _crop(self) -> slice:
        start = self._full_qsize // 2 - self.qsize // 2
        return slice(start, start + self.qsize)

    def read(self, index: int):
        """The raw (cropped and binned, not scaled) pattern and shape of item ``index``."""
        m, v = (int(i) for i in self.items[index])
        reader, crop = self.reader(), self._crop()
        pattern = reader.read("diffraction", m, v, crop)
        shape = reader.read("shape", m, v, slice(None))
        return np.asarray(pattern, np.float64), area_resample(np.asarray(shape, np.float64), self.size)

    def transform_input(self, pattern: np.ndarray) -> np.ndarray:
        """Log scaling, then normalisation, as configured."""
        x = self._log(pattern)
        if self.normalize == "image":
            x = (x - x.mean()) / (x.std() + 1e-8)
        elif self.normalize == "dataset":
            x = (x - self.stats.mean) / (self.stats.std + 1e-8)
        return x

    def transform_target(self, shape: np.ndarray) -> np.ndarray:
        if self.target_scale == "dataset":
            return shape / self.stats.target_max
        if self.target_scale == "image":
            return shape / max(float(shape.max()), 1e-12)
        return shape

    def _log(self, pattern):
        if self.log == "log1p":
            return np.log1p(np.maximum(pattern, 0))
        if self.log == "log10":
            return np.log10(np.maximum(pattern, self.floor))
        return pattern

    def __getitem__(self, index: int):
        pattern, shape = self.read(index)
        x = torch.from_numpy(self.transform_input(pattern).astype(np.float32))[None]
        y = torch.from_numpy(self.transform_target(shape).astype(np.float32))[None]
        if self.return_label:
            return x, y, int(self.labels[self.items[index][0]])
        return x, y

    def label(self, index: int) -> int:
        """Class label (molecule index) of item ``index``."""
        return int(self.labels[self.items[index][0]])

    # -- statistics --------------------------------------------------------------------------

    def compute_stats(self) -> Stats:
        """`Stats` of the training split, read chunk by chunk with dask (then files closed)."""
        ds = self.dataset()
        crop = self._crop()
        m, v = self._train[:, 0], self._train[:, 1]
        patterns = ds["diffraction"].data.vindex[m, v][:, crop, crop]
        x = patterns.map_blocks(lambda b: self._log(b.astype(np.float64)), dtype=np.float64)
        shapes = ds["shape"].data.vindex[m, v]
        binned = shapes.map_blocks(lambda b: area_resample(b.astype(np.float64), self.size),
                                   chunks=shapes.chunks[:1] + ((self.size,), (self.size,)), dtype=np.float64)
        mean, sq, top = da.compute(x.mean(), (x * x).mean(), binned.max())
        ds.close()
        self._ds = None
        _close_handles()
        std = float(np.sqrt(max(sq - mean * mean, 0.0)))
        return Stats(mean=float(mean), std=std, target_max=float(top) or 1.0)


class _Reader:
    """Reads one image of a store (through its part files) or of a .nc file, nothing more."""

    def __init__(self, path: Path):
        self.path = path
        if path.is_file():
            self.file = xr.open_dataset(path, engine="netcdf4")  # lazy backend arrays, no dask
            self.arrays = None
        else:
            import json

            from ..parts import PartsArray
            from ..store import MANIFEST

            manifest = json.loads((path / MANIFEST).read_text())
            n_molecules = len(manifest["config"]["molecule"])
            self.file = xr.open_dataset(path / "index.nc", engine="netcdf4")
            sizes = {d: self.file.sizes[d] for d in ("y", "x", "qy", "qx")}
            self.file.close()
            self.arrays = {var: PartsArray(str(path.resolve()), var, manifest["blocks"], n_molecules,
                                           (sizes[a], sizes[b]), np.float32)
                           for var, (a, b) in (("shape", ("y", "x")), ("diffraction", ("qy", "qx")))}

    def read(self, var: str, m: int, v: int, crop: slice) -> np.ndarray:
        if self.arrays is None:
            return self.file[var].variable[m, v, crop, crop].values
        return self.arrays[var][m: m + 1, v: v + 1, crop, crop][0, 0]


def _close_handles() -> None:
    """Close part files this process opened, so forked workers inherit no open HDF5 file."""
    from ..parts import HANDLES

    HANDLES.clear()
