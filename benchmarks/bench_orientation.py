"""Issue 12: what random orientations cost: frames per second with orientation="random"
against "z", in the same run, at 200 and 1024 px.

Each configuration renders the same frames with ``molmnist_dask.dataset.render_block`` (read,
rotate, bin, transform: a build's task, without dask or the disk), serially in this process, on
MDAnalysisTests' adk (3,341 atoms) and on a cloud of 68,283 atoms (the largest cellulose
fibril's count). Three orientations: "z"; the view direction (0, 0, 1), which takes the
rotating path with the identity rotation (the same images as "z", so the same transforms: the
difference is the rotation's own cost); and "random" (other images: the transform's cost
changes with them, since it only transforms the rows that hold electrons, so "random" may even
be faster). They alternate block by block, so that the load of this shared machine falls on
all alike, and each is timed in CPU seconds of this process (``time.process_time``: the
kernel is single-threaded, and waiting for a core shared with other runs is not counted);
each block's best of the repeats counts. A second table times the step that differs alone,
per frame: the kernel's copy and centring of y, x ("z") against its rotation and centring, in
microseconds.

Reproduce::

    python benchmarks/bench_orientation.py            # 96 frames at 200 px, 24 at 1024 px, best of 5
    python benchmarks/bench_orientation.py --quick    # 32 and 8 frames, best of 3

Target: the rotation costs under 10% at 200 px.
"""

from __future__ import annotations

import time

import _common as C
import numpy as np

SIZES = (200, 1024)


def molecules(quick: bool):
    import _data

    frames = 40 if quick else 100
    return [(_data.adk(), 90.0), (_data.random_cloud(68283, n_frames=frames), 130.0)]


def frames_per_second(source, extent: float, size: int, n_frames: int, repeats: int) -> dict:
    """Best frames per CPU second of render_block for each orientation, alternating block by block."""
    from molmnist_dask.dataset import auto_block_size, render_block
    from molmnist_dask.grid import Grid
    from molmnist_dask.sources import inspect

    grid = Grid(size, extent)
    available = inspect(source).frames
    frames = np.resize(available, n_frames)  # repeats the trajectory if it is short
    block = min(16, auto_block_size(grid, n_frames))  # short blocks: finer interleaving
    options = {"z": {}, "identity": {"orientation": (0.0, 0.0, 1.0)},
               "random": {"orientation": "random", "orientation_seed": 0}}
    starts = range(0, n_frames, block)
    best = {k: dict.fromkeys(starts, np.inf) for k in options}  # per block: noise spikes drop out
    for _ in range(repeats):
        for start in starts:
            picks = frames[start: start + block]
            variants = np.arange(start, start + len(picks))
            for name, kwargs in options.items():
                t = time.process_time()
                render_block(source, picks, grid, "geometry", variants=variants, **kwargs)
                best[name][start] = min(best[name][start], time.process_time() - t)
    return {k: n_frames / sum(v.values()) for k, v in best.items()}


def step_microseconds(source, repeats: int) -> dict:
    """Per frame: the unrotated copy-and-centre against the rotate-and-centre, microseconds."""
    from molmnist_dask import orientation
    from molmnist_dask.render import _centred_xy, _rotated_xy, _Workspace
    from molmnist_dask.sources import selected

    universe, atoms, z = selected(source)
    pos = universe.trajectory[0].positions
    ws = _Workspace((2, len(pos)))
    rotation = orientation.rotations("random", 0, source.name, [0])[0]
    steps = {"z": lambda: _centred_xy(pos, z, "geometry", ws),
             "random": lambda: _rotated_xy(pos, rotation, z, "geometry", ws)}
    best = dict.fromkeys(steps, np.inf)
    loops = max(10, 200_000 // len(pos))
    for _ in range(repeats * 3):
        for name, step in steps.items():
            t = time.process_time()
            for _ in range(loops):
                step()
            best[name] = min(best[name], (time.process_time() - t) / loops * 1e6)
    return best


def main():
    args = C.arguments(__doc__)
    repeats = 3 if args.quick else 5
    counts = {200: 32 if args.quick else 96, 1024: 8 if args.quick else 24}
    print(f"# bench_orientation: {C.machine()}")
    rows, steps = [], []
    for source, extent in molecules(args.quick):
        atoms = len(source_atoms(source))
        for size in SIZES:
            fps = frames_per_second(source, extent, size, counts[size], repeats)
            cost = {k: f"{fps['z'] / fps[k] - 1:+.1%}" for k in ("identity", "random")}
            rows.append([source.name, atoms, size, counts[size], fps["z"], fps["identity"], cost["identity"],
                         fps["random"], cost["random"]])
        us = step_microseconds(source, repeats)
        steps.append([source.name, atoms, us["z"], us["random"], us["random"] - us["z"]])
    C.table(rows, ["molecule", "atoms", "px", "frames", "z frames/s", "(0,0,1) frames/s",
                   "rotation's cost", "random frames/s", "random vs z"],
            title=f"render_block, serial, frames per CPU second, best of {repeats}, same run")
    C.table(steps, ["molecule", "atoms", "z: copy + centre (us)", "random: rotate + centre (us)",
                    "difference (us)"], title="the step that differs, per frame (CPU microseconds)")
    print(f"\n# after the run: {C.machine()}")


def source_atoms(source):
    from molmnist_dask.sources import selected

    return selected(source)[1]


if __name__ == "__main__":
    main()
