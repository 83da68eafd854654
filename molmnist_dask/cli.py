"""The ``molmnist`` command: build, synth, info, verify, consolidate, plot.

It parses arguments and calls the public API; nothing else lives here. Bad input prints one
line naming what is at fault and exits with status 2.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

from .errors import InputError


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (``molmnist build: error: ...``) and status 2."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be positive, got {value}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text}")
    return value


def _integer(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None


def _grid_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--size", type=_positive_int,
                   help="pixels per side (default: the run file's, else 200)")
    p.add_argument("--extent", type=_positive_float,
                   help="field of view, angstrom (default: the run file's, else one that holds "
                        "every molecule; 90 for the cellulose fibrils)")


def _cluster_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--cluster", default=None,
                   help="'local' (default), 'slurm' (dask-jobqueue) or a scheduler address")
    p.add_argument("--scheduler-file", help="JSON file of a running scheduler (dask scheduler --scheduler-file)")
    p.add_argument("--workers", type=_positive_int, help="workers of a local cluster (default: one per core)")
    p.add_argument("--jobs", type=_positive_int, default=1, help="Slurm batch jobs (with --cluster slurm; default 1)")
    p.add_argument("--cores", type=_positive_int,
                   help="cores per Slurm job (default: jobqueue.slurm.cores of ~/.config/dask/jobqueue.yaml)")
    p.add_argument("--memory", help="memory per Slurm job, e.g. 400GB "
                                    "(default: jobqueue.slurm.memory of ~/.config/dask/jobqueue.yaml)")


def parser() -> argparse.ArgumentParser:
    """The argument parser of ``molmnist``."""
    top = _Parser(prog="molmnist", description=__doc__.splitlines()[0])
    sub = top.add_subparsers(dest="command", required=True, parser_class=_Parser)

    b = sub.add_parser("build", help="render a dataset from a run file (default: Molecular-MNIST)")
    b.add_argument("run", nargs="?", help="TOML run file; without one, Molecular-MNIST: the ten "
                                          "cellulose fibrils x 2000 variants at 200 x 200 px")
    b.add_argument("-o", "--output", required=True, help="output store folder, or a .nc file")
    _grid_args(b)
    b.add_argument("--variants", type=_positive_int,
                   help="frames per molecule, evenly spread (default: the run file's, else every "
                        "frame; 2000 for Molecular-MNIST)")
    b.add_argument("--oversampling", type=_positive_int, help="zero-padding factor of the transform (default 1)")
    b.add_argument("--center", choices=["geometry", "electrons", "none"], help="centring (default geometry)")
    b.add_argument("--block-size", type=_positive_int, help="frames per task (default automatic)")
    b.add_argument("--scattering", choices=["electrons", "form_factors"],
                   help="what atoms scatter: Z (default) or X-ray form factors f0(|q|)")
    b.add_argument("--fluence", type=_positive_float,
                   help="add Poisson photon noise: expected photons per pattern")
    b.add_argument("--noise-seed", type=_integer, help="seed of the photon noise (default 0)")
    b.add_argument("--orientation", help="view direction: z (default), x, y, a vector such as "
                                         "1,0,1 (--orientation=-1,0,0 for a leading minus), or "
                                         "random (a uniform rotation per image)")
    b.add_argument("--orientation-seed", type=_integer, help="seed of the random orientations (default 0)")
    b.add_argument("--orientations-per-frame", type=_positive_int,
                   help="random orientations of each frame (variants = frames x K)")
    b.add_argument("--seed", type=_integer, default=0,
                   help="seed of the cellulose variants, without a run file (default 0)")
    b.add_argument("--synth-dir", help="folder for the ten small .cellvar files and run.toml of "
                                       "Molecular-MNIST (default: molmnist-cellulose/"
                                       "V-variants-seed-S beside the output)")
    b.add_argument("--part-frames", type=_positive_int,
                   help="most frames per part file and save task (default: the molmnist.part-frames "
                        "setting, 2000, fewer when workers would idle)")
    b.add_argument("--check", choices=["quick", "full"], default="quick",
                   help="how finished parts of a resumed build are checked (default quick)")
    _cluster_args(b)
    b.add_argument("--no-progress", action="store_true", help="no progress bar")

    s = sub.add_parser("synth", help="write the cellulose fibrils as PDB + DCD files (for VMD...) and a run file")
    s.add_argument("-o", "--output", required=True, help="folder for the trajectories")
    s.add_argument("--variants", type=_positive_int, default=2000,
                   help="variants per molecule (default 2000: 6.6 GB for all ten; 100 makes 0.3 GB)")
    s.add_argument("--seed", type=_integer, default=0, help="seed of the variants (default 0)")
    s.add_argument("--molecules", help="comma-separated names (default: all ten)")
    _grid_args(s)
    s.add_argument("--no-progress", action="store_true", help="no progress bar")

    from .cli_simulate import add_parser as add_simulate   # molmnist simulate: its own module

    add_simulate(sub)

    i = sub.add_parser("info", help="summarise a store or .nc file")
    i.add_argument("path")

    v = sub.add_parser("verify", help="read every part of a store, checking its checksums")
    v.add_argument("path")
    v.add_argument("--repair", action="store_true", help="delete damaged parts so that a rebuild redoes them")

    c = sub.add_parser("consolidate", help="write a store as one NetCDF file")
    c.add_argument("store")
    c.add_argument("output", help="the .nc file to write")
    c.add_argument("--no-progress", action="store_true", help="no progress bar")

    pl = sub.add_parser("plot", help="the paper's figures from a dataset")
    pl.add_argument("path")
    pl.add_argument("-o", "--output", required=True, help="folder for the PNG and PDF figures")
    pl.add_argument("--split", type=_positive_float, help="low/high frequency split, cycles per angstrom")
    pl.add_argument("--rows", type=_positive_int, default=5, help="variants shown per molecule (default 5)")
    pl.add_argument("--qmax", type=_positive_float,
                    help="crop the diffraction gallery to |q| <= QMAX, cycles per angstrom (default: all)")
    return top


def _build(args) -> None:
    from . import build_dataset, save_dataset
    from .cluster import connect
    from .config import load_run_file

    if args.run is None:
        from .cellulose import DEFAULT_VARIANTS, default_run

        # Molecular-MNIST: ten small .cellvar files; the workers make the frames. The folder is
        # named by what decides its files, so builds of other sizes beside this one never clash.
        variants = args.variants or DEFAULT_VARIANTS
        synth_dir = Path(args.synth_dir) if args.synth_dir else \
            Path(args.output).resolve().parent / "molmnist-cellulose" / f"{variants}-variants-seed-{args.seed}"
        try:
            run_file = default_run(synth_dir, variants=variants, seed=args.seed)
        except InputError as err:
            raise InputError(f"{err} (--synth-dir chooses the folder)") from None
    else:
        run_file = args.run
    config = load_run_file(run_file)
    flags = {key: getattr(args, key) for key in ("size", "extent", "variants", "oversampling",
                                                 "block_size", "scattering", "fluence", "noise_seed",
                                                 "orientation", "orientation_seed", "orientations_per_frame")
             if getattr(args, key) is not None}
    if args.center is not None:
        flags["center"] = None if args.center == "none" else args.center
    options = config.options.replace(**flags)  # flags override the run file
    where = args.scheduler_file or args.cluster
    kwargs = {"n_workers": args.workers} if where in (None, "local") and args.workers else {}
    if where == "slurm":
        kwargs["jobs"] = args.jobs
        kwargs.update({k: getattr(args, k) for k in ("cores", "memory") if getattr(args, k) is not None})
    ds = build_dataset(config.sources, options)
    with connect(where, **kwargs):
        out = save_dataset(ds, args.output, progress=not args.no_progress, check=args.check,
                           part_frames=args.part_frames)
    print(f"wrote {out}")


def _synth(args) -> None:
    from .cellulose import synthesize

    kwargs = {k: getattr(args, k) for k in ("variants", "size", "extent") if getattr(args, k) is not None}
    if args.molecules:
        kwargs["molecules"] = [m.strip() for m in args.molecules.split(",") if m.strip()]
    run_file = synthesize(args.output, seed=args.seed, progress=not args.no_progress, **kwargs)
    print(f"wrote {run_file}")


def _simulate(args) -> None:
    from .cli_simulate import run

    run(args)


def _info(args) -> None:
    from .info import describe

    print(describe(args.path))


def _verify(args) -> None:
    from .info import verify

    bad = verify(args.path, repair=args.repair)
    for part, problem in bad:
        print(f"{part}: {problem}")
    if bad:
        action = "deleted; build again to redo them" if args.repair else "use --repair, then build again"
        raise InputError(f"{args.path}: {len(bad)} damaged part(s) ({action})")
    print(f"{args.path}: every part reads back with valid checksums")


def _consolidate(args) -> None:
    from .store import consolidate

    print(f"wrote {consolidate(args.store, args.output, progress=not args.no_progress)}")


def _plot(args) -> None:
    from .plot import plot_all

    kwargs = {"split": args.split} if args.split else {}
    if args.qmax:
        kwargs["qmax"] = args.qmax
    for path in plot_all(args.path, args.output, rows=args.rows, **kwargs):
        print(f"wrote {path}")


COMMANDS = {"build": _build, "synth": _synth, "simulate": _simulate, "info": _info, "verify": _verify,
            "consolidate": _consolidate, "plot": _plot}


def main(argv=None) -> int:
    """Run ``molmnist``; returns the exit status (2 for bad input)."""
    args = parser().parse_args(argv)
    formatwarning = warnings.formatwarning
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.formatwarning = lambda msg, cat, *a, **k: f"molmnist: warning: {msg}\n"
            COMMANDS[args.command](args)
    except InputError as err:
        print(f"molmnist: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        from .cluster import quiet

        quiet()  # what a closing cluster logs after Ctrl-C is noise beside this one line
        print("molmnist: interrupted; run the same command again to resume", file=sys.stderr, flush=True)
        return 130
    finally:
        warnings.formatwarning = formatwarning
    return 0


if __name__ == "__main__":
    sys.exit(main())
