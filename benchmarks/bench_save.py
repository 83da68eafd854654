"""Issue 17: saving what is not the whole build, on the workers.

1. Selection: saving ``ds.isel(molecule=[0, 2], variant=slice(0, None, 2))`` (two molecules of
   three, every second variant) against saving the whole build, in frames per second, on a
   2-worker local cluster (the project's), at 256 and 1024 px, taken in turn (whole,
   selection, whole, selection; best of the two). Also the selection written from its arrays
   (the path of a dataset whose plan is unknown: each task computes its part's chunks of the
   lazy graph, whole render blocks included). The client's CPU: its process's CPU seconds over
   the wall time of the save (100% = one core busy throughout), and its share of all the CPU
   the client and the workers used.
2. Memory: peak resident memory of the workers (above what they held before) while saving
   the build, and a computed dataset (``ds.assign(diffraction=np.log1p(ds.diffraction))``,
   written from its arrays, sub-block by sub-block on the workers), at 1024 and 2048 px, with
   parts of a few frames and of a whole molecule, against the sub-block
   (``molmnist.sub-block-bytes``) and one chunk of the lazy dataset. Each save gets a fresh
   cluster, warmed by a two-frame save, so a worker's peak is its own (sampled every 20 ms).

Trajectory: MDAnalysisTests' ADK (3,341 atoms, 98 frames), three molecules (its DCD read four
times over at 256 px: 392 frames a molecule).

Reproduce::

    python benchmarks/bench_save.py            # 3 x 392 frames at 256 px, 3 x 98 at 1024 px (~5 min)
    python benchmarks/bench_save.py --quick    # half the frames (~2 min)

Target: selection >= 0.8 of the whole build's frames/s, the client under 25% of a core;
worker peak of the computed dataset within a few sub-blocks, as for the build's own, and flat
in the part size.
"""

from __future__ import annotations

import os
import time

import numpy as np

import _common as C


def sources(frames: int):
    """Three ADK molecules of ``frames`` frames (the DCD read over again past its 98)."""
    from MDAnalysisTests.datafiles import DCD, PSF

    import molmnist_dask as mm

    repeats = -(-frames // 98)
    return [mm.TrajectorySource(f"adk{i}", PSF, [DCD] * repeats, stop=frames) for i in range(3)]


def timed_save(client, ds, out, arrays: bool = False) -> dict:
    """Frames per second of one save, and the CPU seconds of the client and of the workers."""
    import molmnist_dask as mm
    from molmnist_dask.store import write

    pids = list(C.worker_pids(client).values())
    C.rmtree(out)
    original = write.build_of
    if arrays:  # as for a dataset whose plan is not known
        write.build_of = lambda ds: None
    try:
        client_cpu, workers_cpu = C.cpu_seconds([os.getpid()]), C.cpu_seconds(pids)
        t = time.perf_counter()
        mm.save_dataset(ds, out, progress=False)
        wall = time.perf_counter() - t
        client_cpu = C.cpu_seconds([os.getpid()]) - client_cpu
        workers_cpu = C.cpu_seconds(pids) - workers_cpu
    finally:
        write.build_of = original
    C.rmtree(out)
    frames = ds.sizes["molecule"] * ds.sizes["variant"]
    return {"fps": frames / wall, "frames": frames, "client": client_cpu / wall,
            "share": client_cpu / max(client_cpu + workers_cpu, 1e-9)}


def selection(args) -> None:
    import molmnist_dask as mm
    from molmnist_dask.cluster import connect

    variants = {256: 196, 1024: 48} if args.quick else {256: 392, 1024: 98}
    rows = []
    with connect("local", n_workers=2) as client:
        for size, n in variants.items():
            ds = mm.build_dataset(sources(n), size=size, extent=80.0)
            sel = ds.isel(molecule=[0, 2], variant=slice(0, None, 2))
            timed_save(client, ds.isel(variant=[0, 1]), args.scratch / "warm")  # workers warm
            best = {}
            for _ in range(2):
                for name, data, arrays in (("whole", ds, False), ("selection", sel, False),
                                           ("selection, from arrays", sel, True)):
                    r = timed_save(client, data, args.scratch / "out", arrays)
                    if name not in best or r["fps"] > best[name]["fps"]:
                        best[name] = r
            whole = best["whole"]["fps"]
            for name, r in best.items():
                rows.append([size, name, r["frames"], r["fps"], r["fps"] / whole,
                             f"{100 * r['client']:.0f}%", f"{100 * r['share']:.0f}%"])
            print(f"  {size} px done", flush=True)
    C.table(rows, ["size", "save", "frames", "frames/s", "/ whole", "client CPU (of a core)",
                   "client share of CPU"],
            "Saving a selection (2 of 3 molecules, every 2nd variant) vs the whole build, "
            "2 workers, best of 2, same run")


def memory(args) -> None:
    import psutil
    from distributed import Client

    import molmnist_dask as mm
    from molmnist_dask.cluster import local_cluster
    from molmnist_dask.settings import setting

    frames = {1024: 24, 2048: 12} if args.quick else {1024: 48, 2048: 24}
    rows = []
    for size, n in frames.items():
        for name in ("build", "np.log1p(diffraction)"):
            for part_frames in (n // 6, n):  # parts of a few frames, and of a whole molecule
                with local_cluster(n_workers=2) as cluster, Client(cluster) as client:
                    ds = mm.build_dataset(sources(n)[:2], size=size, extent=80.0)
                    if name != "build":
                        ds = ds.assign(diffraction=np.log1p(ds.diffraction))
                    # warm: modules imported, Universes open; the peak counted from here
                    timed_save(client, ds.isel(variant=[0, 1]), args.scratch / "warm")
                    pids = list(C.worker_pids(client).values())
                    base = {pid: psutil.Process(pid).memory_info().rss for pid in pids}
                    with C.RSSMonitor(pids, interval=0.02) as mon:
                        t = time.perf_counter()
                        mm.save_dataset(ds, args.scratch / "mem", progress=False, part_frames=part_frames)
                        wall = time.perf_counter() - t
                    C.rmtree(args.scratch / "mem")
                peak = max(mon.peak[pid] - base[pid] for pid in pids)
                chunk = 4 * int(np.prod(ds["diffraction"].data.chunksize))
                rows.append([size, name, part_frames, part_frames * mm.planning.frame_bytes(
                    mm.Grid(size=size, extent=80.0)) / 2**20, 2 * n / wall, peak / 2**20,
                    setting("sub-block-bytes") / 2**20, chunk / 2**20])
        print(f"  {size} px done", flush=True)
    C.table(rows, ["size", "save", "frames a part", "part MiB", "frames/s", "worker peak MiB (above warm)",
                   "sub-block MiB", "one diffraction chunk MiB"],
            "Peak worker memory, saving the build and a computed dataset, 2 workers (fresh each)")


def main():
    args = C.arguments(__doc__, only=dict(choices=["selection", "memory"], default=None,
                                          help="run one part only"))
    print(f"bench_save: {C.machine()}")
    if args.only in (None, "selection"):
        selection(args)
    if args.only in (None, "memory"):
        memory(args)


if __name__ == "__main__":
    main()
