"""Trajectory sources: files, selection and frame range of one molecule.

A source holds paths and strings only. Tasks carry it to the workers, which open the
Universe themselves (once per worker thread, cached); no Universe is pickled from the client.
"""

from __future__ import annotations

import functools
import gc
import os
import sys
import threading
import traceback
import warnings
from dataclasses import dataclass, field

import numpy as np

from .electrons import electron_counts
from .errors import InputError
from .validate import integer, positive_int
from .labels import read_labels, reader_labels


@dataclass(frozen=True)
class TrajectorySource:
    """One molecule's trajectory.

    Parameters
    ----------
    name : str
        Molecule name; it becomes the ``molecule`` coordinate.
    topology : str
        Topology file in any format MDAnalysis reads (PSF, PDB, GRO, TPR, PRMTOP, ...).
    trajectory : str or sequence of str
        One or more trajectory files (DCD, XTC, TRR, AMBER NetCDF, PDB, GRO, ...), read as one
        continuous trajectory.
    selection : str
        MDAnalysis selection string of the atoms to render.
    start, stop, step : int, optional
        Frame range, as a Python slice of the trajectory's frames.
    labels : str, optional
        A CSV file of per-frame labels (`molmnist_dask.labels`): a header of names, each
        optionally with its units in brackets (``twist [degree/nm],time [ps]``), then one row
        of numbers per frame of the whole trajectory (before start/stop/step). Each label
        becomes a coordinate along (molecule, variant); a ``time`` column replaces the
        trajectory's own times.
    """

    name: str
    topology: str
    trajectory: tuple = field(default=())
    selection: str = "all"
    start: int | None = None
    stop: int | None = None
    step: int | None = None
    labels: str | None = None

    def __post_init__(self):
        traj = self.trajectory
        traj = (traj,) if isinstance(traj, (str, os.PathLike)) else tuple(traj)
        object.__setattr__(self, "trajectory", tuple(os.fspath(t) for t in traj))
        object.__setattr__(self, "topology", os.fspath(self.topology))
        if self.labels is not None:
            if not isinstance(self.labels, (str, os.PathLike)):
                raise InputError(f"molecule '{self.name}': labels must be a path to a CSV file, "
                                 f"got {self.labels!r}")
            object.__setattr__(self, "labels", os.fspath(self.labels))
        if not isinstance(self.name, str) or not self.name.strip():
            raise InputError(f"molecule name must be a non-empty string, got {self.name!r}")
        if not isinstance(self.selection, str):
            raise InputError(f"molecule '{self.name}': selection must be a string")
        for key in ("start", "stop", "step"):
            integer(f"molecule '{self.name}': {key}", getattr(self, key), 1 if key == "step" else 0, optional=True)

    @property
    def files(self) -> tuple:
        """Topology and trajectory paths."""
        return (self.topology, *self.trajectory)


@dataclass(frozen=True)
class SourceInfo:
    """What the client learns by opening a source once: counts and the frames it offers."""

    frames: np.ndarray
    n_atoms: int
    n_electrons: int
    n_no_element: int
    elements_guessed: bool
    labels: dict = field(default_factory=dict)  # name -> Label over all trajectory frames


_cache = threading.local()


def open_universe(source: TrajectorySource):
    """The source's Universe, opened once per worker thread and reused.

    Cached per thread because a Universe's trajectory has a current frame: two threads sharing
    one would move it under each other.
    """
    key = (source.topology, source.trajectory)
    universes = getattr(_cache, "universes", None)
    if universes is None:
        universes = _cache.universes = {}
    if key not in universes:
        if len(universes) >= 16:  # a run's molecules, not unbounded: parsing one is slow
            universes.pop(next(iter(universes)))
        universes[key] = _open(source)
    return universes[key]


def _open(source: TrajectorySource):
    for path in source.files:
        if not os.path.exists(path):
            raise InputError(f"molecule '{source.name}': file not found: {path}")
        if not os.access(path, os.R_OK) or os.path.isdir(path):
            raise InputError(f"molecule '{source.name}': cannot read file: {path}")
    if any(path.endswith(".cellvar") for path in source.files):
        from .cellulose import virtual  # noqa: F401  registers the format with MDAnalysis
    trajectory = list(source.trajectory)
    universe = _universe([source.topology] + ([trajectory] if len(trajectory) > 1 else trajectory),
                         source)
    if not hasattr(universe, "trajectory"):  # MDAnalysis raises AttributeError, hence hasattr
        raise InputError(f"molecule '{source.name}': {source.topology} holds no coordinates; "
                         "give the trajectory files that go with it")
    return universe


