"""Shared pieces of the benchmarks: arguments, tables, the seed's serial method, process
monitoring (RSS, CPU) and task-stream accounting."""

from __future__ import annotations

import argparse
import atexit
import contextlib
import os
import shutil
import sys
import threading
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run from a checkout without installing
    sys.path.insert(0, str(ROOT))
if str(Path(__file__).resolve().parent) not in sys.path:
    sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402

warnings.filterwarnings("ignore", category=DeprecationWarning)
warnings.filterwarnings("ignore", module="MDAnalysis")

SCRATCH = Path(os.environ.get("MOLMNIST_BENCH_SCRATCH", "/tmp/molmnist-bench"))


def arguments(doc: str, **extra) -> argparse.Namespace:
    """``--quick`` (under a minute) and ``--scratch DIR`` (outputs go to a subfolder of this
    run's own, deleted after), plus extras."""
    p = argparse.ArgumentParser(description=doc.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="a small run that finishes in under a minute")
    p.add_argument("--scratch", default=str(SCRATCH), help="folder for outputs (deleted after)")
    for name, kwargs in extra.items():
        p.add_argument(f"--{name.replace('_', '-')}", **kwargs)
    args = p.parse_args()
    quiet_logs()
    # a folder of this run's own, so that two benchmarks running at once do not collide
    args.root = Path(args.scratch)
    args.scratch = args.root / f"{Path(sys.argv[0]).stem}-{os.getpid()}"
    args.scratch.mkdir(parents=True, exist_ok=True)
    atexit.register(shutil.rmtree, args.scratch, True)
    return args


def table(rows, headers, title: str | None = None) -> str:
    """A plain-text table (also valid Markdown)."""
    cells = [[_fmt(c) for c in r] for r in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)]
    line = lambda r: "| " + " | ".join(c.rjust(w) if i else c.ljust(w)  # noqa: E731
                                       for i, (c, w) in enumerate(zip(r, widths))) + " |"
    out = ([f"\n{title}"] if title else []) + [line(headers),
                                                "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    out += [line(r) for r in cells]
    text = "\n".join(out)
    print(text, flush=True)
    return text


def _fmt(c) -> str:
    if isinstance(c, float):
        if c == 0:
            return "0"
        a = abs(c)
        return f"{c:.3g}" if a < 10 else f"{c:.1f}" if a < 1000 else f"{c:,.0f}"
    return str(c)


def machine() -> str:
    """One line: cores, memory, load (this machine is shared: say how busy it was)."""
    import psutil

    load = os.getloadavg()
    return (f"{os.cpu_count()} cores, {psutil.virtual_memory().total / 2**30:.0f} GiB, "
            f"load average {load[0]:.1f} (1 min)")


def rmtree(path) -> None:
    """Remove a file or a folder, if there."""
    path = Path(path)
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def du(path) -> int:
    """Bytes on disk under ``path`` (allocated blocks, as ``du`` counts them)."""
    path = Path(path)
    if path.is_file():
        return path.stat().st_blocks * 512
    return sum(p.stat().st_blocks * 512 for p in path.rglob("*") if p.is_file())


# --- the seed's method --------------------------------------------------------------------

class Stages:
    """Seconds per named stage, summed."""

    def __init__(self):
        self.seconds = {}
        self._t = None

    def start(self):
        self._t = time.perf_counter()

    def lap(self, name: str):
        t = time.perf_counter()
        self.seconds[name] = self.seconds.get(name, 0.0) + t - self._t
        self._t = t


def seed_serial(sources, frames, size: int, extent: float, out: Path, stages: Stages | None = None,
                center: str = "geometry") -> int:
    """The seed's method: a serial loop that, per frame, reads with MDAnalysis, centres the
    positions, bins them with ``numpy.histogram2d`` weighted by Z, takes ``numpy.fft.fft2``
    (complex128), ``abs()**2`` and ``fftshift``, and writes both images as float32 ``.npy``.

    ``frames[m]`` are molecule m's frame indices. Returns the number of frames written.
    """
    import MDAnalysis as mda

    from molmnist_dask.electrons import electron_counts

    stages = stages or Stages()
    out.mkdir(parents=True, exist_ok=True)
    half = extent / 2
    n = 0
    for m, source in enumerate(sources):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            traj = list(source.trajectory)
            u = mda.Universe(source.topology, *([traj] if len(traj) > 1 else traj))
        atoms = u.select_atoms(source.selection)
        z = electron_counts(atoms)[0].astype(np.float64)
        for f in frames[m]:
            stages.start()
            u.trajectory[int(f)]
            pos = atoms.positions.astype(np.float64)
            stages.lap("read")
            if center == "geometry":
                pos -= pos.mean(axis=0)
            shape = np.histogram2d(pos[:, 1], pos[:, 0], bins=size, range=[[-half, half], [-half, half]],
                                   weights=z)[0]
            stages.lap("bin")
            diffraction = np.fft.fftshift(np.abs(np.fft.fft2(shape)) ** 2)
            stages.lap("fft")
            np.save(out / f"{m:04d}-{int(f):07d}-shape.npy", shape.astype(np.float32))
            np.save(out / f"{m:04d}-{int(f):07d}-diffraction.npy", diffraction.astype(np.float32))
            stages.lap("write")
            n += 1
    return n


# --- processes: RSS and CPU -------------------------------------------------------------

def worker_pids(client) -> dict:
    """{worker address: pid}."""
    return client.run(os.getpid)


class RSSMonitor:
    """Samples the resident memory of some processes in a thread; ``peak[pid]`` in bytes."""

    def __init__(self, pids, interval: float = 0.05):
        import psutil

        self.procs = {pid: psutil.Process(pid) for pid in pids}
        self.peak = {pid: 0 for pid in pids}
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            for pid, p in self.procs.items():
                with contextlib.suppress(Exception):
                    self.peak[pid] = max(self.peak[pid], p.memory_info().rss)
            self._stop.wait(self.interval)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def cpu_seconds(pids) -> float:
    """User + system CPU seconds used so far by these processes (and their threads)."""
    import psutil

    total = 0.0
    for pid in pids:
        with contextlib.suppress(Exception):
            t = psutil.Process(pid).cpu_times()
            total += t.user + t.system
    return total


def task_seconds(records) -> dict:
    """From a ``get_task_stream`` record list: {"render" | "write" | "other": (tasks, compute
    seconds)}. A task whose key names ``render`` runs a render (alone, or fused with others)."""
    out = {}
    for rec in records:
        key = str(rec["key"] if isinstance(rec["key"], str) else rec["key"][0])
        kind = "write" if key.startswith("write") else "render" if "render" in key else "other"
        for s in rec["startstops"]:
            if s["action"] == "compute":
                c, t = out.get(kind, (0, 0.0))
                out[kind] = (c + 1, t + s["stop"] - s["start"])
    return out


def quiet_logs() -> None:
    """Hide distributed's log noise (closing comms at shutdown)."""
    import logging

    for name in ("distributed", "tornado", "asyncio"):
        logging.getLogger(name).setLevel(logging.CRITICAL)
