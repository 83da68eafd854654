"""Per-frame labels: what a source knows of each frame (its time, a fibril's twist...).

Three places give them, for the frames a build takes:

- a labels file given with a source (``TrajectorySource(labels="2x2.labels.csv")``): a CSV
  file, a header of names each optionally followed by its units in brackets
  (``twist [degree/nm],time [ps]``), then one row of numbers per frame of the whole trajectory;
- the trajectory reader: a reader with ``molmnist_labels(frames)`` (the built-in cellulose
  variants give their nominal ``twist``);
- MDAnalysis: each frame's ``ts.time`` (ps), unless the labels file gives ``time`` or the
  reader has none (a generated trajectory, or one without time information where MDAnalysis
  would assume 1 ps per frame).

In the dataset each label is a float64 coordinate along (molecule, variant), NaN where a
molecule lacks it (`molmnist_dask.metadata`).
"""

from __future__ import annotations

import csv
import re
import warnings
from dataclasses import dataclass

import numpy as np

from .errors import InputError

#: Labels this package knows: units, and the long_name the dataset gives them.
KNOWN = {
    "twist": ("degree/nm", "twist of the fibril about its axis (positive: right-handed)"),
    "time": ("ps", "simulation time of the frame"),
}
#: Names of the dataset's other variables and coordinates: a label may not take them.
RESERVED = ("molecule", "label", "variant", "frame", "y", "x", "qy", "qx", "shape", "diffraction",
            "lost_atoms", "lost_electrons", "orientation", "quaternion", "n_atoms", "n_electrons",
            "n_no_element", "elements_guessed", "selection", "topology", "trajectory",
            "topology_resolved", "trajectory_resolved", "topology_fingerprint",
            "trajectory_fingerprint", "part_molecule", "part_start", "part_stop", "part_bytes")
_HEADER = re.compile(r"^\s*([A-Za-z][A-Za-z0-9_]*)\s*(?:\[\s*([^\]]*?)\s*\])?\s*$")


@dataclass(frozen=True)
class Label:
    """One label of one molecule: ``values`` per frame (of the trajectory, or of the build)."""

    name: str
    units: str | None
    long_name: str
    values: np.ndarray

    def take(self, frames) -> "Label":
        """The label at ``frames`` (indices into ``values``)."""
        return Label(self.name, self.units, self.long_name, self.values[np.asarray(frames, dtype=np.intp)])


def make_label(name: str, values, units: str | None = None) -> Label:
    """A label with the units and long_name the package gives ``name`` (if it knows it)."""
    known_units, long_name = KNOWN.get(name, (units, name))
    return Label(name, units or known_units, long_name, np.asarray(values, dtype=np.float64))


def read_labels(path: str, n_frames: int, molecule: str) -> dict:
    """The labels of a CSV labels file, ``{name: Label}`` over all ``n_frames`` frames.

    Raises
    ------
    InputError
        One line naming the file and the molecule: a missing or unreadable file, a bad header,
        a row that is not numbers, a row count other than the trajectory's frames.
    """
    where = f"molecule '{molecule}': labels file {path}"
    try:
        with open(path, newline="") as f:
            rows = [row for row in csv.reader(f) if any(cell.strip() for cell in row)]
    except FileNotFoundError:
        raise InputError(f"{where}: not found") from None
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise InputError(f"{where}: cannot read ({' '.join(str(err).split())})") from None
    if not rows:
        raise InputError(f"{where}: empty (expected a header such as 'twist [degree/nm],time [ps]')")
    columns = [_column(cell, where) for cell in rows[0]]
    names = [name for name, _ in columns]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise InputError(f"{where}: column {dupes[0]!r} appears twice")
    body = rows[1:]
    if len(body) != n_frames:
        raise InputError(f"{where}: {len(body)} rows of labels, but the trajectory has {n_frames} frames "
                         "(one row per frame of the whole trajectory, before start/stop/step)")
    values = np.empty((len(body), len(columns)))
    for i, row in enumerate(body):
        if len(row) != len(columns):
            raise InputError(f"{where}: line {i + 2} has {len(row)} values, the header {len(columns)}")
        try:
            values[i] = [float(cell) for cell in row]
        except ValueError:
            raise InputError(f"{where}: line {i + 2} holds something other than numbers: "
                             f"{','.join(row)[:60]!r}") from None
    return {name: make_label(name, values[:, j], units) for j, (name, units) in enumerate(columns)}


