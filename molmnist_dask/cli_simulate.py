"""``molmnist simulate``: its arguments and what it runs (molecular dynamics of the cellulose
fibrils with OpenMM, `molmnist_dask.cellulose.md`). Kept beside cli.py, which adds it to the
``molmnist`` command; bad input is one line naming the option, exit status 2, as there.
"""

from __future__ import annotations

import argparse
import os

from .errors import InputError


def _non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be zero or more, got {text}")
    return value


def add_parser(sub) -> None:
    """Add ``simulate`` to the ``molmnist`` subcommands ``sub``."""
    from .cli import _cluster_args, _integer, _positive_float, _positive_int

    m = sub.add_parser("simulate", help="molecular dynamics of the cellulose fibrils (OpenMM), "
                                        "written as PDB + DCD files and a run file")
    m.add_argument("-o", "--output", required=True,
                   help="folder for the trajectories (required; the same command again resumes)")
    m.add_argument("--molecules", help="comma-separated names (default: all ten)")
    m.add_argument("--residues", type=_positive_int,
                   help="glucose residues per chain (default: 40, the paper's)")
    m.add_argument("--solvent", choices=["implicit", "vacuum", "explicit"],
                   help="implicit OBC2 water, vacuum, or a TIP3P box with PME for GPUs "
                        "(default: implicit)")
    m.add_argument("--equilibrate", type=_non_negative_float,
                   help="ps of dynamics before the first frame (default: 10000)")
    m.add_argument("--frames", type=_positive_int, help="frames per fibril (default: 2000)")
    m.add_argument("--stride", type=_positive_float, help="ps between frames (default: 10)")
    m.add_argument("--timestep", type=_positive_float,
                   help="fs, with bonds to hydrogen constrained (default: 2)")
    m.add_argument("--temperature", type=_positive_float, help="K (default: 300)")
    m.add_argument("--seed", type=_integer, default=0,
                   help="seed of the velocities and the Langevin noise (default: 0)")
    m.add_argument("--platform", choices=["auto", "CPU", "CUDA", "OpenCL"], default="auto",
                   help="OpenMM platform (default: auto, the fastest where the workers are)")
    m.add_argument("--threads", type=_positive_int,
                   help="CPU platform threads per simulation (default: the cores over the "
                        "local workers; OpenMM's choice on other clusters)")
    m.add_argument("--checkpoint-minutes", type=_non_negative_float, default=5.0,
                   help="wall-clock minutes between checkpoints (default: 5)")
    m.add_argument("--resources", help="worker resources each fibril's task takes, e.g. GPU=1 for "
                                       "workers started with --resources GPU=1 (default: none)")
    m.add_argument("--size", type=_positive_int,
                   help="pixels per side recorded in the run file it writes (default: 200)")
    m.add_argument("--extent", type=_positive_float,
                   help="field of view recorded in the run file it writes, angstrom (default: 90)")
    _cluster_args(m)
    m.add_argument("--no-progress", action="store_true",
                   help="no line per finished fibril (default: one line each)")


def run(args) -> None:
    """Run ``molmnist simulate`` with parsed ``args``."""
    from .cellulose.forcefield import require_openmm
    from .cellulose.md_setup import check_platform
    from .cellulose.md import DEFAULTS, make_config, molecule_names, simulate
    from .cluster import connect

    require_openmm()
    kwargs = {k: getattr(args, k) for k in ("residues", "solvent", "equilibrate", "frames", "stride",
                                            "timestep", "temperature", "seed", "platform", "threads",
                                            "checkpoint_minutes", "size", "extent")
              if getattr(args, k) is not None}
    if args.molecules:
        kwargs["molecules"] = [m.strip() for m in args.molecules.split(",") if m.strip()]
    if args.resources:
        kwargs["resources"] = _resources(args.resources)
    # every option checked before a cluster starts
    make_config(**{k: kwargs.get(k, DEFAULTS[k]) for k in DEFAULTS})
    molecule_names(kwargs.get("molecules"))
    where = args.scheduler_file or args.cluster
    local = where in (None, "local")
    cluster_kwargs = {}
    if local:
        # OpenMM's CPU platform takes every core: one simulation at a time unless asked
        workers = args.workers or 1
        cluster_kwargs["n_workers"] = workers
        kwargs.setdefault("threads", max(1, (os.cpu_count() or 1) // workers))
        check_platform(args.platform)     # the workers are here: say so before starting them
    elif where == "slurm":
        cluster_kwargs["jobs"] = args.jobs
        cluster_kwargs.update({k: getattr(args, k) for k in ("cores", "memory") if getattr(args, k) is not None})
    with connect("local" if local else where, **cluster_kwargs) as client:
        run_file = simulate(args.output, client=client, progress=not args.no_progress, **kwargs)
    print(f"wrote {run_file}")


def _resources(text: str) -> dict:
    """``GPU=1,MEM=2`` as {"GPU": 1.0, "MEM": 2.0}."""
    out = {}
    for item in text.split(","):
        key, _, value = item.partition("=")
        try:
            out[key.strip()] = float(value)
        except ValueError:
            raise InputError(f"--resources: expected NAME=NUMBER[,NAME=NUMBER], got {text!r}") from None
        if not key.strip():
            raise InputError(f"--resources: expected NAME=NUMBER[,NAME=NUMBER], got {text!r}")
    return out
