"""Deterministic train/validation/test splits of (molecule, variant) items.

Neighbouring variants of a molecule are nearly identical (a small step in twist, fresh thermal
noise), so holding out scattered variants leaks: the nearest training pattern is almost the
answer. The default holds out *contiguous ranges* of the variant (twist) axis; holding out
whole molecules is the harder test. The interleaved split is kept, as ``by="random"``, only to
show the leak.
"""

from __future__ import annotations

import numpy as np

from ..errors import InputError
from ..validate import positive_int

BY = ("variant", "molecule", "random")
STRIPES = 10


def _counts(fractions, n: int, what: str) -> np.ndarray:
    """Units per split: rounded fractions of ``n``, at least one for a non-zero fraction."""
    f = np.asarray(fractions, dtype=np.float64)
    if f.shape != (3,) or (f < 0).any() or not f.sum() > 0:
        raise InputError(f"fractions must be three non-negative numbers (train, val, test), got {fractions!r}")
    f = f / f.sum()
    counts = np.floor(f * n + 0.5).astype(int)
    counts[(f > 0) & (counts == 0)] = 1
    counts[0] = n - counts[1:].sum()
    if counts[0] < (1 if f[0] > 0 else 0):
        raise InputError(f"cannot split {n} {what} into fractions {tuple(fractions)}")
    return counts


def _pairs(molecules, variants) -> np.ndarray:
    m, v = np.meshgrid(np.asarray(molecules), np.asarray(variants), indexing="ij")
    return np.stack([m.ravel(), v.ravel()], axis=1).astype(np.int64)


def split_items(n_molecules: int, n_variants: int, *, by: str = "variant",
                fractions=(0.8, 0.1, 0.1), seed: int = 0, stripes: int = STRIPES) -> dict:
    """Deterministic train/val/test split of (molecule, variant) pairs.

    Parameters
    ----------
    n_molecules, n_variants : int
    by : {"variant", "molecule", "random"}
        ``"variant"``: the variant axis is cut into ``stripes`` contiguous ranges and whole
        ranges are held out (the same for every molecule), so no held-out item has a training
        neighbour except at a range's two ends. ``"molecule"``: whole molecules are held out.
        ``"random"``: scattered single variants are held out (leaks; for comparison only).
    fractions : (float, float, float)
        Train, validation and test fractions (normalised to sum 1) of the ranges, molecules
        or variants. A non-zero fraction gets at least one.
    seed : int
        Seed of the permutation that assigns ranges, molecules or variants to splits.
    stripes : int
        Contiguous ranges of the variant axis for ``by="variant"`` (at most ``n_variants``).

    Returns
    -------
    dict
        ``{"train": items, "val": items, "test": items, "all": items}``, each an int64 array of
        (molecule, variant) rows sorted by molecule then variant.
    """
    if by not in BY:
        raise InputError(f"by must be one of {', '.join(map(repr, BY))}, got {by!r}")
    if by == "variant":
        positive_int("stripes", stripes)
        units = np.array_split(np.arange(n_variants), min(int(stripes), n_variants))
        what = "variant ranges"
    else:
        n = n_molecules if by == "molecule" else n_variants
        units = [np.array([i]) for i in range(n)]
        what = f"{by}s" if by == "molecule" else "variants"
    counts = _counts(fractions, len(units), what)
    order = np.random.default_rng(seed).permutation(len(units))
    out = {}
    for name, group in zip(("train", "val", "test"), np.split(order, np.cumsum(counts)[:-1])):
        chosen = np.sort(np.concatenate([units[g] for g in group])) if len(group) else np.zeros(0, int)
        if by == "molecule":
            out[name] = _pairs(chosen, np.arange(n_variants))
        else:
            out[name] = _pairs(np.arange(n_molecules), chosen)
    out["all"] = _pairs(np.arange(n_molecules), np.arange(n_variants))
    return out
