"""One part file: opened once, written a sub-block of images at a time, closed and renamed.

The coordinates, attributes and small variables are laid out by xarray (so a part is the
same NetCDF-4 file `xarray.to_netcdf` would write); the images are then streamed into it with
netCDF4 directly, ``var[0, i:j] = block``, the cheapest per image (benchmarks/bench_write.py).
HDF5 is not thread-safe: every HDF5 call of the writers of a process holds `_WRITE_LOCK`
(xarray locks only its data writes, not its metadata calls) and, for the calls made here
directly, xarray's `HDF5_LOCK` too (which its readers take); only those calls, so other
threads render while one writes.
"""

from __future__ import annotations

import errno
import os
import shutil
import threading
from pathlib import Path

import netCDF4
import numpy as np
import xarray as xr
from xarray import conventions
from xarray.backends.locks import HDF5_LOCK

from .layout import IMAGE_VARS, SMALL_VARS

_WRITE_LOCK = threading.RLock()
DIMS = {"shape": ("molecule", "variant", "y", "x"), "diffraction": ("molecule", "variant", "qy", "qx"),
        "lost_atoms": ("molecule", "variant"), "lost_electrons": ("molecule", "variant")}


def filters(spec) -> dict:
    """netCDF4 keywords of one compression spec: None or 0 (raw), a zlib level, or
    ``(name, level)`` with a filter netCDF4 ships ("zlib", "zstd", "blosc_lz4", ...)."""
    if not spec:
        return {}
    name, level = ("zlib", int(spec)) if isinstance(spec, (int, np.integer)) else spec
    return {"compression": name, "complevel": int(level), "shuffle": True}


def encoding(image_shape: dict, compression: dict) -> dict:
    """xarray encodings: one HDF5 chunk per image, so reading one image reads one chunk.

    Every variable carries a Fletcher-32 checksum, so a corrupted chunk is an error on
    reading, not silent garbage.
    """
    enc, checksums = {}, compression.get("checksums", True)
    for var, (ny, nx) in image_shape.items():
        enc[var] = {"chunksizes": (1, 1, ny, nx), "fletcher32": checksums, **filters(compression.get(var))}
    for var in SMALL_VARS:
        enc[var] = {"fletcher32": checksums}
    return enc


