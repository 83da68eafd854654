"""Synthesis: the paper's fibrils and their variants written as trajectories, plus a run file.

Layout of the output folder::

    2x2.pdb  2x2.dcd  ...  hex36.pdb  hex36.dcd   topology + variants, one pair per molecule
    2x2.labels.csv ...                             each variant's nominal twist (degree/nm)
    run.toml                                       the run file `molmnist build` reads
    synth.json                                     the configuration, written last

A rerun with the same configuration skips the molecules already complete; one with another
configuration refuses to mix its files with those there.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from importlib import metadata
from pathlib import Path

from .. import __version__
from ..errors import InputError
from ..lock import StoreLock
from ..validate import is_real, non_negative_int, positive_float, positive_int
from . import files
from .fibril import RESIDUES, build_fibril
from .profiles import MOLECULES
from .variants import ATOM_SIGMA, CHAIN_SIGMA, TWIST_MAX, twist_rate, variant_positions

FORMAT_VERSION = 2   # 2: float32 variants from quantised normals (variants.py)
DEFAULT_VARIANTS = 2000   # the paper's: the default build makes Molecular-MNIST as published
DEFAULT_EXTENT = 90.0     # angstrom: the 9x9 fibril reaches 36.5 A from its axis, so 8 A to spare
RECORD = "synth.json"
RUN_FILE = "run.toml"
CRYSTAL = "cellulose I-beta, COD 4114994 (Nishiyama, Langan & Chanzy 2002, JACS 124, 9074)"


def synthesize(outdir, *, variants: int = DEFAULT_VARIANTS, seed: int = 0, molecules=None,
               twist_max: float = TWIST_MAX, atom_sigma: float = ATOM_SIGMA,
               chain_sigma: float = CHAIN_SIGMA, size: int = 200, extent: float | None = None,
               progress: bool = True) -> Path:
    """Write the paper's microfibrils and their structural variants as PDB + DCD files.

    Parameters
    ----------
    outdir : path-like
        Output folder, created if missing.
    variants : int
        Variants (DCD frames) per molecule, from untwisted to ``twist_max``.
    seed : int
        Non-negative; the same seed writes byte-identical files.
    molecules : sequence of str, optional
        Names from `MOLECULES`; all ten by default, written in the paper's order.
    twist_max : float
        Twist of the last variant, degrees per nm (positive: right-handed).
    atom_sigma, chain_sigma : float
        Thermal displacement of each atom and of each whole chain, angstrom RMS per axis.
    size : int
        Image size in pixels, recorded in the run file's [grid].
    extent : float, optional
        Field of view in angstrom for the run file; `DEFAULT_EXTENT` if omitted.
    progress : bool
        Show a progress bar over the frames written.

    Returns
    -------
    pathlib.Path
        The run file, ``outdir/run.toml``.

    Raises
    ------
    InputError
        On bad input (naming the option), or if ``outdir`` holds files of another
        configuration.
    """
    names = _check_molecules(molecules)
    config = _config(variants, seed, twist_max, atom_sigma, chain_sigma)
    _check_grid(size, extent)
    outdir = Path(outdir)
    if outdir.exists() and not outdir.is_dir():
        raise InputError(f"{outdir}: exists and is not a folder")
    outdir.mkdir(parents=True, exist_ok=True)
    # the store's lock: a second synthesis into this folder is refused while this one lives
    with StoreLock(outdir, what="synthesis"):
        files.remove_partials(outdir)   # left by a synthesis that was killed
        files.check_record(outdir / RECORD, config, "synthesis")
        fibrils = {name: build_fibril(name) for name in names}
        todo = [name for name in names if not _complete(outdir, fibrils[name], config)]
        _write_molecules(outdir, [fibrils[name] for name in todo], config, progress)
        unfinished = [name for name in names if not _complete(outdir, fibrils[name], config)]
        if unfinished:  # the record vouches for whole files only
            raise InputError(f"{outdir}: {', '.join(unfinished)} did not read back whole after "
                             "writing; remove them and run again")
        run_file = _write_run_file(outdir, names, size, extent, variants, twist_max)
        _write_record(outdir, [fibrils[name] for name in names], config)
    return run_file


def default_run(outdir, *, variants: int = DEFAULT_VARIANTS, seed: int = 0, size: int = 200,
                extent: float | None = None, progress: bool = False) -> Path:
    """The run file of the default build: the ten fibrils' variants, made on the workers.

    Writes one small ``NAME.cellvar`` file per molecule (`molmnist_dask.cellulose.virtual`)
    and ``run.toml`` into ``outdir``, and no trajectory: each worker makes the frames it
    renders from (seed, molecule, variant). The dataset is the one a build from
    `synthesize`'s DCD files of the same configuration makes, bit for bit.

    Parameters
    ----------
    outdir : path-like
        Folder for the few small files, created if missing. Files of another configuration
        there are an `InputError`.
    variants, seed : int
        Variants per molecule (default the paper's 2,000) and the seed.
    size : int
        Image size recorded in the run file's [grid].
    extent : float, optional
        Field of view in angstrom; `DEFAULT_EXTENT` if omitted.
    progress : bool
        Unused (nothing takes long); kept for the signature of `synthesize`.

    Returns
    -------
    pathlib.Path
        The run file, ``outdir/run.toml``.
    """
    from ..runfile import write_run_file
    from .virtual import write_sources

    config = _config(variants, seed, TWIST_MAX, ATOM_SIGMA, CHAIN_SIGMA)
    _check_grid(size, extent)
    outdir = Path(outdir)
    if outdir.exists() and not outdir.is_dir():
        raise InputError(f"{outdir}: exists and is not a folder")
    try:
        sources = write_sources(outdir, config["variants"], seed=config["seed"])
        extent = DEFAULT_EXTENT if extent is None else float(extent)
        # a unique temporary name, then an atomic rename: builds sharing the folder never read
        # a half-written run file
        tmp = files.partial(outdir / RUN_FILE)
        try:
            write_run_file(tmp, sources, grid={"size": int(size), "extent": extent},
                           options={"variants": config["variants"]})
            os.replace(tmp, outdir / RUN_FILE)
        finally:
            tmp.unlink(missing_ok=True)
    except OSError as err:
        raise InputError(f"{outdir}: cannot write the default run's files ({err.strerror or err})") from None
    return outdir / RUN_FILE


# -- input ---------------------------------------------------------------------------------------

def _check_molecules(molecules) -> list:
    if molecules is None:
        return list(MOLECULES)
    if isinstance(molecules, str):
        molecules = [molecules]
    try:
        names = list(molecules)
    except TypeError:
        raise InputError(f"molecules must be a list of names, got {molecules!r}") from None
    if not names:
        raise InputError("molecules is empty (choose from " + ", ".join(MOLECULES) + ")")
    for name in names:
        if name not in MOLECULES:
            raise InputError(f"molecules: unknown molecule {name!r} (choose from {', '.join(MOLECULES)})")
    return [m for m in MOLECULES if m in names]     # the paper's order, once each


def _config(variants, seed, twist_max, atom_sigma, chain_sigma) -> dict:
    """The configuration that decides the files' content; checks each option."""
    positive_int("variants", variants)
    non_negative_int("seed", seed)
    if not is_real(twist_max):
        raise InputError(f"twist_max must be a finite number (degrees/nm), got {twist_max!r}")
    for key, value in (("atom_sigma", atom_sigma), ("chain_sigma", chain_sigma)):
        if not is_real(value) or value < 0:
            raise InputError(f"{key} must be a non-negative number (angstrom), got {value!r}")
    return {"format": FORMAT_VERSION, "residues": RESIDUES, "variants": int(variants),
            "seed": int(seed), "twist_min": 0.0, "twist_max": float(twist_max),
            "atom_sigma": float(atom_sigma), "chain_sigma": float(chain_sigma)}


def _check_grid(size, extent) -> None:
    positive_int("size", size)
    if extent is not None:
        positive_float("extent", extent, "angstrom")


def fingerprint(config: dict) -> str:
    """A short digest of a configuration, stamped in each topology file."""
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:16]


