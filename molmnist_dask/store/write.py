"""Saving a dataset as a store: one streaming task per part file, the index written last.

A save task owns one part: it opens the part file, then fills it a sub-block at a time,
closes the file and renames it into place, and returns the part's small per-frame values.
The client only plans the tasks and writes the index from their returns, without opening a
part. Any dataset is written so, on the workers:

- a build's dataset, or a selection of it along molecule and variant (`build_of` finds its
  `Build` in the graph): each task reads and renders exactly its frames (`write_part`);
- any other (a computation, a rechunk, a dataset opened from a store, numpy data): each task
  gets its part's chunks of the graph, culled to them (or its numpy values), and computes
  them sub-block by sub-block with the synchronous scheduler (`write_arrays`).

A part's bytes do not depend on which of the two wrote it. A build that stops part-way
resumes when run again: finished parts are kept and only missing ones computed.
"""

from __future__ import annotations

import itertools
import os
import shutil
import uuid
import warnings
from pathlib import Path

import dask
import dask.array as da
import numpy as np
import xarray as xr
from dask.optimization import cull

from ..dataset import block_options, build_of, render_block
from ..errors import InputError
from ..lock import StoreLock
from ..settings import setting
from ..planning import Build, frame_bytes
from ..progress import active_client, compute_with_progress
from .index import configuration, differences, read_index, write_index
from .layout import IMAGE_VARS, SMALL_VARS, Part, cut, frames_per_part
from .partfile import PartWriter, check_part, disk_error, read_small

#: Compression per image variable: None (raw), a zlib level, or (filter, level).
DEFAULT_COMPRESSION = {"shape": 1, "diffraction": None}
LOST_FRACTION_WARNING = 0.01


