"""Computing a list of delayed tasks with a progress bar, on whatever scheduler is active."""

from __future__ import annotations

import dask


def active_client():
    """The `distributed.Client` in use in this session, or None."""
    try:
        from distributed import get_client

        return get_client()
    except (ImportError, ValueError):
        return None


def compute_with_progress(tasks, *, progress: bool = True, desc: str = "", local: bool = False) -> list:
    """Compute delayed ``tasks``; their results are small, so gathering them is cheap.

    With a distributed client the tasks run on the cluster and the bar advances as each one
    finishes; otherwise dask's local scheduler runs them under a tqdm callback.
    """
    from tqdm.auto import tqdm

    client = None if local else active_client()
    if client is None:
        if not progress:
            return list(dask.compute(*tasks))
        from tqdm.dask import TqdmCallback

        with TqdmCallback(desc=desc, mininterval=0.5):
            return list(dask.compute(*tasks))
    from distributed import as_completed

    futures = client.compute(tasks)
    results = []
    try:
        for future in tqdm(as_completed(futures), total=len(futures), desc=desc,
                           disable=not progress, mininterval=0.5):
            results.append(future.result())
    finally:
        client.cancel(futures)
    return results
