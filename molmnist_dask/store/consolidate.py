"""One NetCDF-4 file from a store, for sharing."""

from __future__ import annotations

import os
from pathlib import Path

import dask

from ..errors import InputError
from ..progress import compute_with_progress
from .layout import IMAGE_VARS
from .partfile import encoding


def consolidate(store, out, *, compression: dict | None = None, checksums: bool = True,
                progress: bool = True) -> Path:
    """Write a complete store as one NetCDF-4 file, image by image (bounded memory).

    Parameters
    ----------
    store : path-like
        A complete store folder.
    out : path-like
        The ``.nc`` file to write (written aside and renamed when complete).
    compression : dict, optional
        Per image variable, as `save_dataset` takes it; default its `DEFAULT_COMPRESSION`.
    checksums : bool
        Fletcher-32 checksums on every chunk.
    """
    from . import open_dataset
    from .write import DEFAULT_COMPRESSION

    out = Path(out)
    ds = open_dataset(store, chunks="image")
    enc = encoding({v: ds[v].shape[2:] for v in IMAGE_VARS}, {**DEFAULT_COMPRESSION, **(compression or {}), "checksums": checksums})
    enc.update({c: {"_FillValue": None} for c in ds.coords})  # CF: no _FillValue on coordinates
    tmp = out.with_name(f".{out.name}.tmp")
    try:
        job = ds.to_netcdf(tmp, engine="netcdf4", format="NETCDF4", encoding=enc, compute=False)
        # One file is written by one process: threads here, whatever cluster is active.
        with dask.config.set(scheduler="threads"):
            compute_with_progress([job], progress=progress, desc=f"consolidate {out.name}", local=True)
        os.replace(tmp, out)
    except (OSError, RuntimeError) as err:  # HDF5 reports a full disk as RuntimeError
        raise InputError(f"{out}: cannot write ({getattr(err, 'strerror', None) or err})") from None
    finally:
        if tmp.exists():
            tmp.unlink()
    return out
