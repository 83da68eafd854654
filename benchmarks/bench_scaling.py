"""Issue 4: strong scaling from 1 to 2 workers on this machine, and a weak-scaling projection to
Perlmutter CPU nodes from what is measured here.

Measured (2-core machine, LocalCluster, one single-threaded worker per core):
- the same build (ten cellulose fibrils; 200 px and 1024 px) on 1 and on 2 workers:
  speedup and efficiency T1 / (2 T2);
- c, core-seconds per frame (the 1-worker wall time per frame: read, render, write, overhead);
- tau, the scheduler's cost per task: wall time per empty task when 2 workers run thousands;
- b, bytes on disk per frame, and the disk's bandwidth (dd, conv=fdatasync).

Model, for P = 128 N cores on N nodes, F frames in parts of k frames, m tasks a part (one: the
save task that renders and writes it; counted in the task stream), k as `save_dataset` cuts
them for P worker threads (``molmnist.part-frames``/``part-bytes``, fewer when threads would idle):

    T(N) = T_start + max(F c / (s P),  m F tau / k,  F b / min(N B_node, B_fs))

the work spread over the cores, the one scheduler handing out tasks one after another, and the
file system, whichever is slowest; node-hours = N T(N) / 3600. Assumed for Perlmutter (say so
when quoting): s = 1 (a Perlmutter Milan core as fast as one of these; override with --speed),
B_node = 5 GB/s per node, B_fs = 1 TB/s for one job on the Lustre scratch, T_start = 60 s
(Slurm jobs start and workers connect).

Reproduce::

    python benchmarks/bench_scaling.py           # 10 fibrils x 400 variants at 200 px, x 50 at 1024 px
    python benchmarks/bench_scaling.py --quick   # 10 x 40 and 10 x 8 (< 1 min)
"""

from __future__ import annotations

import math
import time

import _common as C

CORES_PER_NODE = 128
B_NODE = 5e9
B_FS = 1e12
T_START = 60.0


def build(n_workers, sources, size, variants, scratch):
    from distributed import get_task_stream

    import molmnist_dask as mm
    from molmnist_dask.cluster import connect

    out = scratch / "scaling-store"
    C.rmtree(out)
    with connect("local", n_workers=n_workers) as client:
        # open the sources on the workers first (each worker's cache), outside the timing
        warm = mm.build_dataset(sources, size=size, extent=90.0, variants=1)
        client.compute(warm["lost_atoms"].data).result()
        t = time.perf_counter()
        ds = mm.build_dataset(sources, size=size, extent=90.0, variants=variants)
        with get_task_stream(client) as ts:
            mm.save_dataset(ds, out, progress=False)
        wall = time.perf_counter() - t
    from molmnist_dask.store import read_index

    frames = ds.sizes["molecule"] * ds.sizes["variant"]
    parts = len(read_index(out).parts)
    writes = [t for t in ts.data if "write-part" in str(t["key"])]
    result = {"wall": wall, "frames": frames, "bytes": C.du(out), "block": frames / parts,
              "tasks": C.task_seconds(ts.data), "tasks_per_block": len(writes) / parts}
    C.rmtree(out)
    return result


def task_overhead(n_tasks: int) -> tuple:
    """Seconds per empty task (2 workers, many in flight) and one task's round trip."""
    from molmnist_dask.cluster import connect

    with connect("local", n_workers=2) as client:
        client.gather(client.map(_noop, range(100), pure=False))  # warm up
        t = time.perf_counter()
        client.gather(client.map(_noop, range(n_tasks), pure=False))
        per_task = (time.perf_counter() - t) / n_tasks
        rtts = []
        for i in range(20):
            t = time.perf_counter()
            client.submit(_noop, i, pure=False).result()
            rtts.append(time.perf_counter() - t)
    return per_task, min(rtts)


def _noop(x):
    return x


