"""Stored images read as HDF5 chunks: located once through HDF5's chunk index, then read with
``os.pread`` and decoded here (inflate, unshuffle, Fletcher-32).

A store keeps one image per HDF5 chunk. Asking HDF5 for one chunk costs far more than the
chunk's bytes (its selection machinery, the chunk cache, a B-tree lookup per call: 4x the read
of an uncompressed image, benchmarks/bench_ml.py); here the chunk index is read once per file
and variable (``chunk_iter``), and each image then costs one ``pread`` and the filters
themselves. This is what kerchunk-style readers do with HDF5 files; the Fletcher-32 is
numcodecs', HDF5's own algorithm. A chunk's checksum is verified the first time a process
decodes it (a training epoch reads the same bytes again and again).

Only the filters the store writes are decoded here (deflate, shuffle, Fletcher-32, in any
subset, in HDF5's order); a variable with any other (zstd, ...) or another chunking gets no
`Chunks` and is read through h5py or netCDF4. A chunk whose checksum fails is never returned:
the caller reads a chunk that does not decode through h5py, which applies HDF5's own rules
(and raises if it is corrupt).
"""

from __future__ import annotations

import os
import zlib

import numpy as np

DEFLATE, SHUFFLE, FLETCHER32 = 1, 2, 3
KNOWN = {DEFLATE, SHUFFLE, FLETCHER32}


class ChunkError(ValueError):
    """A chunk's bytes do not decode: its checksum or its compressed stream is wrong."""


def _fletcher():
    """numcodecs' Fletcher-32 (HDF5's), or None where numcodecs is not installed."""
    try:
        from numcodecs import Fletcher32  # the ml extra installs it
    except ImportError:
        return None
    return Fletcher32()


class Chunks:
    """Where each image of a (molecule, variant, y, x) variable lies in its file, and how to
    decode it.

    Build one with `Chunks.of`; ``image(m, i)`` decodes image ``[m, i]``.
    """

    def __init__(self, fd: int, filters: list, dtype: np.dtype, shape: tuple,
                 offsets: np.ndarray, sizes: np.ndarray, masks: np.ndarray):
        self.fd, self.filters = fd, filters
        self.dtype, self.shape = dtype, shape
        self.offsets, self.sizes, self.masks = offsets, sizes, masks
        self.nbytes = int(np.prod(shape)) * dtype.itemsize
        self.fletcher = _fletcher() if FLETCHER32 in filters else None
        self.plain = not {DEFLATE, SHUFFLE} & set(filters)  # the bytes are the image
        # chunks whose checksum this process has verified: a file is never rewritten in place
        # (a part is renamed into place whole, and an open descriptor keeps the old inode), so
        # later reads of the same bytes skip the check (65 us an image on a 2-core EPYC)
        self.checked = np.zeros(offsets.shape, bool)

    @classmethod
    def of(cls, dset, fd: int):
        """`Chunks` of an h5py dataset of one image per chunk, or None where this module does
        not decode it (other chunking, other filters, a file without chunk iteration)."""
        if dset.ndim != 4 or dset.chunks != (1, 1, *dset.shape[2:]):
            return None
        plist = dset.id.get_create_plist()
        filters = [plist.get_filter(k)[0] for k in range(plist.get_nfilters())]
        if not set(filters) <= KNOWN or len(set(filters)) != len(filters):
            return None
        if FLETCHER32 in filters and _fletcher() is None:  # no numcodecs: h5py checks them
            return None
        n = dset.shape[:2]
        offsets, sizes, masks = np.full(n, -1, np.int64), np.zeros(n, np.int64), np.zeros(n, np.int64)

        def visit(info):  # one call per stored chunk, in file order
            at = info.chunk_offset[:2]
            offsets[at], sizes[at], masks[at] = info.byte_offset, info.size, info.filter_mask

        try:
            dset.id.chunk_iter(visit)
        except (AttributeError, NotImplementedError):  # HDF5 < 1.12.3: read through h5py
            return None
        return cls(fd, filters, dset.dtype, dset.shape[2:], offsets, sizes, masks)

    def stored(self, m: int, i: int) -> bool:
        """Whether image ``[m, i]`` has a chunk in the file (unwritten ones read as fill values)."""
        return self.offsets[m, i] >= 0

    def image(self, m: int, i: int, rows: slice = slice(None)) -> np.ndarray:
        """Image ``[m, i]`` (its ``rows`` only, if given), decoded: a read-only array in the
        variable's dtype.

        Raises `ChunkError` if the chunk does not decode (checksum, stream or size wrong).
        """
        if self.plain and (self.fletcher is None or self.checked[m, i]):
            # stored as it is and already verified: read just these rows (a crop of a pattern)
            start, stop, _ = rows.indices(self.shape[0])
            width = self.nbytes // self.shape[0]
            data = os.pread(self.fd, (stop - start) * width, int(self.offsets[m, i]) + start * width)
            if len(data) != (stop - start) * width:
                raise ChunkError(f"{len(data)} bytes read, {(stop - start) * width} expected")
            return np.frombuffer(data, self.dtype).reshape(stop - start, *self.shape[1:])
        data = os.pread(self.fd, int(self.sizes[m, i]), int(self.offsets[m, i]))
        mask = int(self.masks[m, i])
        for k in reversed(range(len(self.filters))):  # HDF5 applies them in order when writing
            if mask & (1 << k):  # this filter was skipped for this chunk (optional, failed)
                continue
            data = self._undo(self.filters[k], data, (m, i))
        if len(data) != self.nbytes:
            raise ChunkError(f"{len(data)} bytes decoded, {self.nbytes} expected")
        return np.frombuffer(data, self.dtype).reshape(self.shape)[rows]

    def _undo(self, code: int, data, at: tuple):
        if code == DEFLATE:
            try:  # bufsize: one inflate call, which runs without the GIL
                return zlib.decompress(data, bufsize=self.nbytes + 4)
            except zlib.error as e:
                raise ChunkError(str(e)) from None
        if code == SHUFFLE:
            return unshuffle(data, self.dtype.itemsize)  # HDF5 shuffles by the element size
        if self.checked[at]:
            return memoryview(data)[:-4]
        try:
            data = self.fletcher.decode(data)
        except RuntimeError as e:  # numcodecs' words for a mismatch
            raise ChunkError(str(e).splitlines()[0]) from None
        self.checked[at] = True
        return data


def unshuffle(data, size: int) -> np.ndarray:
    """HDF5's shuffle filter undone: byte planes of ``size``-byte elements back to elements;
    bytes past the last whole element stay where they are."""
    raw = np.frombuffer(data, np.uint8)
    count = len(raw) // size
    out = np.empty(len(raw), np.uint8)
    elements = out[: count * size].reshape(count, size)
    planes = raw[: count * size].reshape(size, count)
    for k in range(size):  # one byte plane at a time: 5x a transposed copy (or np.stack)
        elements[:, k] = planes[k]
    out[count * size:] = raw[count * size:]
    return out


def open_fd(path: str) -> int:
    """A read-only descriptor of ``path`` for `Chunks` (closed by the caller)."""
    return os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
