"""Issue 2: frames per second of a full build (read, render, write) against the seed's method.

The package: ``build_dataset`` + ``save_dataset`` (part-file store) on a 2-worker
``distributed.LocalCluster`` (``molmnist_dask.cluster.connect("local")``), start-up timed apart.
The seed: one serial loop that per frame reads with MDAnalysis, centres, bins with
``numpy.histogram2d`` (weights Z), transforms with ``numpy.fft.fft2`` (complex128), takes
``abs()**2`` and ``fftshift``, and writes both images as float32 ``.npy`` files (np.save).
Both run on the same frames of the paper's ten cellulose fibrils (3,372 to 68,283 atoms) in the
same run; the best of the repeats counts. Per-frame stage times (read, bin, FFT, write) come from
the seed's loop itself and, for the package, from its kernel timed serially in this process;
the cluster's own split comes from its task stream. The outputs are checked against each other
(shapes equal, diffraction within 1e-6 relative) and deleted.

Reproduce::

    python benchmarks/bench_build.py            # 10 fibrils x 400 variants at 200 px, x 50 at 1024 px
    python benchmarks/bench_build.py --quick    # 10 x 40 at 200 px, 10 x 8 at 1024 px (< 1 min)
    python benchmarks/bench_build.py --what-if  # also: a build with the shapes not compressed

Targets (this 2-core machine): >= 10x the seed at 200x200, >= 5x at 1024x1024.
"""

from __future__ import annotations

import time
import _common as C
import numpy as np


def package_stages(sources, frames, size, extent, scratch):
    """Seconds per frame and stage of the package's code run serially here, block by block
    (the build's blocks): read (as render_block reads), bin (render minus its FFT), FFT
    (render.diffraction) and write (save_dataset of the computed frames: its part files, with
    their compression and checksums, and the index; dask's synchronous scheduler)."""
    import dask

    import molmnist_dask as mm
    from molmnist_dask.dataset import auto_block_size
    from molmnist_dask.grid import Grid
    from molmnist_dask.render import diffraction, render
    from molmnist_dask.sources import selected

    stages = C.Stages()
    grid = Grid(size, extent)
    k = auto_block_size(grid, len(frames[0]))  # the build's blocks
    n = 0
    for source, picks in zip(sources, frames):
        universe, atoms, z = selected(source)
        for start in range(0, len(picks), k):
            stages.start()
            positions = []
            for f in picks[start: start + k]:
                universe.trajectory[int(f)]
                positions.append(atoms.positions)
            stages.lap("read")
            r = render(positions, z, grid)
            stages.lap("render")
            diffraction(r.shape)
            stages.lap("fft")
        n += len(picks)
        with dask.config.set(scheduler="synchronous"):
            ds = mm.build_dataset([source], size=size, extent=extent, variants=len(picks)).load()
            out = scratch / "stages-store"
            C.rmtree(out)
            stages.start()
            mm.save_dataset(ds, out, progress=False)
            stages.lap("write")
            C.rmtree(out)
    stages.seconds["bin"] = stages.seconds.pop("render") - stages.seconds["fft"]
    return {k: v / n for k, v in stages.seconds.items()}


def run_seed(sources, frames, size, extent, scratch):
    out = scratch / "seed"
    C.rmtree(out)
    stages = C.Stages()
    cpu, t = time.process_time(), time.perf_counter()
    n = C.seed_serial(sources, frames, size, extent, out, stages)
    wall, cpu = time.perf_counter() - t, time.process_time() - cpu
    return {"wall": wall, "cpu": cpu, "frames": n, "stages": {k: v / n for k, v in stages.seconds.items()},
            "bytes": C.du(out), "out": out}


def run_build(client, sources, variants, size, extent, scratch, compression=None):
    """One build on the client's cluster: seconds to plan (build_dataset) and to save."""
    from distributed import get_task_stream

    import molmnist_dask as mm

    out = scratch / f"store-{size}"
    C.rmtree(out)
    pids = list(C.worker_pids(client).values())
    t0 = time.perf_counter()
    ds = mm.build_dataset(sources, size=size, extent=extent, variants=variants)
    t1 = time.perf_counter()
    cpu0 = C.cpu_seconds(pids) + time.process_time()
    with get_task_stream(client) as ts:
        mm.save_dataset(ds, out, progress=False, compression=compression)
    t2 = time.perf_counter()
    cpu = C.cpu_seconds(pids) + time.process_time() - cpu0
    frames = ds.sizes["molecule"] * ds.sizes["variant"]
    tasks = C.task_seconds(ts.data)
    blocks = ds.sizes["molecule"] * len(ds["shape"].data.chunks[1])
    return {"plan": t1 - t0, "save": t2 - t1, "wall": t2 - t0, "cpu": cpu, "frames": frames,
            "tasks": tasks, "blocks": blocks, "bytes": C.du(out), "out": out,
            "frame_index": ds["frame"].values}


