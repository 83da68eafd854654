"""Batch reads of images from NetCDF-4 part files: every file opened once per process.

h5py reads one stored image (one HDF5 chunk) with the least overhead of the readers we
measured (benchmarks/bench_ml.py); a variable whose filter h5py lacks (zstd, in stores written
before deflate became the default) is read through netCDF4 instead, which carries it, and so
is everything where h5py is not installed.
"""

from __future__ import annotations

import os
import resource

import numpy as np


def _handle_limit() -> int:
    """How many part files to keep open: half the process's file descriptor limit."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return max(16, (soft if soft != resource.RLIM_INFINITY else 4096) // 2)


class _Part:
    """One open part file; reads images of a variable, with the netCDF4 fallback per variable."""

    def __init__(self, path: str):
        self.path = path
        self.h5, self.nc = None, None
        try:
            import h5py
        except ImportError:  # not installed: netCDF4 reads everything
            return
        self.h5 = h5py.File(path, "r")
        self.fallback, self.dsets = set(), {}

    def read(self, var: str, row: int, local, ys: slice, xs: slice, out: np.ndarray, at) -> None:
        """Images ``local`` (variant offsets in the file) of row ``row`` into ``out[at]``."""
        if self.h5 is not None and var not in self.fallback:
            dset = self.dsets.get(var)
            if dset is None:  # looking a variable up by name costs as much as a small read
                dset = self.dsets[var] = self.h5[var]
            try:
                for i, j in zip(local, at):
                    out[j] = dset[row, i, ys, xs]
                return
            except OSError:  # a filter h5py does not carry (zstd): netCDF4 does
                self.fallback.add(var)
        if self.nc is None:
            import netCDF4

            self.nc = netCDF4.Dataset(self.path)
            self.nc.set_auto_mask(False)
        for i, j in zip(local, at):
            out[j] = self.nc.variables[var][row, i, ys, xs]

    def close(self) -> None:
        if self.h5 is not None:
            self.h5.close()
        if self.nc is not None:
            self.nc.close()


class PartFiles:
    """The part files a process has open, by path; reopened in a forked child (DataLoader
    workers), never shared with it."""

    def __init__(self):
        self.pid = os.getpid()
        self.open = {}
        self.limit = _handle_limit()

    def get(self, path: str) -> _Part:
        if self.pid != os.getpid():  # a forked worker: its own handles, the parent's left alone
            self.pid, self.open = os.getpid(), {}
        part = self.open.get(path)
        if part is None:
            if len(self.open) >= self.limit:  # only past half the fd limit: close the oldest
                self.open.pop(next(iter(self.open))).close()
            part = self.open[path] = _Part(path)
        return part

    def close(self) -> None:
        if self.pid == os.getpid():
            for part in self.open.values():
                part.close()
        self.open = {}
