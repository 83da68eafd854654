"""What a saved dataset holds, file by file: its part files and their checks.

The public face of the layout (`layout` knows the names): readers that go to the files
themselves (the ml batch reader, ``molmnist info`` and ``verify``) ask `parts` where each
molecule's variants lie and `check` whether the files are sound, for a store folder or a
single ``.nc`` file alike.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import NamedTuple

import netCDF4
import numpy as np
from xarray.backends.locks import HDF5_LOCK

from ..errors import InputError
from .backend import not_a_store
from .index import configuration, differences, read_index
from .layout import INDEX, PARTS
from .partfile import check_part


#: `check`'s problem for a part that is not there (an unfinished build: building again makes
#: it); any other problem is damage (delete the part, then build again).
MISSING = "missing"


class PartFile(NamedTuple):
    """One file holding images of one molecule: variants ``start..stop-1`` of molecule
    ``molecule``, at index ``row`` of the file's molecule axis and from index 0 of its
    variant axis."""

    path: str
    molecule: int
    start: int
    stop: int
    row: int


def parts(path) -> list:
    """Where every image of a saved dataset lies.

    Parameters
    ----------
    path : path-like
        A store folder, or a ``.nc`` file (one file holding every molecule).

    Returns
    -------
    list of PartFile
        In the store's order: by molecule, then variant.

    Raises
    ------
    InputError
        When ``path`` is not a store or a readable dataset file.
    """
    path = Path(path).resolve()
    if path.is_file():
        n_molecules, n_variants = _file_shape(path)
        return [PartFile(str(path), m, 0, n_variants, m) for m in range(n_molecules)]
    index = _index(path)
    return [PartFile(str(path / p.name), p.molecule, p.start, p.stop, 0) for p in index.parts]


def check(path, full: bool = False) -> list:
    """The damaged or missing files of a saved dataset: ``[(file, problem)]``, empty when
    every file is sound.

    The quick check finds missing parts, parts whose size differs from the size the index
    recorded, and files that do not open or lack an image variable; ``full=True`` also reads
    every image, which verifies the checksums.

    Parameters
    ----------
    path : path-like
        A store folder or a ``.nc`` file.
    full : bool
        Read every image.
    """
    path = Path(path)
    if path.is_file():
        problem = check_part(path, full=full)
        return [(str(path), problem)] if problem else []
    index = _index(path)
    bad = []
    for part in index.parts:
        file = path / part.name
        recorded = index.part_bytes.get(part, 0)
        if not file.exists():
            bad.append((str(file), MISSING))
        elif recorded and file.stat().st_size != recorded:
            bad.append((str(file), f"{file.stat().st_size} bytes, the index recorded {recorded}"))
        else:
            problem = check_part(file, part.size, full=full)
            if problem:
                bad.append((str(file), problem))
    return bad


def locate(parts: list, items) -> tuple:
    """Where items lie in ``parts`` (from `parts`).

    Parameters
    ----------
    parts : list of PartFile
    items : array_like
        (N, 2) integer (molecule, variant) rows.

    Returns
    -------
    (numpy.ndarray, numpy.ndarray)
        Each item's index in ``parts`` and its offset along that file's variant axis.
    """
    items = np.asarray(items, np.int64).reshape(-1, 2)
    order = sorted(range(len(parts)), key=lambda p: (parts[p].molecule, parts[p].start))
    span = max(p.stop for p in parts) + 1
    keys = np.array([parts[p].molecule * span + parts[p].start for p in order], np.int64)
    pos = np.searchsorted(keys, items[:, 0] * span + items[:, 1], side="right") - 1
    which = np.asarray(order, np.int64)[np.clip(pos, 0, None)]
    start, stop, molecule = (np.array([getattr(p, k) for p in parts], np.int64)[which]
                             for k in ("start", "stop", "molecule"))
    if len(items) and ((pos < 0) | (items[:, 1] >= stop) | (molecule != items[:, 0])).any():
        raise InputError("the store's layout does not cover every item; is it complete?")
    return which, items[:, 1] - start


def _index(path: Path):
    """The index of the store at ``path``, or an InputError saying what ``path`` is."""
    if not path.exists():
        raise InputError(f"{path}: no such store or file")
    index = read_index(path) if path.is_dir() else None
    if index is None:
        raise not_a_store(path)
    return index


def _file_shape(path: Path) -> tuple:
    """(molecules, variants) of a single dataset file."""
    try:
        with HDF5_LOCK, netCDF4.Dataset(path) as nc:
            if "shape" not in nc.variables:
                raise InputError(f"{path}: the dataset has no 'shape' variable")
            return tuple(int(n) for n in nc.variables["shape"].shape[:2])
    except OSError as err:
        raise InputError(f"{path}: cannot open as NetCDF ({' '.join(str(err).split())})") from None


def holds(path, ds, full: bool = False) -> int | None:
    """How many files of ``path`` hold ``ds`` complete and sound, or None while there is work.

    Nothing is computed or read but the index (or the ``.nc`` file's header) and, with
    ``full``, every image of the parts.

    Parameters
    ----------
    path : path-like
        A store folder or a ``.nc`` file, possibly absent.
    ds : xarray.Dataset
        The dataset to be saved there (lazy; no image is read).
    full : bool
        Read every image of a finished store (verifies the checksums).

    Raises
    ------
    InputError
        If ``path`` holds another dataset, or a ``.nc`` file that is not a molmnist dataset.
    """
    from .write import _refuse_inputs, _same_file_exists

    path = Path(path)
    _refuse_inputs(ds, path)  # an AMBER trajectory named out.nc is an input, not a dataset
    if path.suffix == ".nc":
        return 1 if path.is_file() and _same_file_exists(ds, path) else None
    index = read_index(path) if path.is_dir() else None
    if index is None:
        return None
    if index.configuration != configuration(ds):
        diff = ", ".join(differences(index.configuration, configuration(ds))[:4])
        raise InputError(f"{path}: holds another dataset, a different configuration (differs in {diff}); choose another "
                         "output or delete it")
    if not index.complete or check(path, full=full):
        return None
    return len(index.parts)


def check_output(path) -> None:
    """Refuse, before anything starts or is written, an output that cannot become a dataset:
    a plain file not named ``.nc``, a folder holding something else, a place that cannot be
    made or written.

    Raises
    ------
    InputError
        Naming ``path`` and what is wrong with it.
    """
    out = Path(path)
    if out.suffix == ".nc":
        if out.is_dir():
            raise InputError(f"{out}: is a folder, not a .nc file; choose another output")
    elif out.exists() and not out.is_dir():
        raise InputError(f"{out}: exists and is a file, not a store folder; choose another output "
                         "(a name ending in .nc writes one NetCDF file)")
    elif out.is_dir() and not (out / INDEX).is_file():
        other = sorted(p.name for p in out.iterdir() if p.name not in (PARTS, ".lock"))
        if other:
            raise InputError(f"{out}: exists and is not a molmnist store (holds {other[0]}, no "
                             f"{INDEX}); choose another output")
    above = out.absolute().parent
    while not above.exists():
        above = above.parent
    if not above.is_dir():
        raise InputError(f"{out}: cannot write output ({above} is a file)")
    if not os.access(above, os.W_OK | os.X_OK):
        raise InputError(f"{out}: cannot write output ({above}: permission denied)")
