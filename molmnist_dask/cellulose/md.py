"""`molmnist simulate`: the paper's fibrils under molecular dynamics (OpenMM), as frames to build from.

Per fibril: GLYCAM06j-1 (`forcefield`), minimisation, ``equilibrate`` ps of Langevin dynamics at
``temperature``, then ``frames`` frames every ``stride`` ps (`md_setup` makes the system). The
frames are superposed on the straight fibril (the whole fibril drifts and tilts), their twist
measured (`twist_measure`) and written from least to most twisted, as the paper orders its
variants. Layout of the output folder::

    2x2.pdb  2x2.dcd  2x2.labels.csv   topology, aligned frames in twist order, per-frame labels
    ...                                (``twist [degree/nm],time [ps]``, one row per DCD frame)
    run.toml                           the run file `molmnist build` reads (with ``labels``)
    simulate.json                      the configuration

Wall time is not fatal. While a fibril runs, ``.NAME.frames.f32`` gets each frame as it is
taken, and ``.NAME.checkpoint.npz`` (OpenMM's checkpoint, the step, the frames' times and
energies) is replaced by an atomic rename after minimisation and then every
``checkpoint_minutes`` (`CHECKPOINT_MINUTES`). The same command again resumes each fibril from
its checkpoint, dropping frames taken after it (on another platform or machine, from the
portable state stored beside OpenMM's checkpoint), and skips a finished fibril (its DCD is
there; its checkpoint stays, a record of the frames' times and potential energies,
`read_checkpoint`). A blow-up (NaN energy) is one line naming the fibril and the step; the last
good checkpoint stays.

On a Dask cluster each fibril is one task (`simulate` with a client); ``resources`` such as
``{"GPU": 1}`` make each task take one GPU of workers started with ``--resources GPU=1``.
"""

from __future__ import annotations

import io
import json
import math
import os
import time
from pathlib import Path

import numpy as np

from .. import __version__
from ..errors import InputError
from ..lock import StoreLock
from ..validate import integer, non_negative_float, non_negative_int, positive_float, positive_int
from . import files
from .fibril import RESIDUES, build_fibril
from .md_setup import PLATFORMS, SOLVENTS, check_platform, make_simulation, random_seed
from .profiles import MOLECULES
from .synth import DEFAULT_EXTENT, _check_molecules, fingerprint
from .twist_measure import measure_twist, superpose

FORMAT_VERSION = 1
RECORD = "simulate.json"
RUN_FILE = "run.toml"
LABELS_HEADER = "twist [degree/nm],time [ps]"
CHECKPOINT_MINUTES = 5.0     # wall-clock minutes between checkpoints
CHUNK_STEPS = 5000           # most steps between two looks at the energy and the clock
MINIMIZE_ITERATIONS = 2000
DEFAULTS = {"residues": RESIDUES, "solvent": "implicit", "equilibrate": 10_000.0, "frames": 2000,
            "stride": 10.0, "timestep": 2.0, "temperature": 300.0, "seed": 0}


class SimulationError(InputError):
    """A simulation that cannot go on (NaN energy): one line naming the fibril and the step."""


