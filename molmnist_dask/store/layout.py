"""Where things are in a store, and how a build is cut into parts.

A store is a folder::

    STORE/index.nc                              the manifest: configuration, part layout,
                                                completeness, coordinates, small variables
    STORE/parts/MMMM-SSSSSSS-EEEEEEE.nc          molecule MMMM, variants SSSSSSS..EEEEEEE-1
    STORE/.lock                                 held while a build writes

Every part is a complete NetCDF-4 file on its own (written aside, renamed when closed), so
many workers write in parallel and plain xarray reads any of them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..settings import setting

INDEX = "index.nc"
PARTS = "parts"
IMAGE_VARS = ("shape", "diffraction")
SMALL_VARS = ("lost_atoms", "lost_electrons")


@dataclass(frozen=True, order=True)
class Part:
    """One part file: molecule ``molecule``'s variants ``start..stop-1``."""

    molecule: int
    start: int
    stop: int

    @property
    def name(self) -> str:
        """Its path inside the store."""
        return part_name(self.molecule, self.start, self.stop)

    @property
    def size(self) -> int:
        return self.stop - self.start


def part_name(molecule: int, start: int, stop: int) -> str:
    """File name of the part holding ``molecule``'s variants ``start..stop-1``."""
    return f"{PARTS}/{molecule:04d}-{start:07d}-{stop:07d}.nc"


def frames_per_part(n_molecules: int, n_variants: int, frame_bytes: int, threads: int, *,
                    part_bytes: int | None = None, part_frames: int | None = None) -> int:
    """Frames in a part: about ``molmnist.part-bytes`` of output or ``molmnist.part-frames``
    frames, whichever is less, and fewer when that would leave worker threads idle (each
    thread should get ``molmnist.parts-per-thread`` parts when there are enough frames).
    A ``part_frames`` given here is taken as it is (within ``part_bytes``)."""
    by_work = min(setting("part-frames", part_frames), max(1, setting("part-bytes", part_bytes) // frame_bytes))
    if part_frames is not None:
        return int(max(1, min(by_work, n_variants)))
    enough = math.ceil(n_molecules * n_variants / (setting("parts-per-thread") * max(1, threads)))
    return int(max(1, min(by_work, enough, n_variants)))


def cut(n_molecules: int, n_variants: int, per_part: int) -> list:
    """Each molecule's variants cut into near-equal parts of at most ``per_part`` frames."""
    count = math.ceil(n_variants / per_part)
    edges = [round(i * n_variants / count) for i in range(count + 1)]
    return [Part(m, a, b) for m in range(n_molecules) for a, b in zip(edges[:-1], edges[1:])]
