"""index.nc, the store's one manifest: configuration, part layout, completeness, and the
dataset's coordinates, attributes and small variables.

It is written when a build starts (incomplete) and again, last and atomically, when every
part is in place (complete). Plain xarray opens it like any NetCDF file.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path

import numpy as np
import xarray as xr

from ..errors import InputError
from .layout import IMAGE_VARS, INDEX, SMALL_VARS, Part
from .partfile import write_small_file

FORMAT = 2
STORE_ATTR = "molmnist_store"
PART_VARS = ("part_molecule", "part_start", "part_stop")
#: Attributes that do not change what a dataset is (skipped by `configuration`): the version,
#: the chunking, and what describes one build (history, date_created: a resumed build has its own).
_NOT_CONFIG = ("molmnist_dask_version", "source", "block_size", "history", "date_created", "product_version")
#: Coordinates that say where the inputs were, not what they are (skipped by `configuration`).
_NOT_CONFIG_COORDS = ("molecule", "topology_resolved", "trajectory_resolved")


def _jsonable(value):
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value


def _digest(array) -> str:
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()[:16]


def configuration(ds: xr.Dataset) -> dict:
    """What a dataset is, for telling whether a store holds the same one (no image is read).

    The inputs' fingerprints count without their modification times: a copied or touched
    input with the same content resumes a build, a changed one does not.
    """
    coords = {name: _digest(_values(name, c)) for name, c in ds.coords.items() if name not in _NOT_CONFIG_COORDS}
    return {
        "attrs": {k: _jsonable(v) for k, v in ds.attrs.items() if k not in _NOT_CONFIG},
        "molecule": [str(m) for m in ds.molecule.values],
        "n_variants": int(ds.sizes["variant"]),
        "coords": coords,
        "variables": {v: [list(ds[v].dims), str(ds[v].dtype)] for v in IMAGE_VARS + SMALL_VARS},
    }


def _values(name: str, c: xr.DataArray) -> np.ndarray:
    if c.dtype.kind not in "OUS":
        return c.values
    text = np.asarray(c.values).astype(str)
    if name.endswith("_fingerprint"):
        text = np.array([re.sub(r"mtime=\S+ ?", "", t) for t in text.ravel()]).reshape(text.shape)
    return text


def differences(old: dict, new: dict) -> list:
    """Keys (dotted) where two configurations differ."""
    out = []
    for k in sorted(set(old) | set(new)):
        a, b = old.get(k), new.get(k)
        if isinstance(a, dict) and isinstance(b, dict):
            out += [f"{k}.{d}" for d in differences(a, b)]
        elif a != b:
            out.append(k)
    return out


def write_index(root: Path, ds: xr.Dataset, parts: list, config: dict, *, complete: bool,
                small: dict | None = None, part_bytes: dict | None = None) -> None:
    """Write ``root/index.nc`` atomically.

    Parameters
    ----------
    ds : xarray.Dataset
        The dataset saved (its coordinates and attributes are taken; no image is read).
    parts : list of Part
    config : dict
        `configuration` of ``ds``.
    complete : bool
        Whether every part is in place.
    small : dict, optional
        ``lost_atoms``/``lost_electrons`` arrays (molecule, variant), once complete.
    part_bytes : dict, optional
        Size on disk of each finished part (Part -> bytes), for the quick checks of `info`.
    """
    index = ds.drop_vars([v for v in IMAGE_VARS + SMALL_VARS if v in ds.variables])
    for var, values in (small or {}).items():
        index[var] = (("molecule", "variant"), values, ds[var].attrs)
    index["part_molecule"] = ("part", np.array([p.molecule for p in parts], np.int64),
                              {"long_name": "molecule index of each part file"})
    index["part_start"] = ("part", np.array([p.start for p in parts], np.int64),
                           {"long_name": "first variant of each part file"})
    index["part_stop"] = ("part", np.array([p.stop for p in parts], np.int64),
                          {"long_name": "one past the last variant of each part file"})
    sizes = part_bytes or {}
    index["part_bytes"] = ("part", np.array([sizes.get(p, 0) for p in parts], np.int64),
                           {"long_name": "size of each part file (0: not recorded)", "units": "bytes"})
    meta = {"format": FORMAT, "complete": bool(complete), "configuration": config,
            "image_attrs": {v: {k: _jsonable(a) for k, a in ds[v].attrs.items()} for v in IMAGE_VARS},
            "image_dtype": {v: str(ds[v].dtype) for v in IMAGE_VARS}}
    index.attrs = {**index.attrs, STORE_ATTR: json.dumps(meta)}
    tmp = root / f".{INDEX}.{os.getpid()}.tmp"
    try:
        write_small_file(tmp, index)
        os.replace(tmp, root / INDEX)
    finally:
        tmp.unlink(missing_ok=True)


class Index:
    """A store's index, read: ``dataset`` (coordinates, attributes, small variables), ``parts``,
    ``complete``, ``configuration``, ``image_attrs``, ``part_bytes``."""

    def __init__(self, root: Path):
        path = Path(root) / INDEX
        try:
            with xr.open_dataset(path, engine="netcdf4") as f:
                ds = f.load()
            meta = json.loads(ds.attrs.pop(STORE_ATTR))
            self.complete = bool(meta["complete"])
            self.configuration = meta["configuration"]
            self.image_attrs = meta["image_attrs"]
            self.image_dtype = meta.get("image_dtype", {v: "float32" for v in IMAGE_VARS})
            rows = zip(*(ds[v].values.tolist() for v in PART_VARS))
            self.parts = [Part(int(m), int(a), int(b)) for m, a, b in rows]
            self.part_bytes = dict(zip(self.parts, ds["part_bytes"].values.tolist()))
        except FileNotFoundError:
            raise
        except (OSError, ValueError, KeyError, TypeError, json.JSONDecodeError) as err:
            reason = " ".join(str(err).split()) or type(err).__name__
            raise InputError(f"{path}: not a molmnist store index ({reason})") from None
        self.dataset = ds.drop_vars(list(PART_VARS) + ["part_bytes"])
        self.token = self._token(path)

    @staticmethod
    def _token(path: Path) -> str:
        """Identifies this index's content (dask names of the store's arrays derive from it)."""
        st = path.stat()
        return hashlib.sha256(f"{path.resolve()}:{st.st_mtime_ns}:{st.st_size}:{st.st_ino}".encode()).hexdigest()[:16]


def read_index(root: Path) -> Index | None:
    """The store's index, or None if it has none."""
    try:
        return Index(root)
    except FileNotFoundError:
        return None