def simulate(outdir, *, molecules=None, residues: int = RESIDUES, solvent: str = "implicit",
             equilibrate: float = 10_000.0, frames: int = 2000, stride: float = 10.0,
             timestep: float = 2.0, temperature: float = 300.0, seed: int = 0,
             platform: str = "auto", threads: int | None = None,
             checkpoint_minutes: float = CHECKPOINT_MINUTES, size: int = 200,
             extent: float | None = None, client=None, resources: dict | None = None,
             progress: bool = True) -> Path:
    """Simulate the paper's fibrils with OpenMM and write them as frames to build from.

    Parameters
    ----------
    outdir : path-like
        Output folder, created if missing; a rerun there resumes.
    molecules : sequence of str, optional
        Names from `MOLECULES`; all ten by default.
    residues : int
        Glucose residues per chain (the paper's 40 by default; fewer for tests).
    solvent : {"implicit", "vacuum", "explicit"}
        OBC2 implicit water (default), none, or a TIP3P box with PME (for GPUs).
    equilibrate : float
        Picoseconds of dynamics before the first frame (0: none).
    frames : int
        Frames per fibril.
    stride : float
        Picoseconds between frames; a whole number of time steps.
    timestep : float
        Femtoseconds (bonds to hydrogen are constrained).
    temperature : float
        Kelvin.
    seed : int
        Non-negative; seeds the velocities and the Langevin noise of each fibril.
    platform : {"auto", "CPU", "CUDA", "OpenCL"}
        OpenMM platform; ``auto`` the fastest there is (where each task runs).
    threads : int, optional
        CPU platform threads per simulation (default: OpenMM's, every core).
    checkpoint_minutes : float
        Wall-clock minutes between checkpoints.
    size, extent : int, float
        The run file's image size (pixels) and field of view (angstrom, `DEFAULT_EXTENT`).
    client : distributed.Client, optional
        Run one task per fibril on its cluster; without one, each fibril in turn here.
    resources : dict, optional
        Worker resources each task needs, e.g. ``{"GPU": 1}``.
    progress : bool
        Print a line as each fibril finishes.

    Returns
    -------
    pathlib.Path
        The run file, ``outdir/run.toml``.
    """
    names = molecule_names(molecules)
    config = make_config(residues=residues, solvent=solvent, equilibrate=equilibrate, frames=frames,
                         stride=stride, timestep=timestep, temperature=temperature, seed=seed)
    _check_run(platform, threads, checkpoint_minutes, size, extent)
    outdir = Path(outdir)
    if outdir.exists() and not outdir.is_dir():
        raise InputError(f"{outdir}: exists and is not a folder")
    outdir.mkdir(parents=True, exist_ok=True)
    # the store's lock: a second simulation into this folder is refused while this one lives
    with StoreLock(outdir, what="simulation"):
        files.check_record(outdir / RECORD, config, "simulation")
        _write_record(outdir, names, config)
        todo = [name for name in names if not complete(outdir, name, config)]
        run = {"platform": platform, "threads": threads, "checkpoint_minutes": float(checkpoint_minutes)}
        if client is None:
            if todo:
                check_platform(platform)
            for name in todo:
                run_fibril(outdir, name, config, **run)
                if progress:
                    print(f"{name}: done", flush=True)
        else:
            _run_on_cluster(client, outdir, todo, config, run, resources, progress)
        # the run file names every fibril finished here, those of earlier calls too
        done = [name for name in MOLECULES if name in names or complete(outdir, name, config)]
        return write_run_file(outdir, done, size, extent)


# -- input ---------------------------------------------------------------------------------------

def molecule_names(molecules) -> list:
    """The fibrils asked for, in the paper's order (all ten for None); InputError naming an
    unknown one."""
    try:
        return _check_molecules(molecules)
    except InputError as err:
        raise InputError(f"--{err}") from None


def make_config(*, residues=RESIDUES, solvent="implicit", equilibrate=10_000.0, frames=2000,
                stride=10.0, timestep=2.0, temperature=300.0, seed=0) -> dict:
    """The checked configuration that decides a simulation's files (each bad option named)."""
    residues = integer("--residues", residues, minimum=2)
    if solvent not in SOLVENTS:
        raise InputError(f"--solvent must be one of {', '.join(SOLVENTS)}, got {solvent!r}")
    equilibrate = non_negative_float("--equilibrate", equilibrate, "ps")
    frames = positive_int("--frames", frames)
    stride = positive_float("--stride", stride, "ps")
    timestep = positive_float("--timestep", timestep, "fs")
    temperature = positive_float("--temperature", temperature, "K")
    seed = non_negative_int("--seed", seed)
    steps = {}
    for key, ps in (("stride", stride), ("equilibrate", equilibrate)):
        n = ps * 1000.0 / timestep
        if abs(n - round(n)) > 1e-6 * max(1.0, n):
            raise InputError(f"--{key} must be a whole number of time steps ({timestep:g} fs), got {ps:g} ps")
        steps[key] = int(round(n))
    return {"format": FORMAT_VERSION, "residues": residues, "solvent": solvent,
            "equilibrate": equilibrate, "frames": frames, "stride": stride, "timestep": timestep,
            "temperature": temperature, "seed": seed, "forcefield": "GLYCAM06j-1",
            "equilibrate_steps": steps["equilibrate"], "stride_steps": steps["stride"]}


def _check_run(platform, threads, checkpoint_minutes, size, extent) -> None:
    if platform not in PLATFORMS:
        raise InputError(f"--platform must be one of {', '.join(PLATFORMS)}, got {platform!r}")
    if threads is not None:
        positive_int("--threads", threads)
    non_negative_float("--checkpoint-minutes", checkpoint_minutes, "minutes")
    positive_int("--size", size)
    if extent is not None:
        positive_float("--extent", extent, "angstrom")


