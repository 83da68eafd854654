"""TOML run files: molecules, grid and options for one build.

A run file looks like this (paths are relative to the run file)::

    [grid]
    size = 200            # pixels per side
    extent = 160.0        # field of view, angstrom (omit for automatic)
    oversampling = 1

    [options]
    variants = 100        # frames evenly spread over each trajectory
    center = "geometry"   # "geometry", "electrons" or "none"
    block_size = 0        # frames per task; 0 means automatic
    scattering = "electrons"  # or "form_factors": X-ray form factors f0(|q|) in the patterns
    fluence = 1e6         # optional (omit: no noise): Poisson noise, expected photons per pattern
    noise_seed = 0        # seed of that noise
    orientation = "z"     # "z", "x", "y", a view direction [1.0, 0.0, 0.0], or "random"
    orientation_seed = 0  # seed of the random orientations
    orientations_per_frame = 1  # K random orientations per frame: variants = frames x K
    selection = "all"     # default selection for molecules that give none

    [[molecule]]
    name = "2x2"
    topology = "2x2.psf"
    trajectory = ["2x2.dcd"]   # one path or a list
    selection = "all"
    start = 0                  # optional frame range
    stop = 2000
    step = 1
    labels = "2x2.labels.csv"  # optional per-frame labels: 'twist [degree/nm],time [ps]' header, a row per frame

Every unknown or mistyped key is an error that names it. `write_run_file` writes one
(with tomli-w, so any text round-trips); `load_run_file` reads it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import tomli_w

try:  # Python >= 3.11
    import tomllib
except ModuleNotFoundError:  # pragma: no cover
    import tomli as tomllib

from .errors import InputError
from .options import BuildOptions
from .sources import TrajectorySource
from .validate import is_int, is_number

GRID_KEYS = {"size": int, "extent": float, "oversampling": int}
OPTION_KEYS = {"variants": int, "center": str, "block_size": int, "selection": str,
               "scattering": str, "fluence": float, "noise_seed": int,
               "orientation": (str, list), "orientation_seed": int, "orientations_per_frame": int}
MOLECULE_KEYS = {"name": str, "topology": str, "trajectory": (str, list), "selection": str,
                 "start": int, "stop": int, "step": int, "labels": str}
TOP_KEYS = {"grid", "options", "molecule"}


@dataclass
class RunFile:
    """What a run file says: the sources and the build's options."""

    sources: list[TrajectorySource]
    options: BuildOptions = field(default_factory=BuildOptions)
    path: Path | None = None


def _is(value, kind: type) -> bool:
    """Whether ``value`` has a key's type (an int is no bool; a float may be written as an int)."""
    if kind is int:
        return is_int(value)
    if kind is float:
        return is_number(value)
    return isinstance(value, kind)


def _check_keys(table: dict, allowed: dict, where: str, path) -> None:
    for key, value in table.items():
        if key not in allowed:
            hint = ", ".join(sorted(allowed))
            raise InputError(f"{path}: unknown key '{key}' in {where} (allowed: {hint})")
        want = allowed[key] if isinstance(allowed[key], tuple) else (allowed[key],)
        if not any(_is(value, kind) for kind in want):
            name = " or ".join(t.__name__ for t in want)
            raise InputError(f"{path}: key '{key}' in {where} must be {name}, got {value!r}")


