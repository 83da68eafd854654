"""Batch reads of images from NetCDF-4 part files: every file opened once per process.

Each stored image is one HDF5 chunk, read and decoded by `chunks.Chunks` (the least overhead
of the readers measured in benchmarks/bench_ml.py); images whose filters it does not decode are
read with h5py; a variable whose filter h5py lacks too (zstd, in stores written before deflate
became the default) is read through netCDF4, which carries it, and so is everything where h5py
is not installed.
"""

from __future__ import annotations

import os
import resource
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from ..errors import InputError
from .chunks import ChunkError, Chunks, open_fd


#: Held around every h5py and netCDF4 call: netCDF4 is not thread-safe (h5py serialises its
#: own calls anyway). Chunks are read and decoded without it.
_LIBRARIES = threading.RLock()


def _new_library_lock() -> None:  # a forked child (a DataLoader worker) starts unlocked
    global _LIBRARIES
    _LIBRARIES = threading.RLock()


os.register_at_fork(after_in_child=_new_library_lock)


def _handle_limit() -> int:
    """How many part files to keep open: a third of the file descriptor limit (each holds up
    to three: h5py's, netCDF4's and the one chunks are read with), after raising the soft limit
    towards the hard one (often 1,024 of 524,288: too few for a store of thousands of parts)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 65536 if hard == resource.RLIM_INFINITY else min(hard, 65536)
    if soft != resource.RLIM_INFINITY and soft < want:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
            soft = want
        except (ValueError, OSError):  # not allowed here: live with the soft limit
            pass
    return max(16, (soft if soft != resource.RLIM_INFINITY else 4096) // 3)


def default_threads() -> int:
    """Threads that decode a batch: the cores this process may use, at most 4; one inside a
    DataLoader worker (the workers are the parallelism there)."""
    import torch.utils.data

    if torch.utils.data.get_worker_info() is not None:
        return 1
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, min(4, cores or 1))


class _Part:
    """One open part file; reads the images of a variable as chunks decoded here (`Chunks`)
    where it can, else through h5py, else (a filter h5py lacks, or no h5py) through netCDF4."""

    def __init__(self, path: str):
        self.path = path
        self.h5, self.nc, self.fd = None, None, None
        self.readers = {}
        try:
            import h5py
        except ImportError:  # not installed: netCDF4 reads everything
            return
        with _LIBRARIES:
            self.h5 = h5py.File(path, "r")

    def read(self, var: str, row: int, local, out: np.ndarray, at, fit=None,
             rows: slice = slice(None)) -> None:
        """Images ``local`` (variant offsets in the file) of row ``row`` into ``out[at]``: their
        ``rows``, each through ``fit`` (a crop, a binning) if given."""
        dset, chunks = self._reader(var)
        for i, j in zip(local, at):
            try:
                image = self._image(dset, chunks, row, int(i), rows)
            except (OSError, RuntimeError) as e:  # what HDF5 will not return: a corrupt image
                raise InputError(f"{self.path}: cannot read {var}[{row}, {i}]: {e}") from None
            out[j] = image if fit is None else fit(image)

    @staticmethod
    def _image(dset, chunks, row: int, i: int, rows: slice) -> np.ndarray:
        if chunks is not None and chunks.stored(row, i):
            try:
                return chunks.image(row, i, rows)
            except ChunkError:  # h5py decides, by HDF5's rules (and raises if corrupt)
                pass
        with _LIBRARIES:
            return dset[row, i, rows]

    def _reader(self, var: str) -> tuple:
        """(what reads an image with ``[row, i, ys, xs]``, the variable's `Chunks` or None),
        looked up once: looking a variable up by name costs as much as a small read."""
        if var not in self.readers:
            with _LIBRARIES:
                if var not in self.readers:
                    self.readers[var] = self._h5(var) or (self._netcdf4().variables[var], None)
        return self.readers[var]

    def _h5(self, var: str):
        if self.h5 is None:
            return None
        import h5py

        dset = self.h5[var]
        plist = dset.id.get_create_plist()
        if not all(h5py.h5z.filter_avail(plist.get_filter(k)[0]) for k in range(plist.get_nfilters())):
            return None  # zstd, without a plugin: netCDF4 carries it
        if self.fd is None:
            self.fd = open_fd(self.path)
        return dset, Chunks.of(dset, self.fd)

    def _netcdf4(self):
        if self.nc is None:
            import netCDF4

            self.nc = netCDF4.Dataset(self.path)
            self.nc.set_auto_mask(False)
        return self.nc

    def close(self) -> None:
        with _LIBRARIES:
            for handle in (self.h5, self.nc):
                if handle is not None:
                    handle.close()
        if self.fd is not None:
            os.close(self.fd)
        self.h5 = self.nc = self.fd = None


class PartFiles:
    """The part files a process has open, by path, and the threads that read them; reopened in
    a forked child (DataLoader workers), never shared with it."""

    def __init__(self):
        self.pid = os.getpid()
        self.open, self.retired = {}, []
        self.limit = _handle_limit()
        self.lock = threading.Lock()
        self.pool = None

    def get(self, path: str) -> _Part:
        """The open part file at ``path`` (opened now if it is not)."""
        self._forked()
        with self.lock:
            part = self.open.get(path)
            if part is None:
                if len(self.open) >= self.limit:  # only past the limit: retire the oldest
                    self.retired.append(self.open.pop(next(iter(self.open))))
                part = self.open[path] = _Part(path)
            return part

    def map(self, fn, jobs: list, threads: int) -> None:
        """``fn(job)`` for every job, on up to ``threads`` threads; then the files retired
        meanwhile are closed (no thread reads them any more)."""
        self._forked()
        if threads > 1 and len(jobs) > 1:
            if self.pool is None or self.pool_threads < threads:
                if self.pool is not None:
                    self.pool.shutdown()
                self.pool, self.pool_threads = ThreadPoolExecutor(threads, "molmnist-read"), threads
            list(self.pool.map(fn, jobs))
        else:
            for job in jobs:
                fn(job)
        with self.lock:
            retired, self.retired = self.retired, []
        for part in retired:
            part.close()

    def _forked(self) -> None:
        """In a forked child (a DataLoader worker): its own files, threads and lock; the
        parent's are left alone."""
        if self.pid != os.getpid():
            self.pid, self.open, self.retired, self.pool = os.getpid(), {}, [], None
            self.lock = threading.Lock()

    def close(self) -> None:
        if self.pid == os.getpid():
            for part in [*self.open.values(), *self.retired]:
                part.close()
            if self.pool is not None:
                self.pool.shutdown()
        self.open, self.retired, self.pool = {}, [], None
