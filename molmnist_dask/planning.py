"""The plan of a build, as an object: `Build`, from `plan(sources, options)`.

A `Build` knows its sources, the frames each molecule takes, the grid, the options and the
blocks of the lazy dataset; ``.to_dataset()`` gives the lazy dataset and ``.save(path)``
renders and writes it on the workers. ``.select(molecule=..., variant=...)`` is a smaller
build: its parts are still read, rendered and written by the workers, from the frames they
select and nothing more.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field, replace

import numpy as np

from . import orientation as orient
from .errors import InputError
from .grid import Grid
from .memory import check_frame_memory
from .options import BuildOptions
from .provenance import now
from .render import center_positions
from .settings import setting
from .sources import SourceInfo, TrajectorySource, inspect, spread

#: Warn when more than this fraction of a molecule's electrons falls outside the field of view.
LOST_FRACTION_WARNING = 0.01


@dataclass(frozen=True, eq=False)
class Build:
    """A planned build: what `build_dataset` computes and `save_dataset` writes.

    Made by `plan`; nothing is rendered until `to_dataset` is computed or `save` runs.

    Attributes
    ----------
    sources : tuple of TrajectorySource
        The planned molecules, in label order.
    infos : tuple of SourceInfo
        What the client learnt of each source (atoms, electrons, frames).
    frames : numpy.ndarray
        (molecule, variant): each image's frame in its molecule's trajectory.
    grid : Grid
    blocks : tuple of (start, stop)
        The lazy dataset's chunks along ``variant``.
    options : BuildOptions
        With the extent resolved.
    molecules, variants : numpy.ndarray
        The selected molecules and variants (indices into the planned ones): all of them
        unless `select` made this build.
    created : str
        When it was planned, UTC (the datasets' ``date_created`` and ``history``).
    """

    sources: tuple
    infos: tuple
    frames: np.ndarray
    grid: Grid
    blocks: tuple
    options: BuildOptions
    molecules: np.ndarray = field(default=None)
    variants: np.ndarray = field(default=None)
    #: When it was planned (ACDD's date_created): every dataset and selection of one build
    #: carries the same, so its part files are the same bytes whichever path writes them.
    created: str = field(default="", compare=False)

    def __post_init__(self):
        if self.molecules is None:
            object.__setattr__(self, "molecules", np.arange(len(self.sources)))
        if self.variants is None:
            object.__setattr__(self, "variants", np.arange(self.frames.shape[1]))

    # --- what it is ---------------------------------------------------------------------
    @property
    def shape(self) -> tuple:
        """(molecules, variants) selected."""
        return len(self.molecules), len(self.variants)

    @property
    def is_whole(self) -> bool:
        """Whether nothing is left out (the build as planned)."""
        m, v = self.frames.shape
        return self.shape == (m, v) and _is_range(self.molecules) and _is_range(self.variants)

    @property
    def block_sizes(self) -> tuple:
        return tuple(stop - start for start, stop in self.blocks)

    def source(self, m: int) -> TrajectorySource:
        """The source of selected molecule ``m``."""
        return self.sources[self.molecules[m]]

    def info(self, m: int) -> SourceInfo:
        return self.infos[self.molecules[m]]

    def part(self, m: int, start: int, stop: int) -> tuple:
        """Selected molecule ``m``'s selected variants ``start..stop-1``: (source, their frames,
        their variant indices in the planned build, which seed noise and orientations)."""
        variants = self.variants[start:stop]
        return self.source(m), self.frames[self.molecules[m], variants], variants

    # --- what it does -------------------------------------------------------------------
    def select(self, molecule=None, variant=None) -> "Build":
        """A smaller build: the molecules and variants picked (by position, as ``isel``).

        Parameters
        ----------
        molecule, variant : int sequence, slice or None
            Positions among this build's molecules and variants; None keeps them all.
        """
        mol = self.molecules if molecule is None else _pick(self.molecules, molecule, "molecule")
        var = self.variants if variant is None else _pick(self.variants, variant, "variant")
        return replace(self, molecules=mol, variants=var)

    def to_dataset(self):
        """The lazy dataset (xarray, dask-backed) of this build: nothing is read or rendered
        until it is computed or saved."""
        from .dataset import lazy_dataset

        ds = lazy_dataset(self.whole())
        return ds if self.is_whole else ds.isel(molecule=self.molecules, variant=self.variants)

    def save(self, path, **kwargs):
        """Render and write this build on the workers: `molmnist_dask.save_dataset` of
        `to_dataset` (its keywords: compression, checksums, progress, check, part sizes)."""
        from .store import save_dataset

        return save_dataset(self.to_dataset(), path, **kwargs)

    def whole(self) -> "Build":
        """The build as planned, before any `select`."""
        return self if self.is_whole else replace(self, molecules=None, variants=None)

    def __repr__(self) -> str:
        m, v = self.shape
        names = ", ".join(self.source(i).name for i in range(min(m, 4))) + (", ..." if m > 4 else "")
        return (f"Build({m} molecules [{names}] x {v} variants, {self.grid.size} px, "
                f"extent {self.grid.extent:g} A)")


def _is_range(index: np.ndarray) -> bool:
    return bool((np.asarray(index) == np.arange(len(index))).all())


def _pick(index: np.ndarray, key, what: str) -> np.ndarray:
    try:
        picked = np.atleast_1d(index[key])
    except IndexError as err:
        raise InputError(f"select: {what} {key!r} out of range ({err})") from None
    if picked.dtype.kind not in "iu":
        raise InputError(f"select: {what} must be positions (ints or a slice), got {key!r}")
    return picked


def frame_bytes(grid: Grid) -> int:
    """Bytes of one frame's output: its shape and its pattern, float32."""
    return 4 * (grid.size**2 + grid.qsize**2)