def check(build, seed, n_check=3):
    """Shapes equal and diffraction within 1e-6 (relative norm) between the two outputs."""
    import molmnist_dask as mm

    ds = mm.open_dataset(build["out"])
    worst = 0.0
    for m in (0, ds.sizes["molecule"] - 1):
        for v in np.linspace(0, ds.sizes["variant"] - 1, n_check).astype(int):
            f = int(build["frame_index"][m, v])
            s_ref = np.load(seed["out"] / f"{m:04d}-{f:07d}-shape.npy")
            d_ref = np.load(seed["out"] / f"{m:04d}-{f:07d}-diffraction.npy").astype(np.float64)
            s = ds["shape"][m, v].values
            d = ds["diffraction"][m, v].values.astype(np.float64)
            if not np.array_equal(s, s_ref):
                raise SystemExit(f"shape differs from the seed's at molecule {m}, frame {f}")
            worst = max(worst, np.linalg.norm(d - d_ref) / np.linalg.norm(d_ref))
    if worst > 1e-6:
        raise SystemExit(f"diffraction differs from the seed's by {worst:.2e}")
    return worst


def main():
    args = C.arguments(__doc__, what_if={"action": "store_true",
                                         "help": "also build with the shapes not compressed"},
                       repeats={"type": int, "default": None, "help": "repeats of each method"})
    from _data import EXTENT, cellulose

    from molmnist_dask.cluster import connect

    print(f"bench_build: {C.machine()}")
    quick = args.quick
    plan = [(200, 40 if quick else 400), (1024, 8 if quick else 50)]
    synth_variants = max(v for _, v in plan)
    t = time.perf_counter()
    sources = cellulose(synth_variants)
    print(f"data: {len(sources)} cellulose fibrils x {synth_variants} variants "
          f"(ready in {time.perf_counter() - t:.1f} s)")
    repeats = args.repeats or (1 if quick else 2)
    rows, stage_rows, notes = [], [], []

    for size, variants in plan:
        frames = [np.linspace(0, synth_variants - 1, variants).round().astype(int) for _ in sources]
        stages_pkg = package_stages(sources, frames, size, EXTENT, args.scratch)
        seeds, builds, whatifs = [], [], {}
        t = time.perf_counter()
        with connect("local", n_workers=2) as client:
            startup = time.perf_counter() - t
            for _ in range(repeats):
                seeds.append(run_seed(sources, frames, size, EXTENT, args.scratch))
                builds.append(run_build(client, sources, variants, size, EXTENT, args.scratch))
                if args.what_if:
                    whatifs.setdefault("shapes not compressed", []).append(run_build(
                        client, sources, variants, size, EXTENT, args.scratch,
                        compression={"shape": 0, "diffraction": 0}))
        seed = min(seeds, key=lambda r: r["wall"])
        build = min(builds, key=lambda r: r["wall"])
        err = check(build, seed)
        n = seed["frames"]
        rows.append([size, "seed: serial numpy + np.save", n, seed["wall"], n / seed["wall"], 1.0,
                     1e3 * seed["cpu"] / n, seed["bytes"] / 2**30])
        rows.append([size, "molmnist-dask, 2 workers", build["frames"], build["wall"],
                     build["frames"] / build["wall"], seed["wall"] / build["wall"],
                     1e3 * build["cpu"] / build["frames"], build["bytes"] / 2**30])
        for name, runs in whatifs.items():
            b = min(runs, key=lambda r: r["wall"])
            rows.append([size, f"  what-if: {name}", b["frames"], b["wall"], b["frames"] / b["wall"],
                         seed["wall"] / b["wall"], 1e3 * b["cpu"] / b["frames"], b["bytes"] / 2**30])
        s = seed["stages"]
        stage_rows.append([size, "seed (its loop)", *(1e3 * s[k] for k in ("read", "bin", "fft", "write")),
                           1e3 * sum(s.values())])
        p = stages_pkg
        stage_rows.append([size, "package kernel, serial", *(1e3 * p[k] for k in ("read", "bin", "fft", "write")),
                           1e3 * sum(p.values())])
        tasks = build["tasks"]
        notes.append(f"{size} px: cluster start-up {startup:.1f} s (not counted); build_dataset (plan; "
                     f"the client opens each source) {build['plan']:.2f} s; diffraction vs seed "
                     f"{err:.1e} (relative norm), shapes equal")
        for name, b in [("package", build)] + [(k, min(v, key=lambda r: r["wall"])) for k, v in whatifs.items()]:
            tasks = b["tasks"]
            render_n, render_s = tasks.get("render", (0, 0.0))
            write_n, write_s = tasks.get("write", (0, 0.0))
            idle = max(0.0, 2 * b["save"] - render_s - write_s - tasks.get("other", (0, 0.0))[1])
            notes.append(f"   {name}: worker time per frame: render tasks {1e3 * render_s / b['frames']:.2f} ms "
                         f"({render_n} tasks for {b['blocks']} blocks), write tasks "
                         f"{1e3 * write_s / b['frames']:.2f} ms, idle/overhead {1e3 * idle / b['frames']:.2f} ms")
        for r in seeds + builds + [b for runs in whatifs.values() for b in runs]:
            C.rmtree(r["out"])

    C.table(rows, ["size", "method", "frames", "seconds", "frames/s", "speedup", "CPU ms/frame",
                   "GiB written"], "Full build: read + render + write (best of %d)" % repeats)
    C.table(stage_rows, ["size", "where", "read", "bin", "FFT", "write", "total"],
            "Per-frame time by stage, ms (one process)")
    print()
    for note in notes:
        print(note)
    print(f"end: {C.machine()}")


if __name__ == "__main__":
    main()
