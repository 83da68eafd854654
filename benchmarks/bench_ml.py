"""Issue 11: training reads. Items/s through a torch DataLoader (batch 64, shuffled) for the
package's `DiffractionDataset` (0 and 2 workers, transforms on and off, one read thread or the
default, in memory), against a flat float32 .npy memory map (the seed's own format) and h5py
reading one item at a time; cold and warm; and the time to construct a training split, the
first time (statistics computed) and later (read from their cache).

"raw": full-resolution raw images (as the memmap and h5py rows); "defaults": the Dataset's
defaults (full resolution, patterns log-scaled and normalised, shapes scaled); "transforms":
the training example's settings (patterns cropped and log-scaled and normalised, shapes binned
to 64 px). Every row reads the same ``--items`` items, spread evenly over the store (so over
every part file), shuffled; the memmap holds those items in the seed's layout (two (N, n, n)
float32 .npy files, in the scratch folder). "cold": the files dropped from the page cache
first, a new Dataset (a first epoch: every checksum verified); "warm": every reader's files
cached, then ``--rounds`` rounds that take the readers in turn, best of each (the machine is
shared and its load drifts; a later epoch: checksums verified before are not checked again).
Ratios are to the memmap in the same run; torch runs one thread (``--threads``).

Reproduce (10 x 100 in 10 parts; the paper-size store in 10 parts, and in 400 of 50 variants)::

    molmnist build -o mm100 --variants 100
    molmnist build -o mm2000
    molmnist build -o mm2000-400parts --part-frames 50
    python benchmarks/bench_ml.py --stores mm100 mm2000 mm2000-400parts
    python benchmarks/bench_ml.py --quick      # a small adk store built here (< 1 min)
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import _common as C
import numpy as np

BATCH = 64


def evict(path: Path) -> None:
    """Drop a file's (or a folder's files') pages from the page cache."""
    files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
    for p in files:
        fd = os.open(p, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


class Memmap:
    """The seed's format: items of two flat float32 .npy files, memory-mapped."""

    def __init__(self, folder: Path):
        self.x = np.load(folder / "diffraction.npy", mmap_mode="r")
        self.y = np.load(folder / "shape.npy", mmap_mode="r")

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        import torch

        return torch.from_numpy(np.array(self.x[i])), torch.from_numpy(np.array(self.y[i]))


class H5PerItem:
    """h5py reading one item's two images, part files kept open (the layout's own lookup)."""

    def __init__(self, store: Path):
        from molmnist_dask.ml.data import _part_layout

        self.parts = _part_layout(store)
        self.index = sorted(((p, v) for p in range(len(self.parts))  # in item order
                             for v in range(self.parts[p].stop - self.parts[p].start)),
                            key=lambda pv: (self.parts[pv[0]].molecule, self.parts[pv[0]].start + pv[1]))
        self.files = {}

    def __len__(self):
        return len(self.index)

    def __getitem__(self, i):
        import h5py
        import torch

        p, v = self.index[i]
        part = self.parts[p]
        f = self.files.get(part.path) or self.files.setdefault(part.path, h5py.File(part.path, "r"))
        return (torch.from_numpy(f["diffraction"][part.row, v]), torch.from_numpy(f["shape"][part.row, v]))


def write_memmap(store: Path, folder: Path, chosen: np.ndarray) -> Path:
    """Items ``chosen`` (indices in (molecule, variant) order) of a store as the seed's two .npy
    files, read through xarray one image at a time."""
    import molmnist_dask as mm

    folder.mkdir(parents=True, exist_ok=True)
    ds = mm.open_dataset(store, chunks=None)
    n_var = ds.sizes["variant"]
    for var in ("diffraction", "shape"):
        side = ds.sizes["qx" if var == "diffraction" else "x"]
        out = np.lib.format.open_memmap(folder / f"{var}.npy", "w+", np.float32, (len(chosen), side, side))
        for k, item in enumerate(chosen):
            out[k] = ds[var][item // n_var, item % n_var].values
        out.flush()
        del out
    ds.close()
    return folder


def loader(dataset, picks, workers: int = 0, collate=None, seed: int = 0):
    """A DataLoader over items ``picks`` of ``dataset``, shuffled anew each pass; its workers,
    if any, persist from pass to pass, as in training (`DiffractionDataset.loader` does so)."""
    import torch
    from torch.utils.data import DataLoader, SubsetRandomSampler

    g = torch.Generator().manual_seed(seed)
    kwargs = {"collate_fn": collate} if collate else {}
    return DataLoader(dataset, batch_size=BATCH, sampler=SubsetRandomSampler(list(picks), generator=g),
                      num_workers=workers, persistent_workers=workers > 0, **kwargs)


def items_per_second(batches) -> float:
    """Items/s of one pass over a DataLoader (worker start-up included in a first pass: a
    first epoch pays it too)."""
    t = time.perf_counter()
    n = sum(len(batch[0]) for batch in batches)
    return n / (time.perf_counter() - t)


def readers(store: Path, memmap: Path):
    """(name, make dataset, workers, collate, files to evict)."""
    from molmnist_dask.ml import DiffractionDataset, collate

    raw = dict(split="all", log=None, normalize=None, target_scale=None)
    on = dict(split="all", size=64)
    return [
        ("npy memmap (seed format), raw", lambda: Memmap(memmap), 0, None, memmap),
        ("h5py, one item at a time, raw", lambda: H5PerItem(store), 0, None, store),
        ("DiffractionDataset, raw", lambda: DiffractionDataset(store, **raw), 0, collate, store),
        ("DiffractionDataset, raw, default collate", lambda: DiffractionDataset(store, **raw), 0, None, store),
        ("DiffractionDataset, defaults (200 px, log, normalised)",
         lambda: DiffractionDataset(store, split="all"), 0, collate, store),
        ("DiffractionDataset, transforms", lambda: DiffractionDataset(store, **on), 0, collate, store),
        ("DiffractionDataset, transforms, 1 read thread",
         lambda: DiffractionDataset(store, read_threads=1, **on), 0, collate, store),
        ("DiffractionDataset, raw, 2 workers", lambda: DiffractionDataset(store, **raw), 2, collate, store),
        ("DiffractionDataset, transforms, 2 workers", lambda: DiffractionDataset(store, **on), 2, collate, store),
    ]


def bench_store(store: Path, scratch: Path, count: int, rounds: int) -> list:
    from molmnist_dask.ml import DiffractionDataset, collate

    n_items = len(DiffractionDataset(store, "all", normalize=None, target_scale=None))
    chosen = np.unique(np.linspace(0, n_items - 1, min(count, n_items)).round().astype(np.int64))
    memmap = write_memmap(store, scratch / f"npy-{store.name}", chosen)
    table = readers(store, memmap)
    picks = [range(len(chosen)) if files == memmap else chosen for _, _, _, _, files in table]
    cold = []
    for (name, make, workers, coll, files), p in zip(table, picks):
        evict(files)
        cold.append(items_per_second(loader(make(), p, workers, coll)))
    # warm: every reader's files cached (a first pass), then rounds that take the readers in
    # turn, best of --rounds each: the machine is shared, and its load drifts
    loaders = [loader(make(), p, workers, coll) for (_, make, workers, coll, _), p in zip(table, picks)]
    for batches in loaders:
        items_per_second(batches)
    warm = [0.0] * len(table)
    for r in range(rounds):
        for k, batches in enumerate(loaders):
            warm[k] = max(warm[k], items_per_second(batches))
    del loaders  # their workers end
    base = {"cold": cold[0], "warm": warm[0]}
    rows = [[store.name, name, cache, ips, ips / base[cache]]
            for (name, *_), c, w in zip(table, cold, warm) for cache, ips in (("cold", c), ("warm", w))]
    for cache in ("cold", "warm"):  # in memory: the load is the cold part
        if cache == "cold":
            evict(store)
        t = time.perf_counter()
        data = DiffractionDataset(store, "all", size=64, in_memory=True)
        load = time.perf_counter() - t
        ips = items_per_second(loader(data, chosen, 0, collate))
        rows.append([store.name, f"in memory, transforms (load {load:.1f} s)", cache, ips, ips / base[cache]])
    return rows


def bench_split(store: Path) -> list:
    from molmnist_dask.ml import DiffractionDataset

    for old in store.glob("ml-stats-*.json"):
        old.unlink()
    rows = []
    for when in ("first (statistics computed)", "later (statistics cached)"):
        evict(store)
        t = time.perf_counter()
        DiffractionDataset(store, "train", size=64)
        rows.append([store.name, when, time.perf_counter() - t])
    return rows


def quick_store(scratch: Path) -> Path:
    import warnings

    import dask

    import molmnist_dask as mm
    from _data import adk

    src = adk()
    sources = [mm.TrajectorySource(f"adk{i}", src.topology, src.trajectory, selection=s)
               for i, s in enumerate(("all", "backbone", "name CA", "not name H*"))]
    with warnings.catch_warnings(), dask.config.set(scheduler="threads"):
        warnings.simplefilter("ignore")
        ds = mm.build_dataset(sources, size=200, extent=80.0)
        return mm.save_dataset(ds, scratch / "adk-store", part_frames=25, progress=False)


def main():
    import torch

    args = C.arguments(__doc__, stores={"nargs": "*", "help": "store folders (default: --quick's)"},
                       items={"type": int, "default": 2048, "help": "items read per row"},
                       threads={"type": int, "default": 1, "help": "torch threads of the main process"},
                       rounds={"type": int, "default": 3, "help": "warm passes per reader (best taken)"})
    # one thread: on a small shared CPU, torch's threads in the default collation fight the
    # other processes (DataLoader workers use one each anyway)
    torch.set_num_threads(args.threads)
    stores = [Path(s) for s in args.stores or []] or [quick_store(args.scratch)]
    if args.quick:
        args.items = min(args.items, 512)
    print(C.machine(), f"torch threads {args.threads}")
    rows = []
    for store in stores:
        rows += bench_store(store, args.scratch, args.items, args.rounds)
        print(C.machine(), flush=True)
    C.table(rows, ["store", "reader", "cache", "items/s", "x memmap"],
            title=f"DataLoader(batch_size={BATCH}, shuffled): items/s over {args.items} items spread over the store")
    C.table([r for s in stores for r in bench_split(s)], ["store", "construct DiffractionDataset(train, size=64)", "s"],
            title="Split construction")
    print(C.machine())


if __name__ == "__main__":
    main()