def load_run_file(path: str | os.PathLike) -> RunFile:
    """Read a TOML run file.

    Parameters
    ----------
    path : path-like
        The run file. Relative paths inside it are taken relative to its folder.

    Returns
    -------
    RunFile
        ``sources`` and ``options`` (a `BuildOptions`) for `build_dataset`.

    Raises
    ------
    InputError
        Naming the file and the key at fault.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise InputError(f"{path}: cannot read run file ({err.strerror or err})") from None
    except UnicodeDecodeError as err:
        raise InputError(f"{path}: not valid TOML (not UTF-8 text: byte {err.start})") from None
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise InputError(f"{path}: not valid TOML ({err})") from None
    unknown = sorted(set(doc) - TOP_KEYS)
    if unknown:
        raise InputError(f"{path}: unknown table '{unknown[0]}' (allowed: [grid], [options], [[molecule]])")
    grid = doc.get("grid", {})
    opts = doc.get("options", {})
    if not isinstance(grid, dict) or not isinstance(opts, dict):
        raise InputError(f"{path}: [grid] and [options] must be tables")
    _check_keys(grid, GRID_KEYS, "[grid]", path)
    _check_keys(opts, OPTION_KEYS, "[options]", path)
    molecules = doc.get("molecule", [])
    if not isinstance(molecules, list) or not molecules:
        raise InputError(f"{path}: no [[molecule]] entries")
    default_selection = opts.get("selection", "all")
    sources = [_source(m, i, default_selection, path) for i, m in enumerate(molecules)]
    options = {**grid, **{k: v for k, v in opts.items() if k != "selection"}}
    if options.get("block_size") == 0:
        options["block_size"] = None
    if options.get("center") == "none":
        options["center"] = None
    try:
        options = BuildOptions.from_mapping(options)
    except InputError as err:
        raise InputError(f"{path}: {err}") from None
    return RunFile(sources=sources, options=options, path=path)


def _source(entry: dict, index: int, default_selection: str, path: Path) -> TrajectorySource:
    where = f"[[molecule]] #{index + 1}"
    if not isinstance(entry, dict):
        raise InputError(f"{path}: {where} must be a table")
    _check_keys(entry, MOLECULE_KEYS, where, path)
    for key in ("name", "topology", "trajectory"):
        if key not in entry:
            raise InputError(f"{path}: {where} has no '{key}'")
    base = path.parent
    trajectory = entry["trajectory"]
    trajectory = [trajectory] if isinstance(trajectory, str) else list(trajectory)
    return TrajectorySource(
        name=entry["name"],
        topology=str(base / entry["topology"]),
        trajectory=[str(base / t) for t in trajectory],
        selection=entry.get("selection", default_selection),
        start=entry.get("start"), stop=entry.get("stop"), step=entry.get("step"),
        labels=str(base / entry["labels"]) if "labels" in entry else None,
    )


def _plain(value):
    """A value as TOML writes it: numpy scalars as Python ones, tuples (a view direction from
    BuildOptions) as arrays."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def write_run_file(path, sources, *, grid: dict | None = None, options: dict | None = None) -> Path:
    """Write a run file that `load_run_file` reads back.

    Parameters
    ----------
    path : path-like
        Where to write. Source paths under its folder are written relative to it.
    sources : list of TrajectorySource
    grid : dict, optional
        Keys of ``[grid]``: size, extent, oversampling.
    options : dict, optional
        Keys of ``[options]``: variants, center, block_size, selection.
    """
    path = Path(path)
    base = path.parent.resolve()
    if options and "center" in options and options["center"] is None:
        # build_dataset's center=None means "no centring", which a run file spells "none";
        # dropped like the other None values it would come back as the default "geometry".
        options = {**options, "center": "none"}

    def rel(p):
        p = Path(p).resolve()
        return str(p.relative_to(base)) if p.is_relative_to(base) else str(p)

    doc = {}
    for table, values, allowed in (("grid", grid, GRID_KEYS), ("options", options, OPTION_KEYS)):
        values = {k: _plain(v) for k, v in (values or {}).items() if v is not None}
        _check_keys(values, allowed, f"[{table}]", path)
        if values:
            doc[table] = values
    doc["molecule"] = [_entry(src, rel) for src in sources]
    path.write_text(tomli_w.dumps(doc), encoding="utf-8")  # TOML is UTF-8, whatever the locale
    return path


def _entry(src: TrajectorySource, rel) -> dict:
    """A source's ``[[molecule]]`` table, its paths through ``rel``."""
    entry = {"name": src.name, "topology": rel(src.topology), "trajectory": [rel(t) for t in src.trajectory],
             "selection": src.selection}
    entry.update({k: int(getattr(src, k)) for k in ("start", "stop", "step") if getattr(src, k) is not None})
    if src.labels is not None:
        entry["labels"] = rel(src.labels)
    return entry
