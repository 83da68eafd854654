"""The worker's render task, the lazy graph of a `Build`, and the dataset around it.

`build_dataset` is `plan(...).to_dataset()`: one render task per block of frames, and the
contract's `xarray.Dataset` around the arrays. The graph carries its `Build` (the render
layer is a `BuildLayer`), so `build_of` finds the plan of any plain xarray selection of such
a dataset (``isel``/``sel`` along molecule and variant) with no registry: the save path then
renders exactly the selected frames on the workers (docs/design.md, "Write path and store").
"""

from __future__ import annotations

import functools

import dask
import dask.array as da
import numpy as np
import xarray as xr
from dask.highlevelgraph import HighLevelGraph, MaterializedLayer

from . import orientation as orient
from .errors import InputError
from .grid import Grid
from .metadata import make_dataset
from .noise import add_noise
from .options import BuildOptions
from .planning import (LOST_FRACTION_WARNING, Build, auto_block_size, auto_extent,  # noqa: F401
                       frame_bytes, plan)
from .render import NonFiniteCoordinates, render
from .sources import TrajectorySource, cached, selected

#: The variables a build computes, as laid out in the dataset.
DATA_VARS = {"shape": ("molecule", "variant", "y", "x"), "diffraction": ("molecule", "variant", "qy", "qx"),
             "lost_atoms": ("molecule", "variant"), "lost_electrons": ("molecule", "variant")}


def element_groups(source: TrajectorySource):
    """Elements of a source's selection and each atom's index into them (form factors)."""
    from .electrons import element_symbols
    from .formfactors import element_groups as groups

    def make(universe):  # once per Universe: a Python loop over the atoms
        _, atoms, z = selected(source)
        return groups(element_symbols(atoms), z, source.name)

    return cached(source, ("elements", source.selection), make)[1]


def render_block(source: TrajectorySource, frames, grid: Grid, center, *, scattering="electrons",
                 fluence=None, noise_seed=0, variants=None, orientation="z", orientation_seed=0):
    """Worker task: read a block of frames and render it. Returns the arrays of `Rendered`.

    ``variants`` (the block's variant indices) seed the photon noise when ``fluence`` is
    given and give each image its rotation when ``orientation`` is not ``"z"``: the rotation
    of variant v of this molecule is derived here, from (orientation, orientation_seed,
    source.name, v), so any caller rendering any variants gets the same images.
    """
    universe, atoms, z = selected(source)
    ix = atoms.ix
    whole = len(ix) == len(universe.atoms) and bool((ix == np.arange(len(ix))).all())
    rotations = None
    if orientation != "z":
        if variants is None or len(variants) != len(frames):
            raise ValueError("render_block: orientation needs the variant index of every frame")
        rotations = orient.rotations(orientation, orientation_seed, source.name, variants)

    def positions():
        # The frame's own buffer when every atom is selected: AtomGroup.positions would copy
        # it through a fancy index, which cost more than reading the frame (68k atoms).
        last, pos = None, None
        for index in frames:
            if index != last:  # orientations_per_frame > 1 repeats a frame: read it once
                ts = read_frame(source, universe, int(index))
                pos = ts.positions if whole else ts.positions.take(ix, axis=0)
                last = index
            yield pos

    try:
        if scattering == "form_factors":
            from .formfactors import render_form_factors

            elements, index = element_groups(source)
            r = render_form_factors(positions(), z, index, elements, grid, center, rotations)
        else:
            r = render(positions(), z, grid, center, rotations)
    except NonFiniteCoordinates as err:
        raise InputError(f"molecule '{source.name}': NaN or infinite coordinates in frame "
                         f"{int(frames[err.index])} "
                         f"of {', '.join(source.trajectory) or source.topology}") from None
    diffraction = r.diffraction
    if fluence is not None:
        diffraction = add_noise(diffraction, fluence, noise_seed, source.name, variants)
    return r.shape, diffraction, r.lost_atoms, r.lost_electrons


def read_frame(source: TrajectorySource, universe, index: int):
    """Frame ``index`` of a source's trajectory; a frame that cannot be read is an InputError
    naming the molecule, the file and the frame (not a bare reader error from a worker)."""
    try:
        return universe.trajectory[index]
    except Exception as err:  # MDAnalysis' readers raise OSError, EOFError, ValueError, ...
        reason = " ".join(str(err).split()) or type(err).__name__
        raise InputError(f"molecule '{source.name}': cannot read frame {index} of "
                         f"{_file_of_frame(source, universe, index)}: {reason}") from None


def _file_of_frame(source: TrajectorySource, universe, index: int) -> str:
    """The trajectory file holding frame ``index`` (of several read as one, the right one)."""
    files = source.trajectory or (source.topology,)
    if len(files) > 1:
        try:
            which, _ = universe.trajectory._get_local_frame(index)
            return files[which]
        except Exception:  # noqa: BLE001 - only for the message
            return " + ".join(files)
    return files[0]