def auto_block_size(grid: Grid, n_variants: int) -> int:
    """Frames per block of the lazy dataset: the largest that keeps a chunk under
    ``molmnist.block-bytes`` (at least one, at most ``molmnist.block-frames``)."""
    per_frame = 4 * max(grid.size**2, grid.qsize**2)
    return int(max(1, min(n_variants, setting("block-frames"), setting("block-bytes") // per_frame)))


def plan(sources, options: BuildOptions | dict | None = None, **changes) -> Build:
    """Check the sources and options, and plan the build: frames, grid, blocks.

    Opens each source once on the client (to check it and count atoms and frames); the
    workers open their own. Every problem is an `InputError` naming what is at fault. A field
    of view given by the user that leaves much of a molecule's first frame outside it is
    warned about here.

    Parameters
    ----------
    sources : sequence of TrajectorySource
        One per molecule; the order gives the labels 0..M-1.
    options : BuildOptions or dict, optional
        The build's options; keyword ``changes`` (the names of `BuildOptions`) go on top.

    Returns
    -------
    Build
    """
    from .dataset import element_groups

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
            element_groups(source)
    frames = _pick_frames(sources, infos, options.variants)
    # K orientations of each frame: the frame's K variants in a row
    frames = np.repeat(frames, options.orientations_per_frame, axis=1)
    given_extent = options.extent is not None
    if not given_extent:
        turned = options.orientation != "z"
        options = options.replace(extent=auto_extent(sources, options.center, frames, turned))
    grid = Grid(size=options.size, extent=options.extent, oversampling=options.oversampling)
    check_frame_memory(grid)
    n = frames.shape[1]
    block_size = options.block_size or auto_block_size(grid, n)
    blocks = tuple((i, min(i + block_size, n)) for i in range(0, n, int(block_size)))
    build = Build(sources, infos, frames, grid, blocks, options, created=now())
    if given_extent:  # an automatic extent holds every first frame already
        _warn_lost(build)
    return build


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


def _first_positions(source: TrajectorySource, frame: int, center) -> tuple:
    """The selected atoms' centred positions in ``frame``, and their electrons."""
    from .dataset import read_frame
    from .sources import selected

    universe, atoms, z = selected(source)
    read_frame(source, universe, int(frame))
    return center_positions(atoms.positions, z, center), z


def auto_extent(sources, center, frames: np.ndarray, turned: bool = False) -> float:
    """A field of view holding every molecule's first frame with a 20% margin, whole angstrom.

    ``turned`` (any orientation but "z"): holding it in every orientation, i.e. a disc of the
    largest distance of an atom from the centre.
    """
    half = 0.0
    for source, first in zip(sources, frames[:, 0]):
        pos, _ = _first_positions(source, first, center)
        if not np.isfinite(pos).all():
            raise InputError(f"molecule '{source.name}': NaN or infinite coordinates in frame {first}")
        reach = np.linalg.norm(pos, axis=1) if turned else np.abs(pos[:, :2])
        half = max(half, float(reach.max()))
    return float(math.ceil(2.4 * half + 1))


def _warn_lost(b: Build) -> None:
    """Warn early, from the first frame, when much of a molecule falls outside a field of view
    given by the user."""
    half = b.grid.extent / 2
    for source, first in zip(b.sources, b.frames[:, 0]):
        pos, z = _first_positions(source, first, b.options.center)
        rotation = orient.rotations(b.options.orientation, b.options.orientation_seed, source.name, [0])
        xy = pos[:, :2] if rotation is None else (pos @ rotation[0].T)[:, :2]  # as variant 0 sees it
        outside = (np.abs(xy) > half).any(axis=1)
        fraction = z[outside].sum() / max(z.sum(), 1)
        if fraction > LOST_FRACTION_WARNING:
            warnings.warn(f"molecule '{source.name}': {fraction:.1%} of its electrons fall outside "
                          f"the {b.grid.extent:g} A field of view in frame {first}", stacklevel=4)
