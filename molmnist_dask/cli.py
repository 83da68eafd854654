"""The molmnist command: build, synth, simulate, info, verify, consolidate, plot.

It parses arguments, looks at a build's output before any cluster starts (refused when it
cannot be a dataset, left alone when it is already complete) and calls the public API. Bad
input prints one line naming what is at fault and exits with status 2; a reader that closes
the pipe (molmnist info STORE | head) ends the command quietly.
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from pathlib import Path

from .errors import InputError


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (``molmnist build: error: ...``) and status 2."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


NO_PROGRESS = "no progress bar (default: a bar on stderr)"


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


def _synth_grid_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--size", type=_positive_int,
                   help="pixels per side recorded in the run file it writes (default 200)")
    p.add_argument("--extent", type=_positive_float,
                   help="field of view recorded in the run file it writes, angstrom (default 90)")


def _cluster_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--cluster", default=None,
                   help="'local' (default), 'slurm' (dask-jobqueue) or a scheduler address")
    p.add_argument("--scheduler-file", help="JSON file of a running scheduler (dask scheduler "
                                            "--scheduler-file; default: none)")
    p.add_argument("--workers", type=_positive_int, help="workers of a local cluster (default: one per core)")
    p.add_argument("--jobs", type=_positive_int, default=1, help="Slurm batch jobs (with --cluster slurm; default 1)")
    p.add_argument("--cores", type=_positive_int,
                   help="cores per Slurm job (default: jobqueue.slurm.cores of ~/.config/dask/jobqueue.yaml)")
    p.add_argument("--memory", help="memory per Slurm job, e.g. 400GB "
                                    "(default: jobqueue.slurm.memory of ~/.config/dask/jobqueue.yaml)")


def parser() -> argparse.ArgumentParser:
    """The argument parser of ``molmnist``."""
    top = _Parser(prog="molmnist", description="MD trajectories to diffraction-image datasets, "
                  "on Dask: build, synth, simulate, info, verify, consolidate, plot.")
    sub = top.add_subparsers(dest="command", required=True, parser_class=_Parser)

    b = sub.add_parser("build", help="render a dataset from a run file (default: Molecular-MNIST)")
    b.add_argument("run", nargs="?", help="TOML run file (default: none, for Molecular-MNIST: the "
                                          "ten cellulose fibrils x 2000 variants at 200 x 200 px)")
    b.add_argument("-o", "--output", required=True,
                   help="output store folder, or a .nc file (required; a finished one is left as it is)")
    _grid_args(b)
    b.add_argument("--variants", type=_positive_int,
                   help="frames per molecule, evenly spread (default: the run file's, else every "
                        "frame; 2000 for Molecular-MNIST)")
    b.add_argument("--oversampling", type=_positive_int, help="zero-padding factor of the transform (default 1)")
    b.add_argument("--center", choices=["geometry", "electrons", "none"], help="centring (default geometry)")
    b.add_argument("--block-size", type=_positive_int,
                   help="frames per chunk of the lazy dataset, recorded in its attributes; a save "
                        "renders part by part whatever it is (default automatic: about 32 MiB of "
                        "images a chunk)")
    b.add_argument("--scattering", choices=["electrons", "form_factors"],
                   help="what atoms scatter: Z (default) or X-ray form factors f0(|q|)")
    b.add_argument("--fluence", type=_positive_float,
                   help="add Poisson photon noise: expected photons per pattern (default: none, noise-free)")
    b.add_argument("--noise-seed", type=_integer, help="seed of the photon noise (default 0)")
    b.add_argument("--orientation", help="view direction: z (default), x, y, a vector such as "
                                         "1,0,1 (--orientation=-1,0,0 for a leading minus), or "
                                         "random (a uniform rotation per image)")
    b.add_argument("--orientation-seed", type=_integer, help="seed of the random orientations (default 0)")
    b.add_argument("--orientations-per-frame", type=_positive_int,
                   help="random orientations of each frame (variants = frames x K; default 1)")
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
    b.add_argument("--no-progress", action="store_true", help=NO_PROGRESS)

    s = sub.add_parser("synth", help="write the cellulose fibrils as PDB + DCD files (for VMD...) and a run file")
    s.add_argument("-o", "--output", required=True, help="folder for the trajectories and run file (required)")
    s.add_argument("--variants", type=_positive_int, default=2000,
                   help="variants per molecule (default 2000: 6.6 GB for all ten; 100 makes 0.3 GB)")
    s.add_argument("--seed", type=_integer, default=0, help="seed of the variants (default 0)")
    s.add_argument("--molecules", help="comma-separated names (default: all ten)")
    _synth_grid_args(s)
    s.add_argument("--no-progress", action="store_true", help=NO_PROGRESS)

    from .cli_simulate import add_parser as add_simulate   # molmnist simulate: its own module

    add_simulate(sub)

    i = sub.add_parser("info", help="summarise a store or .nc file")
    i.add_argument("path", help="a store folder or .nc file written by molmnist build (required)")

    v = sub.add_parser("verify", help="read every part of a store, checking its checksums")
    v.add_argument("path", help="a store folder written by molmnist build (required)")
    v.add_argument("--repair", action="store_true",
                   help="delete damaged parts so that a rebuild redoes them (default: delete nothing)")

    c = sub.add_parser("consolidate", help="write a store as one NetCDF file")
    c.add_argument("store", help="the store folder to read (required)")
    c.add_argument("output", help="the .nc file to write (required)")
    c.add_argument("--no-progress", action="store_true", help=NO_PROGRESS)

    pl = sub.add_parser("plot", help="the paper's figures from a dataset")
    pl.add_argument("path", help="a store folder or .nc file (required)")
    pl.add_argument("-o", "--output", required=True, help="folder for the PNG and PDF figures (required)")
    pl.add_argument("--split", type=_positive_float,
                    help="low/high frequency split of the distribution figure, cycles per angstrom "
                         "(default 0.1, that is 1/(10 A); half the Nyquist frequency on grids "
                         "too coarse for it)")
    pl.add_argument("--rows", type=_positive_int, default=5, help="variants shown per molecule (default 5)")
    pl.add_argument("--qmax", type=_positive_float,
                    help="crop the diffraction gallery to |q| <= QMAX, cycles per angstrom (default: all)")
    pl.add_argument("--no-progress", action="store_true", help=NO_PROGRESS)
    return top


def _finished(ds, out: Path, full: bool) -> str | None:
    """A line saying ``out`` already holds this dataset complete, or None when there is work;
    an output holding another dataset is refused (before any cluster starts)."""
    from .store import holds

    files = holds(out, ds, full=full)
    if files is None:
        return None
    return f"{out}: complete; nothing to do" if out.suffix == ".nc" else \
        f"{out}: complete ({files} parts); nothing to do"


def _build(args) -> None:
    from . import build_dataset, save_dataset
    from .cluster import connect
    from .runfile import load_run_file
    from .store import check_output

    check_output(Path(args.output))
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
    done = _finished(ds, Path(args.output), full=args.check == "full")
    if done:
        print(done)
        return
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
    from .store import MISSING
    from .store import read_index

    bad = verify(args.path, repair=args.repair)
    for part, problem in bad:
        print(f"{part}: {problem}")
    missing = sum(problem == MISSING for _, problem in bad)
    damaged = len(bad) - missing
    also = f", and {missing} missing" if missing else ""
    if damaged and args.repair:
        raise InputError(f"{args.path}: {damaged} damaged part(s) deleted{also}; run the build "
                         "again to make them")
    if damaged:
        raise InputError(f"{args.path}: {damaged} damaged part(s){also} (use --repair, then run "
                         "the build again)")
    if missing:
        raise InputError(f"{args.path}: {missing} part(s) missing, none damaged (an unfinished "
                         "build: run the build again to make them)")
    if not read_index(Path(args.path)).complete:
        raise InputError(f"{args.path}: every part is sound but the build did not finish (run the "
                         "build again to complete it)")
    print(f"{args.path}: every part reads back with valid checksums")


def _consolidate(args) -> None:
    from .store import consolidate

    print(f"wrote {consolidate(args.store, args.output, progress=not args.no_progress)}")


def _plot(args) -> None:
    from .plot import plot_all

    kwargs = {"split": args.split} if args.split else {}
    if args.qmax:
        kwargs["qmax"] = args.qmax
    for path in plot_all(args.path, args.output, rows=args.rows, progress=not args.no_progress,
                         **kwargs):
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
            sys.stdout.flush()  # here, so that a closed pipe is caught below
    except BrokenPipeError:
        # the reader left (molmnist info STORE | head): end quietly, as other tools do;
        # stdout goes to /dev/null so that Python's flush at exit does not complain
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141  # 128 + SIGPIPE, what a shell reports for a tool the pipe ended
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
