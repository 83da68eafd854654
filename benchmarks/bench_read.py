"""Issue 9: opening a store and reading one image, through plain ``xr.open_dataset(store)``
(this package's xarray backend), against the first version's ``open_dataset`` and its README
recipe (``xr.open_mfdataset`` over the manifest's nested parts), on paper-size stores
(10 molecules x 2,000 variants at 200 px) with the same data.

Each number is the best of 5 in a fresh process for "open" (so nothing is cached in Python;
xarray, netCDF4 and the package imported first: imports are not the open's cost) and, for
"one image", the median of 20 reads of random images after a first read (warm: the
page cache and the open file handles). The first version runs from a checkout of its commit
(``--old-checkout``, a git worktree of 88850e1) on a store it built (``--old-store``).

Reproduce::

    git worktree add /tmp/molmnist-old 88850e1
    molmnist synth -o cellulose --variants 2000          # the paper's variant trajectories
    PYTHONPATH=/tmp/molmnist-old molmnist build cellulose/run.toml -o old-store --variants 2000
    molmnist build cellulose/run.toml -o new-store --variants 2000
    python benchmarks/bench_read.py --store new-store --old-store old-store --old-checkout /tmp/molmnist-old

Target: open under 50 ms, one image under 5 ms warm.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import _common as C

OPEN = {
    "xr.open_dataset(store)": "import xarray as xr; ds = xr.open_dataset(STORE)",
    "molmnist_dask.open_dataset(store)": "import molmnist_dask as mm; ds = mm.open_dataset(STORE)",
    "first version: molmnist_dask.open_dataset": "import molmnist_dask as mm; ds = mm.open_dataset(STORE)",
    "first version: README open_mfdataset recipe": (
        "import json, xarray as xr; parts = json.load(open(f'{STORE}/molmnist.json'))['parts']; "
        "ds = xr.open_mfdataset([[f'{STORE}/{p}' for p in row] for row in parts], combine='nested', "
        "concat_dim=['molecule', 'variant'])"),
}

PROBE = """
import time, json, random, sys, warnings
warnings.simplefilter("ignore")
STORE = sys.argv[1]
import xarray, molmnist_dask, netCDF4  # imports are not the open's cost
t = time.perf_counter()
{open}
opened = time.perf_counter() - t
random.seed(0)
ds["shape"].isel(molecule=0, variant=0).values
times = []
for _ in range(20):
    m, v = random.randrange(ds.sizes["molecule"]), random.randrange(ds.sizes["variant"])
    t = time.perf_counter()
    ds["shape"].isel(molecule=m, variant=v).values
    times.append(time.perf_counter() - t)
times.sort()
print(json.dumps({{"open": opened, "image": times[len(times) // 2]}}))
"""


def probe(code: str, store: str, pythonpath: str | None) -> dict:
    env = dict(os.environ)
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    done = subprocess.run([sys.executable, "-c", PROBE.format(open=code), store], capture_output=True,
                          text=True, env=env, timeout=600, cwd="/")
    if done.returncode:
        raise RuntimeError(done.stderr[-2000:])
    return json.loads(done.stdout.strip().splitlines()[-1])


def main():
    args = C.arguments(__doc__, store=dict(required=True), old_store=dict(default=None),
                       old_checkout=dict(default=None))
    print(f"bench_read: {C.machine()}")
    rows = []
    for label, code in OPEN.items():
        old = label.startswith("first version")
        if old and not (args.old_store and args.old_checkout):
            continue
        store = args.old_store if old else args.store
        runs = [probe(code, store, args.old_checkout if old else None) for _ in range(5)]
        rows.append([label, min(r["open"] for r in runs) * 1e3, sorted(r["image"] for r in runs)[2] * 1e3])
        print(f"  {label} done", flush=True)
    C.table(rows, ["open with", "open ms (best of 5)", "one image ms (warm, median)"],
            "Opening a paper-size store (10 x 2,000 at 200 px) and reading one image")


if __name__ == "__main__":
    main()
