"""The cellulose variants as a trajectory MDAnalysis reads, made on demand: no DCD on disk.

A ``.cellvar`` file is a few lines of JSON: the molecule, how many variants, the seed and the
amplitudes. Importing this module registers, under the format ``CELLVAR``, a topology parser
(the fibril's atoms, elements, residues and chains, from `build_fibril`) and a trajectory
reader whose frame ``v`` is `variant_positions` of variant ``v``. So::

    mda.Universe("2x2.cellvar")             # 3,372 atoms, as many frames as variants
    TrajectorySource("2x2", "2x2.cellvar")   # a source like any other

and a worker makes each frame from (seed, molecule, variant) where it renders it. The frames
are the same float32 numbers that `molmnist synth` writes into its DCD files (a test
compares them bit for bit), so a build from either is the same dataset. The fibril is built
once per process (cached), which is what makes opening a Universe per worker cheap.
"""

from __future__ import annotations

import json
import os
import uuid
from functools import lru_cache
from pathlib import Path

import numpy as np
from MDAnalysis.coordinates.base import ProtoReader
from MDAnalysis.core.topology import Topology
from MDAnalysis.core.topologyattrs import (
    Atomnames, Atomtypes, ChainIDs, Elements, Resids, Resnames, Resnums, Segids,
)
from MDAnalysis.topology.base import TopologyReaderBase

from ..errors import InputError
from ..validate import is_int
from .fibril import RESIDUES, RESNAME, build_fibril
from .files import BOX_PADDING, CHAIN_IDS
from .profiles import MOLECULES
from .variants import ATOM_SIGMA, CHAIN_SIGMA, TWIST_MAX, twist_rate, variant_positions

FORMAT = "CELLVAR"
SUFFIX = ".cellvar"
KIND = "molmnist-cellulose-variants"
VERSION = 1
_KEYS = ("molecule", "variants", "seed", "twist_max", "atom_sigma", "chain_sigma", "residues")


def spec(molecule: str, variants: int, *, seed: int = 0, twist_max: float = TWIST_MAX,
         atom_sigma: float = ATOM_SIGMA, chain_sigma: float = CHAIN_SIGMA,
         residues: int = RESIDUES) -> dict:
    """The content of a ``.cellvar`` file (checked by `read_spec`)."""
    return {"kind": KIND, "version": VERSION, "molecule": molecule, "variants": int(variants),
            "seed": int(seed), "twist_max": float(twist_max), "atom_sigma": float(atom_sigma),
            "chain_sigma": float(chain_sigma), "residues": int(residues)}


def nominal_twist(content: dict, frames) -> np.ndarray:
    """The twist (degree/nm) the variants ``frames`` of a ``.cellvar`` file were made with
    (`twist_rate`)."""
    n, top = content["variants"], content["twist_max"]
    return np.array([twist_rate(int(v), n, top) for v in np.asarray(frames).ravel()], dtype=np.float64)


def write_spec(path, content: dict) -> Path:
    """Write a ``.cellvar`` file atomically; one with the same content is left as it is.

    Raises
    ------
    InputError
        If ``path`` exists with other content.
    """
    path = Path(path)
    text = json.dumps(content, indent=1, sort_keys=True) + "\n"
    if path.exists():
        if path.read_text() == text:
            return path
        raise InputError(f"{path}: holds other cellulose variants; remove it or use another folder")
    # a unique temporary name: two builds writing the same file never share a half-written one
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
    return path


def read_spec(path) -> dict:
    """The checked content of a ``.cellvar`` file.

    Raises
    ------
    InputError
        If it is not one, naming the file and what is wrong.
    """
    try:
        content = json.loads(Path(path).read_text())
    except (OSError, ValueError, UnicodeDecodeError) as err:
        raise InputError(f"{path}: not a cellulose variants file ({err})") from None
    if not isinstance(content, dict) or content.get("kind") != KIND:
        raise InputError(f"{path}: not a cellulose variants file (no kind = {KIND!r})")
    if content.get("version") != VERSION:
        raise InputError(f"{path}: cellulose variants version {content.get('version')!r}, "
                         f"this molmnist_dask reads {VERSION}")
    missing = [k for k in _KEYS if k not in content]
    if missing:
        raise InputError(f"{path}: cellulose variants file lacks {', '.join(missing)}")
    if content["molecule"] not in MOLECULES:
        raise InputError(f"{path}: unknown molecule {content['molecule']!r}")
    for key in ("variants", "residues"):
        if not is_int(content[key]) or content[key] < 1:  # JSON true is no count
            raise InputError(f"{path}: {key} must be a positive integer")
    return content


