"""Issues 9 and 16: reading a store through plain ``xr.open_dataset(store)`` (this package's
xarray backend).

1. Selections (issue 16), warm, against the consolidated ``.nc`` file of the same store:
   one image, 16 scattered images (pointwise (molecule, variant) pairs) and a q line profile
   (``isel(qy=centre)`` over 20 variants of one molecule), all of ``diffraction``; and the
   bytes each request reads, now (one HDF5 chunk per image asked for) and as the reader before
   issue 16 read them (every image between the first and the last variant asked for in each
   part, for every molecule asked for). Bytes are the stored chunk sizes (h5py's chunk
   index). Times are the median of 30 requests, each on other random images (the same
   sequence for the store and the file), after reading every file once (page cache warm,
   files open). "span" times the store reading the old reader's images (one read per span),
   for its cost.
2. Opening and one image (issue 9), each in a fresh process: best of 5 opens, median of 20
   random one-image reads; with ``--old-store`` and ``--old-checkout``, the first version's
   ``open_dataset`` and README recipe too (``--skip-open`` leaves this part out).

Reproduce at a small scale (10 cellulose fibrils x 200 variants at 200 px, built here once
into ``$MOLMNIST_BENCH_DATA``; a few minutes)::

    python benchmarks/bench_read.py --skip-open

At paper size (10 x 2,000 at 200 px)::

    molmnist synth -o cellulose --variants 2000          # the paper's variant trajectories
    molmnist build cellulose/run.toml -o new-store --variants 2000
    molmnist consolidate new-store new-store.nc
    python benchmarks/bench_read.py --store new-store --nc new-store.nc

and for the first version's open (issue 9), ``git worktree add /tmp/molmnist-old 88850e1``,
``PYTHONPATH=/tmp/molmnist-old molmnist build cellulose/run.toml -o old-store --variants 2000``,
then add ``--old-store old-store --old-checkout /tmp/molmnist-old``.

Targets: open under 50 ms, one image under 5 ms warm; a selection reads the images it names.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import _common as C
import numpy as np

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

REPEATS = 30
VAR = "diffraction"


# --- 1. selections ------------------------------------------------------------------------

def small_store(molecules: int = 10, variants: int = 200, size: int = 200) -> tuple:
    """A store of the paper's fibrils at a small scale and its consolidated file, built once."""
    import dask

    import _data
    import molmnist_dask as mm

    folder = _data.DATA / f"read-{molecules}x{variants}-{size}"
    store, nc = folder / "store", folder / "store.nc"
    if not nc.exists():
        sources = _data.cellulose(variants)[:molecules]
        with dask.config.set(scheduler="threads"):
            mm.save_dataset(mm.build_dataset(sources, size=size, extent=_data.EXTENT), store, progress=False)
            mm.consolidate(store, nc, progress=False)
    return store, nc


def requests(sizes: dict, rng) -> dict:
    """Per kind of request, REPEATS random selections of ``diffraction`` (isel keywords)."""
    import xarray as xr

    n_m, n_v, centre = sizes["molecule"], sizes["variant"], sizes["qy"] // 2
    points = lambda a: xr.DataArray(a, dims="image")  # noqa: E731
    out = {"one image": [], "16 scattered images": [], "q line profile, 20 variants": []}
    for _ in range(REPEATS):
        out["one image"].append({"molecule": int(rng.integers(n_m)), "variant": int(rng.integers(n_v))})
        out["16 scattered images"].append({"molecule": points(rng.integers(n_m, size=16)),
                                           "variant": points(rng.integers(n_v, size=16))})
        out["q line profile, 20 variants"].append(
            {"molecule": int(rng.integers(n_m)), "variant": np.sort(rng.choice(n_v, min(20, n_v), replace=False)),
             "qy": centre})
    return out


def images_of(key: dict) -> tuple:
    """(molecules, variants) of the images a request names: pairs, or an outer product."""
    m, v = np.atleast_1d(np.asarray(key["molecule"])), np.atleast_1d(np.asarray(key["variant"]))
    if hasattr(key["molecule"], "dims"):
        return m, v  # pointwise (DataArrays on one dimension)
    return np.repeat(m, len(v)), np.tile(v, len(m))


def chunk_bytes(store: Path) -> dict:
    """Stored bytes of each (molecule, variant)'s chunk of VAR, from the HDF5 chunk index."""
    import h5py

    from molmnist_dask.store import read_index

    out = {}
    for part in read_index(store).parts:
        with h5py.File(store / part.name, "r") as f:
            dset = f[VAR]
            for i in range(part.size):
                out[part.molecule, part.start + i] = dset.id.get_chunk_info_by_coord((0, i, 0, 0)).size
    return out


