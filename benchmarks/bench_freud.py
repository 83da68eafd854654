"""Issue 4: diffraction side by side with freud (``freud.diffraction.DiffractionPattern``) and
the seed's serial numpy method, at 256, 512 and 1024 px, on the same frames of the same
trajectory (the 9x9 cellulose fibril, 68,283 atoms), in the same run. Frames per second of
reading + computing the pattern; nothing is written.

- seed: per frame, MDAnalysis read, centre, ``numpy.histogram2d`` weighted by Z,
  ``numpy.fft.fft2`` (complex128), ``abs()**2``, ``fftshift``; one core.
- molmnist-dask kernel: ``molmnist_dask.render.render`` (shape and diffraction) on the frames
  read as ``render_block`` reads them; one core.
- molmnist-dask, 2 workers: ``build_dataset`` (blocks of 1/8 of the frames) computed on a
  2-worker LocalCluster (the images reduced on the workers, nothing written or gathered);
  start-up not counted.
- freud, 1 and 2 threads: ``DiffractionPattern(grid_size=n).compute((box, points), zoom=1,
  weights=Z)`` with a cubic box of the field of view's side.

freud computes something a bit different: it bins fractional coordinates of a periodic cubic box
(atoms outside the field of view are wrapped back in, not dropped), multiplies the transform by
a Gaussian of ``peak_width`` (1 A: the points are smeared, high q damped), normalises the
pattern to S(0) = N (weights rescaled to sum to N), and resamples it through ``zoom`` with
interpolation; it returns no real-space image. The seed and this package give
``|FFT2(electron-count image)|^2`` in electrons^2, and the shape image too.

Reproduce::

    python benchmarks/bench_freud.py           # 80 frames per size
    python benchmarks/bench_freud.py --quick   # 12 frames per size (< 1 min)
"""

from __future__ import annotations

import time

import _common as C
import numpy as np

EXTENT = 90.0


def read_frames(source, frames):
    from molmnist_dask.sources import selected

    universe, atoms, z = selected(source)
    out = []
    for f in frames:
        universe.trajectory[int(f)]
        out.append(atoms.positions)
    return out, z


def seed(source, frames, size):
    half = EXTENT / 2
    positions, z = read_frames(source, frames)
    for pos in positions:
        pos = pos.astype(np.float64)
        pos -= pos.mean(axis=0)
        h = np.histogram2d(pos[:, 1], pos[:, 0], bins=size, range=[[-half, half]] * 2, weights=z)[0]
        np.fft.fftshift(np.abs(np.fft.fft2(h)) ** 2)


def kernel(source, frames, size):
    from molmnist_dask.grid import Grid
    from molmnist_dask.render import render

    positions, z = read_frames(source, frames)
    render(positions, z, Grid(size, EXTENT))


def freud_pattern(source, frames, size, threads):
    import freud

    freud.parallel.set_num_threads(threads)
    box = freud.box.Box.cube(EXTENT)
    dp = freud.diffraction.DiffractionPattern(grid_size=size, output_size=size)
    positions, z = read_frames(source, frames)
    for pos in positions:
        pos = (pos - pos.mean(axis=0)).astype(np.float32)
        dp.compute((box, pos), zoom=1, weights=z.astype(np.float32), reset=True)
        dp.diffraction


def cluster(client, source, n_frames, size):
    import dask

    import molmnist_dask as mm

    # blocks of an eighth of the frames, so both workers have some
    ds = mm.build_dataset([source], size=size, extent=EXTENT, variants=n_frames,
                          block_size=max(1, -(-n_frames // 8)))
    dask.compute(ds["shape"].data.sum(), ds["diffraction"].data.sum())


def timed(fn, *args, repeats=2):
    best = 1e9
    for _ in range(repeats):
        t = time.perf_counter()
        fn(*args)
        best = min(best, time.perf_counter() - t)
    return best


def main():
    args = C.arguments(__doc__)
    from _data import cellulose

    import freud

    from molmnist_dask.cluster import connect
    from molmnist_dask.sources import selected

    print(f"bench_freud: {C.machine()}; freud {freud.__version__}")
    n = 12 if args.quick else 80
    source = cellulose(n, molecules=["9x9"])[0]
    frames = np.arange(n)
    selected(source)  # open once, outside the timing
    rows = []
    with connect("local", n_workers=2) as client:
        cluster(client, source, n, 64)  # the workers open the source, outside the timing
        for size in (256, 512, 1024):
            times = {
                "seed: numpy, serial": timed(seed, source, frames, size),
                "molmnist-dask kernel, 1 core": timed(kernel, source, frames, size),
                "molmnist-dask, 2 workers": timed(cluster, client, source, n, size),
                "freud, 1 thread": timed(freud_pattern, source, frames, size, 1),
                "freud, 2 threads": timed(freud_pattern, source, frames, size, 2),
            }
            base = times["seed: numpy, serial"]
            for name, t in times.items():
                rows.append([size, name, n / t, base / t])
    C.table(rows, ["size", "method", "frames/s", "vs seed"],
            f"Diffraction of the 9x9 fibril (68,283 atoms), {n} frames, read + compute (best of 2)")
    print(f"end: {C.machine()}")


if __name__ == "__main__":
    main()
