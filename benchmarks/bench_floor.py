"""Issues 8 and 17: the full build against this machine's per-frame floor, on any cluster.

The floor is what no build can beat: per frame, read it through MDAnalysis, render it with this
package's own kernel (`molmnist_dask.render.render`), and write the two float32 images into the
page cache with ``ndarray.tofile``, in two concurrent plain Python processes (no dask, no
NetCDF; glibc's allocator set as the workers' is, `molmnist_dask.malloc.apply`, so that the
floor is not slowed by page faults the build avoids). The build is ``build_dataset`` + ``save_dataset`` on 2
single-threaded workers of three clusters, each kept for the whole run:

- project: ``molmnist_dask.cluster.connect("local", n_workers=2)`` (the CLI's cluster);
- bare: ``distributed.LocalCluster(n_workers=2, threads_per_worker=1)``, started by the user:
  distributed's ``MALLOC_TRIM_THRESHOLD_=65536``, the allocator set only by the worker plugin
  the save registers (`molmnist_dask.malloc`), as on dask-jobqueue or scheduler-file workers;
- bare, no plugin: the same with the plugin's registration disabled: what workers the package
  did not start ran at before issue 17.

Two comparisons:

- raw: the build without compression or checksums (``compression={"shape": None},
  checksums=False``) against the raw floor; and the raw build with its Fletcher-32 checksums;
- default: the build with its default filters (deflate level 1 + shuffle on shapes, Fletcher-32
  checksums on both images) against a floor that applies the same filters to each image
  (numpy byte shuffle + ``zlib.compress(level=1)`` on shapes, a numpy Fletcher-32 on both).

Each floor and build is measured ``--repeats`` times in turn and the fastest taken (a shared
machine), each after an ``os.sync()`` (no write-back of an earlier one's pages during it).

Trajectory: MDAnalysisTests' ADK (3,341 atoms, 98 frames), as several molecules (at 200 px its
DCD read 4 times over, 392 frames a molecule).

Reproduce::

    python benchmarks/bench_floor.py            # 200, 1024, 2048 px, best of 2 (~12 min)
    python benchmarks/bench_floor.py --quick --repeats 1    # fewer frames (~3 min)
    python benchmarks/bench_floor.py --clusters bare,project --sizes 1024

Target: build / floor >= 0.8 at every size, raw and default, on every cluster (issue 17).
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import time
import zlib
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

import _common as C


def fletcher32(image: np.ndarray) -> int:
    """A Fletcher-32 of the image's 16-bit words (the work of HDF5's checksum filter)."""
    words = np.cumsum(image.view(">u2"), dtype=np.uint64)
    return int((words.sum() % 65535) << 16 | (words[-1] % 65535))


def floor_task(source, frames, size: int, extent: float, out: str, compress: bool, step: int):
    """Worker: read + render + write ``frames`` of ``source``; returns seconds taken."""
    from molmnist_dask.grid import Grid
    from molmnist_dask.render import render
    from molmnist_dask.sources import selected

    t = time.perf_counter()
    universe, atoms, z = selected(source)
    grid = Grid(size=size, extent=extent)
    with open(out, "wb") as f:
        for i in range(0, len(frames), step):
            r = render((universe.trajectory[int(k)].positions for k in frames[i:i + step]), z, grid)
            for shape, pattern in zip(r.shape, r.diffraction):
                if compress:  # the store's filters: byte shuffle, deflate level 1; checksums
                    f.write(zlib.compress(shape.view(np.uint8).reshape(-1, 4).T.tobytes(), 1))
                    f.write(np.array([fletcher32(shape), fletcher32(pattern)], np.uint32).tobytes())
                else:
                    shape.tofile(f)
                pattern.tofile(f)
    return time.perf_counter() - t


def floor(pool, sources, size, extent, frames, scratch: Path, compress: bool) -> float:
    """Frames per second of the floor: the frames split between two plain processes."""
    from molmnist_dask.grid import Grid
    from molmnist_dask.settings import setting
    from molmnist_dask.planning import frame_bytes

    step = max(1, setting("sub-block-bytes") // frame_bytes(Grid(size=size, extent=extent)))
    jobs = [(s, f) for s in sources for f in np.array_split(frames, 2)]
    os.sync()  # no write-back of the previous measurement's pages during this one
    t = time.perf_counter()
    futures = [pool.submit(floor_task, s, f, size, extent, str(scratch / f"floor-{i}.bin"), compress, step)
               for i, (s, f) in enumerate(jobs)]
    for f in futures:
        f.result()
    wall = time.perf_counter() - t
    for p in scratch.glob("floor-*.bin"):
        p.unlink()
    return len(sources) * len(frames) / wall


def build(client, sources, size, extent, out: Path, compression, checksums=True, plugin=True) -> dict:
    """Frames per second of build_dataset + save_dataset on ``client``'s cluster."""
    import molmnist_dask as mm
    from molmnist_dask import malloc
    from molmnist_dask.store import read_index

    register = malloc.register
    if not plugin:
        malloc.register = lambda client: None
    try:
        C.rmtree(out)
        os.sync()
        with client.as_current():
            t = time.perf_counter()
            ds = mm.build_dataset(sources, size=size, extent=extent)
            mm.save_dataset(ds, out, progress=False, compression=compression, checksums=checksums)
            wall = time.perf_counter() - t
    finally:
        malloc.register = register
    frames = ds.sizes["molecule"] * ds.sizes["variant"]
    parts = len(read_index(out).parts)
    C.rmtree(out)
    return {"fps": frames / wall, "frames": frames, "parts": parts}


