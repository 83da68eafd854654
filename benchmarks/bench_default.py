"""The default build end to end, cold: wall time and bytes written.

Reproduce with::

    python benchmarks/bench_default.py            # 10 molecules x 2,000 variants at 200 px
    python benchmarks/bench_default.py --quick    # x 100 variants

Two ways to the same dataset, each in fresh processes and an empty folder:

- default: ``molmnist build -o OUT`` (the variants made on the workers from ``.cellvar`` files);
- landed: ``molmnist synth -o DIR --variants V`` (PDB + DCD files), then
  ``molmnist build DIR/run.toml -o OUT`` (the path before the variants were made on the workers).

Bytes written are counted twice: what the run leaves on disk (file sizes), and what its
processes wrote (``ru_oublock`` of the process tree, in 512-byte blocks: temporary files
included). Targets (issue 10): at most about a minute, at most 1.2x the dataset's size.
"""

from __future__ import annotations

import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

from _common import arguments, table


def molmnist(*args, cwd: Path) -> None:
    run = subprocess.run([sys.executable, "-m", "molmnist_dask.cli", *map(str, args)], cwd=cwd,
                         capture_output=True, text=True)
    if run.returncode != 0:
        sys.exit(f"molmnist {' '.join(map(str, args))} failed:\n{run.stderr}")


def size(path: Path) -> int:
    """Bytes of the files under ``path`` (or of the file)."""
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def measured(steps, folder: Path) -> tuple:
    """Wall seconds, CPU seconds, bytes left under ``folder`` and bytes written by the process
    tree of ``steps`` (workers included: the CLI's nannies reap them)."""
    folder.mkdir(parents=True)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    for step in steps:
        molmnist(*step, cwd=folder)
    seconds = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    written = (after.ru_oublock - before.ru_oublock) * 512
    return seconds, cpu, size(folder), written


def main() -> None:
    args = arguments(__doc__, only=dict(choices=["default", "landed"], help="run only one of the two"))
    variants = 100 if args.quick else 2000
    flags = ["--variants", str(variants)] if args.quick else []
    runs = {
        "default: molmnist build -o OUT": [["build", "-o", "out", *flags, "--no-progress"]],
        f"landed: molmnist synth --variants {variants} + build run.toml": [
            ["synth", "-o", "synth", "--variants", variants, "--no-progress"],
            ["build", "synth/run.toml", "-o", "out", "--no-progress"],
        ],
    }
    rows = []
    for i, (name, steps) in enumerate(runs.items()):
        if args.only and not name.startswith(args.only):
            continue
        folder = args.scratch / f"run{i}"
        load = os.getloadavg()[0]
        seconds, cpu, left, written = measured(steps, folder)
        dataset = size(folder / "out")
        rows.append([name, f"{seconds:.1f}", f"{cpu:.1f}", f"{load:.1f}", f"{dataset / 1e9:.2f}",
                     f"{left / 1e9:.2f}", f"{written / 1e9:.2f}", f"{max(left, written) / dataset:.2f}"])
        shutil.rmtree(folder)   # keep the disk free for the next run
    # CPU seconds are what the run costs on a machine of its own (wall ~ CPU / cores + start);
    # the load before it says how much else the machine was doing
    table(rows, ["run (cold)", "wall s", "CPU s", "load before", "dataset GB", "left on disk GB",
                 "written GB", "written / dataset"],
          title=f"10 molecules x {variants} variants at 200 px, {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