def save_dataset(ds: xr.Dataset, path, *, compression: dict | None = None, checksums: bool = True,
                 progress: bool = True, check: str = "quick", part_frames: int | None = None,
                 part_bytes: int | None = None) -> Path:
    """Compute a dataset and save it: one task per part file, each written by one worker.

    Runs on whatever dask scheduler is active: a `distributed.Client` if one is, else
    dask's default. A store that already holds this configuration is resumed: its finished
    parts are kept (after a ``check``) and only the missing ones computed.

    Parameters
    ----------
    ds : xarray.Dataset
        As `build_dataset` returns it or a selection of it along molecule and variant (then
        each task reads and renders its own frames), or any dataset of the same layout (lazy
        or computed; then each task computes its part from the dataset's arrays). Either way
        the parts are written by the workers, a sub-block at a time.
    path : path-like
        A folder (the store), or a file name ending in ``.nc`` for one NetCDF file (written by
        `consolidate` from a store at ``PATH.parts``, which is then removed).
    compression : dict, optional
        Per image variable: None (raw), a zlib level, or ``(filter, level)`` such as
        ``("zstd", 1)``; default `DEFAULT_COMPRESSION`: deflate level 1 with byte shuffle
        on shapes, diffraction raw (it barely compresses), filters every HDF5 reader has.
    checksums : bool
        A Fletcher-32 checksum on every chunk (a corrupted image is an error on reading, and
        ``molmnist verify`` finds it); False saves their cost (about 0.3 ms per 200 px image).
    progress : bool
        Show a progress bar.
    check : {"quick", "full"}
        How finished parts are checked before they are kept: open and check sizes, or also
        read every chunk (verifying the checksums).
    part_frames, part_bytes : int, optional
        Most frames, and most bytes of output, in one part file (one task); default the
        ``molmnist.part-frames`` and ``molmnist.part-bytes`` settings. A resumed store keeps
        the parts it was started with.

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
    _refuse_inputs(ds, path)
    if path.suffix == ".nc":
        from .consolidate import consolidate

        if _same_file_exists(ds, path):
            return path
        parts = save_dataset(ds, path.with_name(path.name + ".parts"), compression=compression,
                             checksums=checksums, progress=progress, check=check, part_frames=part_frames, part_bytes=part_bytes)
        consolidate(parts, path, compression=compression, checksums=checksums, progress=progress)
        shutil.rmtree(parts)
        return path
    compression = {**DEFAULT_COMPRESSION, **(compression or {}), "checksums": bool(checksums)}
    config = configuration(ds)
    _make_dir(path)
    try:
        with StoreLock(path) as lock:
            parts, done = _prepare(path, ds, config, part_frames, part_bytes)
            todo = _missing(path, parts, full=check == "full")
            if todo or not done:
                results = _write_parts(ds, path, todo, compression, progress) if todo else []
                lock.check()  # a build that stalled past its lease must not write the index
                _finish(path, ds, parts, config, results)
    except (OSError, RuntimeError) as err:  # lock, index (a full disk...): resumable
        raise InputError(f"{path}: cannot write ({getattr(err, 'strerror', None) or err})") from None
    return path


def input_files(ds: xr.Dataset) -> list:
    """The files a dataset was built from (topologies and trajectories), resolved."""
    names = []
    # as given (relative to the working directory) and as resolved when the build was planned
    for coord in ("topology", "trajectory", "topology_resolved", "trajectory_resolved"):
        if coord in ds.coords:
            names += [n for value in ds[coord].values for n in str(value).split(";") if n]
    b = build_of(ds)
    if b is not None:
        names += [f for s in b.sources for f in s.files]
    return sorted({Path(n).resolve() for n in names})


def _refuse_inputs(ds: xr.Dataset, path: Path) -> None:
    """An output that is one of the build's inputs (an AMBER NetCDF trajectory named out.nc)
    would destroy it: refused."""
    target = path.resolve()
    for f in input_files(ds):
        if f == target or f == target.with_name(target.name + ".parts") or target in f.parents:
            raise InputError(f"{path}: is one of the build's inputs ({f}); choose another output")


def _same_file_exists(ds: xr.Dataset, path: Path) -> bool:
    """True when ``path`` already holds this dataset (left as it is); an existing file that
    holds anything else is refused, never replaced."""
    if not path.exists():
        return False
    from . import open_dataset

    try:
        existing = configuration(open_dataset(path, chunks=None))
    except (InputError, AttributeError, KeyError):  # not a dataset of this package
        raise InputError(f"{path}: exists and is not a molmnist dataset; choose another output "
                         "or delete it") from None
    wanted = configuration(ds)
    if existing != wanted:
        diff = ", ".join(differences(existing, wanted)[:4])
        raise InputError(f"{path}: exists and holds another dataset (differs in {diff}); "
                         "choose another output or delete it")
    return True


def _make_dir(path: Path) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / ".write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        raise InputError(f"{path}: cannot write output ({err.strerror or err})") from None


def _threads() -> int:
    client = active_client()
    if client is not None:
        return max(1, sum(client.nthreads().values()))
    return os.cpu_count() or 1


def _prepare(root: Path, ds: xr.Dataset, config: dict, part_frames, part_bytes) -> tuple:
    """The store's parts, and whether it is already complete; a new store gets its index."""
    index = read_index(root)
    if index is not None:
        if index.configuration != config:
            diff = ", ".join(differences(index.configuration, config)[:4])
            raise InputError(f"{root}: holds a different configuration (differs in {diff}); "
                             "use another output or delete it")
        return index.parts, index.complete
    leftovers = [p.name for p in root.iterdir() if p.name not in ("parts", ".lock")]
    if leftovers:
        raise InputError(f"{root}: exists and is not a molmnist store (holds {leftovers[0]}); "
                         "choose another output")
    n_molecules, n_variants = ds.sizes["molecule"], ds.sizes["variant"]
    per_part = frames_per_part(n_molecules, n_variants, _frame_bytes(ds), _threads(),
                               part_bytes=part_bytes, part_frames=part_frames)
    parts = cut(n_molecules, n_variants, per_part)
    write_index(root, ds, parts, config, complete=False)
    return parts, False


def _missing(root: Path, parts: list, full: bool = False) -> list:
    """Parts absent or damaged (damaged ones are removed, with a warning); leftover
    temporary files of a killed build are removed too."""
    for tmp in (root / "parts").glob(".*.tmp"):
        tmp.unlink(missing_ok=True)
    todo = []
    for part in parts:
        file = root / part.name
        if not file.exists():
            todo.append(part)
            continue
        problem = check_part(file, part.size, full=full)
        if problem:
            warnings.warn(f"{file}: damaged ({problem}); recomputing it", stacklevel=4)
            file.unlink()
            todo.append(part)
    return todo


def _write_parts(ds: xr.Dataset, root: Path, todo: list, compression: dict, progress: bool) -> list:
    """Write the ``todo`` parts on the workers (or dask's local scheduler); returns each
    one's `_result`. The client only plans the tasks and gathers their small returns."""
    from ..malloc import register

    client = active_client()
    register(client)  # the allocator's settings on workers the package did not start
    try:
        tasks = _tasks(ds, root, todo, compression, client)
        return compute_with_progress(tasks, progress=progress, desc=f"build {root.name}",
                                     weights=[part.size for part in todo], unit="frame")
    except OSError as err:
        raise InputError(f"{root}: cannot write parts ({err.strerror or err})") from None


