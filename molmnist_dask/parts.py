"""Part files: one NetCDF-4 file per block, written by a worker, and the lazy array over them.

A store is a folder::

    OUT/molmnist.json       manifest: configuration, layout, completion
    OUT/index.nc            coordinates, attributes and the small variables (once complete)
    OUT/parts/MMMM-SSSSSSS-EEEEEEE.nc   molecule MMMM, variants SSSSSSS..EEEEEEE-1

Each part is a complete NetCDF file on its own (written aside, renamed when closed), so
many workers write in parallel without the lock that one shared HDF5 file would need.
"""

from __future__ import annotations

import errno
import os
import shutil
import threading
from collections import OrderedDict
from pathlib import Path

import dask
import netCDF4
import numpy as np
import xarray as xr
from xarray.backends.locks import HDF5_LOCK

IMAGE_VARS = ("shape", "diffraction")
SMALL_VARS = ("lost_atoms", "lost_electrons")
#: One part written at a time per process (see `write_part`).
_WRITE_LOCK = threading.Lock()


def part_name(molecule: int, start: int, stop: int) -> str:
    """File name of the part holding ``molecule``'s variants ``start..stop-1``."""
    return f"parts/{molecule:04d}-{start:07d}-{stop:07d}.nc"


def _filter(spec) -> dict:
    """Encoding keys of one compression spec: None or 0 (raw), a zlib level, or (name, level)
    with a filter netCDF4 ships ("zlib", "zstd", "blosc_lz4", ...)."""
    if not spec:
        return {}
    name, level = ("zlib", int(spec)) if isinstance(spec, (int, np.integer)) else spec
    return {"compression": name, "complevel": int(level), "shuffle": True}


def encoding(image_shape: dict, compression: dict) -> dict:
    """NetCDF encodings: one HDF5 chunk per image, so reading one image reads one chunk.

    ``compression`` maps a variable to its filter (see `_filter`). Every variable carries a
    Fletcher-32 checksum, so a corrupted chunk is an error on reading, not silent garbage.
    """
    enc = {}
    for var, (ny, nx) in image_shape.items():
        enc[var] = {"chunksizes": (1, 1, ny, nx), "fletcher32": True, **_filter(compression.get(var))}
    for var in SMALL_VARS:
        enc[var] = {"fletcher32": True}
    return enc


def write_part(path: str, arrays: dict, coords: dict, attrs: dict, compression: dict,
               variable_attrs: dict | None = None, shared_coords: dict | None = None) -> str:
    """Worker task: write one block to ``path`` atomically. Returns the path.

    Parameters
    ----------
    arrays : dict
        ``shape``, ``diffraction`` (1, k, n, n) and ``lost_atoms``, ``lost_electrons`` (1, k).
    coords : dict
        ``molecule``, ``label``, ``variant``, ``frame``, ``y``, ``x``, ``qy``, ``qx`` for the block.
    variable_attrs : dict, optional
        Attributes (units, long_name) of each variable.
    shared_coords : dict, optional
        Coordinates every block shares (``y``, ``x``, ``qy``, ``qx``): one object in the graph
        that all write tasks point to, rather than a copy in each.
    """
    dims = {"shape": ("molecule", "variant", "y", "x"),
            "diffraction": ("molecule", "variant", "qy", "qx"),
            "lost_atoms": ("molecule", "variant"), "lost_electrons": ("molecule", "variant")}
    variable_attrs = variable_attrs or {}
    ds = xr.Dataset({k: (dims[k], np.asarray(v), variable_attrs.get(k, {})) for k, v in arrays.items()},
                    coords={**(shared_coords or {}), **coords}, attrs=attrs)
    enc = encoding({v: ds[v].shape[2:] for v in IMAGE_VARS}, compression)
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".{final.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        # xarray locks only the data writes, not the metadata calls (createVariable, ...), so
        # two threads writing two files at once crash HDF5: one write at a time per process.
        # Within it, a process-local lock is all xarray needs; on a distributed worker it would
        # otherwise take scheduler-wide locks (round trips to the scheduler, ~0.1 s a part).
        with _WRITE_LOCK, dask.config.set(scheduler="synchronous"):
            ds.to_netcdf(tmp, engine="netcdf4", format="NETCDF4", encoding=enc)
        os.replace(tmp, final)
    except RuntimeError as err:
        # netCDF4 reports a failed HDF5 write (a full disk, a quota) as "NetCDF: HDF error":
        # an OSError naming the part and the room left, which save_dataset reports as such.
        free = shutil.disk_usage(final.parent).free / 2**20
        raise OSError(errno.EIO, f"writing {final.name} failed ({err}; {free:.1f} MiB free "
                                 "on its disk)") from None
    finally:
        if tmp.exists():
            tmp.unlink()
    return str(final)


