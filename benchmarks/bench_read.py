"""Issue 4: lazy reading. Time and bytes read to open a store (``molmnist_dask.open_dataset``)
and read one image, and to read one molecule's variants 0..99; the same for the consolidated
.nc file (``molmnist_dask.consolidate``).

The store holds the ten cellulose fibrils at 512 px (full: 200 variants each, 4.2 GB of
float32; quick: 12 variants at 256 px). Each measurement starts cold: the files are dropped
from the page cache first (``posix_fadvise(DONTNEED)`` on them alone) and the package's open
file handles closed. "disk bytes" is what the process read from the disk (``read_bytes`` of
/proc/self/io); "read() bytes" what it asked the kernel for (``rchar``: cached or not). Note that
netCDF-C 4.10 / HDF5 2.2 (this netCDF4 wheel) read the first 4 MiB of a file when they open it.

Reproduce::

    python benchmarks/bench_read.py           # build the store once (kept in the scratch folder)
    python benchmarks/bench_read.py --quick   # a small store (< 1 min)
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import _common as C


def io_counters() -> dict:
    out = {}
    with open("/proc/self/io") as f:
        for line in f:
            k, v = line.split(":")
            out[k] = int(v)
    return out


def evict(path: Path) -> None:
    """Drop a file's (or a folder's files') pages from the page cache (flushed first: dirty
    pages cannot be dropped)."""
    os.sync()
    files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
    for p in files:
        fd = os.open(p, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def measure(fn):
    before = io_counters()
    t = time.perf_counter()
    result = fn()
    seconds = time.perf_counter() - t
    after = io_counters()
    return result, seconds, after["read_bytes"] - before["read_bytes"], after["rchar"] - before["rchar"]


def scenario(label: str, path: Path, molecule: int, n_variants: int) -> list:
    import molmnist_dask as mm
    from molmnist_dask.parts import HANDLES

    rows = []
    HANDLES.clear()
    evict(path)
    ds, s, disk, rchar = measure(lambda: mm.open_dataset(path))
    rows.append([label, "open_dataset", s * 1e3, disk / 2**10, rchar / 2**10, None])
    for what, fn, nbytes in (
            ("shape[m, v]: one image", lambda: ds["shape"][molecule, 7].values, ds["shape"][0, 0].nbytes),
            (f"shape[m, 0:{n_variants}]", lambda: ds["shape"][molecule, :n_variants].values,
             ds["shape"][0, 0].nbytes * n_variants),
            (f"diffraction[m, 0:{n_variants}]", lambda: ds["diffraction"][molecule, :n_variants].values,
             ds["diffraction"][0, 0].nbytes * n_variants)):
        HANDLES.clear()
        evict(path)
        _, s, disk, rchar = measure(fn)
        rows.append([label, what, s * 1e3, disk / 2**10, rchar / 2**10, nbytes / 2**10])
        _, s, disk, rchar = measure(fn)
        rows.append([label, what + " (again, warm)", s * 1e3, disk / 2**10, rchar / 2**10, nbytes / 2**10])
    ds.close()
    HANDLES.clear()
    return rows


def main():
    args = C.arguments(__doc__)
    from _data import cellulose

    import molmnist_dask as mm
    from molmnist_dask.cluster import connect

    print(f"bench_read: {C.machine()}")
    size, variants = (256, 12) if args.quick else (512, 200)
    n_read = min(100, variants)
    keep = args.scratch if args.quick else args.root  # the full store is kept for reruns
    store = keep / f"read-store-{size}-{variants}"
    nc = keep / f"read-store-{size}-{variants}.nc"
    if not (store / "index.nc").exists():
        sources = cellulose(400 if not args.quick else 40)
        t = time.perf_counter()
        with connect("local", n_workers=2):
            mm.save_dataset(mm.build_dataset(sources, size=size, extent=90.0, variants=variants), store,
                            progress=False)
        print(f"built the store in {time.perf_counter() - t:.1f} s")
    if not nc.exists():
        t = time.perf_counter()
        mm.consolidate(store, nc, progress=False)
        print(f"consolidated in {time.perf_counter() - t:.1f} s")
    print(f"store: {C.du(store) / 2**30:.2f} GiB in {len(list((store / 'parts').iterdir()))} parts; "
          f".nc: {C.du(nc) / 2**30:.2f} GiB")
    molecule = 7  # the 9x9 fibril
    rows = scenario("store", store, molecule, n_read) + scenario(".nc", nc, molecule, n_read)
    C.table(rows, ["source", "read", "ms", "disk KiB", "read() KiB", "data KiB"],
            f"Lazy reads, 10 molecules x {variants} variants at {size} px, cold page cache")
    if args.quick:
        C.rmtree(store)
        C.rmtree(nc)
    else:
        print(f"(kept {store} and {nc} for reruns; delete them when done)")
    print(f"end: {C.machine()}")


if __name__ == "__main__":
    main()