def _tasks(ds: xr.Dataset, root: Path, todo: list, compression: dict, client=None) -> list:
    """One delayed write task per part of ``todo``: rendered from the plan when the dataset is
    a build's or a selection of one (`build_of`), else computed from its arrays."""
    b = build_of(ds)
    if b is not None:
        return _build_tasks(ds, root, todo, compression, b)
    return _array_tasks(ds, root, todo, compression, client)


def _build_tasks(ds: xr.Dataset, root: Path, todo: list, compression: dict, b: Build) -> list:
    """One delayed `write_part` per part: each reads and renders its own frames."""
    image_attrs = {v: dict(ds[v].attrs) for v in IMAGE_VARS}
    # once in the graph (64 KiB of coordinates at 2048 px), not once per task
    shared = dask.delayed(_shared_header(ds), pure=True, traverse=False)
    token = dask.base.tokenize(str(root.resolve()), config_token(b), compression)
    tasks = []
    for part in todo:
        source, frames, variants = b.part(part.molecule, part.start, part.stop)
        # Biggest parts first (atoms x frames), so that no big one is left for the end while
        # the other workers idle.
        with dask.annotate(priority=int(b.info(part.molecule).n_atoms) * part.size):
            tasks.append(dask.delayed(write_part, pure=False)(
                str(root / part.name), part, source, frames, variants, b.grid, b.options, shared,
                _part_coords(ds, part), image_attrs, compression,
                dask_key_name=f"write-part-{part.molecule}-{part.start}-{token}"))
    return tasks


def config_token(b: Build) -> str:
    return dask.base.tokenize(b.options, b.grid, b.sources, b.frames, b.molecules, b.variants)


def _array_tasks(ds: xr.Dataset, root: Path, todo: list, compression: dict, client=None) -> list:
    """One delayed `write_arrays` per part: the part's chunks of the dataset's graph (culled to
    them) or the part's numpy values travel to the task, which computes them a sub-block at a
    time with the synchronous scheduler, on the worker."""
    image_attrs = {v: dict(ds[v].attrs) for v in IMAGE_VARS}
    shared = dask.delayed(_shared_header(ds), pure=True, traverse=False)
    small = {v: ds[v].dtype for v in SMALL_VARS}
    arrays = {v: _lazy(ds, v) for v in IMAGE_VARS + SMALL_VARS}
    graph = {}  # materialised once; each part takes the tasks its chunks need
    for a in arrays.values():
        if isinstance(a, da.Array):
            graph.update(a.__dask_graph__())
    token = uuid.uuid4().hex
    tasks = []
    for part in todo:
        graphs, held = {}, {}
        for v, a in arrays.items():
            if isinstance(a, da.Array):
                graphs[v], futures = _held(_region(a, graph, part))
                held.update(futures)
        values = {v: np.asarray(a[part.molecule:part.molecule + 1, part.start:part.stop])
                  for v, a in arrays.items() if not isinstance(a, da.Array)}
        if values and client is not None:  # numpy data: sent to the cluster, not in the graph
            values = client.scatter(values, hash=False)
        # chunks already on the cluster (a persisted dataset): their futures are the task's
        # arguments, so distributed brings their data to it
        tasks.append(dask.delayed(write_arrays, pure=False)(
            str(root / part.name), part, Region(graphs, list(held)), list(held.values()), values, small,
            shared, _part_coords(ds, part), image_attrs, compression,
            dask_key_name=f"write-part-{part.molecule}-{part.start}-{token}"))
    return tasks


def _lazy(ds: xr.Dataset, var: str):
    """A variable's data as dask (as it is, or chunked from a lazily indexed file), or numpy."""
    data = ds[var].variable._data  # .data would load a lazily indexed variable here
    if isinstance(data, (da.Array, np.ndarray)):
        return data
    return ds[var].chunk({"molecule": 1, "variant": 1}).data


def _region(array: da.Array, graph: dict, part: Part) -> da.Array:
    """``array`` with only the tasks of the chunks that hold ``part`` (and what they need):
    sliced to the part on the worker, it computes nothing else."""
    m_edges = np.cumsum((0,) + array.chunks[0])
    v_edges = np.cumsum((0,) + array.chunks[1])
    m = int(np.searchsorted(m_edges, part.molecule, side="right")) - 1
    first = int(np.searchsorted(v_edges, part.start, side="right")) - 1
    stop = int(np.searchsorted(v_edges, part.stop, side="left"))
    rest = itertools.product(*(range(len(c)) for c in array.chunks[2:]))
    keys = [(array.name, m, v, *r) for r in rest for v in range(first, stop)]
    culled, _ = cull(graph, keys)
    return da.Array(culled, array.name, array.chunks, meta=array._meta)