def _write_record(outdir: Path, names: list, config: dict) -> None:
    record = {"generator": "molmnist_dask.cellulose.md", "config": config,
              "fingerprint": fingerprint(config), "molecules": names,
              "units": {"equilibrate": "ps", "stride": "ps", "timestep": "fs", "temperature": "K",
                        "twist": "degree/nm", "time": "ps"},
              "versions": {"molmnist_dask": __version__, "openmm": _openmm_version()}}
    tmp = files.partial(outdir / RECORD)
    tmp.write_text(json.dumps(record, indent=2) + "\n")
    os.replace(tmp, outdir / RECORD)


def _openmm_version() -> str:
    try:
        import openmm

        return openmm.__version__
    except ImportError:
        return "missing"


# -- one fibril ------------------------------------------------------------------------------------

def paths(outdir, name: str) -> dict:
    """The files of one fibril: outputs (pdb, dcd, labels) and work files (checkpoint, frames)."""
    outdir = Path(outdir)
    return {"pdb": outdir / f"{name}.pdb", "dcd": outdir / f"{name}.dcd",
            "labels": outdir / f"{name}.labels.csv",
            "checkpoint": outdir / f".{name}.checkpoint.npz", "frames": outdir / f".{name}.frames.f32"}


def _stamp(name: str, config: dict) -> str:
    return f"molmnist_dask.cellulose.md {name} {fingerprint(config)}"


def complete(outdir, name: str, config: dict) -> bool:
    """Whether a fibril's outputs are there, whole, from this configuration."""
    p = paths(outdir, name)
    if not p["dcd"].exists():
        return False
    if not files.pdb_title(p["pdb"]).endswith(_stamp(name, config)):
        raise InputError(f"{p['dcd']}: was not written by a simulation with this configuration; "
                         "use another folder or remove it")
    return p["labels"].exists() and files.dcd_shape(p["dcd"])[1] == config["frames"]


def run_fibril(outdir, name: str, config: dict, *, platform: str = "auto", threads: int | None = None,
               checkpoint_minutes: float = CHECKPOINT_MINUTES) -> str:
    """Simulate one fibril to the end (resuming from its checkpoint) and write its outputs.

    What a Dask task runs. Returns the fibril's name.
    """
    outdir = Path(outdir)
    if complete(outdir, name, config):
        return name
    fibril = build_fibril(name, config["residues"])
    platform = check_platform(platform)
    simulation, prepared = make_simulation(
        fibril, solvent=config["solvent"], platform=platform, temperature=config["temperature"],
        timestep=config["timestep"], seed=config["seed"], threads=threads)
    run = _Run(outdir, name, fibril, config, simulation, prepared, checkpoint_minutes * 60.0)
    run.start_or_resume()
    run.advance()
    _finish(outdir, fibril, config, run.read_frames(), np.array(run.times))
    # the raw frames go; the small checkpoint stays, a log of the frames' times and energies
    paths(outdir, name)["frames"].unlink(missing_ok=True)
    return name


def read_checkpoint(path) -> dict:
    """A checkpoint's record: ``step``, and ``times`` (ps) and ``energies`` (kJ/mol) per frame."""
    with np.load(path) as data:
        return json.loads(str(data["meta"]))


def _checkpointed(name: str, step: int) -> None:
    """Called after each checkpoint is written (a hook for tests that kill a run there)."""