def part_frames(frames: int, frame_bytes: int, cores: int) -> int:
    """Frames per part as save_dataset cuts ``frames`` (10 molecules) for ``cores`` threads;
    ``frame_bytes`` is a frame's uncompressed output, as save_dataset counts it."""
    from molmnist_dask.store.layout import frames_per_part

    return frames_per_part(10, frames // 10, frame_bytes, cores)


def project(c, tau, b, fb, frames, nodes, speed, tasks_per_block):
    """T(N) and its terms, and k, the frames per part (``fb``: a frame's uncompressed bytes)."""
    cores = CORES_PER_NODE * nodes
    k = part_frames(frames, fb, cores)
    compute = frames * c / (speed * cores)
    sched = tasks_per_block * frames / k * tau
    io = frames * b / min(nodes * B_NODE, B_FS)
    t = T_START + max(compute, sched, io)
    return t, compute, sched, io, k


def main():
    args = C.arguments(__doc__, speed={"type": float, "default": 1.0,
                                       "help": "a Perlmutter core's speed relative to one here"})
    from _data import cellulose
    from bench_write import dd

    from molmnist_dask.dataset import frame_bytes
    from molmnist_dask.grid import Grid

    print(f"bench_scaling: {C.machine()}")
    plan = [(200, 40 if args.quick else 400), (1024, 8 if args.quick else 50)]
    sources = cellulose(40 if args.quick else 400)
    rows, measured = [], {}
    for size, variants in plan:
        runs = {n: build(n, sources, size, variants, args.scratch) for n in (1, 2)}
        t1, t2 = runs[1]["wall"], runs[2]["wall"]
        f = runs[1]["frames"]
        for n in (1, 2):
            r = runs[n]
            rows.append([size, n, f, r["wall"], f / r["wall"], t1 / r["wall"], t1 / (n * r["wall"])])
        measured[size] = {"c": t1 / f, "b": runs[2]["bytes"] / f, "k": runs[2]["block"],
                          "tpb": runs[2]["tasks_per_block"], "fb": frame_bytes(Grid(size=size, extent=90.0))}
    C.table(rows, ["size", "workers", "frames", "seconds", "frames/s", "speedup", "efficiency"],
            "Strong scaling on this machine (2 cores)")

    tau, rtt = task_overhead(500 if args.quick else 3000)
    disk = dd(args.scratch / "dd.bin", 256 if args.quick else 2048)["dd conv=fdatasync"] * 1e6
    print(f"\nscheduler: {tau * 1e3:.2f} ms per empty task (2 workers, many in flight; "
          f"{1 / tau:,.0f} tasks/s); one task's round trip {rtt * 1e3:.1f} ms; disk here {disk / 1e6:.0f} MB/s")
    for size, m in measured.items():
        print(f"{size} px: c = {m['c'] * 1e3:.1f} core-ms/frame (1 worker), b = {m['b'] / 2**20:.2f} MiB/frame "
              f"on disk, k = {m['k']:.0f} frames/part, {m['tpb']:.1f} tasks/part; this disk alone would cap 2 workers at "
              f"{disk / m['b']:.0f} frames/s")

    rows = []
    per_core = 200  # weak scaling: frames per core held fixed
    for size, m in measured.items():
        for nodes in (1, 10, 100):
            frames = per_core * CORES_PER_NODE * nodes
            t, comp, sched, io, k = project(m["c"], tau, m["b"], m["fb"], frames, nodes, args.speed, m["tpb"])
            rows.append([size, nodes, f"{frames:,}", k, comp, sched, io, t, (comp + T_START) / t])
    C.table(rows, ["size", "nodes", "frames (200/core)", "frames/part", "compute s", "scheduler s", "I/O s",
                   "T s", "weak efficiency"],
            f"Weak scaling projected to Perlmutter CPU nodes (128 cores; speed x{args.speed:g}; "
            f"{B_NODE / 1e9:g} GB/s per node, {B_FS / 1e12:g} TB/s file system, {T_START:g} s start)")

    m = measured[1024]
    for frames in (10 * 2000, 2_560_000):
        rows = []
        for nodes in (1, 2, 10, 100):
            t, comp, sched, io, k = project(m["c"], tau, m["b"], m["fb"], frames, nodes, args.speed, m["tpb"])
            rows.append([nodes, k, comp, sched, io, t, (comp + T_START) / t, nodes * t / 3600])
        C.table(rows, ["nodes", "frames/part", "compute s", "scheduler s", "I/O s", "T s", "efficiency",
                       "node-hours"],
                f"{frames:,} frames at 1024 x 1024 ({frames * m['b'] / 1e9:,.0f} GB) on Perlmutter CPU nodes")
    big = 2_560_000  # the larger projection above
    core_hours = big * m["c"] / args.speed / 3600
    print(f"work ({big:,} frames): {core_hours:.2f} core-hours = {core_hours / CORES_PER_NODE:.3f} node-hours of "
          f"compute; the start-up ({T_START:g} s) dominates below "
          f"~{math.ceil(big * m['c'] / args.speed / CORES_PER_NODE / T_START)} node(s)")
    print(f"end: {C.machine()}")


if __name__ == "__main__":
    main()
