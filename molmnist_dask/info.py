"""Reading a store's state: a readable summary, and a full checksum verification."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .errors import InputError
from .parts import check_part, part_name
from .store import _read_manifest, manifest_progress, open_dataset


def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def describe(path) -> str:
    """A few lines on a store or .nc file: completeness, molecules, grid, size on disk."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such store or file")
    lines = [f"{path}  ({_size(path) / 2**20:.1f} MiB on disk)"]
    if path.is_dir():
        manifest = _read_manifest(path)
        if manifest is None:
            raise InputError(f"{path}: not a molmnist store")
        done, total = manifest_progress(path, manifest)
        state = "complete" if manifest.get("complete") else "INCOMPLETE (run the build again to resume)"
        lines.append(f"parts: {done}/{total} ({100 * done / max(total, 1):.0f}%), {state}")
        if not manifest.get("complete"):
            config = manifest["config"]
            lines.append(f"molecules: {', '.join(config['molecule'])}; variants: {config['n_variants']}")
            return "\n".join(lines)
    ds = open_dataset(path)
    a = ds.attrs
    lines.append(f"grid: {ds.sizes['y']} x {ds.sizes['x']} pixels of {float(a.get('pixel_size', 0)):.4g} A "
                 f"(field {float(a.get('grid_extent', 0)):g} A), diffraction {ds.sizes['qy']} x {ds.sizes['qx']}, "
                 f"oversampling {a.get('oversampling', 1)}")
    lines.append(f"variants: {ds.sizes['variant']} per molecule; centre: {a.get('center')}; "
                 f"version {a.get('molmnist_dask_version')}")
    lines.append(f"{'label':>5}  {'molecule':<12} {'atoms':>8} {'electrons':>10} {'lost e- (max)':>14}")
    atoms = np.atleast_1d(a.get("n_atoms", [0] * len(ds.molecule)))
    electrons = np.atleast_1d(a.get("n_electrons", [0] * len(ds.molecule)))
    lost = ds.lost_electrons.max("variant").values
    for i, name in enumerate(ds.molecule.values):
        lines.append(f"{int(ds.label[i]):>5}  {str(name):<12} {int(atoms[i]):>8} {int(electrons[i]):>10} "
                     f"{lost[i]:>14g}")
    return "\n".join(lines)


def verify(path, repair: bool = False) -> list:
    """Read every part of a store in full; returns ``[(part, problem)]`` of the damaged ones.

    With ``repair=True`` damaged parts are deleted (and the store marked incomplete), so the
    next build recomputes just those.
    """
    path = Path(path)
    manifest = _read_manifest(path)
    if manifest is None:
        raise InputError(f"{path}: not a molmnist store")
    bad = []
    for m in range(len(manifest["config"]["molecule"])):
        for start, stop in manifest["blocks"]:
            part = path / part_name(m, start, stop)
            problem = "missing" if not part.exists() else check_part(part, stop - start, full=True)
            if problem:
                bad.append((str(part), problem))
    if repair and bad:
        import json

        for part, _ in bad:
            Path(part).unlink(missing_ok=True)
        manifest["complete"] = False
        (path / "molmnist.json").write_text(json.dumps(manifest, indent=1))
    return bad