class _Run:
    """The state of one fibril's dynamics: steps done, frames and their times, checkpoints."""

    def __init__(self, outdir, name, fibril, config, simulation, prepared, interval):
        self.name, self.fibril, self.config = name, fibril, config
        self.simulation, self.prepared, self.interval = simulation, prepared, interval
        self.paths = paths(outdir, name)
        self.total = config["equilibrate_steps"] + config["frames"] * config["stride_steps"]
        self.step, self.times, self.energies = 0, [], []
        self.saved_step, self.saved_at = 0, time.monotonic()

    # -- checkpoints --

    def start_or_resume(self) -> None:
        from openmm import unit

        if self.paths["checkpoint"].exists():
            self._resume()
            return
        self.paths["frames"].unlink(missing_ok=True)
        context = self.simulation.context
        self.simulation.minimizeEnergy(maxIterations=MINIMIZE_ITERATIONS)
        self._check_energy()
        context.setVelocitiesToTemperature(self.config["temperature"] * unit.kelvin,
                                           random_seed(self.config["seed"] + 1, self.name))
        context.setStepCount(0)
        context.setTime(0.0)
        self.save()

    def _resume(self) -> None:
        import openmm

        path = self.paths["checkpoint"]
        try:
            meta = read_checkpoint(path)
            with np.load(path) as data:
                checkpoint, state = bytes(data["checkpoint"]), bytes(data["state"]).decode()
        except (OSError, ValueError, KeyError) as err:
            raise InputError(f"{path}: unreadable checkpoint ({err}); remove it to start "
                             f"{self.name} again") from None
        if meta.get("fingerprint") != fingerprint(self.config):
            raise InputError(f"{path}: a checkpoint of another configuration; remove it")
        try:
            self.simulation.context.loadCheckpoint(checkpoint)
        except Exception:   # another platform or machine: OpenMM's checkpoints are not portable
            self.simulation.context.setState(openmm.XmlSerializer.deserialize(state))
        self.step, self.times, self.energies = meta["step"], meta["times"], meta["energies"]
        self.saved_step = self.step
        # frames written after the checkpoint belong to a run that was killed: drop them
        with open(self.paths["frames"], "ab") as handle:
            handle.truncate(len(self.times) * self.fibril.n_atoms * 3 * 4)

    def save(self) -> None:
        """Write the checkpoint (the frames so far are on disk already)."""
        import openmm

        context = self.simulation.context
        checkpoint = context.createCheckpoint()
        state = openmm.XmlSerializer.serialize(context.getState(getPositions=True, getVelocities=True,
                                                                getParameters=True))
        meta = {"fingerprint": fingerprint(self.config), "step": self.step, "times": self.times,
                "energies": self.energies}
        path = self.paths["checkpoint"]
        tmp = files.partial(path)
        try:
            with open(tmp, "wb") as handle:
                np.savez(handle, meta=np.array(json.dumps(meta)),
                         checkpoint=np.frombuffer(checkpoint, dtype=np.uint8),
                         state=np.frombuffer(state.encode(), dtype=np.uint8))
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
        self.saved_step, self.saved_at = self.step, time.monotonic()
        _checkpointed(self.name, self.step)

    # -- dynamics --

    def advance(self) -> None:
        """Step to the end, recording frames, checking the energy, checkpointing on the clock."""
        eq, stride = self.config["equilibrate_steps"], self.config["stride_steps"]
        while self.step < self.total:
            if self.step < eq:
                target = eq
            else:
                target = eq + ((self.step - eq) // stride + 1) * stride
            target = min(target, self.step + CHUNK_STEPS)
            self._step(target - self.step)
            if self.step > eq and (self.step - eq) % stride == 0:
                self._record()
            if time.monotonic() - self.saved_at >= self.interval or self.step == self.total:
                self.save()

    def _step(self, n: int) -> None:
        import openmm

        start = self.step
        try:
            self.simulation.step(n)
        except openmm.OpenMMException as err:   # "Particle coordinate is NaN": a blow-up
            message = str(err)
            self._blown_up(start, start + n, "a coordinate became NaN" if "NaN" in message
                           else " ".join(message.split())[:120])
        self.step = start + n
        self._check_energy(start)

    def _check_energy(self, start: int = 0) -> float:
        from openmm import unit

        state = self.simulation.context.getState(getEnergy=True)
        energy = state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
        if not math.isfinite(energy):
            self._blown_up(start, self.step, f"potential energy {energy}")
        return energy

    def _blown_up(self, start: int, end: int, why: str):
        where = f"step {end}" if start == end else f"a step from {start + 1} to {end}"
        ps = end * self.config["timestep"] / 1000.0
        raise SimulationError(
            f"{self.name}: NaN energy at {where} ({ps:g} ps; {why}); the last good checkpoint "
            f"({self.paths['checkpoint'].name}, step {self.saved_step}) is kept: a smaller "
            "--timestep or more --equilibrate may get past it")

    def _record(self) -> None:
        from openmm import unit

        state = self.simulation.context.getState(getPositions=True, getEnergy=True)
        n = self.fibril.n_atoms
        positions = state.getPositions(asNumpy=True).value_in_unit(unit.angstrom)[:n]
        frame = self.prepared.to_fibril_order(np.asarray(positions)).astype(np.float32)
        with open(self.paths["frames"], "ab") as handle:
            handle.write(frame.tobytes())
            handle.flush()
            os.fsync(handle.fileno())
        self.times.append(round(state.getTime().value_in_unit(unit.picosecond), 6))
        self.energies.append(state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole))

    def read_frames(self) -> np.ndarray:
        n = self.fibril.n_atoms
        data = np.fromfile(self.paths["frames"], dtype=np.float32)
        return data[: len(self.times) * n * 3].reshape(-1, n, 3)


# -- outputs ---------------------------------------------------------------------------------------

