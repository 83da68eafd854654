"""Training statistics, computed once per store and settings and kept beside the store.

The cache file ``ml-stats-<key>.json`` (in a store folder, or beside a ``.nc`` file) is named
by the settings that change the statistics (split, log, crop, binning) and records a
fingerprint of the files it was computed from; a store rebuilt or changed since gets them
computed again. A store on a read-only file system simply goes uncached.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class Stats:
    """Dataset statistics of the training split, for normalising every split alike.

    Attributes
    ----------
    mean, std : float
        Of the log-scaled (and cropped) diffraction over all training pixels.
    target_max : float
        Largest (binned) shape pixel in the training split, electrons.
    """

    mean: float
    std: float
    target_max: float

    def asdict(self) -> dict:
        return asdict(self)


class Moments:
    """Running count, mean and sum of squared deviations (Chan et al.), in float64."""

    def __init__(self):
        self.n, self.mean, self.m2, self.top = 0, 0.0, 0.0, 0.0

    def add(self, x: np.ndarray, target: np.ndarray) -> None:
        x = np.asarray(x, np.float64)
        n, mean = x.size, float(x.mean()) if x.size else 0.0
        m2 = float(((x - mean) ** 2).sum())
        total = self.n + n
        if total:
            delta = mean - self.mean
            self.mean += delta * n / total
            self.m2 += m2 + delta * delta * self.n * n / total
            self.n = total
        if target.size:
            self.top = max(self.top, float(target.max()))

    def stats(self) -> Stats:
        std = float(np.sqrt(self.m2 / self.n)) if self.n else 0.0
        return Stats(mean=self.mean, std=std, target_max=self.top or 1.0)


def fingerprint(paths) -> str:
    """Digest of the files' names, sizes and modification times (no data read)."""
    h = hashlib.sha256()
    for p in paths:
        st = os.stat(p)
        h.update(f"{os.path.basename(p)}:{st.st_size}:{st.st_mtime_ns};".encode())
    return h.hexdigest()[:16]


def cache_path(store: Path, settings: dict) -> Path:
    key = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:12]
    name = f"ml-stats-{key}.json"
    return store / name if store.is_dir() else store.with_name(f"{store.name}.{name}")


def load(path: Path, settings: dict, print_: str) -> Stats | None:
    """The cached statistics, if the cache holds these settings and this fingerprint."""
    try:
        doc = json.loads(path.read_text())
        if doc["settings"] == settings and doc["fingerprint"] == print_:
            return Stats(**doc["stats"])
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return None


def save(path: Path, settings: dict, print_: str, stats: Stats) -> None:
    """Write the cache atomically; silently skipped where the store is read-only."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(json.dumps({"settings": settings, "fingerprint": print_,
                                   "stats": stats.asdict()}, indent=1))
        os.replace(tmp, path)
    except OSError:
        tmp.unlink(missing_ok=True)