def reads(store: Path, key: dict) -> tuple:
    """(now, before): the (molecule, variant) images read for ``key``, by this backend (each
    image named once) and by the reader before issue 16 (for each molecule named, every image
    from the first to the last variant named in each part; xarray's outer decomposition
    named every variant of the request for every molecule)."""
    from molmnist_dask.store import read_index

    ms, vs = images_of(key)
    now = set(zip(ms.tolist(), vs.tolist()))
    before = set()
    variants = np.unique(vs)
    for part in read_index(store).parts:
        if part.molecule not in ms:
            continue
        mine = variants[(variants >= part.start) & (variants < part.stop)]
        if len(mine):
            before |= {(part.molecule, v) for v in range(int(mine.min()), int(mine.max()) + 1)}
    return now, before


def timed(ds, keys) -> float:
    """Median seconds over ``keys``, each read once."""
    times = []
    for key in keys:
        t = time.perf_counter()
        np.asarray(ds[VAR].isel(key).values)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def span_keys(keys, store) -> list:
    """The old reader's reads as selections: per molecule and part, its span of variants."""
    out = []
    for key in keys:
        _, before = reads(store, key)
        by_molecule = {}
        for m, v in before:
            by_molecule.setdefault(m, []).append(v)
        out.append([{"molecule": m, "variant": slice(min(v), max(v) + 1)} for m, v in sorted(by_molecule.items())])
    return out


def timed_spans(ds, spans) -> float:
    times = []
    for keys in spans:
        t = time.perf_counter()
        for key in keys:
            np.asarray(ds[VAR].isel(key).values)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def warm(*paths) -> None:
    """Every file read once: the page cache holds them (what "warm" means here)."""
    for path in paths:
        for f in ([path] if path.is_file() else sorted(path.rglob("*.nc"))):
            with open(f, "rb") as fh:
                while fh.read(1 << 24):
                    pass


def selections(store: Path, nc: Path) -> None:
    import xarray as xr

    warm(store, nc)
    sizes = chunk_bytes(store)
    ds_store, ds_nc = xr.open_dataset(store), xr.open_dataset(nc)
    for ds in (ds_store, ds_nc):  # files opened, metadata read
        ds[VAR].isel(molecule=0, variant=0).values
    rows = []
    for name, keys in requests(dict(ds_store.sizes), np.random.default_rng(0)).items():
        both = [reads(store, k) for k in keys]
        asked = np.mean([len(now) for now, _ in both])
        before = np.mean([len(b) for _, b in both])
        bytes_now = np.mean([sum(sizes[i] for i in now) for now, _ in both])
        bytes_before = np.mean([sum(sizes[i] for i in b) for _, b in both])
        t_store, t_nc = timed(ds_store, keys), timed(ds_nc, keys)
        t_span = timed_spans(ds_store, span_keys(keys, store))
        rows.append([name, asked, before, bytes_now / 2**10, bytes_before / 2**10, bytes_before / bytes_now,
                     t_store * 1e3, t_nc * 1e3, t_store / t_nc, t_span * 1e3])
        print(f"  {name} done", flush=True)
    m, v, qy, qx = ds_store[VAR].shape
    C.table(rows, ["request (diffraction)", "images read", "before (span)", "KiB read", "KiB before",
                   "before/now", "store ms", ".nc ms", "store/.nc", "span ms"],
            f"Selections, warm, {m} x {v} store at {qy} x {qx} (median of {REPEATS}; means of images and bytes)")


# --- 2. open and one image ------------------------------------------------------------------

def probe(code: str, store: str, pythonpath: str | None) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = pythonpath or str(C.ROOT)
    done = subprocess.run([sys.executable, "-c", PROBE.format(open=code), store], capture_output=True,
                          text=True, env=env, timeout=600, cwd="/")
    if done.returncode:
        raise RuntimeError(done.stderr[-2000:])
    return json.loads(done.stdout.strip().splitlines()[-1])


def opening(args, store: Path) -> None:
    rows = []
    for label, code in OPEN.items():
        old = label.startswith("first version")
        if old and not (args.old_store and args.old_checkout):
            continue
        path = args.old_store if old else str(store)
        runs = [probe(code, path, args.old_checkout if old else None) for _ in range(5)]
        rows.append([label, min(r["open"] for r in runs) * 1e3, sorted(r["image"] for r in runs)[2] * 1e3])
        print(f"  {label} done", flush=True)
    C.table(rows, ["open with", "open ms (best of 5)", "one image ms (warm, median)"],
            "Opening a store and reading one image (shape)")


def main():
    args = C.arguments(__doc__, store=dict(default=None, help="a store (default: a 10 x 200 one, built once)"),
                       nc=dict(default=None, help="its consolidated file (default: consolidated into --scratch)"),
                       old_store=dict(default=None), old_checkout=dict(default=None),
                       skip_open=dict(action="store_true", help="leave out part 2 (open, issue 9)"))
    print(f"bench_read: {C.machine()}")
    if args.store:
        store = Path(args.store)
        nc = Path(args.nc) if args.nc else None
        if nc is None:
            import molmnist_dask as mm

            nc = mm.consolidate(store, args.scratch / "store.nc", progress=False)
    else:
        store, nc = small_store()
    selections(store, nc)
    if not args.skip_open:
        opening(args, store)
    print(f"\nreproduce: python benchmarks/bench_read.py {' '.join(sys.argv[1:])}")


if __name__ == "__main__":
    main()
