"""Issue 4: write throughput of the part-file store against one-file NetCDF and the raw disk,
and what compression costs and saves.

1. Throughput, on a 2-worker LocalCluster, of the same lazy dataset (the ten cellulose fibrils
   at 512 px) three ways: rendered only (nothing written: the floor), saved as a store
   (``save_dataset``: each worker writes its own part files), and saved as one file
   (``xarray.Dataset.to_netcdf`` of the lazy dataset with dask, the store's encodings: every
   chunk goes through one file under a lock). MB/s counts the dataset's bytes (float32);
   "+ sync" includes flushing the page cache to disk (``os.sync``) after the write.
2. The disk's raw bandwidth: ``dd if=/dev/zero bs=1M oflag=direct`` and ``conv=fdatasync``.
3. Compression, serially in this process on rendered frames: bytes on disk and write speed of
   ``shape`` and ``diffraction`` at zlib 0, 1 and 4 (with byte shuffle, as the store writes
   them, Fletcher-32 checksums on), and two faster HDF5 filters netCDF4 ships (blosc-lz4, zstd).

Reproduce::

    python benchmarks/bench_write.py           # 10 fibrils x 100 variants at 512 px (2 GB), dd 4 GiB
    python benchmarks/bench_write.py --quick   # 10 x 12, dd 512 MiB (< 1 min)
"""

from __future__ import annotations

import os
import subprocess
import time

import _common as C


def dd(path, mib: int) -> dict:
    """MB/s of dd with O_DIRECT and with fdatasync."""
    out = {}
    for name, flag in (("dd oflag=direct", "oflag=direct"), ("dd conv=fdatasync", "conv=fdatasync")):
        t = time.perf_counter()
        subprocess.run(["dd", "if=/dev/zero", f"of={path}", "bs=1M", f"count={mib}", flag],
                       check=True, capture_output=True)
        out[name] = mib * 2**20 / (time.perf_counter() - t) / 1e6
        C.rmtree(path)
    return out


def throughput(client, sources, size, variants, scratch, repeats) -> tuple:
    """Best of ``repeats`` (taken in turn) for each writer."""
    import dask
    import xarray as xr

    import molmnist_dask as mm
    from molmnist_dask.store.partfile import encoding
    from molmnist_dask.store.layout import IMAGE_VARS
    from molmnist_dask.store import DEFAULT_COMPRESSION

    def lazy():
        return mm.build_dataset(sources, size=size, extent=90.0, variants=variants)

    def render_only():
        ds = lazy()
        dask.compute(ds["shape"].data.sum(), ds["diffraction"].data.sum())

    def store(out):
        mm.save_dataset(lazy(), out, progress=False)

    def one_file(out):
        ds = lazy()
        enc = encoding({v: ds[v].shape[2:] for v in IMAGE_VARS}, DEFAULT_COMPRESSION)
        ds.to_netcdf(out, engine="netcdf4", format="NETCDF4", encoding=enc)
        with xr.open_dataset(out, engine="netcdf4") as check:
            assert check["shape"].shape == ds["shape"].shape

    nbytes = lazy()[list(IMAGE_VARS)].nbytes
    writers = [("render only (nothing written)", None, render_only),
               ("part-file store (save_dataset)", scratch / "write-store", store),
               ("one file (Dataset.to_netcdf, dask)", scratch / "write-one.nc", one_file)]
    best = {}
    for _ in range(repeats):
        for name, out, write in writers:
            if out is not None:
                C.rmtree(out)
            t = time.perf_counter()
            try:
                write(out) if out is not None else write()
            except Exception as err:  # say what failed rather than stop
                best[name] = f"failed ({type(err).__name__}: {' '.join(str(err).split())[:60]})"
                continue
            wall = time.perf_counter() - t
            os.sync()
            synced = time.perf_counter() - t
            on_disk = C.du(out) / 2**30 if out is not None else 0
            if out is not None:
                C.rmtree(out)
            if not isinstance(best.get(name), tuple) or wall < best[name][0]:
                best[name] = (wall, synced, on_disk)
    rows = []
    for name, _, _ in writers:
        b = best[name]
        if isinstance(b, str):
            rows.append([f"{name}: {b}", None, None, None, None, None])
        else:
            rows.append([name, b[0], b[1], nbytes / b[0] / 1e6, nbytes / b[1] / 1e6, b[2]])
    return rows, nbytes


