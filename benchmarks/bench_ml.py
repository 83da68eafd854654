"""Issue 11: training reads. Items/s through a torch DataLoader (batch 64, shuffled) for the
package's `DiffractionDataset` (0 and 2 workers, transforms on and off, in memory), against a
flat float32 .npy memory map (the seed's own format) and h5py reading one item at a time; cold
(the files dropped from the page cache first) and warm; and the time to construct a training
split, the first time (statistics computed) and later (read from their cache).

"transforms off": full-resolution raw images (as the memmap and h5py rows). "transforms on":
the training example's settings (patterns cropped and log-scaled and normalised, shapes binned
to 64 px). Each row reads the first ``--items`` items of the store, shuffled; the memmap holds
the same items in the seed's layout (two (N, n, n) float32 .npy files, in the scratch folder). Ratios are to the memmap in the same run (this machine is shared: see the load);
warm rows are the best of two passes; torch runs one thread (``--threads``).

Reproduce::

    molmnist synth -o cellulose --variants 2000
    python -c "..."  # or: molmnist build cellulose/run.toml -o mm100 --variants 100 (and mm2000)
    python benchmarks/bench_ml.py --stores /path/mm100 /path/mm2000
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
        self.index = [(p, v) for p in range(len(self.parts))
                      for v in range(self.parts[p].stop - self.parts[p].start)]
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


def write_memmap(store: Path, folder: Path, count: int) -> Path:
    """The first ``count`` items of a store as the seed's two .npy files."""
    import molmnist_dask as mm

    folder.mkdir(parents=True, exist_ok=True)
    ds = mm.open_dataset(store, chunks="part")
    n_var = ds.sizes["variant"]
    for var in ("diffraction", "shape"):
        side = ds.sizes["qx" if var == "diffraction" else "x"]
        out = np.lib.format.open_memmap(folder / f"{var}.npy", "w+", np.float32, (count, side, side))
        for start in range(0, count, n_var):
            m, stop = start // n_var, min(count, start + n_var)
            out[start:stop] = ds[var][m, : stop - start].values
        out.flush()
        del out
    return folder


def items_per_second(dataset, count: int, workers: int = 0, collate=None, seed: int = 0) -> float:
    """Items/s of a shuffled DataLoader over ``count`` items of ``dataset`` (worker start-up
    included: a training epoch pays it too)."""
    import torch
    from torch.utils.data import DataLoader, SubsetRandomSampler

    g = torch.Generator().manual_seed(seed)
    # the first ``count`` items, those the memmap holds: every reader reads the same bytes, and
    # "warm" means all of them are in the page cache
    picks = torch.randperm(min(count, len(dataset)), generator=g).tolist()
    kwargs = {"collate_fn": collate} if collate else {}
    loader = DataLoader(dataset, batch_size=BATCH, sampler=SubsetRandomSampler(picks, generator=g),
                        num_workers=workers, **kwargs)
    t = time.perf_counter()
    n = sum(len(batch[0]) for batch in loader)
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
        ("DiffractionDataset, transforms", lambda: DiffractionDataset(store, **on), 0, collate, store),
        ("DiffractionDataset, raw, 2 workers", lambda: DiffractionDataset(store, **raw), 2, collate, store),
        ("DiffractionDataset, transforms, 2 workers", lambda: DiffractionDataset(store, **on), 2, collate, store),
    ]


def bench_store(store: Path, scratch: Path, count: int) -> list:
    from molmnist_dask.ml import DiffractionDataset, collate

    n_items = len(DiffractionDataset(store, "all", normalize=None, target_scale=None))
    count = min(count, n_items)
    memmap = write_memmap(store, scratch / f"npy-{store.name}", count)
    rows, base = [], {}
    for name, make, workers, coll, files in readers(store, memmap):
        for cache in ("cold", "warm"):
            if cache == "cold":
                evict(files)
            data = make()
            ips = items_per_second(data, count, workers, coll)
            if cache == "warm":  # best of two: the machine is shared
                ips = max(ips, items_per_second(data, count, workers, coll, seed=1))
            base.setdefault(cache, ips)
            rows.append([store.name, name, cache, ips, ips / base[cache]])
    for cache in ("cold", "warm"):  # in memory: the load is the cold part
        if cache == "cold":
            evict(store)
        t = time.perf_counter()
        data = DiffractionDataset(store, "all", size=64, in_memory=True)
        load = time.perf_counter() - t
        ips = items_per_second(data, count, 0, collate)
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
                       threads={"type": int, "default": 1, "help": "torch threads of the main process"})
    # one thread: on a small shared CPU, torch's threads in the default collation fight the
    # other processes (DataLoader workers use one each anyway)
    torch.set_num_threads(args.threads)
    stores = [Path(s) for s in args.stores or []] or [quick_store(args.scratch)]
    if args.quick:
        args.items = min(args.items, 512)
    print(C.machine(), f"torch threads {args.threads}")
    rows = []
    for store in stores:
        rows += bench_store(store, args.scratch, args.items)
        print(C.machine(), flush=True)
    C.table(rows, ["store", "reader", "cache", "items/s", "x memmap"],
            title=f"DataLoader(batch_size={BATCH}, shuffled): items/s over {args.items} random items")
    C.table([r for s in stores for r in bench_split(s)], ["store", "construct DiffractionDataset(train, size=64)", "s"],
            title="Split construction")
    print(C.machine())


if __name__ == "__main__":
    main()