def _allocator() -> None:
    from molmnist_dask.malloc import apply

    apply()


@contextlib.contextmanager
def clusters(names):
    """{name: client} of the clusters compared, each of 2 single-threaded workers."""
    from distributed import Client, LocalCluster

    from molmnist_dask.cluster import connect

    with contextlib.ExitStack() as stack:
        out = {}
        for name in names:
            if name == "project":
                out[name] = stack.enter_context(connect("local", n_workers=2))
            else:
                cluster = stack.enter_context(LocalCluster(n_workers=2, threads_per_worker=1,
                                                           dashboard_address=":0"))
                out[name] = stack.enter_context(Client(cluster, set_as_default=False))
        yield out


def main():
    args = C.arguments(__doc__, clusters=dict(default="project,bare,bare-no-plugin",
                                              help="comma-separated: project, bare, bare-no-plugin"),
                       sizes=dict(default="200,1024,2048", help="comma-separated sizes"),
                       repeats=dict(type=int, default=2, help="measurements of each, best taken"),
                       copies=dict(type=int, default=None, help="molecules (ADK copies) per size"))
    from MDAnalysisTests.datafiles import DCD, PSF

    import molmnist_dask as mm

    print(f"bench_floor: {C.machine()}")
    names = args.clusters.split(",")
    sizes = [int(s) for s in args.sizes.split(",")]
    copies = {200: 8, 1024: 2, 2048: 2} if not args.quick else {200: 2, 1024: 2, 2048: 1}
    copies = {size: args.copies or n for size, n in copies.items()}
    frames_of = {200: 392, 1024: 98, 2048: 24} if not args.quick else {200: 196, 1024: 49, 2048: 24}
    rows = []
    spawn = multiprocessing.get_context("spawn")
    # the floor's processes keep freed memory as the workers do (glibc's defaults trim the
    # heap above 2x the last freed mmap, up to 64 MiB: at 1024 px they page-fault every frame's
    # buffers in anew and the "floor" fell below the build)
    processes = ProcessPoolExecutor(2, mp_context=spawn, initializer=_allocator)
    with clusters(names) as clients, processes as pool:
        for size in sizes:
            n = frames_of[size]
            src = [mm.TrajectorySource(f"adk{i}", PSF, [DCD] * -(-n // 98), stop=n) for i in range(copies[size])]
            frames = np.arange(n)
            floor(pool, src, size, 80.0, frames[:4], args.scratch, False)  # warm both processes
            for name, client in clients.items():  # warm the workers
                build(client, src[:1], size, 80.0, args.scratch / "store", None, plugin=name != "bare-no-plugin")
            floors, builds = {False: 0.0, True: 0.0}, {}
            for _ in range(args.repeats):  # in turn, the best of each: a shared machine
                for c in (False, True):
                    floors[c] = max(floors[c], floor(pool, src, size, 80.0, frames, args.scratch, c))
                for name, client in clients.items():
                    kw = dict(plugin=name != "bare-no-plugin")
                    runs = (build(client, src, size, 80.0, args.scratch / "store", {"shape": None},
                                  checksums=False, **kw),
                            build(client, src, size, 80.0, args.scratch / "store", None, **kw))
                    best = builds.get(name, runs)
                    builds[name] = tuple(max(a, b, key=lambda r: r["fps"]) for a, b in zip(best, runs))
            for name, (raw, default) in builds.items():
                rows.append([size, name, raw["frames"], floors[False], raw["fps"], raw["fps"] / floors[False],
                             floors[True], default["fps"], default["fps"] / floors[True],
                             100 * default["parts"] / default["frames"]])
            print(f"  {size} px done", flush=True)
    C.table(rows, ["size", "cluster", "frames", "raw floor f/s", "raw build f/s", "ratio",
                   "filtered floor f/s", "default build f/s", "ratio", "tasks / 100 frames"],
            "Build vs the per-frame floor (2 plain processes: read + kernel + write), 2 workers, same run")


if __name__ == "__main__":
    main()
