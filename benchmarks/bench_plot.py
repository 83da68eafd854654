"""Issue 18: `molmnist plot` wall time, in a fresh process each (imports included), against
the way the distribution figure was computed before (dask, one task per image), same run.

Rows:

- ``plot, cold``: the store's files dropped from the page cache first (``posix_fadvise``
  DONTNEED on its files only), output to a new folder;
- ``plot, warm``: the same again, the page cache full, a new output folder;
- ``plot --qmax, same folder``: another ``--qmax`` into the folder of the warm run (the
  distribution's sums are cached there, so only the galleries' images are read);
- ``before: the distribution alone``: ``analysis.distribution(mm.open_dataset(store)).compute()``,
  what 0.1.0's distribution figure computed, warm (its galleries and drawing not counted: a
  lower bound of the plot before).

Reproduce::

    molmnist build -o mm400 --variants 400          # 10 x 400 at 200 px, 0.6 GB, about a minute
    python benchmarks/bench_plot.py --store mm400
    molmnist build -o molecular-mnist               # the paper size, 10 x 2,000, 3.4 GB
    python benchmarks/bench_plot.py --store molecular-mnist

Without ``--store`` it builds a 10 x 100 store in its scratch folder (``--quick``: 10 x 40).
Target: the paper-size figures in under 20 s.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import _common as C


def drop_from_page_cache(store: Path) -> None:
    files = [store] if store.is_file() else [p for p in store.rglob("*") if p.is_file()]
    for f in files:
        fd = os.open(f, os.O_RDONLY)
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def timed(argv, env) -> float:
    t0 = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    if done.returncode:
        sys.exit(f"{' '.join(map(str, argv))} failed:\n{done.stderr[-2000:]}")
    return wall


def main() -> None:
    args = C.arguments(__doc__, store={"help": "a store or .nc file (default: build a small one)"})
    env = dict(os.environ, PYTHONPATH=str(C.ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    store = Path(args.store) if args.store else args.scratch / "store"
    if not args.store:
        variants = 40 if args.quick else 100
        timed([sys.executable, "-m", "molmnist_dask.cli", "build", "-o", store, "--variants",
               str(variants), "--workers", "2", "--no-progress"], env)
    import molmnist_dask as mm

    ds = mm.open_dataset(store, chunks=None)
    what = f"{ds.sizes['molecule']} x {ds.sizes['variant']} at {ds.sizes['x']} px"
    plot = [sys.executable, "-m", "molmnist_dask.cli", "plot", store, "--no-progress", "-o"]
    before = [sys.executable, "-c", "import molmnist_dask as mm; from molmnist_dask.analysis import "
              f"distribution; distribution(mm.open_dataset({str(store)!r})).compute()"]
    drop_from_page_cache(store)
    rows = [("plot, cold", timed(plot + [args.scratch / "cold"], env)),
            ("plot, warm", timed(plot + [args.scratch / "warm"], env)),
            ("plot --qmax 0.3, same folder", timed(plot + [args.scratch / "warm", "--qmax", "0.3"], env)),
            ("before: the distribution alone, warm", timed(before, env))]
    base = rows[-1][1]
    C.table([(name, wall, f"{wall / base:.2f}") for name, wall in rows],
            ["run", "wall s", "/ before"], title=f"molmnist plot, {what} ({C.machine()})")


if __name__ == "__main__":
    main()