def compression(sources, size, variants, scratch) -> list:
    """Per variable and filter: MB/s (serial, this process) and bytes on disk per image."""
    import dask
    import xarray as xr

    import molmnist_dask as mm

    with dask.config.set(scheduler="synchronous"):
        ds = mm.build_dataset(sources, size=size, extent=90.0, variants=variants).load()
    filters = [("zlib 0 (raw)", {}), ("zlib 1 + shuffle", {"zlib": True, "complevel": 1, "shuffle": True}),
               ("zlib 4 + shuffle", {"zlib": True, "complevel": 4, "shuffle": True}),
               ("blosc-lz4 + shuffle", {"compression": "blosc_lz4", "complevel": 5, "blosc_shuffle": 1}),
               ("zstd 1 + shuffle", {"compression": "zstd", "complevel": 1, "shuffle": True})]
    rows = []
    for var in ("shape", "diffraction"):
        data = ds[[var]]
        n_images = data.sizes["molecule"] * data.sizes["variant"]
        for name, f in filters:
            out = scratch / f"compress-{var}.nc"
            enc = {var: {"chunksizes": (1, 1, *data[var].shape[2:]), "fletcher32": True, **f}}
            best = None
            try:
                for _ in range(2):
                    C.rmtree(out)
                    t = time.perf_counter()
                    data.to_netcdf(out, engine="netcdf4", format="NETCDF4", encoding=enc)
                    best = min(best or 1e9, time.perf_counter() - t)
                size_on_disk = C.du(out)
                t = time.perf_counter()
                with xr.open_dataset(out, engine="netcdf4") as back:
                    back[var].values
                read = time.perf_counter() - t
                rows.append([var, name, data[var].nbytes / best / 1e6, data[var].nbytes / read / 1e6,
                             size_on_disk / n_images / 2**10, data[var].nbytes / size_on_disk])
            except Exception as err:
                rows.append([var, f"{name}: unavailable ({type(err).__name__})", None, None, None, None])
            C.rmtree(out)
    return rows


def main():
    args = C.arguments(__doc__)
    from _data import cellulose

    from molmnist_dask.cluster import connect

    print(f"bench_write: {C.machine()}; scratch {args.scratch}")
    variants = 12 if args.quick else 100
    size = 512
    sources = cellulose(400 if not args.quick else 40)
    raw = dd(args.scratch / "dd.bin", 512 if args.quick else 4096)
    C.table([[k, v] for k, v in raw.items()], ["raw disk", "MB/s"], "Disk bandwidth (dd, 1 MiB blocks)")
    with connect("local", n_workers=2) as client:
        rows, nbytes = throughput(client, sources, size, variants, args.scratch, 1 if args.quick else 2)
    C.table(rows, ["writer", "seconds", "s + sync", "MB/s", "MB/s + sync", "GiB on disk"],
            f"Write throughput, {len(sources)} molecules x {variants} variants at {size} px "
            f"({nbytes / 1e9:.2f} GB of float32), 2 workers, best of {1 if args.quick else 2}")
    comp = compression(sources, size, 4 if args.quick else 16, args.scratch)
    C.table(comp, ["variable", "filter (+ Fletcher-32)", "write MB/s", "read MB/s", "KiB/image", "ratio"],
            f"Compression at {size} px, serial, one HDF5 chunk per image")
    print(f"end: {C.machine()}")


if __name__ == "__main__":
    main()
