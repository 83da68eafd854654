"""A PyTorch Dataset over a saved molmnist dataset: diffraction in, shape out, read in batches.

A DataLoader with automatic batching calls `DiffractionDataset.__getitems__` once per batch:
the batch's items are grouped by part file and each part's images read in one pass (each
image one HDF5 chunk, read and decoded by `chunks`, on ``read_threads`` threads) into one
float32 batch; transforms run once per batch. Part files are opened once per process (each
DataLoader worker opens its own) and kept open. ``in_memory=True`` reads the
split once and serves every batch from memory.

Where an item's images lie in the files is the store's to say (`molmnist_dask.store.parts`
and `locate`); this module reads them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..errors import InputError
from ..store import locate, open_dataset, parts
from ..validate import is_int, one_of, positive_float, positive_int
from . import stats as _stats
from .reader import PartFiles, default_threads
from .splits import STRIPES, split_items
from .stats import Moments, Stats
from .transforms import LOGS, area_resample, binning, crop_slice, log_scale

SPLITS = ("train", "val", "test", "all")
NORMALIZE = ("image", "dataset", None)
TARGET_SCALE = ("dataset", "image", None)
#: ``in_memory="auto"`` loads a split whose inputs and targets fit in this many bytes.
MEMORY_BUDGET = 2 * 2**30
_LOAD_BATCH = 256
_MIN_SHARE = 8  # images per thread, at least
_STATS_VERSION = 1


def _metadata(path: Path) -> dict:
    """Molecule names, labels and image sizes (no image is read)."""
    if not path.exists():
        raise InputError(f"{path}: no such dataset")
    ds = open_dataset(path, chunks=None)  # no dask: only coordinates are read
    for var in ("shape", "diffraction"):
        if var not in ds.variables:
            raise InputError(f"{path}: the dataset has no '{var}' variable")
    meta = {"molecules": [str(m) for m in ds.molecule.values],
            "labels": np.asarray(ds.label.values, dtype=np.int64),
            "n_variants": int(ds.sizes["variant"]), "n": int(ds.sizes["x"]), "q": int(ds.sizes["qx"])}
    ds.close()
    return meta


class _Batch(list):
    """Items of one batch as views of the batch tensors, which `collate` returns as they are."""

    tensors: tuple = ()


def collate(batch):
    """A DataLoader ``collate_fn``: a batch from `DiffractionDataset.__getitems__` as its
    ready-made tensors (no copy); anything else through torch's default collation."""
    if isinstance(batch, _Batch):
        return batch.tensors
    return torch.utils.data.default_collate(batch)


