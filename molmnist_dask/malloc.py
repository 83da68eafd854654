"""The workers' memory allocator: keep freed memory for reuse, on any cluster.

A task renders a sub-block with large temporaries (the binning image, the FFT's buffers,
HDF5's chunk buffers) that it frees and allocates again for the next frame. distributed
starts its workers with ``MALLOC_TRIM_THRESHOLD_=65536``: glibc then hands every such buffer
back to the system at once, and the next frame page-faults it in anew. Tasks ran 1.3x
(200 px) to 2x (1024 px) slower (benchmarks/bench_build.py, issue 8); a bare
``distributed.LocalCluster`` built at 0.35-0.5 of the per-frame floor at 200 and 1024 px
without this module, at the CLI's cluster's rate with it (benchmarks/bench_floor.py).

Environment variables reach only the workers a program spawns itself, and only at their
start; glibc's ``mallopt`` sets the same parameters in a running process. So `register` adds
a `distributed.WorkerPlugin` to the client's cluster, whatever started its workers (the CLI's
local cluster, a user's ``LocalCluster``, dask-jobqueue, ``dask worker --scheduler-file``):
each worker, now and joining later, calls `apply` once. `save_dataset` registers it.
Worker memory stays bounded by the sub-block: what is kept is reused, not added to.
"""

from __future__ import annotations

import ctypes
import ctypes.util

from distributed import WorkerPlugin

#: mallopt(3) parameters (glibc's malloc.h) and the values the workers get: trim the heap
#: only above 256 MiB free at its top; serve requests below 64 MiB from the heap (reused),
#: not from fresh mmaps (returned to the system on free).
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
SETTINGS = {M_TRIM_THRESHOLD: 2**28, M_MMAP_THRESHOLD: 2**26}
PLUGIN = "molmnist-malloc"

#: What `apply` did in this process: {parameter: value} set, or empty (not glibc).
applied: dict = {}


def apply() -> bool:
    """Set `SETTINGS` in this process with glibc's mallopt; False where there is no glibc
    mallopt (macOS, musl): nothing to do there."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    for param, value in SETTINGS.items():
        if mallopt(param, value) == 1:  # mallopt returns 1 on success
            applied[param] = value
    return len(applied) == len(SETTINGS)


class Allocator(WorkerPlugin):
    """Runs `apply` on each worker when it starts (or when the plugin is registered)."""

    name = PLUGIN
    idempotent = True  # registered again (every save): nothing to do

    def setup(self, worker):
        apply()


def register(client) -> None:
    """Make every worker of ``client``'s cluster, present and future, run `apply` (nothing
    without a client). One round trip to the scheduler; nothing when already registered."""
    if client is not None:
        client.register_plugin(Allocator(), name=PLUGIN)
