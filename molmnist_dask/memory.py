"""How much memory one frame needs in a worker, and refusing grids that cannot fit."""

from __future__ import annotations

import psutil

from .errors import InputError
from .grid import Grid


def frame_memory(grid: Grid) -> int:
    """Bytes a worker needs to render and write one frame of ``grid``, atoms aside.

    The float64 image with its outlier border, its float32 copy, the half spectrum of the
    transform (complex64, and a float32 view squared in place) and the pattern.
    """
    n, q = grid.size, grid.qsize
    image = 8 * (n + 2) ** 2 + 4 * n * n
    spectrum = 8 * q * (q // 2 + 1) * 2  # the real FFT and the column FFT's output
    return image + spectrum + 4 * q * q


def check_frame_memory(grid: Grid, limit: int | None = None, where: str = "this machine") -> None:
    """An InputError when one frame of ``grid`` needs more than ``limit`` bytes (default: the
    machine's memory), naming the size and the memory it would need."""
    limit = psutil.virtual_memory().total if limit is None else int(limit)
    need = frame_memory(grid)
    if need > limit:
        raise InputError(f"size={grid.size} (oversampling {grid.oversampling}): one frame needs "
                         f"{_gib(need)} of worker memory, more than the {_gib(limit)} of {where}; "
                         "choose a smaller size")


def _gib(n: int) -> str:
    return f"{n / 2**30:,.1f} GiB" if n < 2**40 else f"{n / 2**40:,.1f} TiB"
