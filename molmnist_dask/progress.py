"""Computing a list of delayed tasks with a progress bar, on whatever scheduler is active."""

from __future__ import annotations

import dask
from dask.callbacks import Callback


def active_client():
    """The `distributed.Client` in use in this session, or None."""
    try:
        from distributed import get_client

        return get_client()
    except (ImportError, ValueError):
        return None


def compute_with_progress(tasks, *, progress: bool = True, desc: str = "", local: bool = False,
                          weights=None, unit: str = "task") -> list:
    """Compute delayed ``tasks``; their results are small, so gathering them is cheap.

    With a distributed client the tasks run on the cluster and the bar advances as each one
    finishes; otherwise dask's local scheduler runs them.

    Parameters
    ----------
    tasks : list of dask.delayed.Delayed
    progress : bool
        Show a bar.
    desc : str
        The bar's label.
    local : bool
        Run on dask's local scheduler even when a client is active.
    weights : sequence of int, optional
        What each task counts for on the bar (the frames of a part, say); one each by default.
    unit : str
        What the bar counts ("frame"): its total is the sum of ``weights``.

    Returns
    -------
    list
        The tasks' results, in the order of ``tasks``.
    """
    from tqdm.auto import tqdm

    weights = [1] * len(tasks) if weights is None else [int(w) for w in weights]
    if len(weights) != len(tasks):
        raise ValueError(f"{len(weights)} weights for {len(tasks)} tasks")
    bar = dict(total=sum(weights), desc=desc, unit=unit, disable=not progress, mininterval=0.5)
    client = None if local else active_client()
    if client is None:
        with tqdm(**bar) as tq, _Advance({t.key: w for t, w in zip(tasks, weights)}, tq.update):
            return list(dask.compute(*tasks))
    from distributed import as_completed

    futures = client.compute(tasks)
    weight = {f.key: w for f, w in zip(futures, weights)}
    done = {}
    try:
        with tqdm(**bar) as tq:
            for future in as_completed(futures):
                done[future.key] = future.result()
                tq.update(weight[future.key])
    finally:
        client.cancel(futures)
    return [done[f.key] for f in futures]


class _Advance(Callback):
    """A local-scheduler callback that advances a bar by each finished task's weight."""

    def __init__(self, weights: dict, update):
        super().__init__()
        self._weights = weights
        self._update = update

    def _posttask(self, key, result, dsk, state, worker_id):
        weight = self._weights.get(key)
        if weight:
            self._update(weight)
