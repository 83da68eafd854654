"""Plan blocks of frames -> one dask task per block -> a lazy, labelled xarray.Dataset."""

from __future__ import annotations

import functools
import math
import warnings
from dataclasses import dataclass

import dask
import dask.array as da
import numpy as np
import xarray as xr
from dask.highlevelgraph import HighLevelGraph

from . import orientation as orient
from .errors import InputError
from .grid import Grid
from .memory import check_frame_memory
from .metadata import make_dataset
from .noise import add_noise
from .options import BuildOptions
from .settings import setting
from .render import NonFiniteCoordinates, center_positions, render
from .sources import SourceInfo, TrajectorySource, cached, inspect, selected, spread

#: Warn when more than this fraction of a molecule's electrons falls outside the field of view.
LOST_FRACTION_WARNING = 0.01


@dataclass(frozen=True)
class Plan:
    """What `build_dataset` decided: the options (extent resolved), frames per molecule, the
    grid and the blocks of the lazy dataset's chunks."""

    sources: tuple
    infos: tuple
    frames: np.ndarray  # (molecule, variant)
    grid: Grid
    blocks: tuple  # (start, stop) along variant
    options: BuildOptions

    @property
    def block_sizes(self) -> tuple:
        return tuple(stop - start for start, stop in self.blocks)

    @property
    def center(self):
        return self.options.center

    @property
    def scattering(self) -> str:
        return self.options.scattering

    @property
    def fluence(self):
        return self.options.fluence

    @property
    def noise_seed(self) -> int:
        return self.options.noise_seed


def frame_bytes(grid: Grid) -> int:
    """Bytes of one frame's output: its shape and its pattern, float32."""
    return 4 * (grid.size**2 + grid.qsize**2)