class DiffractionDataset(torch.utils.data.Dataset):
    """Diffraction patterns (input) and shapes (target) of a saved dataset.

    Parameters
    ----------
    path : path-like
        A store folder or ``.nc`` file written by `molmnist_dask.save_dataset`.
    split : {"train", "val", "test", "all"}
    by : {"variant", "molecule", "random"}
        Hold out contiguous ranges of the variant axis (default), whole molecules, or
        scattered variants (leaks; for comparison), see `split_items`.
    fractions : (float, float, float)
        Train, validation and test fractions.
    seed : int
        Seed of the split.
    stripes : int
        Contiguous variant ranges for ``by="variant"``.
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
        otherwise computed from the training split once and cached beside the store.
    size : int, optional
        Downsample: shapes are binned to ``size`` x ``size`` (`area_resample`) and patterns
        cropped to their central ``size * oversampling`` pixels (`center_crop`), the same
        field of view at the coarser resolution.
    return_label : bool
        Items are ``(x, y, label)`` instead of ``(x, y)``.
    in_memory : bool or "auto"
        Read the whole split once, now, and serve items from memory; ``"auto"``: when its
        inputs and targets fit in ``memory_budget`` bytes.
    memory_budget : int
        Bytes for ``in_memory="auto"``.
    read_threads : int, optional
        Threads that read and decode each batch in this process (default: the usable cores,
        at most 4; one inside a DataLoader worker).

    Notes
    -----
    Items are float32 tensors of shape (1, H, W). `items` lists (molecule, variant) indices.
    Use a DataLoader with ``batch_size`` (it calls `__getitems__` once per batch), and
    ``collate_fn=collate`` to take the batch tensors without the default collation's copy.
    """

    def __init__(self, path, split: str = "train", *, by: str = "variant", fractions=(0.8, 0.1, 0.1),
                 seed: int = 0, stripes: int = STRIPES, log: str | None = "log1p", floor: float = 1.0,
                 normalize: str | None = "dataset", target_scale: str | None = "dataset",
                 stats: Stats | dict | None = None, size: int | None = None,
                 return_label: bool = False, in_memory=False, memory_budget: int = MEMORY_BUDGET,
                 read_threads: int | None = None):
        for name, value, allowed in (("split", split, SPLITS), ("log", log, LOGS),
                                     ("normalize", normalize, NORMALIZE),
                                     ("target_scale", target_scale, TARGET_SCALE),
                                     ("in_memory", in_memory, (True, False, "auto"))):
            one_of(name, value, allowed)
        positive_float("floor", floor)
        self.path = Path(path)
        self.split, self.by, self.log, self.floor = split, by, log, float(floor)
        self.normalize, self.target_scale, self.return_label = normalize, target_scale, return_label
        self._threads = positive_int("read_threads", read_threads, optional=True)
        meta = _metadata(self.path)
        self.molecules, self.labels = meta["molecules"], meta["labels"]
        n, m = meta["n"], meta["q"]
        if size is not None and not (is_int(size) and 1 <= size <= n):
            raise InputError(f"size must be an integer from 1 to {n} (the shape's size), got {size!r}")
        self.size = int(size) if size is not None else n
        self.qsize = self.size * m // n
        self._n, self._crop = n, crop_slice(m, self.qsize)
        splits = split_items(len(self.molecules), meta["n_variants"], by=by, fractions=fractions,
                             seed=seed, stripes=stripes)
        self.items = splits[split]
        self._split_key = {"by": by, "fractions": [float(f) for f in fractions], "seed": int(seed),
                           "stripes": int(stripes) if by == "variant" else None}
        self._train = splits["train"]
        self._parts = parts(self.path)
        self._where = locate(self._parts, self.items)
        self._files, self._memory = None, None
        if isinstance(stats, dict):
            stats = Stats(**stats)
        if stats is None and "dataset" in (normalize, target_scale):
            stats = self.cached_stats()
        self.stats = stats
        if in_memory == "auto":
            in_memory = len(self.items) * 4 * (self.qsize ** 2 + self.size ** 2) <= memory_budget
        if in_memory:
            self._memory = self._load()

    # -- reading -----------------------------------------------------------------------------

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_files"] = None  # no open file goes to a worker
        return state

    @property
    def read_threads(self) -> int:
        """Threads that decode a batch here (`read_threads`, or the default for this process)."""
        return self._threads or default_threads()

    def close(self) -> None:
        """Close the part files this process opened (they reopen when read again)."""
        if self._files is not None:
            self._files.close()
            self._files = None

    def _read_raw(self, which: np.ndarray, local: np.ndarray, binned: bool = True,
                  transformed: bool = False) -> tuple:
        """Cropped patterns and shapes (binned to ``size``, or full), float32, of the images at
        (part, offset) pairs; ``transformed``: through `transform_input` and `transform_target`.

        Reads are grouped by part and ordered by offset within it (sequential in the file);
        each image is cropped, binned and transformed on the thread that read it (numpy's
        arithmetic runs without the GIL) and lands at its own place in the batch.
        """
        if self._files is None:
            self._files = PartFiles()
        count, side = len(which), self.size if binned else self._n
        patterns = np.empty((count, self.qsize, self.qsize), np.float32)
        shapes = np.empty((count, side, side), np.float32)
        crop = lambda rows: rows[:, self._crop]  # noqa: E731  (of the rows read)
        to_side = binning(self._n, side) if side != self._n else None
        if transformed:
            crop = lambda rows, cut=crop: self.transform_input(cut(rows))  # noqa: E731
            to_side = lambda image, bin_=to_side or (lambda a: a): self.transform_target(bin_(image))  # noqa: E731
        order = np.lexsort((local, which))  # part by part, in file order

        def read(share):
            for group in np.split(share, np.flatnonzero(np.diff(which[share])) + 1):
                part = self._parts[which[group[0]]]
                f = self._files.get(part.path)
                f.read("diffraction", part.row, local[group], patterns, group, crop, self._crop)
                f.read("shape", part.row, local[group], shapes, group, to_side)

        # contiguous shares of that order, one a thread: reads and inflation run without the GIL
        threads = max(1, min(self.read_threads, count // _MIN_SHARE))
        self._files.map(read, np.array_split(order, threads) if count else [], threads)
        return patterns, shapes

    def read(self, index: int):
        """The raw (cropped and binned, not scaled) pattern and shape of item ``index``, float64."""
        which, local = (w[[index]] for w in self._where)
        pattern, shape = self._read_raw(which, local, binned=False)
        return pattern[0].astype(np.float64), area_resample(shape[0].astype(np.float64), self.size)

    # -- transforms (per image or per batch, float32) -----------------------------------------

    def transform_input(self, patterns: np.ndarray) -> np.ndarray:
        """Log scaling, then normalisation, as configured, of a (..., H, W) stack."""
        x = log_scale(np.asarray(patterns, np.float32), self.log, self.floor)
        if self.normalize == "image":
            mean = x.mean(axis=(-2, -1), keepdims=True)
            x = (x - mean) / (x.std(axis=(-2, -1), keepdims=True) + np.float32(1e-8))
        elif self.normalize == "dataset":
            if self.log is None:  # x may still be the caller's array
                x = x - np.float32(self.stats.mean)
            else:  # log scaling made a new one
                x -= np.float32(self.stats.mean)
            x /= np.float32(self.stats.std + 1e-8)
        return x.astype(np.float32, copy=False)

    def transform_target(self, shapes: np.ndarray) -> np.ndarray:
        """Scaling of (already binned) shapes, as configured."""
        shapes = np.asarray(shapes, np.float32)
        if self.target_scale == "dataset":
            return shapes / np.float32(self.stats.target_max)
        if self.target_scale == "image":
            return shapes / np.maximum(shapes.max(axis=(-2, -1), keepdims=True), np.float32(1e-12))
        return shapes

    def _batch(self, indices: np.ndarray) -> tuple:
        """Transformed (B, 1, h, w) input and target tensors of items ``indices``."""
        x, y = self._read_raw(*(w[indices] for w in self._where), transformed=True)
        return torch.from_numpy(x)[:, None], torch.from_numpy(y)[:, None]

    def _load(self) -> tuple:
        """The whole split, transformed, read part by part; then the files are closed so that
        forked workers inherit memory, not open files."""
        xs, ys = [], []
        for start in range(0, len(self.items), _LOAD_BATCH):
            x, y = self._batch(np.arange(start, min(start + _LOAD_BATCH, len(self.items))))
            xs.append(x.numpy())
            ys.append(y.numpy())
        self.close()
        empty = np.zeros((0, 1, self.size, self.size), np.float32)
        return (np.concatenate(xs) if xs else empty), (np.concatenate(ys) if ys else empty)

    def arrays(self) -> tuple:
        """The whole split, transformed: float32 inputs and targets, (N, 1, h, w) numpy arrays
        (the loaded ones with ``in_memory``, else read now)."""
        return self._memory if self._memory is not None else self._load()

    # -- the torch protocol ------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.items)

    def __getitems__(self, indices) -> list:
        """Items ``indices`` (a DataLoader batch), read and transformed together, in the order
        asked; a list of ``(x, y)`` (or ``(x, y, label)``) views of one batch tensor each."""
        indices = np.asarray(indices, dtype=np.int64).reshape(-1)
        if len(indices) and (indices.min() < -len(self) or indices.max() >= len(self)):
            raise IndexError(f"index out of range for {len(self)} items")
        indices = indices % max(len(self), 1)
        if self._memory is not None:  # numpy indexing: torch's threads only fight here
            x, y = (torch.from_numpy(a[indices]) for a in self._memory)
        else:
            x, y = self._batch(indices)
        batch = _Batch()
        if self.return_label:
            labels = torch.from_numpy(self.labels[self.items[indices, 0]])
            batch.tensors = (x, y, labels)
            batch.extend(zip(x, y, (int(v) for v in labels)))
        else:
            batch.tensors = (x, y)
            batch.extend(zip(x, y))
        return batch

    def __getitem__(self, index: int):
        return self.__getitems__([index])[0]

    def label(self, index: int) -> int:
        """Class label (molecule index) of item ``index``."""
        return int(self.labels[self.items[index][0]])

    def loader(self, batch_size: int = 64, **kwargs) -> torch.utils.data.DataLoader:
        """A DataLoader over this dataset that takes each batch's tensors as they are read; its
        workers, if any, persist from epoch to epoch (each keeps its part files open)."""
        kwargs.setdefault("persistent_workers", kwargs.get("num_workers", 0) > 0)
        return torch.utils.data.DataLoader(self, batch_size=batch_size, collate_fn=collate, **kwargs)

    # -- statistics --------------------------------------------------------------------------

    def _stats_settings(self) -> dict:
        return {"version": _STATS_VERSION, **self._split_key, "log": self.log,
                "floor": self.floor if self.log == "log10" else None, "size": self.size,
                "qsize": self.qsize}

    def cached_stats(self) -> Stats:
        """`Stats` of the training split: from the cache beside the store if it matches the
        store's files and these settings, else computed (`compute_stats`) and cached."""
        settings = self._stats_settings()
        where = _stats.cache_path(self.path, settings)
        stamp = _stats.fingerprint(sorted({p.path for p in self._parts}))
        found = _stats.load(where, settings, stamp)
        if found is None:
            found = self.compute_stats()
            _stats.save(where, settings, stamp, found)
        return found

    def compute_stats(self) -> Stats:
        """`Stats` of the training split, read part by part with plain numpy (no cache)."""
        which, local = locate(self._parts, self._train)
        moments = Moments()
        order = np.lexsort((local, which))  # part by part, in file order
        for start in range(0, len(order), _LOAD_BATCH):
            chunk = order[start: start + _LOAD_BATCH]
            patterns, shapes = self._read_raw(which[chunk], local[chunk])
            moments.add(log_scale(patterns, self.log, self.floor), shapes)
        self.close()
        return moments.stats()
