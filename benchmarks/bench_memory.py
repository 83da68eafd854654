"""Issue 4: peak memory of the client and of each worker, and frames per second, for builds
(``build_dataset`` + ``save_dataset`` to a store) of the ten fibrils at 256, 1024, 2048 and
4096 px, on a 2-worker LocalCluster. The plan is a list of (size, variants, part bytes): the full
mode builds 10 x 400 variants at 256 px, 10 x 100 at 1024 px, 10 x 40 at 2048 px and 10 x 10 at
4096 px with parts of 1 GiB, and repeats 1024 and 4096 px with parts of 1/8 GiB and 2048 px with
parts of 1/16 GiB, to show that worker memory does not grow with the part size.

The largest builds (2048 and 4096 px) each write 13.4 GB of float32 (shape and pattern; less
on disk: the shapes compress); a build that would not fit on the scratch disk is skipped.
Each build gets a fresh cluster, so a worker's peak is its kernel high-water mark
(VmHWM); the client's peak is sampled every 50 ms. Each store is deleted after its build.

Reproduce::

    python benchmarks/bench_memory.py           # ~10 min, up to ~14 GB of disk at the peak
    python benchmarks/bench_memory.py --quick   # small builds (< 1 min)

Target (issue 8): worker peak < 2 GB at 1024, 2048 and 4096 px with parts of 1 GiB, flat in
the part size (a save task holds one sub-block, ``molmnist.sub-block-bytes``, never its part).
"""

from __future__ import annotations

import os
import shutil
import time

import _common as C


def hwm(pid: int) -> int:
    """Peak resident memory of a process since it started (bytes)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


def build(client, sources, size, variants, out, part_bytes=None) -> dict:
    import molmnist_dask as mm

    pids = list(C.worker_pids(client).values())
    C.rmtree(out)
    with C.RSSMonitor([os.getpid(), *pids]) as mon:
        t = time.perf_counter()
        ds = mm.build_dataset(sources, size=size, extent=90.0, variants=variants)
        mm.save_dataset(ds, out, progress=False, part_bytes=part_bytes)
        wall = time.perf_counter() - t
    peaks = [hwm(pid) for pid in pids]
    frames = ds.sizes["molecule"] * ds.sizes["variant"]
    result = {"size": size, "variants": variants, "frames": frames, "wall": wall,
              "logical": ds[["shape", "diffraction"]].nbytes, "disk": C.du(out),
              "client": mon.peak[os.getpid()], "workers": peaks,
              "block": ds.sizes["molecule"] * ds.sizes["variant"] / len(list((out / "parts").glob("*.nc")))}
    C.rmtree(out)
    return result


def main():
    args = C.arguments(__doc__)
    from _data import cellulose

    from molmnist_dask.cluster import connect

    print(f"bench_memory: {C.machine()}; scratch {args.scratch}")
    free = shutil.disk_usage(args.scratch).free
    print(f"disk free at {args.scratch}: {free / 2**30:.0f} GiB")
    # (size, variants, part bytes): the part size changes, worker memory must not
    gib = 2**30
    if args.quick:
        plan = [(256, 20, gib), (1024, 4, gib), (2048, 2, gib), (2048, 2, gib // 16), (4096, 1, gib)]
    else:
        plan = [(256, 400, gib), (1024, 100, gib), (1024, 100, gib // 8), (2048, 40, gib), (2048, 40, gib // 16),
                (4096, 10, gib), (4096, 10, gib // 8)]
    sources = cellulose(40 if args.quick else 400)
    rows, limit = [], None
    for size, variants, part_bytes in plan:
        need = 10 * variants * size * size * 4 * 1.2  # diffraction raw, shapes compressed
        if need > free * 0.9:
            print(f"skipping {size} px x {variants}: needs ~{need / 2**30:.0f} GiB of disk")
            continue
        with connect("local", n_workers=2) as client:
            limit = next(iter(client.scheduler_info()["workers"].values()))["memory_limit"]
            r = build(client, sources, size, variants, args.scratch / "memory-store", part_bytes)
        rows.append([size, f"10 x {r['variants']}", f"{part_bytes / 2**20:.0f} MiB", f"{r['block']:.0f}", r["logical"] / 1e9, r["disk"] / 1e9,
                     r["frames"] / r["wall"], max(r["workers"]) / 2**20, min(r["workers"]) / 2**20,
                     r["client"] / 2**20])
        print(f"  {size} px x {variants}: {r['wall']:.1f} s", flush=True)
    C.table(rows, ["size", "molecules x variants", "part bytes", "frames/part", "output GB", "on disk GB", "frames/s",
                   "worker peak MiB (max)", "(min)", "client peak MiB"],
            f"Peak memory of a build, 2 workers (memory limit {(limit or 0) / 2**30:.1f} GiB each)")
    print(f"machine memory {C.machine()}")


if __name__ == "__main__":
    main()
