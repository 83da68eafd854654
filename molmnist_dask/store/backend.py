"""The store as an xarray backend: ``xr.open_dataset(store)`` wherever the package is installed.

`StoreBackend` is registered under the ``xarray.backends`` entry point as ``molmnist``; its
`guess_can_open` recognises a folder holding an ``index.nc`` (or part files without one, to
say that the index is missing). The images stay in their part files, behind `PartsArray` (an
xarray `BackendArray`): nothing is read until it is indexed, every selection xarray can make
is exact, only the images asked for are read, and the files are held by xarray's own
`CachingFileManager` (its LRU of open files, ``xr.set_options(file_cache_maxsize=)``).
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
from .layout import IMAGE_VARS, INDEX, PARTS

IMAGE_DIMS = {"shape": ("y", "x"), "diffraction": ("qy", "qx")}


class PartsArray(BackendArray):
    """One image variable (molecule, variant, a, b) over a store's part files, read lazily.

    Indexing is exact for every key xarray sends (basic, outer, vectorized): xarray's
    `explicit_indexing_adapter` splits it into an outer read (`_read`) and a NumPy pass over
    what was read; vectorized keys are read pair by pair (`_pointwise`). A read touches
    only the images asked for: each stored image is one HDF5 chunk, and the variants of a
    part are read in runs of consecutive ones, never over the span between two scattered ones.
    """

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
        key = _no_empty_slices(key, self.shape)
        if isinstance(key, indexing.VectorizedIndexer) and all(isinstance(k, np.ndarray) for k in key.tuple):
            return self._pointwise(key.tuple)
        # OUTER: _read gets an int, a slice or a 1-D integer array per axis; xarray indexes
        # the result again in memory where it simplified the key (negative steps, unsorted
        # or repeated arrays)
        return indexing.explicit_indexing_adapter(key, self.shape, indexing.IndexingSupport.OUTER, self._read)

    def _pointwise(self, key: tuple) -> np.ndarray:
        """Vectorized indexing (integer arrays on every axis, broadcast together, as xarray's
        lazy arrays send it): only the (molecule, variant) pairs asked for are read, where an
        outer read would take every variant named for every molecule named."""
        shape = np.broadcast_shapes(*(k.shape for k in key))
        if not np.prod(shape):
            return np.empty(shape, self.dtype)
        # xarray sends the arrays broadcast to the full result (a pair index per pixel)
        molecules, variants, ys, xs = (np.arange(n)[_squeezed(k)] for k, n in zip(key, self.shape))
        codes = np.ravel_multi_index(np.broadcast_arrays(molecules, variants), self.shape[:2])
        pairs, which = np.unique(codes, return_inverse=True)
        (ybox, _), (xbox, _) = _box(ys.ravel()), _box(xs.ravel())
        images = np.empty((len(pairs), ybox.stop - ybox.start, xbox.stop - xbox.start), self.dtype)
        for m, mine in _by_molecule(pairs, self.shape[1]):
            images[mine] = self._read((m, pairs[mine] % self.shape[1], ybox, xbox))
        out = images[which.reshape(codes.shape), ys - ybox.start, xs - xbox.start]
        return out if out.shape == shape else np.broadcast_to(out, shape).copy()  # axes all keys repeat along

    def _read(self, key: tuple) -> np.ndarray:
        """Outer indexing, as NumPy's ``oindex``: an integer drops its axis, a slice (any step)
        or an integer array (any order, repeats, negatives) keeps it."""
        picks = [np.atleast_1d(np.arange(n)[k]) for k, n in zip(key, self.shape)]
        out = np.empty(tuple(len(p) for p in picks), self.dtype)
        if out.size:
            molecules, variants, ys, xs = picks
            (ybox, yin), (xbox, xin) = _box(ys), _box(xs)
            for m in np.unique(molecules):
                images = self._molecule(int(m), variants, ybox, xbox)
                if yin is not None:
                    images = images[:, yin]
                if xin is not None:
                    images = images[:, :, xin]
                out[molecules == m] = images
        return out[tuple(0 if _is_int(k) else slice(None) for k in key)]

    def _molecule(self, m: int, variants: np.ndarray, ybox: slice, xbox: slice) -> np.ndarray:
        """Images ``variants`` (any order, repeats) of molecule ``m`` over ``ybox, xbox``;
        each distinct image read once."""
        wanted, back = np.unique(variants, return_inverse=True)
        out = np.empty((len(wanted), ybox.stop - ybox.start, xbox.stop - xbox.start), self.dtype)
        which = np.searchsorted(self.starts[m], wanted, side="right") - 1
        for p in np.unique(which):
            part, mine = self.parts[m][p], np.flatnonzero(which == p)
            out[mine] = self._read_part(part, wanted[mine] - part.start, ybox, xbox)
        return out[back.ravel()]

    def _read_part(self, part, local: np.ndarray, ybox: slice, xbox: slice) -> np.ndarray:
        """Images ``local`` (sorted, distinct, numbered within the part), one read per run of
        consecutive ones."""
        runs = np.split(local, np.flatnonzero(np.diff(local) != 1) + 1)
        try:
            # HDF5 is not thread-safe: files are acquired (opened if evicted) and read under
            # HDF5_LOCK; the context keeps the file open while read, even if evicted meanwhile
            with HDF5_LOCK, self.files[part.name].acquire_context(needs_lock=False) as nc:
                variable = nc.variables[self.var]
                return np.concatenate([self._read_run(variable, int(run[0]), int(run[-1]) + 1, ybox, xbox)
                                       for run in runs])
        except (OSError, RuntimeError, KeyError, IndexError) as err:
            reason = " ".join(str(err).split()) or type(err).__name__
            raise InputError(f"{os.path.join(self.root, part.name)}: cannot read "
                             f"'{self.var}' ({reason}); molmnist verify --repair, then build again") from None

    @staticmethod
    def _read_run(variable, lo: int, hi: int, ybox: slice, xbox: slice) -> np.ndarray:
        """Variants ``lo..hi-1`` of a part's variable over ``ybox, xbox``: one HDF5 chunk per image."""
        return variable[0, lo:hi, ybox, xbox]