def align_and_order(fibril, frames: np.ndarray, times: np.ndarray):
    """Frames superposed on the straight fibril and sorted by twist.

    Returns ``(aligned, twists, times)``, all in twist order (least twisted first).
    """
    heavy = (fibril.elements != "H").astype(float)
    aligned = np.stack([superpose(f, fibril.positions, heavy) for f in frames]).astype(np.float32)
    twists = np.array([measure_twist(fibril, f) for f in aligned])
    order = np.argsort(twists, kind="stable")
    return aligned[order], twists[order], np.asarray(times, dtype=np.float64)[order]


def _finish(outdir: Path, fibril, config: dict, frames: np.ndarray, times: np.ndarray) -> None:
    """Write the PDB, the labels and (last: it marks the fibril done) the aligned DCD."""
    aligned, twists, times = align_and_order(fibril, frames, times)
    p = paths(outdir, fibril.name)
    u = files.universe(fibril, remarks=_remarks(fibril, config, twists))
    tmp = {key: files.partial(p[key]) for key in ("pdb", "labels", "dcd")}
    try:
        files.write_topology(u, tmp["pdb"], title=_stamp(fibril.name, config))
        tmp["labels"].write_text(labels_text(twists, times))
        files.write_trajectory(u, tmp["dcd"], iter(aligned))
        files.publish({p[key]: tmp[key] for key in ("pdb", "labels", "dcd")})
    finally:
        for path in tmp.values():
            path.unlink(missing_ok=True)


def labels_text(twists, times) -> str:
    """The per-frame labels file: a header of names and units, then one row per frame."""
    rows = io.StringIO()
    rows.write(LABELS_HEADER + "\n")
    for twist, t in zip(twists, times):
        rows.write(f"{twist:.6f},{t:.6g}\n")
    return rows.getvalue()


def read_labels(path) -> dict:
    """A labels file this module wrote, as ``{name: float array}`` (names without their units),
    read and checked by the package's own reader (`molmnist_dask.labels`)."""
    from ..labels import read_labels as read

    rows = sum(1 for line in Path(path).read_text().splitlines()[1:] if line.strip())
    return {name: label.values for name, label in read(str(path), rows, Path(path).stem).items()}


def _remarks(fibril, config: dict, twists) -> list:
    return [
        f"OpenMM dynamics, GLYCAM06j-1, {config['solvent']} solvent, {config['temperature']:g} K, "
        f"{config['timestep']:g} fs steps, seed {config['seed']}",
        f"{fibril.n_chains} chains x {config['residues']} residues; equilibrated {config['equilibrate']:g} ps, "
        f"then {config['frames']} frames every {config['stride']:g} ps",
        f"DCD frames superposed on this straight fibril, ordered by twist "
        f"({twists.min():.3f} to {twists.max():.3f} deg/nm); labels in {fibril.name}.labels.csv",
        f"config {fingerprint(config)}",
    ]


def write_run_file(outdir: Path, names: list, size: int = 200, extent: float | None = None) -> Path:
    """``outdir/run.toml``: each fibril's PDB, DCD and labels file, paths relative to it."""
    from ..runfile import write_run_file as write
    from ..sources import TrajectorySource

    sources = [TrajectorySource(name, str(outdir / f"{name}.pdb"), str(outdir / f"{name}.dcd"),
                                labels=str(outdir / f"{name}.labels.csv")) for name in names]
    grid = {"size": int(size), "extent": DEFAULT_EXTENT if extent is None else float(extent)}
    path = outdir / RUN_FILE
    tmp = files.partial(path)  # written aside, then renamed: a reader never sees half a file
    try:
        write(tmp, sources, grid=grid)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


# -- the cluster -----------------------------------------------------------------------------------

def _run_on_cluster(client, outdir: Path, names: list, config: dict, run: dict, resources, progress) -> None:
    """One task per fibril; every fibril runs to its end before the first error is raised."""
    from distributed import as_completed

    futures = {client.submit(run_fibril, str(outdir.resolve()), name, config, **run, pure=False,
                             key=f"simulate-{name}-{fingerprint(config)}", resources=resources): name
               for name in names}
    errors = []
    for future in as_completed(futures):
        name = futures[future]
        try:
            future.result()
            if progress:
                print(f"{name}: done", flush=True)
        except InputError as err:
            errors.append(err)
        except Exception as err:   # a worker's OpenMM or OS failure: name the fibril
            errors.append(InputError(f"{name}: {type(err).__name__}: {' '.join(str(err).split())[:200]}"))
    if errors:
        raise errors[0]


__all__ = ["simulate", "run_fibril", "make_config", "complete", "align_and_order", "labels_text",
           "read_labels", "write_run_file", "molecule_names", "read_checkpoint", "SimulationError", "DEFAULTS"]