# -- what is there already -------------------------------------------------------------------------

def _stamp(name: str, config: dict) -> str:
    return f"molmnist_dask.cellulose {name} {fingerprint(config)}"


def _complete(outdir: Path, fibril, config: dict) -> bool:
    """Whether a molecule's files are there, whole, from this configuration.

    A topology or trajectory from elsewhere (another configuration, another program) is an
    InputError rather than overwritten.
    """
    pdb, dcd = outdir / f"{fibril.name}.pdb", outdir / f"{fibril.name}.dcd"
    if pdb.exists():
        if not files.pdb_title(pdb).endswith(_stamp(fibril.name, config)):
            raise InputError(f"{pdb}: was not written by a synthesis with this configuration; "
                             "use another folder or remove it")
    elif dcd.exists():
        raise InputError(f"{dcd}: exists without its topology {pdb.name}; use another folder or remove it")
    return dcd.exists() and files.dcd_shape(dcd) == (fibril.n_atoms, config["variants"])


# -- writing ---------------------------------------------------------------------------------------

def _write_molecules(outdir: Path, fibrils: list, config: dict, progress: bool) -> None:
    from tqdm.auto import tqdm

    total = len(fibrils) * config["variants"]
    with tqdm(total=total, unit="frame", disable=not progress or not total, mininterval=0.5) as bar:
        for fibril in fibrils:
            bar.set_description(fibril.name)
            _write_molecule(outdir, fibril, config, bar.update)