def _no_empty_slices(key: indexing.ExplicitIndexer, shape: tuple) -> indexing.ExplicitIndexer:
    """``key`` with its empty slices as ``slice(0, 0)``: xarray's decomposition fails on an
    empty one of negative step (``isel(variant=slice(0, 0, -1))``, IndexError in
    ``_decompose_slice``; its netCDF4 backend fails the same)."""
    empty = [isinstance(k, slice) and not len(range(*k.indices(n))) for k, n in zip(key.tuple, shape)]
    if not any(empty):
        return key
    return type(key)(tuple(slice(0, 0) if e else k for k, e in zip(key.tuple, empty)))


def _squeezed(key: np.ndarray) -> np.ndarray:
    """``key`` cut to length 1 along each axis it is constant along (it broadcasts back)."""
    for axis in range(key.ndim):
        first = key[(slice(None),) * axis + (slice(0, 1),)]
        if key.shape[axis] > 1 and (key == first).all():
            key = first
    return key


def _by_molecule(pairs: np.ndarray, n_variants: int):
    """``(molecule, positions in pairs)`` of sorted flat (molecule, variant) codes."""
    molecules = pairs // n_variants
    for m in np.unique(molecules):
        yield int(m), np.flatnonzero(molecules == m)


def _is_int(key) -> bool:
    return isinstance(key, (int, np.integer))


def _box(positions: np.ndarray) -> tuple:
    """The step-1 slice covering ``positions`` (what is read: a sub-box of each image's one
    chunk), and the positions within it (None: all of it, in order)."""
    lo, hi = int(positions.min()), int(positions.max()) + 1
    local = positions - lo
    return slice(lo, hi), None if len(local) == hi - lo and (np.diff(local) == 1).all() else local


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
        raise not_a_store(root)
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


def has_parts(path) -> bool:
    """Whether ``path`` is a folder holding store part files (with or without an index)."""
    try:
        return any(Path(path, PARTS).glob("[0-9][0-9][0-9][0-9]-*-*.nc"))
    except (TypeError, OSError):
        return False


def not_a_store(path) -> InputError:
    """The error for a folder that is not a store; one with part files but no index (a build
    killed before it wrote one, or an index deleted) says how to go on."""
    if has_parts(path):
        return InputError(f"{path}: no {INDEX}: an interrupted build? run it again, or open the parts with "
                          f'xr.open_mfdataset("{Path(path, PARTS)}/*.nc", combine="by_coords").sortby("label")')
    return InputError(f"{path}: not a molmnist store (no {INDEX})")


class StoreBackend(BackendEntrypoint):
    """``xr.open_dataset(store, engine="molmnist")``: a molmnist-dask store folder."""

    description = "molmnist-dask stores: a folder of NetCDF-4 part files with an index.nc"
    url = "https://github.com/molmnist/molmnist-dask"
    open_dataset_parameters = ("filename_or_obj", "drop_variables")

    def open_dataset(self, filename_or_obj, *, drop_variables=None) -> xr.Dataset:
        return open_store(filename_or_obj, drop_variables)

    def guess_can_open(self, filename_or_obj) -> bool:
        # a folder of parts without its index is claimed too, to say so (`not_a_store`)
        return isinstance(filename_or_obj, (str, os.PathLike)) and (is_store(filename_or_obj)
                                                                   or has_parts(filename_or_obj))