@lru_cache(maxsize=16)
def fibril(name: str, residues: int = RESIDUES):
    """`build_fibril`, once per process: every Universe of a molecule shares it."""
    return build_fibril(name, residues)


def _fibril_of(path):
    content = read_spec(path)
    return content, fibril(content["molecule"], content["residues"])


class CellvarParser(TopologyReaderBase):
    """MDAnalysis topology of a ``.cellvar`` file: the fibril's atoms, as `molmnist synth`'s PDB."""

    format = FORMAT

    def parse(self, **kwargs):
        _, f = _fibril_of(self.filename)
        n_res = f.n_residues
        chain_ids = np.array([CHAIN_IDS[i % len(CHAIN_IDS)] for i in f.atom_chain], dtype=object)
        attrs = [
            Atomnames(f.names.astype(object)), Atomtypes(f.elements.astype(object)),
            Elements(f.elements.astype(object)), ChainIDs(chain_ids),
            Resids(f.resids.copy()), Resnums(f.resids.copy()),
            Resnames(np.array([RESNAME] * n_res, dtype=object)),
            Segids(np.array(f.segids, dtype=object)),
        ]
        return Topology(f.n_atoms, n_res, f.n_chains, attrs=attrs,
                        atom_resindex=f.atom_residue, residue_segindex=f.residue_chain)


class CellvarReader(ProtoReader):
    """MDAnalysis trajectory of a ``.cellvar`` file: frame ``v`` is variant ``v``, made on demand.

    Nothing is held open (no file handle: a `ProtoReader`, without ``__del__``).
    """

    format = FORMAT
    units = {"time": "ps", "length": "Angstrom"}
    #: Generated variants, not a simulation: no time (`molmnist_dask.labels`).
    has_time = False

    def __init__(self, filename, convert_units=True, **kwargs):
        super().__init__()
        self.filename = os.fspath(filename)
        self.convert_units = convert_units
        self.spec, self._fibril = _fibril_of(self.filename)
        self.n_atoms = self._fibril.n_atoms
        self.n_frames = self.spec["variants"]
        self._options = {k: self.spec[k] for k in ("seed", "twist_max", "atom_sigma", "chain_sigma")}
        span = np.ptp(self._fibril.positions, axis=0) + 2 * BOX_PADDING
        self._box = np.array([*np.round(span, 1), 90.0, 90.0, 90.0], dtype=np.float32)
        self.ts = self._Timestep(self.n_atoms, dt=1.0, **kwargs.get("ts_kwargs", {}))
        self.ts.frame = -1
        self._read_frame(0)

    @staticmethod
    def _format_hint(thing):
        return isinstance(thing, (str, os.PathLike)) and os.fspath(thing).endswith(SUFFIX)

    @classmethod
    def parse_n_atoms(cls, filename, **kwargs):
        return _fibril_of(filename)[1].n_atoms

    def molmnist_labels(self, frames) -> dict:
        """Per-frame labels (`molmnist_dask.labels`): each variant's nominal twist, degree/nm."""
        return {"twist": nominal_twist(self.spec, frames)}

    def _read_frame(self, frame):
        ts = self.ts
        variant_positions(self._fibril, int(frame), self.n_frames, out=ts.positions,
                          **self._options)
        ts.dimensions = self._box
        ts.frame = int(frame)
        return ts

    def _read_next_timestep(self, ts=None):
        if self.ts.frame + 1 >= self.n_frames:
            raise EOFError
        return self._read_frame(self.ts.frame + 1)

    def _reopen(self):
        self.ts.frame = -1

    def close(self):
        pass


def write_sources(folder, variants: int, *, seed: int = 0, molecules=None, **amplitudes) -> list:
    """A ``.cellvar`` file per molecule in ``folder``, and the sources that read them.

    Parameters
    ----------
    folder : path-like
        Created if missing; holds ``NAME.cellvar`` (a few hundred bytes each).
    variants, seed : int
    molecules : sequence of str, optional
        Names from `MOLECULES` (all ten by default, in the paper's order).
    **amplitudes
        ``twist_max``, ``atom_sigma``, ``chain_sigma`` (see `variant_positions`).

    Returns
    -------
    list of TrajectorySource
    """
    from ..sources import TrajectorySource

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    names = [m for m in MOLECULES if molecules is None or m in molecules]
    sources = []
    for name in names:
        path = write_spec(folder / f"{name}{SUFFIX}", spec(name, variants, seed=seed, **amplitudes))
        sources.append(TrajectorySource(name, str(path), str(path)))
    return sources