class PartWriter:
    """Write one part: ``with PartWriter(path, header, ...) as w: w.write(i, shapes, patterns)``.

    Parameters
    ----------
    path : path-like
        The final file; it appears only once complete (written as a hidden temporary file,
        renamed by `close`).
    header : xarray.Dataset
        The part's coordinates and attributes, and its small variables (values filled in
        by `close`).
    image_attrs : dict
        Attributes of ``shape`` and ``diffraction``.
    compression : dict
        Per image variable, as `filters` takes it; ``"checksums": False`` leaves out the
        Fletcher-32 checksums (on by default).
    """

    def __init__(self, path, header: xr.Dataset, image_attrs: dict, compression: dict):
        self.final = Path(path)
        self.final.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = self.final.with_name(f".{self.final.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        self.nc = None
        try:
            self._create(header, image_attrs, compression)
        except BaseException:
            self.abort()
            raise

    def _create(self, header, image_attrs, compression):
        checksums = compression.get("checksums", True)
        with _WRITE_LOCK, HDF5_LOCK:
            self.nc = nc = netCDF4.Dataset(self.tmp, "w", format="NETCDF4")
            variables = write_variables(nc, header, SMALL_VARS if checksums else ())
            coords = variables[SMALL_VARS[0]].attrs.get("coordinates")
            for var in IMAGE_VARS:
                dims = DIMS[var]
                ny, nx = (len(nc.dimensions[d]) for d in dims[2:])
                v = nc.createVariable(var, "f4", dims, chunksizes=(1, 1, ny, nx), fletcher32=checksums,
                                      fill_value=np.float32(np.nan), **filters(compression.get(var)))
                v.setncatts({**image_attrs.get(var, {}), **({"coordinates": coords} if coords else {})})
        self.vars = {var: self.nc.variables[var] for var in IMAGE_VARS}

    def write(self, start: int, shapes: np.ndarray, patterns: np.ndarray) -> None:
        """Images ``start..start+len(shapes)-1`` of the part (in the part's own numbering)."""
        stop = start + len(shapes)
        with _WRITE_LOCK, HDF5_LOCK:
            self.vars["shape"][0, start:stop] = shapes
            self.vars["diffraction"][0, start:stop] = patterns

    def close(self, small: dict) -> int:
        """Write the small variables, close, rename into place; returns the file's size."""
        with _WRITE_LOCK, HDF5_LOCK:
            for var, values in small.items():
                self.nc.variables[var][0, :] = values
            self.nc.close()
            self.nc = None
        os.replace(self.tmp, self.final)
        return self.final.stat().st_size

    def abort(self) -> None:
        """Close and remove the temporary file (a failed or interrupted write)."""
        if self.nc is not None:
            with _WRITE_LOCK, HDF5_LOCK:
                try:
                    self.nc.close()
                except Exception:  # noqa: BLE001 - already failing; the file goes anyway
                    pass
            self.nc = None
        self.tmp.unlink(missing_ok=True)


def write_variables(nc, ds: xr.Dataset, checksummed=()) -> dict:
    """Write a dataset's dimensions, attributes and variables into an open netCDF4 file.

    xarray's own CF encoding (``coordinates`` attributes, fill values) written with netCDF4
    directly: the file ``ds.to_netcdf`` makes, at a fraction of its cost per variable, except
    that coordinates get no ``_FillValue`` (CF forbids it on coordinate variables). Call it
    with the HDF5 locks held. Returns the encoded variables.
    """
    variables, attrs = conventions.cf_encoder(*conventions.encode_dataset_coordinates(ds))
    nc.set_auto_maskandscale(False)
    for dim, n in ds.sizes.items():
        nc.createDimension(dim, n)
    nc.setncatts(attrs)
    for name, var in variables.items():
        _create_variable(nc, name, var, fletcher32=name in checksummed, fill=name not in ds.coords)
    return variables


def write_small_file(path, ds: xr.Dataset) -> None:
    """``ds.to_netcdf(path)`` for a dataset of small variables (an index), through
    `write_variables`."""
    with _WRITE_LOCK, HDF5_LOCK, netCDF4.Dataset(path, "w", format="NETCDF4") as nc:
        write_variables(nc, ds)


def _create_variable(nc, name: str, var, fletcher32: bool, fill: bool = True) -> None:
    """One CF-encoded variable (coordinate or small variable), values included; ``fill=False``:
    no ``_FillValue`` (a coordinate)."""
    attrs = dict(var.attrs)
    fill_value = attrs.pop("_FillValue", None)
    if not fill:
        fill_value = None
    if var.dtype.kind in "US":  # text: a variable-length string, as xarray writes it
        v = nc.createVariable(name, str, var.dims)
        v[...] = np.asarray(var.values, dtype=object)
    else:
        v = nc.createVariable(name, var.dtype, var.dims, fill_value=fill_value, fletcher32=fletcher32)
        v[...] = var.values
    v.setncatts(attrs)


def disk_error(err: RuntimeError, path: Path) -> OSError:
    """netCDF4 reports a failed HDF5 write (a full disk, a quota) as "NetCDF: HDF error": an
    OSError naming the part and the room left."""
    free = shutil.disk_usage(path.parent).free / 2**20
    return OSError(errno.EIO, f"writing {path.name} failed ({err}; {free:.1f} MiB free on its disk)")


def check_part(path: Path, n_variants: int | None = None, full: bool = False) -> str | None:
    """Why a part file is not usable (None when it is).

    The quick check opens the file and checks its variables and, given ``n_variants``, their
    sizes (a truncated HDF5 file does not open); ``full=True`` also reads every chunk, which
    verifies the checksums.
    """
    try:
        with HDF5_LOCK, netCDF4.Dataset(path) as nc:
            for var in IMAGE_VARS + SMALL_VARS:
                if var not in nc.variables:
                    return f"no variable '{var}'"
                if n_variants is not None and nc.variables[var].shape[:2] != (1, n_variants):
                    return f"'{var}' has shape {nc.variables[var].shape}, expected (1, {n_variants}, ...)"
                if full:
                    nc.variables[var][...]
    except (OSError, RuntimeError, IndexError, ValueError) as err:
        return " ".join(str(err).split()) or type(err).__name__
    return None


def read_small(path: Path) -> dict:
    """The small variables of a part, (variants,) each."""
    with HDF5_LOCK, netCDF4.Dataset(path) as nc:
        nc.set_auto_maskandscale(False)
        return {var: np.asarray(nc.variables[var][0]) for var in SMALL_VARS}
