"""The store as an xarray backend: ``xr.open_dataset(store)`` wherever the package is installed.

`StoreBackend` is registered under the ``xarray.backends`` entry point as ``molmnist``; its
`guess_can_open` recognises a folder holding an ``index.nc``. The images stay in their part
files, behind `PartsArray` (an xarray `BackendArray`): nothing is read until it is indexed,
each part is read once per index over the range it covers, and the files are held by
xarray's own `CachingFileManager` (its LRU of open files, ``xr.set_options(file_cache_maxsize=)``).
"""

from __future__ import annotations

import os
from pathlib import Path

import netCDF4
import numpy as np
import xarray as xr
from xarray.backends import BackendArray, BackendEntrypoint, CachingFileManager
from xarray.backends.locks import HDF5_LOCK
from xarray.core import indexing

from ..errors import InputError
from .index import read_index
from .layout import IMAGE_VARS, INDEX

IMAGE_DIMS = {"shape": ("y", "x"), "diffraction": ("qy", "qx")}


class PartsArray(BackendArray):
    """One image variable (molecule, variant, a, b) over a store's part files, read lazily."""

    def __init__(self, root: str, var: str, parts: list, shape: tuple, dtype, files: dict):
        self.root, self.var = root, var
        self.shape, self.dtype = tuple(shape), np.dtype(dtype)
        by_molecule = {}
        for part in sorted(parts):
            by_molecule.setdefault(part.molecule, []).append(part)
        self.parts = by_molecule
        self.starts = {m: np.array([p.start for p in ps]) for m, ps in by_molecule.items()}
        self.files = files

    def __getitem__(self, key: indexing.ExplicitIndexer):
        return indexing.explicit_indexing_adapter(key, self.shape, indexing.IndexingSupport.OUTER,
                                                  self._read)

    def _read(self, key: tuple) -> np.ndarray:
        """Outer indexing: an int, a slice or a 1-D integer array on each axis."""
        molecules = np.arange(self.shape[0])[key[0]]
        variants = np.arange(self.shape[1])[key[1]]
        out = np.stack([self._molecule(int(m), np.atleast_1d(variants), key[2], key[3])
                        for m in np.atleast_1d(molecules)])
        if np.ndim(variants) == 0:
            out = out[:, 0]
        return out[0] if np.ndim(molecules) == 0 else out

    def _molecule(self, m: int, variants: np.ndarray, ky, kx) -> np.ndarray:
        """Images ``variants`` of molecule ``m``, each part read once over the range it covers."""
        parts = self.parts[m]
        which = np.searchsorted(self.starts[m], variants, side="right") - 1
        ny = len(range(self.shape[2])[ky]) if isinstance(ky, slice) else np.size(ky)
        nx = len(range(self.shape[3])[kx]) if isinstance(kx, slice) else np.size(kx)
        out = np.empty((len(variants), ny, nx), self.dtype)
        for p in np.unique(which):
            part, mine = parts[p], np.flatnonzero(which == p)
            local = variants[mine] - part.start
            lo, hi = int(local.min()), int(local.max()) + 1
            try:
                with HDF5_LOCK:
                    nc = self.files[part.name].acquire(needs_lock=False)
                    data = nc.variables[self.var][0, lo:hi, ky, kx]
            except (OSError, RuntimeError, KeyError, IndexError) as err:
                reason = " ".join(str(err).split()) or type(err).__name__
                raise InputError(f"{os.path.join(self.root, part.name)}: cannot read "
                                 f"'{self.var}' ({reason}); molmnist verify --repair, then build again") from None
            out[mine] = np.asarray(data, self.dtype).reshape(hi - lo, ny, nx)[local - lo]
        return out


def _open_raw(path: str, mode: str = "r") -> netCDF4.Dataset:
    """A part file whose variables read raw (no masking or scaling): set once when opened (or
    reopened after an eviction), not on every read."""
    nc = netCDF4.Dataset(path, mode=mode)
    nc.set_auto_maskandscale(False)
    return nc


def open_parts(root: Path, parts: list, token: str) -> dict:
    """A file manager per part (not yet opened).

    Each part is open at most once per process: the managers of one file share an id (the
    index's token and the path), so the two image variables, copies of the arrays and a second
    opening of the same store all share one handle (netCDF/HDF5 misbehave with one file open
    twice in a process). HDF5 is not thread-safe: the managers open, evict and close files
    under HDF5_LOCK, the lock every HDF5 reader and writer of xarray and of this package takes.
    """
    root = root.resolve()
    return {p.name: CachingFileManager(_open_raw, str(root / p.name), mode="r", lock=HDF5_LOCK,
                                       manager_id=f"molmnist:{token}:{root / p.name}") for p in parts}


def open_store(root, drop_variables=None) -> xr.Dataset:
    """A complete store as a lazy Dataset (images unread); an InputError names what is wrong."""
    root = Path(root)
    index = read_index(root)
    if index is None:
        raise InputError(f"{root}: not a molmnist store (no {INDEX})")
    missing = [p.name for p in index.parts if not (root / p.name).exists()]
    if not index.complete or missing:
        present = len(index.parts) - len(missing)
        named = f"; missing {missing[0]}" + (f" and {len(missing) - 1} more" if len(missing) > 1 else "") \
            if missing else ""
        raise InputError(f"{root}: incomplete store ({present}/{len(index.parts)} parts{named}); "
                         "run the same build again to resume it")
    ds = index.dataset
    n_molecules, n_variants = ds.sizes["molecule"], ds.sizes["variant"]
    files = open_parts(root, index.parts, index.token)
    for var in IMAGE_VARS:
        if var in (drop_variables or ()):
            continue
        dims = IMAGE_DIMS[var]
        shape = (n_molecules, n_variants, *(ds.sizes[d] for d in dims))
        array = PartsArray(str(root.resolve()), var, index.parts, shape, index.image_dtype[var], files)
        data = indexing.LazilyIndexedArray(array)
        ds[var] = xr.Variable(("molecule", "variant", *dims), data, index.image_attrs.get(var, {}))
        ds[var].encoding["preferred_chunks"] = {"molecule": 1, "variant": 1, dims[0]: shape[2], dims[1]: shape[3]}
    order = [v for v in IMAGE_VARS if v in ds] + [v for v in ds.data_vars if v not in IMAGE_VARS]
    out = ds[order]  # keeps only the coordinates along its variables' dimensions: add the rest
    out = out.assign_coords({k: c for k, c in ds.coords.items() if k not in out.coords})
    return out.drop_vars(list(drop_variables or ()), errors="ignore")


def is_store(path) -> bool:
    """Whether ``path`` is a folder with a store index."""
    try:
        return os.path.isdir(path) and os.path.isfile(os.path.join(path, INDEX))
    except TypeError:
        return False


class StoreBackend(BackendEntrypoint):
    """``xr.open_dataset(store, engine="molmnist")``: a molmnist-dask store folder."""

    description = "molmnist-dask stores: a folder of NetCDF-4 part files with an index.nc"
    url = "https://github.com/molmnist/molmnist-dask"
    open_dataset_parameters = ("filename_or_obj", "drop_variables")

    def open_dataset(self, filename_or_obj, *, drop_variables=None) -> xr.Dataset:
        return open_store(filename_or_obj, drop_variables)

    def guess_can_open(self, filename_or_obj) -> bool:
        return isinstance(filename_or_obj, (str, os.PathLike)) and is_store(filename_or_obj)
