"""How long synthesising the cellulose fibrils takes, per molecule and in all.

Reproduce with::

    python benchmarks/bench_synth.py                 # variants 10 and 40, then the default run
    python benchmarks/bench_synth.py --variants 10 100 --molecules 2x2 9x9 --no-default

Per molecule (fresh folders, no progress bar, best of ``--repeat`` runs) it times
`synthesize` at two variant counts, and the parts of one synthesis: building the relaxed fibril,
writing its PDB, and one variant frame (positions + one DCD frame, averaged over the larger
count). The columns show how the time grows with the number of variants and with the fibril's
size (atoms), and ``gen ms`` the variant alone (`variant_positions`: what a worker of the
default build does per frame instead of reading a DCD). The last line times `default_run`,
which writes only the ten small ``.cellvar`` files (benchmarks/bench_default.py times the
default build end to end).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from molmnist_dask.cellulose import DEFAULT_VARIANTS, MOLECULES, build_fibril, default_run, synthesize
from molmnist_dask.cellulose import files
from molmnist_dask.cellulose.variants import variant_positions


def best(repeat: int, function, *args, **kwargs) -> float:
    """Fastest of ``repeat`` calls, seconds."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        function(*args, **kwargs)
        times.append(time.perf_counter() - start)
    return min(times)


def fresh(tmp: str):
    """A new folder name under ``tmp`` on every call."""
    fresh.count = getattr(fresh, "count", 0) + 1
    return Path(tmp) / f"run{fresh.count}"


def parts(name: str, variants: int, tmp: str, repeat: int) -> tuple:
    """Seconds to build the fibril, write its PDB, and make + write one frame."""
    build = best(repeat, build_fibril, name)
    fibril = build_fibril(name)
    u = files.universe(fibril)
    pdb = best(repeat, lambda: files.write_topology(u, fresh(tmp).with_suffix(".pdb")))
    frames = (variant_positions(fibril, v, variants) for v in range(variants))
    frame = best(1, files.write_trajectory, u, fresh(tmp).with_suffix(".dcd"), frames) / variants
    gen = best(repeat, lambda: [variant_positions(fibril, v, variants) for v in range(10)]) / 10
    return fibril, build, pdb, frame, gen


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", type=int, nargs=2, default=(10, 40), metavar=("FEW", "MANY"))
    parser.add_argument("--molecules", nargs="+", default=list(MOLECULES))
    parser.add_argument("--repeat", type=int, default=3, help="runs per timing; the fastest counts")
    parser.add_argument("--no-default", action="store_true", help="skip timing default_run")
    args = parser.parse_args(argv)
    few, many = args.variants
    build_fibril("2x2")  # warm up: imports and cellulose-modeler's template block

    print(f"cellulose synthesis, {os.cpu_count()} cores; seconds unless marked")
    print(f"{'molecule':>8} {'chains':>6} {'atoms':>6} {f'V={few}':>6} {f'V={many}':>6} {'ratio':>5} "
          f"{'build':>6} {'pdb':>6} {'ms/frame':>8} {'gen ms':>6} {'MB/frame':>8}")
    totals = [0.0, 0.0]
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.molecules:
            run = [best(args.repeat, lambda v=v: synthesize(fresh(tmp), variants=v, molecules=[name],
                                                             progress=False)) for v in (few, many)]
            fibril, build, pdb, frame, gen = parts(name, many, tmp, args.repeat)
            print(f"{name:>8} {fibril.n_chains:>6} {fibril.n_atoms:>6} {run[0]:>6.2f} {run[1]:>6.2f} "
                  f"{run[1] / run[0]:>5.2f} {build:>6.3f} {pdb:>6.3f} {frame * 1e3:>8.2f} {gen * 1e3:>6.2f} "
                  f"{fibril.n_atoms * 12 / 1e6:>8.2f}")
            totals = [totals[0] + run[0], totals[1] + run[1]]
        print(f"{'total':>8} {'':>6} {'':>6} {totals[0]:>6.2f} {totals[1]:>6.2f} {totals[1] / totals[0]:>5.2f}")
        if not args.no_default:
            out = fresh(tmp)
            seconds = best(1, default_run, out)
            size = sum(p.stat().st_size for p in out.iterdir())
            print(f"default_run: {len(MOLECULES)} molecules x {DEFAULT_VARIANTS} variants in "
                  f"{seconds:.2f} s, {size / 1e3:.1f} kB written (the frames are made on the workers)")


if __name__ == "__main__":
    main()