def _held(array: da.Array) -> tuple:
    """The array without the futures in its graph, and those futures ({key: Future}): chunks
    a ``persist`` left on the cluster."""
    from distributed import Future

    graph = dict(array.__dask_graph__())
    futures = {k: v for k, v in graph.items() if isinstance(v, Future)}
    if not futures:
        return array, {}
    rest = {k: v for k, v in graph.items() if k not in futures}
    return da.Array(rest, array.name, array.chunks, meta=array._meta), futures


class Region:
    """A part's dask arrays, carried into its task as they are (dask does not look inside
    this object, so they are computed there, a sub-block at a time, not before it), and
    the keys of the chunks whose values come as the task's arguments (``held``)."""

    def __init__(self, arrays: dict, held: list = ()):
        self.arrays = arrays
        self.held = list(held)

    def with_values(self, values: list) -> dict:
        """The arrays, with the held chunks' values in their graphs."""
        if not self.held:
            return dict(self.arrays)
        data = dict(zip(self.held, values))
        return {v: da.Array({**dict(a.__dask_graph__()), **data}, a.name, a.chunks, meta=a._meta)
                for v, a in self.arrays.items()}


def _shared_header(ds: xr.Dataset) -> xr.Dataset:
    """What every part's header shares: the coordinates along neither molecule nor variant,
    and the attributes."""
    keep = [c for c, v in ds.coords.items() if not {"molecule", "variant"} & set(v.dims)]
    return xr.Dataset(coords={c: ds.coords[c].variable for c in keep}, attrs=dict(ds.attrs))


def _part_coords(ds: xr.Dataset, part: Part) -> dict:
    """The coordinates along molecule or variant, cut to one part: ``{name: (dims, values, attrs)}``."""
    cut_ = {"molecule": slice(part.molecule, part.molecule + 1), "variant": slice(part.start, part.stop)}
    out = {}
    for name, c in ds.coords.items():
        if {"molecule", "variant"} & set(c.dims):
            key = tuple(cut_.get(d, slice(None)) for d in c.dims)
            out[name] = (c.dims, np.asarray(c.values)[key], dict(c.attrs))
    small = {v: (ds[v].dims, np.zeros((1, part.size), ds[v].dtype), dict(ds[v].attrs)) for v in SMALL_VARS}
    return {"coords": out, "small": small}


def _header(shared: xr.Dataset, pieces: dict) -> xr.Dataset:
    """A part's header: shared coordinates and attributes, its own coordinates, small variables."""
    header = shared.assign_coords(pieces["coords"])
    for var, (dims, values, attrs) in pieces["small"].items():
        header[var] = (dims, values, attrs)
    return header


def write_part(path: str, part: Part, source, frames: np.ndarray, variants: np.ndarray, grid, options,
               shared: xr.Dataset, pieces: dict, image_attrs: dict, compression: dict) -> dict:
    """Worker task: read, render and write one part, a sub-block at a time; returns `_result`.

    ``variants`` are the part's variant indices in the planned build (they seed noise and
    orientations). Memory is set by the sub-block (``molmnist.sub-block-bytes`` of output),
    never by the part.
    """
    def block(i, j):
        shape, pattern, lost_atoms, lost_electrons = render_block(
            source, frames[i:j], grid, options.center, **block_options(options, variants[i:j]))
        return shape, pattern, {"lost_atoms": lost_atoms, "lost_electrons": lost_electrons}

    small = {"lost_atoms": np.int64, "lost_electrons": np.float64}
    steps = _steps(part.size, frame_bytes(grid))
    writer = PartWriter(path, _header(shared, pieces), image_attrs, compression)
    return _stream(writer, part, steps, small, block)


