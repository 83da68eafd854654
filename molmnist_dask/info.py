"""Reading a store's state: a readable summary, and a full checksum verification."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .errors import InputError
from .store import is_store, not_a_store, open_dataset, read_index
from .store.partfile import check_part


def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def problems(path, full: bool = False, index=None) -> list:
    """``[(part file, problem)]`` of a store's missing or damaged parts.

    The quick check finds missing parts, parts whose size differs from the size the index
    recorded, and parts that do not open; ``full=True`` also reads every image (checksums).
    ``index``: the store's index, if already read.
    """
    path = Path(path)
    index = index or read_index(path)
    if index is None:
        raise not_a_store(path)
    bad = []
    for part in index.parts:
        file = path / part.name
        recorded = index.part_bytes.get(part, 0)
        if not file.exists():
            bad.append((str(file), "missing"))
        elif recorded and file.stat().st_size != recorded:
            bad.append((str(file), f"{file.stat().st_size} bytes, the index recorded {recorded}"))
        else:
            problem = check_part(file, part.size, full=full)
            if problem:
                bad.append((str(file), problem))
    return bad


def describe(path) -> str:
    """A few lines on a store or .nc file: completeness, molecules, grid, size on disk."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such store or file")
    lines = [f"{path}  ({_size(path) / 2**20:.1f} MiB on disk)"]
    if path.is_dir():
        if not is_store(path):
            raise not_a_store(path)
        index = read_index(path)
        bad = problems(path, index=index)
        total = len(index.parts)
        done = total - len(bad)
        complete = index.complete and not bad
        state = "complete" if complete else "INCOMPLETE (run the build again to resume)"
        lines.append(f"parts: {done}/{total} ({100 * done / max(total, 1):.0f}%), {state}")
        lines += [f"  {Path(part).name}: {problem}" for part, problem in bad[:10]]
        if len(bad) > 10:
            lines.append(f"  ... and {len(bad) - 10} more")
        if not complete:
            ds = index.dataset
            lines.append(f"molecules: {', '.join(map(str, ds.molecule.values))}; "
                         f"variants: {ds.sizes['variant']}")
            return "\n".join(lines)
    ds = open_dataset(path)
    a = ds.attrs
    lines.append(f"grid: {ds.sizes['y']} x {ds.sizes['x']} pixels of {float(a.get('pixel_size', 0)):.4g} A "
                 f"(field {float(a.get('grid_extent', 0)):g} A), diffraction {ds.sizes['qy']} x {ds.sizes['qx']}, "
                 f"oversampling {a.get('oversampling', 1)}")
    lines.append(f"variants: {ds.sizes['variant']} per molecule; centre: {a.get('center')}; "
                 f"version {a.get('molmnist_dask_version')}")
    lines.append(f"{'label':>5}  {'molecule':<12} {'atoms':>8} {'electrons':>10} {'lost e- (max)':>14}")
    atoms = ds["n_atoms"].values if "n_atoms" in ds.coords else np.zeros(len(ds.molecule), int)
    electrons = ds["n_electrons"].values if "n_electrons" in ds.coords else np.zeros(len(ds.molecule), int)
    lost = ds.lost_electrons.max("variant").values
    for i, name in enumerate(ds.molecule.values):
        lines.append(f"{int(ds.label[i]):>5}  {str(name):<12} {int(atoms[i]):>8} {int(electrons[i]):>10} "
                     f"{lost[i]:>14g}")
    return "\n".join(lines)


def verify(path, repair: bool = False) -> list:
    """Read every part of a store in full; returns ``[(part, problem)]`` of the damaged ones.

    With ``repair=True`` damaged parts are deleted, so the next build recomputes just those.
    """
    bad = problems(path, full=True)
    if repair:
        for part, _ in bad:
            Path(part).unlink(missing_ok=True)
    return bad
