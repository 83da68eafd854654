"""What per-frame labels and provenance cost when a dataset is built (on the client, before any
task runs): ``build_dataset`` of an XTC trajectory (whose times are read from each frame's
header) and of a DCD (whose times come from the file's header), against the same builds with
no time label, and against reading the frames once (what the render reads anyway).

    python benchmarks/bench_labels.py [--atoms 20000] [--frames 300]

Prints seconds and ratios, measured in the same run.
"""

from __future__ import annotations

import argparse
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np


def write_trajectories(folder: Path, atoms: int, frames: int) -> dict:
    """A PDB topology and the same frames as XTC and DCD (random walk positions)."""
    import MDAnalysis as mda

    u = mda.Universe.empty(atoms, trajectory=True)
    u.add_TopologyAttr("name", ["C"] * atoms)
    u.add_TopologyAttr("elements", ["C"] * atoms)
    rng = np.random.default_rng(0)
    pos = rng.uniform(-40, 40, (atoms, 3)).astype(np.float32)
    u.atoms.positions = pos
    u.dimensions = [100, 100, 100, 90, 90, 90]
    top = folder / "top.pdb"
    u.atoms.write(str(top))
    paths = {"xtc": folder / "traj.xtc", "dcd": folder / "traj.dcd"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        writers = [mda.Writer(str(p), atoms, dt=2.0) for p in paths.values()]
        for _ in range(frames):
            pos += rng.normal(0, 0.1, pos.shape).astype(np.float32)
            u.atoms.positions = pos
            for w in writers:
                w.write(u.atoms)
        for w in writers:
            w.close()
    return {"top": top, **paths}


def best(fn, repeat=3) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--atoms", type=int, default=20000)
    ap.add_argument("--frames", type=int, default=300)
    args = ap.parse_args()

    import molmnist_dask as mm
    from molmnist_dask import labels, sources

    with tempfile.TemporaryDirectory() as tmp:
        files = write_trajectories(Path(tmp), args.atoms, args.frames)
        print(f"bench_labels: {args.atoms} atoms x {args.frames} frames")
        for kind in ("xtc", "dcd"):
            source = mm.TrajectorySource(kind, str(files["top"]), str(files[kind]))
            build = lambda: mm.build_dataset([source], size=64, extent=100.0)  # noqa: E731
            build()  # open the Universe once (cached), as any build does
            with_time = best(build)
            real = labels.reader_labels
            sources.reader_labels = lambda *a, **k: real(*a, **{**k, "time": False})
            try:
                without = best(build)
            finally:
                sources.reader_labels = real
            universe = sources.open_universe(source)
            read = best(lambda: [None for _ in universe.trajectory], repeat=1)
            print(f"  {kind}: build_dataset {with_time:.3f} s with time, {without:.3f} s without "
                  f"(x{with_time / without:.2f}); reading every frame once {read:.3f} s "
                  f"(time labels = {(with_time - without) / read:.2f} of one read)")


if __name__ == "__main__":
    main()
