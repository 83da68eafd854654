"""Issue 8: the full build against this machine's per-frame floor, same trajectory, same run.

The floor is what no build can beat: per frame, read it through MDAnalysis, render it with this
package's own kernel (`molmnist_dask.render.render`), and write the two float32 images into the
page cache with ``ndarray.tofile``, on the same 2 workers, with nothing else (no dask graph, no
NetCDF). The build is ``build_dataset`` + ``save_dataset`` on those workers. Two comparisons:

- raw: the build without compression or checksums (``compression={"shape": None},
  checksums=False``) against the raw floor; and the raw build with its Fletcher-32 checksums;
- default: the build with its default filters (deflate level 1 + shuffle on shapes, Fletcher-32
  checksums on both images) against a floor that applies the same filters to each image
  (numpy byte shuffle + ``zlib.compress(level=1)`` on shapes, a numpy Fletcher-32 on both).

Also: scheduler tasks per 100 frames, and the client's seconds between the last task and the
end of ``save_dataset`` (the index), with the default parts and with 10x as many parts.

Trajectory: MDAnalysisTests' ADK (3,341 atoms, 98 frames), as several molecules (at 200 px its
DCD read 4 times over, 392 frames a molecule).

Reproduce::

    python benchmarks/bench_floor.py            # 200, 1024, 2048 px (~6 min)
    python benchmarks/bench_floor.py --quick    # fewer frames (< 1 min)

Target: build / floor >= 0.7 at every size, raw and default; <= 2 tasks per 100 frames at
1024 px; the finish no slower with 10x the parts.
"""

from __future__ import annotations

import time
import zlib
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


def floor(client, sources, size, extent, frames, scratch: Path, compress: bool) -> float:
    """Frames per second of the floor: the frames split between the workers."""
    from molmnist_dask.dataset import frame_bytes
    from molmnist_dask.grid import Grid
    from molmnist_dask.settings import setting

    step = max(1, setting("sub-block-bytes") // frame_bytes(Grid(size=size, extent=extent)))
    jobs = [(s, f) for s in sources for f in np.array_split(frames, 2)]
    workers = list(client.scheduler_info()["workers"])
    t = time.perf_counter()
    futures = [client.submit(floor_task, s, f, size, extent, str(scratch / f"floor-{i}.bin"), compress,
                             step, workers=[workers[i % len(workers)]], pure=False)
               for i, (s, f) in enumerate(jobs)]
    client.gather(futures)
    wall = time.perf_counter() - t
    for p in scratch.glob("floor-*.bin"):
        p.unlink()
    return len(sources) * len(frames) / wall


def build(client, sources, size, extent, out: Path, compression, part_frames=None, checksums=True) -> dict:
    """Frames per second of build_dataset + save_dataset; tasks and the client's finish time."""
    import molmnist_dask as mm
    from molmnist_dask.store import read_index, write

    finish = {}
    original = write._finish

    def timed(*args, **kwargs):
        t = time.perf_counter()
        original(*args, **kwargs)
        finish["s"] = time.perf_counter() - t

    write._finish = timed
    try:
        C.rmtree(out)
        t = time.perf_counter()
        ds = mm.build_dataset(sources, size=size, extent=extent)
        mm.save_dataset(ds, out, progress=False, compression=compression, part_frames=part_frames,
                        checksums=checksums)
        wall = time.perf_counter() - t
    finally:
        write._finish = original
    frames = ds.sizes["molecule"] * ds.sizes["variant"]
    parts = len(read_index(out).parts)
    C.rmtree(out)
    return {"fps": frames / wall, "frames": frames, "parts": parts, "finish": finish.get("s", 0.0)}


def main():
    args = C.arguments(__doc__)
    from MDAnalysisTests.datafiles import DCD, PSF

    import molmnist_dask as mm
    from molmnist_dask.cluster import connect

    print(f"bench_floor: {C.machine()}")
    # builds of several seconds (a real one takes minutes), and molecules of several hundred
    # frames at 200 px (the DCD read 4 times over), so that parts hold what they would in a
    # real build rather than 98 frames each
    copies = {200: 8, 1024: 4, 2048: 2} if not args.quick else {200: 2, 1024: 1, 2048: 1}
    frames_of = {200: 392, 1024: 98, 2048: 49} if not args.quick else {200: 98, 1024: 30, 2048: 10}
    rows, extra = [], []
    with connect("local", n_workers=2) as client:
        for size, n in copies.items():
            repeats = -(-frames_of[size] // 98)
            src = [mm.TrajectorySource(f"adk{i}", PSF, [DCD] * repeats, stop=frames_of[size]) for i in range(n)]
            frames = np.arange(frames_of[size])
            floor(client, src[:1], size, 80.0, frames[:4], args.scratch, False)  # warm the workers
            raw_floor = floor(client, src, size, 80.0, frames, args.scratch, False)
            raw = build(client, src, size, 80.0, args.scratch / "store", {"shape": None}, checksums=False)
            raw_sums = build(client, src, size, 80.0, args.scratch / "store", {"shape": None})
            z_floor = floor(client, src, size, 80.0, frames, args.scratch, True)
            default = build(client, src, size, 80.0, args.scratch / "store", None)
            rows.append([size, raw["frames"], raw_floor, raw["fps"], raw["fps"] / raw_floor,
                         raw_sums["fps"] / raw_floor, z_floor, default["fps"], default["fps"] / z_floor,
                         100 * default["parts"] / default["frames"]])
            print(f"  {size} px done", flush=True)
            if size == 1024:
                many = build(client, src, size, 80.0, args.scratch / "store", None,
                             part_frames=max(1, default["frames"] // (10 * default["parts"])))
                extra = [[default["parts"], default["finish"]], [many["parts"], many["finish"]]]
    C.table(rows, ["size", "frames", "raw floor f/s", "raw build f/s", "ratio",
                   "(with checksums)", "filtered floor f/s", "default build f/s", "ratio", "tasks / 100 frames"],
            "Build vs the per-frame floor (read + kernel + write), 2 workers, same run")
    C.table(extra, ["parts", "client seconds after the last task"], "Finish at 1024 px")


if __name__ == "__main__":
    main()
