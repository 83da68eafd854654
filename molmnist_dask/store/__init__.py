"""Saving and opening datasets: a store folder of NetCDF-4 part files with an index, or one
.nc file.

- `save_dataset`: one streaming task per part file (`write`), the index last (`index`);
- `open_dataset`: ``xr.open_dataset(store)`` through the package's xarray backend (`backend`);
- `consolidate`: one NetCDF file for sharing;
- `parts`, `locate`, `check`, `holds` and `check_output`: where each image lies, file by file, whether the files
  are sound, and whether a folder already holds a dataset (`catalog`), for readers that go
  to the files themselves (ml, info, verify) and the CLI;
- `read_index`: the store's manifest (completeness, part count, coordinates).

Only this subpackage knows how a store lies on disk (`layout`): code elsewhere in the package
uses the names of ``__all__`` and nothing else (tests/test_boundaries.py checks ml, info and
plot).
"""

from __future__ import annotations

from pathlib import Path

import xarray as xr

from ..errors import InputError
from .backend import is_store, not_a_store
from .catalog import MISSING, PartFile, check, check_output, holds, locate, parts  # noqa: F401 (PartFile: the records' type)
from .consolidate import consolidate
from .index import read_index
from .write import DEFAULT_COMPRESSION, save_dataset

__all__ = ["save_dataset", "open_dataset", "consolidate", "parts", "locate", "check", "holds",
           "check_output", "read_index",
           "MISSING", "DEFAULT_COMPRESSION"]


def open_dataset(path, *, chunks: str | None = "image") -> xr.Dataset:
    """Open a saved dataset lazily: nothing is read until it is indexed.

    The same as ``xr.open_dataset(path, chunks={})`` (a store folder, through this package's
    ``molmnist`` xarray backend, or a ``.nc`` file), with errors that name the file at fault.

    Parameters
    ----------
    path : path-like
        A store folder written by `save_dataset`, or a ``.nc`` file.
    chunks : {"image", "part", None}
        Dask chunks of the image variables: one image each (reading one image reads one),
        one part file each (faster for reading everything), or None for no dask at all
        (xarray's own lazy indexing).

    Returns
    -------
    xarray.Dataset
    """
    path = Path(path)
    if path.is_file():
        return _open_file(path, chunks)
    if path.is_dir() and not is_store(path):
        raise not_a_store(path)
    if not is_store(path):
        raise InputError(f"{path}: not a molmnist store or .nc file")
    if chunks == "part":
        index = read_index(path)
        sizes = [p.size for p in sorted(index.parts) if p.molecule == 0]
        return xr.open_dataset(path, engine="molmnist", chunks={"molecule": 1, "variant": tuple(sizes)})
    return xr.open_dataset(path, engine="molmnist", chunks=None if chunks is None else {})


def _open_file(path: Path, chunks) -> xr.Dataset:
    try:  # the on-disk chunks: one per image
        ds = xr.open_dataset(path, engine="netcdf4", chunks=None if chunks is None else {})
    except (OSError, ValueError) as err:
        raise InputError(f"{path}: cannot open as NetCDF ({' '.join(str(err).split())})") from None
    return ds
