"""Molecular dynamics of the fibrils (`molmnist simulate`): speed here, a longer run's twist,
and what all ten would cost on GPUs.

Reproduce with::

    python benchmarks/bench_md.py                    # ns/day here + the GPU estimate (~3 min)
    python benchmarks/bench_md.py --quick            # 2x2 only, shorter timings
    # the longer CPU run (hours on 2 shared cores; resumable: run the same line again)
    nice -n 19 molmnist simulate -o /tmp/md-long --molecules 2x2 --solvent vacuum \\
        --equilibrate 0 --frames 200 --stride 10 --platform CPU --threads 2 --checkpoint-minutes 2
    python benchmarks/bench_md.py --long /tmp/md-long --figure md_twist.png

1. **ns/day** of the full-length 2x2 and 3x3 (40 residues a chain) in implicit solvent (OBC2
   through the native GBSAOBCForce) and in vacuum, on the CPU platform, 2 fs steps with bonds
   to hydrogen constrained: after minimisation and a warm-up, steps are timed for at least
   ``--seconds`` each. The machine is shared, so each figure is also given as a ratio to the
   2x2 in vacuum measured in the same run.
2. **The longer run** (``--long DIR``: a `simulate` output folder, finished or still running:
   the frames so far are read from its work files): the twist of each frame against time (a
   figure) and the twist distribution of its frames against the model's uniform 0-3 degree/nm.
3. **GPU estimate** for all ten fibrils in explicit TIP3P water (the paper's "water buffer"),
   from OpenMM's published benchmark: ApoA1 (92,224 atoms, PME) at about 500 ns/day on one
   NVIDIA A100 (openmm.org/benchmarks, OpenMM 8, mixed precision, 2 fs steps), scaled
   inversely with the number of atoms. Each fibril needs `--equilibrate` + frames x stride of
   dynamics (defaults 10 ns + 2,000 x 10 ps = 30 ns).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from _common import arguments, machine, table  # noqa: F401  (puts the checkout on sys.path)

from molmnist_dask.cellulose import MOLECULES, build_fibril
from molmnist_dask.cellulose.md_setup import WATER_PADDING, make_simulation

APOA1_ATOMS, APOA1_NS_PER_DAY = 92_224, 500.0   # openmm.org/benchmarks, A100, OpenMM 8
WATER_ATOMS_PER_NM3 = 100.0                     # 33.4 molecules/nm^3 x 3 atoms
CELLULOSE_ATOMS_PER_NM3 = 117.0                 # 1.5 g/cm^3: 5.6 glucose (21 atoms) per nm^3
NS_PER_FIBRIL = 10.0 + 2000 * 0.010             # the defaults: equilibrate 10 ns, 2000 x 10 ps
PERLMUTTER_GPUS_PER_NODE = 4


def ns_per_day(name: str, solvent: str, seconds: float, threads: int | None) -> tuple:
    """(atoms, ns/day) of one fibril on the CPU platform, 2 fs steps."""
    fibril = build_fibril(name)
    simulation, _ = make_simulation(fibril, solvent=solvent, platform="CPU", temperature=300.0,
                                    timestep=2.0, seed=0, threads=threads)
    simulation.minimizeEnergy(maxIterations=50)
    simulation.step(20)                      # warm-up
    steps, start = 0, time.perf_counter()
    chunk = 20
    while time.perf_counter() - start < seconds:
        simulation.step(chunk)
        steps += chunk
        chunk = min(chunk * 2, 2000)
    elapsed = time.perf_counter() - start
    return fibril.n_atoms, steps * 2e-6 / elapsed * 86400.0


def speed(args) -> None:
    names = ["2x2"] if args.quick else ["2x2", "3x3"]
    rows, base = [], None
    for name in names:
        for solvent in ("vacuum", "implicit"):
            atoms, rate = ns_per_day(name, solvent, args.seconds, args.threads)
            base = base or rate
            rows.append([name, atoms, solvent, rate, rate / base])
            print(f"{name} {solvent}: {rate:.3g} ns/day", flush=True)
    table(rows, ["fibril", "atoms", "solvent", "ns/day (CPU)", "ratio to 2x2 vacuum"],
          f"ns/day here, CPU platform, {args.threads or 'all'} threads ({machine()})")


def gpu_estimate() -> None:
    rows, total = [], 0.0
    for name in MOLECULES:
        fibril = build_fibril(name)
        box = np.ptp(fibril.positions, axis=0) / 10.0 + 2 * WATER_PADDING     # nm
        fibril_nm3 = fibril.n_atoms / CELLULOSE_ATOMS_PER_NM3
        atoms = int(fibril.n_atoms + WATER_ATOMS_PER_NM3 * (np.prod(box) - fibril_nm3))
        rate = APOA1_NS_PER_DAY * APOA1_ATOMS / atoms
        hours = NS_PER_FIBRIL / rate * 24.0
        total += hours
        rows.append([name, fibril.n_atoms, atoms, rate, hours])
    table(rows, ["fibril", "fibril atoms", "with water", "ns/day (A100, est.)", "GPU-hours"],
          f"GPU estimate: {NS_PER_FIBRIL:g} ns per fibril, explicit TIP3P, PME; from ApoA1 "
          f"{APOA1_NS_PER_DAY:g} ns/day on an A100 scaled by atoms")
    print(f"\nall ten: {total:.1f} GPU-hours; one Perlmutter GPU node ({PERLMUTTER_GPUS_PER_NODE} "
          f"A100s, one fibril each): {_node_hours(rows):.1f} node-hours of wall time")


def _node_hours(rows) -> float:
    """Wall hours of the ten on one 4-GPU node, longest first onto the least loaded GPU."""
    gpus = [0.0] * PERLMUTTER_GPUS_PER_NODE
    for hours in sorted((r[-1] for r in rows), reverse=True):
        gpus[gpus.index(min(gpus))] += hours
    return max(gpus)


def long_run(folder: Path, figure: Path | None) -> None:
    from molmnist_dask.cellulose import md

    name = "2x2"
    config = md.json.loads((folder / md.RECORD).read_text())["config"]
    fibril = build_fibril(name, config["residues"])
    p = md.paths(folder, name)
    if p["labels"].exists():
        labels = md.read_labels(p["labels"])
        twists, times = labels["twist"], labels["time"]
        status = "finished"
    else:   # still running: the frames so far, from the work files
        record = md.read_checkpoint(p["checkpoint"])
        frames = np.fromfile(p["frames"], dtype=np.float32)
        n = len(record["times"])
        frames = frames[: n * fibril.n_atoms * 3].reshape(n, fibril.n_atoms, 3)
        _, twists, times = md.align_and_order(fibril, frames, record["times"])
        status = f"running, step {record['step']}"
    order = np.argsort(times)
    t, tw = np.asarray(times)[order], np.asarray(twists)[order]
    print(f"\nlong run {folder} ({status}): {len(t)} frames, {t.max() if len(t) else 0:g} ps, "
          f"{config['solvent']}, {config['residues']} residues")
    if not len(t):
        return
    half = tw[len(tw) // 2:]
    rows = [["all frames", len(tw), tw.mean(), tw.std(), tw.min(), tw.max(),
             np.mean((tw >= 0) & (tw <= 3))],
            ["second half", len(half), half.mean(), half.std(), half.min(), half.max(),
             np.mean((half >= 0) & (half <= 3))]]
    table(rows, ["frames", "n", "mean deg/nm", "std", "min", "max", "fraction in model's 0-3"],
          "twist of the frames against the model's uniform 0-3 degree/nm")
    if figure:
        _figure(t, tw, figure, f"{name}, {config['solvent']}, {config['residues']} residues")


def _figure(times, twists, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8), gridspec_kw={"width_ratios": [2.2, 1]})
    left.plot(times, twists, ".-", lw=0.8, ms=3)
    left.axhspan(0, 3, color="tab:orange", alpha=0.15, label="model: uniform 0-3")
    left.set_xlabel("time [ps]")
    left.set_ylabel("twist [degree/nm]")
    left.set_title(title)
    left.legend(loc="best", fontsize=8)
    bins = np.linspace(min(twists.min(), 0) - 0.25, max(twists.max(), 3) + 0.25, 30)
    right.hist(twists, bins=bins, density=True, color="tab:blue", alpha=0.7, label="MD frames")
    right.plot([0, 0, 3, 3], [0, 1 / 3, 1 / 3, 0], color="tab:orange", label="model")
    right.set_xlabel("twist [degree/nm]")
    right.set_ylabel("density")
    right.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print(f"wrote {path}")


def main() -> None:
    args = arguments(__doc__,
                     seconds={"type": float, "default": 20.0, "help": "timed seconds per case (default 20)"},
                     threads={"type": int, "default": None, "help": "CPU platform threads (default all)"},
                     long={"default": None, "help": "a simulate output folder of the 2x2 to analyse"},
                     figure={"default": None, "help": "PNG of the long run's twist against time"},
                     no_speed={"action": "store_true", "help": "skip the ns/day timings"})
    if args.quick:
        args.seconds = min(args.seconds, 5.0)
    if not args.no_speed:
        speed(args)
    gpu_estimate()
    if args.long:
        long_run(Path(args.long), Path(args.figure) if args.figure else None)


if __name__ == "__main__":
    main()