def auto_block_size(grid: Grid, n_variants: int) -> int:
    """Frames per block of the lazy dataset: the largest that keeps a chunk under
    ``molmnist.block-bytes`` (at least one, at most ``molmnist.block-frames``)."""
    per_frame = 4 * max(grid.size**2, grid.qsize**2)
    return int(max(1, min(n_variants, setting("block-frames"), setting("block-bytes") // per_frame)))


def plan(sources, options: BuildOptions | dict | None = None, **changes) -> Plan:
    """Check the sources and options, and cut each molecule's frames into blocks.

    Opens each source once on the client (to check it and count atoms and frames); the
    workers open their own. Every problem is an `InputError` naming what is at fault.

    Parameters
    ----------
    sources : sequence of TrajectorySource
    options : BuildOptions or dict, optional
        The build's options; keyword ``changes`` (the names of `BuildOptions`) go on top.
    """
    options = BuildOptions.make(options, **changes)
    sources = _check_sources(sources)
    infos = tuple(inspect(s) for s in sources)
    if options.center == "electrons":
        for source, info in zip(sources, infos):
            if info.n_electrons <= 0:
                raise InputError(f"molecule '{source.name}': center='electrons' but its selection "
                                 f"{source.selection!r} has no electrons (virtual sites only?)")
    if options.scattering == "form_factors":
        for source in sources:
            _element_groups(source)
    frames = _pick_frames(sources, infos, options.variants)
    # K orientations of each frame: the frame's K variants in a row
    frames = np.repeat(frames, options.orientations_per_frame, axis=1)
    if options.extent is None:
        turned = options.orientation != "z"
        options = options.replace(extent=auto_extent(sources, options.center, frames, turned))
    grid = Grid(size=options.size, extent=options.extent, oversampling=options.oversampling)
    check_frame_memory(grid)
    n = frames.shape[1]
    block_size = options.block_size or auto_block_size(grid, n)
    blocks = tuple((i, min(i + block_size, n)) for i in range(0, n, int(block_size)))
    return Plan(sources, infos, frames, grid, blocks, options)


def _check_sources(sources) -> tuple:
    if isinstance(sources, TrajectorySource):
        sources = [sources]
    sources = tuple(sources)
    if not sources:
        raise InputError("no molecules given")
    for s in sources:
        if not isinstance(s, TrajectorySource):
            raise InputError(f"sources must be TrajectorySource objects, got {type(s).__name__}")
    names = [s.name for s in sources]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise InputError(f"duplicate molecule names: {', '.join(dupes)}")
    return sources


def _pick_frames(sources, infos, variants) -> np.ndarray:
    if variants is not None:
        return np.stack([spread(i.frames, variants, s.name) for s, i in zip(sources, infos)])
    counts = {s.name: len(i.frames) for s, i in zip(sources, infos)}
    if len(set(counts.values())) > 1:
        listing = ", ".join(f"{k}: {v}" for k, v in counts.items())
        raise InputError(f"molecules have different frame counts ({listing}); "
                         "give variants=N to take N frames from each")
    return np.stack([i.frames for i in infos])


def auto_extent(sources, center, frames: np.ndarray, turned: bool = False) -> float:
    """A field of view holding every molecule's first frame with a 20% margin, whole angstrom.

    ``turned`` (any orientation but "z"): holding it in every orientation, i.e. a disc of the
    largest distance of an atom from the centre.
    """
    half = 0.0
    for source, first in zip(sources, frames[:, 0]):
        universe, atoms, z = selected(source)
        read_frame(source, universe, int(first))
        pos = center_positions(atoms.positions, z, center)
        if not np.isfinite(pos).all():
            raise InputError(f"molecule '{source.name}': NaN or infinite coordinates in frame {first}")
        reach = np.linalg.norm(pos, axis=1) if turned else np.abs(pos[:, :2])
        half = max(half, float(reach.max()))
    return float(math.ceil(2.4 * half + 1))


def _element_groups(source: TrajectorySource):
    """Elements of a source's selection and each atom's index into them (form factors)."""
    from .electrons import element_symbols
    from .formfactors import element_groups

    def make(universe):  # once per Universe: a Python loop over the atoms
        _, atoms, z = selected(source)
        return element_groups(element_symbols(atoms), z, source.name)

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

            elements, index = _element_groups(source)
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


def block_options(p: Plan, start: int, stop: int) -> dict:
    """`render_block`'s keywords for variants ``start..stop-1``: the kernel's non-default
    options, and the variant indices where they seed something (noise, orientations). Only
    what differs from the defaults, so that default graphs keep their keys."""
    options = p.options.render_options()
    if "fluence" in options or "orientation" in options:
        options["variants"] = np.arange(start, stop)
    return options


def _render_task(p: Plan, m: int, start: int, stop: int) -> tuple:
    """The key and task that render molecule ``m``'s variants ``start..stop-1``."""
    source = p.sources[m]
    frames = p.frames[m, start:stop]
    options = block_options(p, start, stop)
    token = dask.base.tokenize(source, frames, p.grid, p.center, *sorted(options.items(), key=str))
    call = functools.partial(render_block, **options) if options else render_block
    return f"render-{source.name}-{start}-{token}", (call, source, frames, p.grid, p.center)


def _item(rendered: tuple, i: int) -> np.ndarray:
    """Output ``i`` of `render_block`, as a chunk with its molecule axis."""
    return rendered[i][np.newaxis]


def _assemble(p: Plan) -> list:
    """Four dask arrays (shape, diffraction, lost_atoms, lost_electrons), one chunk per block.

    Written as one graph layer of render tasks and, per variable, a layer taking its item of
    each render's result: six tasks a block in all, however the arrays are computed or saved.
    """
    renders, render_layer = {}, {}
    for m in range(len(p.sources)):
        for b, (start, stop) in enumerate(p.blocks):
            key, task = _render_task(p, m, start, stop)
            renders[(m, b)] = key
            render_layer[key] = task
    layer_name = "render-" + dask.base.tokenize(*renders.values())
    n, q = p.grid.size, p.grid.qsize
    specs = [("shape", ((n,), (n,)), np.float32), ("diffraction", ((q,), (q,)), np.float32),
             ("lost_atoms", (), np.int64), ("lost_electrons", (), np.float64)]
    arrays = []
    for i, (var, image_chunks, dtype) in enumerate(specs):
        name = f"{var}-{dask.base.tokenize(layer_name, i)}"
        tail = (0,) * len(image_chunks)
        layer = {(name, m, b, *tail): (_item, key, i) for (m, b), key in renders.items()}
        graph = HighLevelGraph({layer_name: render_layer, name: layer},
                               {layer_name: set(), name: {layer_name}})
        chunks = ((1,) * len(p.sources), p.block_sizes, *image_chunks)
        arrays.append(da.Array(graph, name, chunks, meta=np.empty((0,) * len(chunks), dtype)))
    return arrays


def build_dataset(sources, options: BuildOptions | dict | None = None, **changes) -> xr.Dataset:
    """Lazy shape images and diffraction patterns of MD trajectories, labelled per molecule.

    The options are one `BuildOptions` (``options``), keywords of the same names, or both
    (keywords win): ``build_dataset(sources, size=200, variants=50)``.

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
        with the coordinates and attributes of the data contract (docs/design.md). Nothing is read
        or rendered until it is computed or saved.
    """
    options = BuildOptions.make(options, **changes)
    p = plan(sources, options)
    if options.extent is not None:  # an automatic extent holds every first frame already
        _warn_lost(p)
    shape, diffraction, lost_atoms, lost_electrons = _assemble(p)
    ds = make_dataset(p, shape, diffraction, lost_atoms, lost_electrons)
    remember(ds, p)
    return ds


#: The plans of the lazy datasets made here, by the dask name of their ``shape``: the save
#: path renders and writes straight from the plan when the dataset is still the one made.
_PLANS: dict = {}


def remember(ds: xr.Dataset, p: Plan) -> None:
    """Keep ``p`` for `plan_of` (the last few only)."""
    while len(_PLANS) >= 32:
        _PLANS.pop(next(iter(_PLANS)))
    _PLANS[ds["shape"].data.name] = p


def plan_of(ds: xr.Dataset) -> Plan | None:
    """The plan of a dataset exactly as `build_dataset` made it, or None.

    Any change that touches the images (a selection, a rechunk, a computation) gives new dask
    names, so a dataset that is not the plan's own falls back to being written from its arrays.
    """
    data = ds["shape"].data if "shape" in ds else None
    name = getattr(data, "name", None)
    p = _PLANS.get(name) if isinstance(name, str) else None
    if p is None or ds.sizes.get("variant") != p.frames.shape[1] or ds.sizes.get("molecule") != len(p.sources):
        return None
    if getattr(ds["diffraction"].data, "name", None) is None or not np.array_equal(ds["frame"].values, p.frames):
        return None
    return p


def _warn_lost(p: Plan) -> None:
    """Warn early, from the first frame, when much of a molecule falls outside a field of view
    given by the user."""
    half = p.grid.extent / 2
    for source, first in zip(p.sources, p.frames[:, 0]):
        universe, atoms, z = selected(source)
        read_frame(source, universe, int(first))
        pos = center_positions(atoms.positions, z, p.center)
        rotation = orient.rotations(p.options.orientation, p.options.orientation_seed, source.name, [0])
        xy = pos[:, :2] if rotation is None else (pos @ rotation[0].T)[:, :2]  # as variant 0 sees it
        outside = (np.abs(xy) > half).any(axis=1)
        fraction = z[outside].sum() / max(z.sum(), 1)
        if fraction > LOST_FRACTION_WARNING:
            warnings.warn(f"molecule '{source.name}': {fraction:.1%} of its electrons fall outside "
                          f"the {p.grid.extent:g} A field of view in frame {first}", stacklevel=3)