def check_part(path: Path, n_variants: int, full: bool = False) -> str | None:
    """Why a part file is not usable (None when it is).

    The quick check opens the file and checks its variables and sizes (a truncated HDF5 file
    does not open); ``full=True`` also reads every chunk, which verifies the checksums.
    """
    try:
        with HDF5_LOCK, netCDF4.Dataset(path) as nc:
            for var in IMAGE_VARS + SMALL_VARS:
                if var not in nc.variables:
                    return f"no variable '{var}'"
                if nc.variables[var].shape[:2] != (1, n_variants):
                    return f"'{var}' has shape {nc.variables[var].shape}, expected (1, {n_variants}, ...)"
                if full:
                    nc.variables[var][...]
    except (OSError, RuntimeError, IndexError, ValueError) as err:
        return " ".join(str(err).split()) or type(err).__name__
    return None


class _Handles:
    """Open netCDF4 files, kept per process (at most `size`), shared by the reading threads."""

    def __init__(self, size: int = 64):
        self.size = size
        self.files: OrderedDict = OrderedDict()

    def get(self, path: str):
        """The open file at ``path``; call with `HDF5_LOCK` held, and read under it too."""
        nc = self.files.pop(path, None)
        if nc is None:
            nc = netCDF4.Dataset(path)
            nc.set_auto_mask(False)
            if len(self.files) >= self.size:
                self.files.popitem(last=False)[1].close()
        self.files[path] = nc
        return nc

    def clear(self):
        """Close every file, once no thread is reading (a read holds `HDF5_LOCK`)."""
        with HDF5_LOCK:
            while self.files:
                self.files.popitem()[1].close()


HANDLES = _Handles()


class PartsArray:
    """A lazy 4-D array (molecule, variant, a, b) over a store's part files.

    Indexing with slices reads only the parts and images it covers; `dask.array.from_array`
    wraps it so that a dataset opened from a store reads nothing until it is indexed.
    """

    def __init__(self, root: str, var: str, blocks, n_molecules: int, image_shape, dtype):
        self.root, self.var = root, var
        self.blocks = [tuple(b) for b in blocks]
        self.starts = np.array([b[0] for b in self.blocks])
        n_variants = self.blocks[-1][1]
        self.shape = (n_molecules, n_variants, *image_shape)
        self.dtype = np.dtype(dtype)
        self.ndim = 4

    def __getitem__(self, key):
        key = key if isinstance(key, tuple) else (key,)
        key = key + (slice(None),) * (4 - len(key))
        molecules = np.arange(self.shape[0])[key[0]]
        variants = np.arange(self.shape[1])[key[1]]
        images = [self._read(int(m), np.atleast_1d(variants), key[2], key[3])
                  for m in np.atleast_1d(molecules)]
        out = np.stack(images)
        if np.ndim(variants) == 0:
            out = out[:, 0]
        return out[0] if np.ndim(molecules) == 0 else out

    def _read(self, m: int, variants: np.ndarray, ky, kx) -> np.ndarray:
        """Images ``variants`` of molecule ``m``, each part read once over the range it covers."""
        part = np.searchsorted(self.starts, variants, side="right") - 1
        pieces = {}
        for p in np.unique(part):
            start, stop = self.blocks[p]
            local = variants[part == p] - start
            path = os.path.join(self.root, part_name(m, start, stop))
            with HDF5_LOCK:
                data = HANDLES.get(path).variables[self.var][0, local.min(): local.max() + 1, ky, kx]
            pieces[p] = np.asarray(data, dtype=self.dtype)[local - local.min()]
        counters = {p: 0 for p in pieces}
        out = []
        for p in part:  # back in the order asked for
            out.append(pieces[p][counters[p]])
            counters[p] += 1
        return np.stack(out) if out else np.zeros((0,), self.dtype)