def _column(cell: str, where: str) -> tuple:
    """``(name, units or None)`` of one header cell, ``name [units]``."""
    match = _HEADER.match(cell)
    if not match:
        raise InputError(f"{where}: bad header {cell.strip()!r} (a name of letters, digits and _, "
                         "then optionally its units in brackets: 'twist [degree/nm]')")
    name, units = match.group(1), match.group(2) or None
    if name in RESERVED:
        raise InputError(f"{where}: label {name!r} is a name the dataset already uses; rename it")
    if name in KNOWN and units not in (None, KNOWN[name][0]):
        raise InputError(f"{where}: {name} must be in {KNOWN[name][0]}, not {units}")
    return name, units


def reader_labels(reader, frames, time: bool = True, read=None) -> dict:
    """What the trajectory reader knows of ``frames``: its own labels (``molmnist_labels``)
    and, where it has one and ``time`` is asked for, each frame's time from MDAnalysis."""
    frames = np.asarray(frames, dtype=np.intp)
    labels = {}
    own = getattr(reader, "molmnist_labels", None)
    if own is not None:
        labels.update({name: make_label(name, values) for name, values in own(frames).items()})
    if time and getattr(reader, "has_time", True):
        times = frame_times(reader, frames, read)
        if times is not None:
            labels["time"] = make_label("time", times)
    return labels


def frame_times(reader, frames, read=None) -> np.ndarray | None:
    """Each frame's ``ts.time`` (ps) as MDAnalysis gives it; None where the reader has no time.

    MDAnalysis' ``Timestep.time`` is ``data['time'] + time_offset`` where the reader stores a
    time per frame, else ``dt * frame + time_offset``. Computed without reading a frame where
    that is exact: a reader that stores no time, and a DCD file (whose reader computes each
    time from its header: ``(frame + istart / nsavc) * dt``); read from each frame's header in
    an XTC file (4 bytes a frame); read from the frames taken (one read each, ``read(index)``
    if given) for the others (TRR, AMBER NetCDF...). A reader
    with neither a stored time nor a ``dt`` (MDAnalysis would warn and assume 1 ps) has no
    time: None.
    """
    frames = np.asarray(frames, dtype=np.intp)
    ts = reader.ts
    offset = ts.data.get("time_offset", 0)
    if "time" not in ts.data:
        dt = _dt(reader, ts)
        return None if dt is None else frames * dt + offset
    computed = _dcd_times(reader, frames)
    if computed is None:
        computed = _xtc_times(reader, frames)
    if computed is not None:
        return computed + offset
    read = read or reader.__getitem__
    times = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # DCDReader's deprecation of copied timesteps
        for f in np.unique(frames):
            times[f] = read(int(f)).time
    return np.array([times[f] for f in frames], dtype=np.float64)


def _dcd_times(reader, frames) -> np.ndarray | None:
    """The times MDAnalysis' DCDReader gives ``frames``, from the header alone (its
    ``_frame_to_ts``); None for any other reader."""
    from MDAnalysis.coordinates.DCD import DCDReader

    if type(reader) is not DCDReader:  # exactly: LAMMPS' subclass converts its own units
        return None
    header = reader._file.header
    if not header.get("nsavc"):
        return None
    return (frames + header["istart"] / header["nsavc"]) * reader.ts.dt


def _xtc_times(reader, frames) -> np.ndarray | None:
    """The times MDAnalysis' XTCReader gives ``frames``, read from the frames' headers (magic,
    natoms, step, then the time as a big-endian float32) at the reader's frame offsets, without
    decompressing any coordinates; None for any other reader or an unexpected header."""
    from MDAnalysis.coordinates.XTC import XTCReader

    if type(reader) is not XTCReader:
        return None
    offsets = np.asarray(reader._xdr.offsets)
    out = np.empty(len(frames))
    with open(reader.filename, "rb") as f:
        for i, frame in enumerate(frames):
            f.seek(int(offsets[frame]))
            header = f.read(16)
            if len(header) < 16 or int.from_bytes(header[:4], "big") != _XTC_MAGIC:
                return None
            out[i] = float(np.frombuffer(header[12:], ">f4")[0])
    return out


_XTC_MAGIC = 1995


def _dt(reader, ts) -> float | None:
    """The reader's time between frames, or None where it has none."""
    if "dt" in ts.data:
        return float(ts.data["dt"])
    try:
        return float(reader._get_dt())
    except Exception:  # noqa: BLE001 - readers without dt raise AttributeError, KeyError, ...
        return None