def _write_molecule(outdir: Path, fibril, config: dict, advance) -> None:
    """One molecule's PDB and DCD, under temporary names until both are whole."""
    pdb, dcd = outdir / f"{fibril.name}.pdb", outdir / f"{fibril.name}.dcd"
    sigma = math.hypot(config["atom_sigma"], config["chain_sigma"])
    u = files.universe(fibril, sigma=sigma, remarks=_remarks(fibril, config))
    n = config["variants"]
    options = {k: config[k] for k in ("seed", "twist_max", "atom_sigma", "chain_sigma")}

    def frames():
        for variant in range(n):
            yield variant_positions(fibril, variant, n, **options)
            advance(1)

    tmp = {path: files.partial(path) for path in (pdb, dcd)}
    try:
        files.write_topology(u, tmp[pdb], title=_stamp(fibril.name, config))
        files.write_trajectory(u, tmp[dcd], frames())
        files.publish(tmp)
    finally:
        for path in tmp.values():
            path.unlink(missing_ok=True)


def _remarks(fibril, config: dict) -> list:
    top = twist_rate(config["variants"] - 1, config["variants"], config["twist_max"])
    return [
        f"{CRYSTAL}",
        f"cross-section rows (200 sheets): {','.join(map(str, fibril.rows))}; "
        f"{fibril.n_chains} chains x {RESIDUES} residues; label {fibril.label}",
        f"DCD frames: {config['variants']} variants, twist 0 to {top:g} deg/nm about z (right-handed > 0), "
        f"seed {config['seed']}",
        f"thermal displacement RMS per axis: atoms {config['atom_sigma']:g} A, "
        f"chains {config['chain_sigma']:g} A (B-factor column)",
        f"coordinates here: the relaxed, untwisted fibril; config {fingerprint(config)}",
    ]


def _write_run_file(outdir: Path, names: list, size: int, extent, variants: int, twist_max: float) -> Path:
    from ..runfile import write_run_file
    from ..sources import TrajectorySource

    sources = [TrajectorySource(name, str(outdir / f"{name}.pdb"), str(outdir / f"{name}.dcd"),
                                labels=str(_write_labels(outdir, name, variants, twist_max)))
               for name in names]
    extent = DEFAULT_EXTENT if extent is None else float(extent)
    tmp = files.partial(outdir / RUN_FILE)
    try:
        write_run_file(tmp, sources, grid={"size": int(size), "extent": extent},
                       options={"variants": int(variants)})
        os.replace(tmp, outdir / RUN_FILE)
    finally:
        tmp.unlink(missing_ok=True)
    return outdir / RUN_FILE


def _write_labels(outdir: Path, name: str, variants: int, twist_max: float) -> Path:
    """``NAME.labels.csv``: each DCD frame's nominal twist (a build gives it as ``twist``, as
    from the ``.cellvar`` files)."""
    path = outdir / f"{name}.labels.csv"
    rows = ["twist [degree/nm]"] + [repr(twist_rate(v, variants, twist_max)) for v in range(variants)]
    tmp = files.partial(path)
    try:
        tmp.write_text("\n".join(rows) + "\n")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _write_record(outdir: Path, fibrils: list, config: dict) -> None:
    record = {
        "generator": "molmnist_dask.cellulose.synthesize",
        "config": config,
        "fingerprint": fingerprint(config),
        "units": {"twist": "degrees/nm", "sigma": "angstrom RMS per axis"},
        "crystal": CRYSTAL,
        "molecules": [
            {"name": f.name, "label": f.label, "rows": list(f.rows), "chains": f.n_chains,
             "residues": f.n_residues, "atoms": f.n_atoms, "electrons": f.n_electrons,
             "topology": f"{f.name}.pdb", "trajectory": f"{f.name}.dcd"}
            for f in fibrils
        ],
        "versions": {"molmnist_dask": __version__,
                     **{pkg: _version(pkg) for pkg in ("cellulose-modeler", "MDAnalysis", "numpy")}},
    }
    tmp = files.partial(outdir / RECORD)
    tmp.write_text(json.dumps(record, indent=2) + "\n")
    os.replace(tmp, outdir / RECORD)


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "unknown"


__all__ = ["synthesize", "default_run", "fingerprint", "DEFAULT_VARIANTS", "DEFAULT_EXTENT",
           "FORMAT_VERSION"]