def write_arrays(path: str, part: Part, region: Region, held: list, values: dict, small: dict,
                 shared: xr.Dataset, pieces: dict, image_attrs: dict, compression: dict) -> dict:
    """Worker task: compute one part of a dataset from its arrays and write it, a sub-block
    at a time (with the synchronous scheduler, in this task); returns `_result`.

    Sub-blocks follow the arrays' chunks along ``variant``: chunks are joined up to
    ``molmnist.sub-block-bytes`` of output, and never split (a chunk split would be computed
    twice). Memory is set by the larger of the sub-block and one chunk.
    """
    m, start = part.molecule, part.start
    lazy = region.with_values(held)
    arrays = {**{v: a[m:m + 1, start:part.stop] for v, a in lazy.items()}, **values}

    def block(i, j):
        keys = list(arrays)
        with dask.config.set(scheduler="sync"):
            got = dict(zip(keys, dask.compute(*[arrays[v][:, i:j] for v in keys])))
        return got["shape"][0], got["diffraction"][0], {v: got[v][0] for v in SMALL_VARS}

    frame = 4 * (int(np.prod(arrays["shape"].shape[2:])) + int(np.prod(arrays["diffraction"].shape[2:])))
    edges = set()
    for a in region.arrays.values():
        edges.update((np.cumsum(a.chunks[1]) - start).tolist())
    steps = _steps(part.size, frame, edges)
    writer = PartWriter(path, _header(shared, pieces), image_attrs, compression)
    return _stream(writer, part, steps, small, block)


def _steps(n: int, per_frame: int, edges=()) -> list:
    """Sub-blocks (i, j) of ``n`` frames of about ``molmnist.sub-block-bytes``; with ``edges``
    (chunk boundaries), cut only there: chunks joined up to the sub-block, never split."""
    step = max(1, setting("sub-block-bytes") // per_frame)
    if not edges:
        return [(i, min(i + step, n)) for i in range(0, n, step)]
    cuts = sorted({int(e) for e in edges if 0 < e < n} | {n})
    steps, start, last = [], 0, 0
    for c in cuts:
        if c - start > step and last > start:  # this chunk would overfill the sub-block
            steps.append((start, last))
            start = last
        last = c
    steps.append((start, n))
    return steps


def _stream(writer: PartWriter, part: Part, steps: list, small_dtypes: dict, block) -> dict:
    """Fill an open part a sub-block at a time from ``block(i, j)`` -> (shapes, patterns, small
    values), close it into place; returns `_result`. A failure removes the half-written file."""
    small = {v: np.empty(part.size, dtype) for v, dtype in small_dtypes.items()}
    try:
        for i, j in steps:
            shape, pattern, values = block(i, j)
            try:
                writer.write(i, shape, pattern)
            except RuntimeError as err:
                raise disk_error(err, writer.final) from None
            for v in SMALL_VARS:
                small[v][i:j] = values[v]
        try:
            nbytes = writer.close(small)
        except RuntimeError as err:
            raise disk_error(err, writer.final) from None
    except BaseException:
        writer.abort()
        raise
    return _result(part, small, nbytes)


def _result(part: Part, small: dict, nbytes: int) -> dict:
    """What the index needs of a part: its small values and its size on disk."""
    return {"part": part, "nbytes": int(nbytes), **small}


def _frame_bytes(ds: xr.Dataset) -> int:
    """Bytes of one frame's output (shape and pattern, float32) of a dataset's layout."""
    return 4 * (ds.sizes["y"] * ds.sizes["x"] + ds.sizes["qy"] * ds.sizes["qx"])


def _finish(root: Path, ds: xr.Dataset, parts: list, config: dict, results: list) -> None:
    """The index from the tasks' returns (and, on a resume, the parts kept), marked complete."""
    small = {v: np.empty((ds.sizes["molecule"], ds.sizes["variant"]), ds[v].dtype) for v in SMALL_VARS}
    sizes = {}
    returned = {r["part"]: r for r in results}
    for part in parts:
        r = returned.get(part)
        if r is None:  # kept from an earlier run
            r = _result(part, read_small(root / part.name), (root / part.name).stat().st_size)
        for v in SMALL_VARS:
            small[v][part.molecule, part.start:part.stop] = r[v]
        sizes[part] = r["nbytes"]
    _warn_lost(ds, small["lost_electrons"])
    write_index(root, ds, parts, config, complete=True, small=small, part_bytes=sizes)


def _warn_lost(ds: xr.Dataset, lost_electrons: np.ndarray) -> None:
    electrons = np.maximum(ds["n_electrons"].values, 1) if "n_electrons" in ds.coords else 1
    fraction = lost_electrons.max(axis=1) / electrons
    for name, f in zip(ds.molecule.values, np.atleast_1d(fraction)):
        if f > LOST_FRACTION_WARNING:
            warnings.warn(f"molecule '{name}': up to {f:.1%} of its electrons fell outside the "
                          "field of view; consider a larger extent", stacklevel=4)
