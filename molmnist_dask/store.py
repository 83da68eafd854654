"""Saving and opening datasets: a folder of part files written by the workers, or one .nc file.

`save_dataset` writes each block as its own NetCDF-4 file from the worker that rendered it,
so nothing is gathered to the client and no HDF5 lock serialises the workers. A build that
stops part-way resumes when run again: finished parts are kept and only missing ones computed.
`open_dataset` presents the parts as one lazy dataset; `consolidate` writes one NetCDF file.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import warnings
from pathlib import Path

import dask
import dask.array as da
import netCDF4
import numpy as np
import xarray as xr
from xarray.backends.locks import HDF5_LOCK

from . import __version__
from .dataset import restore_attrs
from .errors import InputError
from .lock import StoreLock
from .parts import (HANDLES, IMAGE_VARS, SMALL_VARS, PartsArray, check_part, encoding,
                    part_name, write_part)
from .progress import compute_with_progress

MANIFEST = "molmnist.json"
INDEX = "index.nc"
FORMAT = 1
#: Compression per image variable: None (raw), a zlib level, or (filter, level). Shapes are
#: mostly empty field: zstd level 1 shrinks them ~35x at about raw write speed (zlib 1: 28x at a
#: quarter of it). Diffraction is dense float noise in its low bits and barely compresses
#: (1.1-1.2x), so it is stored raw. See benchmarks/bench_write.py. netCDF4's wheels carry the
#: zstd filter; where it is missing, zlib.
DEFAULT_COMPRESSION = {"shape": ("zstd", 1) if getattr(netCDF4, "__has_zstandard_support__", False)
                       else ("zlib", 1), "diffraction": None}
LOST_FRACTION_WARNING = 0.01
_NOT_CONFIG = ("molmnist_dask_version", "source", "block_size")


def _jsonable(value):
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value


def _digest(array) -> str:
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()[:16]


def configuration(ds: xr.Dataset) -> dict:
    """What a dataset is, for telling whether a store holds the same one (no data is read)."""
    return {
        "attrs": {k: _jsonable(v) for k, v in ds.attrs.items() if k not in _NOT_CONFIG},
        "molecule": [str(m) for m in ds.molecule.values],
        "label": [int(v) for v in ds.label.values],
        "n_variants": int(ds.sizes["variant"]),
        "frame": _digest(ds.frame.values.astype(np.int64)),
        "grid": {c: _digest(ds[c].values) for c in ("y", "x", "qy", "qx")},
        "variables": {v: [list(ds[v].dims), str(ds[v].dtype)] for v in IMAGE_VARS + SMALL_VARS},
    }


def _blocks(ds: xr.Dataset) -> list:
    """Variant ranges of the dataset's chunks (one block each), or ~32 MiB blocks if in memory."""
    chunks = ds["shape"].chunks
    if chunks is None:
        from .options import setting
        frame_bytes = 4 * max(ds.sizes["x"] ** 2, ds.sizes["qx"] ** 2)
        step = max(1, min(ds.sizes["variant"], setting("block-bytes") // frame_bytes))
        sizes = [min(step, ds.sizes["variant"] - i) for i in range(0, ds.sizes["variant"], step)]
    else:
        sizes = chunks[1]
    edges = np.concatenate([[0], np.cumsum(sizes)]).astype(int)
    return [(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:])]


def _read_manifest(root: Path) -> dict | None:
    path = root / MANIFEST
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise InputError(f"{path}: unreadable store manifest ({err})") from None


def _write_json(path: Path, doc: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(doc, indent=1))
    os.replace(tmp, path)


def _differences(old: dict, new: dict) -> list:
    keys = sorted(set(old) | set(new))
    out = []
    for k in keys:
        a, b = old.get(k), new.get(k)
        if isinstance(a, dict) and isinstance(b, dict):
            out += [f"{k}.{d}" for d in _differences(a, b)]
        elif a != b:
            out.append(k)
    return out


def _prepare(root: Path, config: dict, blocks: list) -> dict:
    """Create the store or check that it holds this configuration; returns the manifest."""
    manifest = _read_manifest(root)
    if manifest is None:
        leftovers = [p.name for p in root.iterdir() if p.name not in ("parts", ".lock")]
        if leftovers:
            raise InputError(f"{root}: exists and is not a molmnist store (holds {leftovers[0]}); "
                             "choose another output")
        parts = [[part_name(m, a, b) for a, b in blocks] for m in range(len(config["molecule"]))]
        manifest = {"format": FORMAT, "version": __version__, "config": config,
                    "blocks": blocks, "parts": parts, "complete": False}
        _write_json(root / MANIFEST, manifest)
        return manifest
    if manifest.get("config") != config:
        diff = ", ".join(_differences(manifest.get("config", {}), config)[:4])
        raise InputError(f"{root}: holds a different configuration (differs in {diff}); "
                         "use another output or delete it")
    if [tuple(b) for b in manifest["blocks"]] != [tuple(b) for b in blocks]:
        raise InputError(f"{root}: was written with other blocks ({len(manifest['blocks'])} per "
                         f"molecule); rebuild with the same block_size or use another output")
    return manifest


def _block_coords(coords: dict, m: int, start: int, stop: int) -> dict:
    """The coordinates of one block, sliced from ``{name: (dims, values, attrs)}``."""
    cut = {"molecule": slice(m, m + 1), "variant": slice(start, stop)}
    return {name: (dims, values[tuple(cut.get(d, slice(None)) for d in dims)], attrs)
            for name, (dims, values, attrs) in coords.items()}


def _write_tasks(ds: xr.Dataset, root: Path, blocks: list, todo: list, compression: dict) -> list:
    """One delayed `write_part` per missing (molecule, block): it takes that block's chunks."""
    sizes = tuple(b - a for a, b in blocks)
    arrays = {}
    for var in IMAGE_VARS + SMALL_VARS:
        data = ds[var].data
        if not isinstance(data, da.Array):
            data = da.from_array(data, chunks=-1)
        # optimize_graph=False: optimising each array alone would fuse the shared render task
        # into every variable's chunk, rendering each block four times.
        arrays[var] = data.rechunk((1, sizes) + (-1,) * (data.ndim - 2)).to_delayed(optimize_graph=False)
    attrs = dict(ds.attrs)
    variable_attrs = {var: dict(ds[var].attrs) for var in arrays}
    coords = {name: (c.dims, c.values, c.attrs) for name, c in ds.coords.items()}
    per_block = {k: v for k, v in coords.items() if {"molecule", "variant"} & set(v[0])}
    # The grid coordinates go into the graph once (64 KiB at 2048 px), not once per task.
    shared = dask.delayed({k: v for k, v in coords.items() if k not in per_block}, pure=True,
                          traverse=False)
    tasks = []
    for m, b in todo:
        start, stop = blocks[b]
        chunks = {var: arrays[var][(m, b) + (0,) * (arrays[var].ndim - 2)] for var in arrays}
        tasks.append(dask.delayed(write_part, pure=False)(
            str(root / part_name(m, start, stop)), chunks, _block_coords(per_block, m, start, stop),
            attrs, compression, variable_attrs, shared, dask_key_name=f"write-part-{m}-{start}-{root.name}"))
    return tasks


def save_dataset(ds: xr.Dataset, path, *, compression: dict | None = None, progress: bool = True,
                 check: str = "quick") -> Path:
    """Compute a dataset and save it, each block written by the worker that computes it.

    Runs on whatever dask scheduler is active: a `distributed.Client` if one is, else
    dask's default. A store that already holds this configuration is resumed: its finished
    parts are kept (after a ``check``) and only the missing ones computed.

    Parameters
    ----------
    ds : xarray.Dataset
        As `build_dataset` returns it (lazy or computed).
    path : path-like
        A folder (the store), or a file name ending in ``.nc`` for one NetCDF file (written by
        `consolidate` from a store at ``PATH.parts``, which is then removed).
    compression : dict, optional
        Per image variable: None (raw), a zlib level, or ``(filter, level)`` such as
        ``("zstd", 1)``; default `DEFAULT_COMPRESSION`.
    progress : bool
        Show a progress bar.
    check : {"quick", "full"}
        How finished parts are checked before they are kept: open and check sizes, or also
        read every chunk (verifying the checksums).

    Returns
    -------
    pathlib.Path
        The store or file written.

    Raises
    ------
    InputError
        If the output cannot be written, holds another configuration or is in use.
    """
    path = Path(path)
    if path.suffix == ".nc":
        parts = save_dataset(ds, path.with_name(path.name + ".parts"), compression=compression,
                             progress=progress, check=check)
        consolidate(parts, path, progress=progress)
        shutil.rmtree(parts)
        return path
    compression = {**DEFAULT_COMPRESSION, **(compression or {})}
    config, blocks = configuration(ds), _blocks(ds)
    _make_dir(path)
    try:
        with StoreLock(path):
            manifest = _prepare(path, config, blocks)
            manifest["variable_attrs"] = {v: {k: _jsonable(a) for k, a in ds[v].attrs.items()}
                                          for v in IMAGE_VARS}
            HANDLES.clear()  # parts may be checked, removed and rewritten below
            for tmp in (path / "parts").glob(".*.tmp"):  # half-written parts of a killed build
                tmp.unlink(missing_ok=True)
            todo = _missing(path, len(ds.molecule), blocks, full=check == "full")
            if todo:
                manifest["complete"] = False
                _write_json(path / MANIFEST, manifest)
                tasks = _write_tasks(ds, path, blocks, todo, compression)
                try:
                    compute_with_progress(tasks, progress=progress, desc=f"build {path.name}")
                except OSError as err:
                    raise InputError(f"{path}: cannot write parts ({err.strerror or err})") from None
            _finish(path, ds, manifest)
    except (OSError, RuntimeError) as err:  # lock, manifest, index (a full disk...): resumable
        raise InputError(f"{path}: cannot write ({err.strerror or err})") from None
    return path


def _make_dir(path: Path) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / ".write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        raise InputError(f"{path}: cannot write output ({err.strerror or err})") from None


def _missing(root: Path, n_molecules: int, blocks: list, full: bool = False) -> list:
    """(molecule, block) pairs whose part is absent or damaged; damaged ones are removed."""
    todo = []
    for m in range(n_molecules):
        for b, (start, stop) in enumerate(blocks):
            part = root / part_name(m, start, stop)
            if not part.exists():
                todo.append((m, b))
                continue
            problem = check_part(part, stop - start, full=full)
            if problem:
                warnings.warn(f"{part}: damaged ({problem}); recomputing it", stacklevel=3)
                part.unlink()
                todo.append((m, b))
    return todo


def _finish(root: Path, ds: xr.Dataset, manifest: dict) -> None:
    """Gather the small variables into index.nc, warn on lost electrons, mark complete.

    The index keeps the dataset's own attributes, so that a reopened store is identical to
    the dataset that was saved; what fell outside the field of view is in ``lost_*``.
    """
    HANDLES.clear()
    blocks = manifest["blocks"]
    small = {v: np.empty((len(ds.molecule), ds.sizes["variant"]), ds[v].dtype) for v in SMALL_VARS}
    for m in range(len(ds.molecule)):
        for start, stop in blocks:
            with xr.open_dataset(root / part_name(m, start, stop), engine="netcdf4") as part:
                for v in SMALL_VARS:
                    small[v][m, start:stop] = part[v].values[0]
    index = ds.drop_vars(list(IMAGE_VARS + SMALL_VARS))
    for v in SMALL_VARS:
        index[v] = (("molecule", "variant"), small[v], ds[v].attrs)
    electrons = np.maximum(np.asarray(ds.attrs.get("n_electrons", 1)), 1)
    fraction = small["lost_electrons"].max(axis=1) / electrons
    for name, f in zip(ds.molecule.values, np.atleast_1d(fraction)):
        if f > LOST_FRACTION_WARNING:
            warnings.warn(f"molecule '{name}': up to {f:.1%} of its electrons fell outside the "
                          "field of view; consider a larger extent", stacklevel=3)
    tmp = root / (INDEX + ".tmp")
    index.to_netcdf(tmp, engine="netcdf4")
    os.replace(tmp, root / INDEX)
    manifest["complete"] = True
    _write_json(root / MANIFEST, manifest)


def open_dataset(path, *, chunks: str = "image") -> xr.Dataset:
    """Open a saved dataset lazily: nothing is read until it is indexed.

    Parameters
    ----------
    path : path-like
        A store folder written by `save_dataset`, or a ``.nc`` file.
    chunks : {"image", "part"}
        Dask chunks of the image variables: one image each (reading one image reads one),
        or one part file each (faster for reading everything).

    Returns
    -------
    xarray.Dataset
        ``shape`` and ``diffraction`` are dask arrays over the files.

    Notes
    -----
    Plain xarray reads the same data: a ``.nc`` file with
    ``xr.open_dataset(path, chunks={})`` (one dask chunk per stored image), and a store with
    ``xr.open_mfdataset(parts, combine="nested", concat_dim=["molecule", "variant"])`` where
    ``parts`` is the nested list ``[[f"{path}/{p}" for p in row] for row in
    json.load(open(f"{path}/molmnist.json"))["parts"]]``.
    """
    path = Path(path)
    if path.is_file():
        return _open_file(path)
    manifest = _read_manifest(path)
    if manifest is None:
        raise InputError(f"{path}: not a molmnist store or .nc file")
    if not manifest.get("complete"):
        done = manifest_progress(path, manifest)
        raise InputError(f"{path}: incomplete store ({done[0]}/{done[1]} parts); "
                         "run the same build again to resume it")
    with xr.open_dataset(path / INDEX, engine="netcdf4") as index:
        ds = index.load()
    ds.attrs = restore_attrs(ds.attrs)
    blocks = manifest["blocks"]
    n_molecules = len(ds.molecule)
    for var, dims in (("shape", ("y", "x")), ("diffraction", ("qy", "qx"))):
        image = tuple(ds.sizes[d] for d in dims)
        lazy = PartsArray(str(path.resolve()), var, blocks, n_molecules, image, np.float32)
        variant_chunks = 1 if chunks == "image" else tuple(b - a for a, b in blocks)
        name = f"molmnist-{var}-{_digest(np.frombuffer(json.dumps(manifest['config']).encode(), np.uint8))}"
        data = da.from_array(lazy, chunks=(1, variant_chunks, *image), name=name, meta=np.array((), np.float32))
        ds[var] = (("molecule", "variant", *dims), data, manifest.get("variable_attrs", {}).get(var, {}))
    return ds[list(IMAGE_VARS + SMALL_VARS)]


def _open_file(path: Path) -> xr.Dataset:
    try:
        ds = xr.open_dataset(path, engine="netcdf4", chunks={})  # the on-disk chunks: one per image
    except (OSError, ValueError) as err:
        raise InputError(f"{path}: cannot open as NetCDF ({' '.join(str(err).split())})") from None
    ds.attrs = restore_attrs(ds.attrs)
    return ds


def manifest_progress(root: Path, manifest: dict) -> tuple:
    """(parts present, parts expected) of a store."""
    n_molecules = len(manifest["config"]["molecule"])
    expected = [part_name(m, a, b) for m in range(n_molecules) for a, b in manifest["blocks"]]
    present = sum((root / p).exists() for p in expected)
    return present, len(expected)


def consolidate(store, out, *, progress: bool = True) -> Path:
    """Write a complete store as one NetCDF-4 file, chunk by chunk (bounded memory).

    Parameters
    ----------
    store : path-like
        A complete store folder.
    out : path-like
        The ``.nc`` file to write (written aside and renamed when complete).
    """
    out = Path(out)
    ds = open_dataset(store, chunks="image")
    enc = encoding({v: ds[v].shape[2:] for v in IMAGE_VARS}, DEFAULT_COMPRESSION)
    tmp = out.with_name(f".{out.name}.tmp")
    try:
        job = ds.to_netcdf(tmp, engine="netcdf4", format="NETCDF4", encoding=enc, compute=False)
        # One file is written by one process: threads here, whatever cluster is active.
        with dask.config.set(scheduler="threads"):
            compute_with_progress([job], progress=progress, desc=f"consolidate {out.name}", local=True)
        os.replace(tmp, out)
    except (OSError, RuntimeError) as err:  # HDF5 reports a full disk as RuntimeError
        raise InputError(f"{out}: cannot write ({getattr(err, 'strerror', None) or err})") from None
    finally:
        if tmp.exists():
            tmp.unlink()
    return out