def block_options(options: BuildOptions, variants) -> dict:
    """`render_block`'s keywords for the given variants: the kernel's non-default options, and
    the variant indices where they seed something (noise, orientations). Only what differs
    from the defaults, so that default graphs keep their keys."""
    kwargs = options.render_options()
    if "fluence" in kwargs or "orientation" in kwargs:
        kwargs["variants"] = np.asarray(variants)
    return kwargs


def _render_task(b: Build, m: int, start: int, stop: int) -> tuple:
    """The key and task that render molecule ``m``'s variants ``start..stop-1``."""
    source = b.sources[m]
    frames = b.frames[m, start:stop]
    options = block_options(b.options, np.arange(start, stop))
    token = dask.base.tokenize(source, frames, b.grid, b.options.center, *sorted(options.items(), key=str))
    call = functools.partial(render_block, **options) if options else render_block
    return f"render-{source.name}-{start}-{token}", (call, source, frames, b.grid, b.options.center)


def _item(rendered: tuple, i: int) -> np.ndarray:
    """Output ``i`` of `render_block`, as a chunk with its molecule axis."""
    return rendered[i][np.newaxis]


class BuildLayer(MaterializedLayer):
    """The render tasks of a build, carrying the `Build` they come from (``build``) and the
    names of the layers that take each variable from them (``items``): how `build_of` knows
    a dataset's plan from its graph alone. The layer object travels with every xarray
    selection's graph (HighLevelGraph keeps its layers), and with nothing else: no registry."""

    def __init__(self, mapping: dict, build: Build):
        super().__init__(mapping)
        self.build = build
        self.items = {}


def _assemble(b: Build) -> list:
    """Four dask arrays (shape, diffraction, lost_atoms, lost_electrons), one chunk per block.

    Written as one graph layer of render tasks and, per variable, a layer taking its item of
    each render's result: six tasks a block in all, however the arrays are computed or saved.
    """
    renders, render_tasks = {}, {}
    for m in range(len(b.sources)):
        for k, (start, stop) in enumerate(b.blocks):
            key, task = _render_task(b, m, start, stop)
            renders[(m, k)] = key
            render_tasks[key] = task
    layer_name = "render-" + dask.base.tokenize(*renders.values())
    render_layer = BuildLayer(render_tasks, b)
    n, q = b.grid.size, b.grid.qsize
    specs = [("shape", ((n,), (n,)), np.float32), ("diffraction", ((q,), (q,)), np.float32),
             ("lost_atoms", (), np.int64), ("lost_electrons", (), np.float64)]
    arrays = []
    for i, (var, image_chunks, dtype) in enumerate(specs):
        name = f"{var}-{dask.base.tokenize(layer_name, i)}"
        render_layer.items[var] = name
        tail = (0,) * len(image_chunks)
        layer = {(name, m, k, *tail): (_item, key, i) for (m, k), key in renders.items()}
        graph = HighLevelGraph({layer_name: render_layer, name: layer},
                               {layer_name: set(), name: {layer_name}})
        chunks = ((1,) * len(b.sources), b.block_sizes, *image_chunks)
        arrays.append(da.Array(graph, name, chunks, meta=np.empty((0,) * len(chunks), dtype)))
    return arrays


def lazy_dataset(b: Build) -> xr.Dataset:
    """The lazy dataset of a whole build (`Build.to_dataset`)."""
    shape, diffraction, lost_atoms, lost_electrons = _assemble(b)
    return make_dataset(b, shape, diffraction, lost_atoms, lost_electrons)


def build_dataset(sources, options: BuildOptions | dict | None = None, **changes) -> xr.Dataset:
    """Lazy shape images and diffraction patterns of MD trajectories, labelled per molecule.

    ``plan(sources, options, **changes).to_dataset()``. The options are one `BuildOptions`
    (``options``), keywords of the same names, or both (keywords win):
    ``build_dataset(sources, size=200, variants=50)``.

    Parameters
    ----------
    sources : sequence of TrajectorySource
        One per molecule; the order gives the labels 0..M-1.
    options : BuildOptions or dict, optional
        All options at once (from a run file: `molmnist_dask.runfile.load_run_file`).
    size : int
        Pixels per side of the shape image.
    extent : float, optional
        Field of view in angstrom; by default it holds every molecule's first frame with margin.
    variants : int, optional
        Take this many frames, evenly spread, from each trajectory. Without it every frame of
        the range is taken, and all molecules must offer the same number.
    center : {"geometry", "electrons", None}
        Subtract each frame's centre of geometry, of electrons, or nothing.
    oversampling : int
        Zero-pad shapes to ``oversampling * size`` before the transform.
    block_size : int, optional
        Frames per task and per chunk; automatic by default (chunks of about 32 MiB).
    scattering : {"electrons", "form_factors"}
        What each atom scatters in the diffraction pattern: its electron count Z (the shape's
        weights), or its tabulated X-ray form factor f0(|q|) (Waasmaier & Kirfel; see
        `molmnist_dask.formfactors`). The shape is the electron-count image either way.
    fluence : float, optional
        Replace each pattern by Poisson photon counts with this expected total number of
        photons per pattern (`molmnist_dask.noise`); noise-free by default.
    noise_seed : int
        Seed of the photon noise; each (seed, molecule, variant) draws the same noise whatever
        the blocks or the scheduler.
    orientation : {"z", "x", "y", "random"} or 3-vector
        Turn each molecule before projecting along z: not at all (default), to view it along
        a fixed direction, or by a uniformly random rotation per (seed, molecule, variant);
        the rotations are recorded in the ``orientation`` coordinate
        (`molmnist_dask.orientation` gives the conventions).
    orientation_seed : int
        Seed of the random orientations.
    orientations_per_frame : int
        K random orientations of each frame: variants = frames x K.

    Returns
    -------
    xarray.Dataset
        Lazy (dask-backed) ``shape``, ``diffraction``, ``lost_atoms`` and ``lost_electrons``,
        with the coordinates and attributes of the data contract (docs/design.md). Nothing is
        read or rendered until it is computed or saved.
    """
    return plan(sources, options, **changes).to_dataset()