def _universe(args: list, source: TrajectorySource):
    """``mda.Universe(*args)``; what MDAnalysis cannot read is one InputError, and nothing more.

    A reader that fails in its constructor leaves a half-made object whose ``__del__`` fails
    again ("Exception ignored in ... ReaderBase.__del__"): its frames are cleared here, while
    that one message is filtered, so that it is collected now and says nothing.
    """
    import MDAnalysis as mda

    hook = sys.unraisablehook
    sys.unraisablehook = functools.partial(_quiet_reader_del, hook)
    try:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return mda.Universe(*args)
        except Exception as err:  # MDAnalysis raises ValueError, TypeError, OSError, EOFError ...
            reason = " ".join(str(err).split()) or type(err).__name__
            traceback.clear_frames(err.__traceback__)
            del err
            gc.collect()
    finally:
        sys.unraisablehook = hook
    files = " + ".join(source.files)
    raise InputError(f"molecule '{source.name}': MDAnalysis cannot read {files}: {reason}")


def _quiet_reader_del(hook, unraisable) -> None:
    """An unraisablehook that drops failures of MDAnalysis readers' ``__del__``."""
    if getattr(unraisable.object, "__qualname__", "").endswith("Base.__del__"):
        return
    hook(unraisable)


def cached(source: TrajectorySource, key, make):
    """``(universe, make(universe))`` for the source's Universe, ``make`` run once per Universe
    (one per worker thread) and ``key``."""
    universe = open_universe(source)
    store = universe._molmnist_cache = getattr(universe, "_molmnist_cache", {})
    if key not in store:
        store[key] = make(universe)
    return universe, store[key]


def _selection(source: TrajectorySource) -> tuple:
    """(universe, selected atoms, their electrons, counts of the selection), cached: guessing
    elements from names costs ~60 ms for a 3k-atom protein."""
    def make(universe):
        atoms = select(source, universe)
        return (atoms, *electron_counts(atoms))

    universe, (atoms, z, summary) = cached(source, ("selected", source.selection), make)
    return universe, atoms, z, summary


def selected(source: TrajectorySource):
    """The source's Universe, selected atoms and their electrons, cached per worker thread."""
    return _selection(source)[:3]


def select(source: TrajectorySource, universe):
    """The source's selected atoms; an invalid or empty selection is an InputError."""
    try:
        atoms = universe.select_atoms(source.selection)
    except Exception as err:
        raise InputError(f"molecule '{source.name}': invalid selection "
                         f"{source.selection!r}: {' '.join(str(err).split())}") from None
    if len(atoms) == 0:
        raise InputError(f"molecule '{source.name}': selection {source.selection!r} matches no atoms")
    return atoms


def frame_indices(source: TrajectorySource, n_frames: int) -> np.ndarray:
    """The trajectory frames the source's range takes; out of range is an InputError."""
    for key in ("start", "stop"):
        value = getattr(source, key)
        if value is not None and value > n_frames:
            raise InputError(f"molecule '{source.name}': {key}={value} is beyond the trajectory's "
                             f"{n_frames} frames ({source.trajectory[0] if source.trajectory else source.topology})")
    frames = np.arange(n_frames)[slice(source.start, source.stop, source.step)]
    if len(frames) == 0:
        raise InputError(f"molecule '{source.name}': frame range start={source.start} "
                         f"stop={source.stop} step={source.step} holds no frames")
    return frames


def inspect(source: TrajectorySource) -> SourceInfo:
    """Open a source on the client once to check it and count its atoms, electrons and frames."""
    universe, _, _, summary = _selection(source)
    n_frames = len(universe.trajectory)
    frames = frame_indices(source, n_frames)
    labels = read_labels(source.labels, n_frames, source.name) if source.labels else {}
    return SourceInfo(frames=frames, labels=labels, **summary)


def frame_labels(source: TrajectorySource, info: SourceInfo, frames) -> dict:
    """The labels of ``frames`` (trajectory indices): ``{name: Label}``, one value per frame.

    The labels file's (``info.labels``), then what the reader knows (a generated fibril's
    twist, MDAnalysis' time): the file wins where both give a label. A frame whose time cannot
    be read is an InputError naming the molecule, the file and the frame.
    """
    universe = open_universe(source)

    def read(index):
        try:
            return universe.trajectory[index]
        except Exception as err:  # MDAnalysis' readers raise OSError, EOFError, ValueError, ...
            reason = " ".join(str(err).split()) or type(err).__name__
            files = " + ".join(source.trajectory) or source.topology
            raise InputError(f"molecule '{source.name}': cannot read frame {index} of {files}: "
                             f"{reason}") from None

    known = reader_labels(universe.trajectory, frames, time="time" not in info.labels, read=read)
    return {**known, **{name: label.take(frames) for name, label in info.labels.items()}}


def spread(frames: np.ndarray, variants: int, name: str) -> np.ndarray:
    """``variants`` frames evenly spread over ``frames``, first and last included."""
    positive_int("variants", variants)
    if variants > len(frames):
        raise InputError(f"molecule '{name}': variants={variants} but its trajectory offers "
                         f"only {len(frames)} frames")
    picks = np.linspace(0, len(frames) - 1, variants).round().astype(int)
    return frames[picks]
