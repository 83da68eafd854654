"""Issues 8 and 9: which library writes a part cheapest per image, and what compression costs.

1. Writers: the same rendered ADK frames written into one part file in the page cache three
   ways, each making a NetCDF-4 file with one chunk per image and Fletcher-32: the whole block
   through ``xarray.Dataset.to_netcdf``; ``netCDF4`` directly (``createVariable`` once, then
   ``var[0, i:j] = block`` a sub-block at a time, as the store writes); ``h5netcdf`` the same
   way. Milliseconds per frame (shape + pattern), raw and with deflate on shapes.
2. Compression: bytes per frame on disk and the full build's frames per second
   (``build_dataset`` + ``save_dataset``, 2 local workers) for raw, the default (deflate level 1
   + shuffle on shapes, diffraction raw: filters every HDF5 reader has) and zstd level 1 on
   shapes (needs the zstd HDF5 plugin to read: ``hdf5plugin`` for h5py; Debian's ncdump lacks it).

Reproduce::

    python benchmarks/bench_writers.py           # 200, 1024 and 2048 px (~4 min)
    python benchmarks/bench_writers.py --quick   # fewer frames (< 1 min)
"""

from __future__ import annotations

import time

import numpy as np

import _common as C

COMPRESSIONS = {"raw": {"shape": None, "diffraction": None}, "default (deflate 1)": None,
                "zstd 1": {"shape": ("zstd", 1)}}


def frames(size: int, n: int):
    """``n`` ADK frames rendered at ``size`` px: (shapes, patterns)."""
    from MDAnalysisTests.datafiles import DCD, PSF

    from molmnist_dask.dataset import render_block
    from molmnist_dask.grid import Grid
    from molmnist_dask import TrajectorySource

    out = render_block(TrajectorySource("adk", PSF, DCD), np.arange(n) % 98, Grid(size, 80.0), "geometry")
    return out[0], out[1]


def block_dataset(shapes, patterns):
    import xarray as xr

    n = shapes.shape[-1]
    return xr.Dataset({"shape": (("molecule", "variant", "y", "x"), shapes[None]),
                       "diffraction": (("molecule", "variant", "qy", "qx"), patterns[None])},
                      coords={"variant": np.arange(len(shapes)), "y": np.arange(n) * 1.0})


def with_xarray(path, shapes, patterns, shape_filter):
    from molmnist_dask.store.partfile import encoding

    ds = block_dataset(shapes, patterns)
    enc = encoding({"shape": shapes.shape[1:], "diffraction": patterns.shape[1:]}, {"shape": shape_filter})
    enc = {k: v for k, v in enc.items() if k in ds}
    ds.to_netcdf(path, engine="netcdf4", format="NETCDF4", encoding=enc)


def with_netcdf4(path, shapes, patterns, shape_filter, step=16):
    import netCDF4

    from molmnist_dask.store.partfile import filters

    with netCDF4.Dataset(path, "w", format="NETCDF4") as nc:
        n, k = shapes.shape[-1], len(shapes)
        for d, size in (("molecule", 1), ("variant", k), ("y", n), ("x", n)):
            nc.createDimension(d, size)
        s = nc.createVariable("shape", "f4", ("molecule", "variant", "y", "x"), chunksizes=(1, 1, n, n),
                              fletcher32=True, **filters(shape_filter))
        p = nc.createVariable("diffraction", "f4", ("molecule", "variant", "y", "x"), chunksizes=(1, 1, n, n),
                              fletcher32=True)
        for i in range(0, k, step):
            s[0, i:i + step] = shapes[i:i + step]
            p[0, i:i + step] = patterns[i:i + step]


def with_h5netcdf(path, shapes, patterns, shape_filter, step=16):
    import h5netcdf

    with h5netcdf.File(path, "w") as f:
        n, k = shapes.shape[-1], len(shapes)
        f.dimensions = {"molecule": 1, "variant": k, "y": n, "x": n}
        opts = {"compression": "gzip", "compression_opts": 1, "shuffle": True} if shape_filter else {}
        s = f.create_variable("shape", ("molecule", "variant", "y", "x"), "f4", chunks=(1, 1, n, n),
                              fletcher32=True, **opts)
        p = f.create_variable("diffraction", ("molecule", "variant", "y", "x"), "f4", chunks=(1, 1, n, n),
                              fletcher32=True)
        for i in range(0, k, step):
            s[0, i:i + step] = shapes[i:i + step]
            p[0, i:i + step] = patterns[i:i + step]


def time_writer(write, path, shapes, patterns, shape_filter, repeats=3) -> float:
    best = None
    for _ in range(repeats):
        C.rmtree(path)
        t = time.perf_counter()
        write(path, shapes, patterns, shape_filter)
        dt = (time.perf_counter() - t) / len(shapes) * 1e3
        best = dt if best is None else min(best, dt)
    C.rmtree(path)
    return best


def build(client, size, n, out, compression) -> tuple:
    """(frames/s, bytes per frame) of a full build of ``n`` ADK frames (as several molecules)."""
    from MDAnalysisTests.datafiles import DCD, PSF

    import molmnist_dask as mm

    copies = max(1, n // 98)
    sources = [mm.TrajectorySource(f"adk{i}", PSF, DCD, stop=min(n, 98)) for i in range(copies)]
    C.rmtree(out)
    t = time.perf_counter()
    ds = mm.build_dataset(sources, size=size, extent=80.0)
    mm.save_dataset(ds, out, progress=False, compression=compression)
    wall = time.perf_counter() - t
    count = ds.sizes["molecule"] * ds.sizes["variant"]
    nbytes = sum(p.stat().st_size for p in (out / "parts").glob("*.nc")) / count
    C.rmtree(out)
    return count / wall, nbytes


def main():
    args = C.arguments(__doc__)
    from molmnist_dask.cluster import connect

    print(f"bench_writers: {C.machine()}")
    sizes = {200: 196, 1024: 48, 2048: 16} if not args.quick else {200: 48, 1024: 8, 2048: 4}
    rows = []
    for size, n in sizes.items():
        shapes, patterns = frames(size, n)
        for label, filt in (("raw", None), ("deflate 1 on shapes", 1)):
            row = [size, label]
            for write in (with_xarray, with_netcdf4, with_h5netcdf):
                row.append(time_writer(write, args.scratch / "w.nc", shapes, patterns, filt))
            rows.append(row)
    C.table(rows, ["size", "compression", "xarray.to_netcdf ms/frame", "netCDF4 direct ms/frame",
                   "h5netcdf ms/frame"], "Writers, one part file in the page cache (best of 3)")
    rows = []
    builds = {200: 784, 1024: 196, 2048: 60} if not args.quick else {200: 196, 1024: 20, 2048: 6}
    with connect("local", n_workers=2) as client:
        for size, n in builds.items():
            build(client, size, min(n, 20), args.scratch / "b", None)  # warm the workers
            for label, comp in COMPRESSIONS.items():
                fps, per_frame = build(client, size, n, args.scratch / "b", comp)
                rows.append([size, label, per_frame / 1e3, fps])
    C.table(rows, ["size", "compression", "kB per frame", "build frames/s"],
            "Compression: bytes on disk and build speed, 2 workers")


if __name__ == "__main__":
    main()