# --- a dataset's plan, from its graph ---------------------------------------------------------

def build_of(ds: xr.Dataset) -> Build | None:
    """The `Build` a dataset is, or selects from (then a selected `Build`), or None.

    A dataset is a build's when each of its four variables is that build's own array or a
    plain selection of it along molecule and variant (xarray's ``isel``/``sel``: dask getitem
    layers that take whole images), and its coordinates say which molecules and variants
    (names, variant indices, frames and the grid's coordinates agree with the plan). Anything
    else (a computation, a rechunk, a crop, an opened store, numpy data) is None: such a
    dataset is written from its arrays.
    """
    found = None
    for var, dims in DATA_VARS.items():
        if var not in ds or ds[var].dims != dims:
            return None
        data = ds[var].variable._data  # .data would load a lazily indexed variable
        b = _build_in_graph(data, var) if isinstance(data, da.Array) else None
        if b is None or (found is not None and b is not found):
            return None
        found = b
    return _selection(ds, found)


def _build_in_graph(array: da.Array, var: str) -> Build | None:
    """The build whose ``var`` this array is, through selections only; or None."""
    layers = array.__dask_graph__().layers
    builds = [(name, layer) for name, layer in layers.items() if isinstance(layer, BuildLayer)]
    if len(builds) != 1:
        return None
    name, layer = builds[0]
    own = {name, layer.items.get(var)}
    if layer.items.get(var) not in layers:
        return None
    for other, sub in layers.items():
        if other not in own and not (other.startswith("getitem-") and _selects_images(sub)):
            return None
    return layer.build


def _selects_images(layer) -> bool:
    """Whether every task of a dask getitem layer only picks along the first two axes
    (molecule, variant), taking whole images: slices and index arrays there, ``slice(None)``
    on every other axis. Unknown tasks are not understood, hence False."""
    from dask._task_spec import Alias, DataNode, Task

    for key, task in layer.items():
        if isinstance(task, DataNode):
            if "taker" in str(key):  # take (a list of positions): (marker, index tuple)
                value = task.value
                if not (isinstance(value, tuple) and len(value) == 2 and _whole_images(value[1])):
                    return False
            continue
        if isinstance(task, Alias):
            continue
        if not isinstance(task, Task):
            return False
        func = getattr(task.func, "__name__", "")
        if func == "getitem":  # operator's or dask.array.chunk's: (array, index tuple)
            if len(task.args) != 2 or not _whole_images(task.args[1]):
                return False
        elif func == "concatenate_arrays":  # take: the pieces joined along its axis
            if len(task.args) != 3 or task.args[2] not in (0, 1):
                return False
        elif func != "_getitem":  # take: a piece, with a taker checked above
            return False
    return True


def _whole_images(index) -> bool:
    if not isinstance(index, tuple):
        return False
    picks = all(isinstance(k, (slice, int, np.integer, np.ndarray)) for k in index[:2])
    return picks and all(isinstance(k, slice) and k == slice(None) for k in index[2:])


def _selection(ds: xr.Dataset, b: Build) -> Build | None:
    """``b`` cut to the molecules and variants the dataset's coordinates name, if they agree
    with the plan (frames, labels, pixel and frequency coordinates)."""
    names = [s.name for s in b.sources]
    try:
        molecules = np.array([names.index(str(n)) for n in ds["molecule"].values], dtype=np.int64)
    except (ValueError, KeyError):
        return None
    variants = np.asarray(ds["variant"].values) if "variant" in ds.coords else None
    if variants is None or variants.dtype.kind not in "iu" or variants.ndim != 1:
        return None
    if ((variants < 0) | (variants >= b.frames.shape[1])).any():
        return None
    frames = b.frames[np.ix_(molecules, variants)]
    if "frame" not in ds.coords or not np.array_equal(ds["frame"].values, frames):
        return None
    if "label" in ds.coords and not np.array_equal(ds["label"].values, molecules):
        return None
    g = b.grid
    for c, values in (("y", g.centers), ("x", g.centers), ("qy", g.q), ("qx", g.q)):
        if c not in ds.coords or not np.array_equal(ds[c].values, values):
            return None
    return b.select(molecules, variants)
