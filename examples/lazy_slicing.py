"""Lazy slicing: open a saved dataset and read one molecule's variants, and only those.

    python examples/lazy_slicing.py STORE [MOLECULE]     # e.g. molecular-mnist 4x4

`molmnist_dask.open_dataset` (or plain ``xr.open_dataset(STORE, chunks={})``) wraps the
store's part files in dask arrays with one chunk per image; indexing builds a graph over just
the chunks asked for, and computing it reads only those images. This script counts both.
"""

import sys

import numpy as np

import molmnist_dask as mm
from molmnist_dask.store import backend


def main(store, molecule=None, variants=slice(0, None, 10)):
    ds = mm.open_dataset(store)
    molecule = molecule or str(ds.molecule.values[0])
    total = ds.diffraction.data.npartitions
    print(f"{store}: {ds.sizes['molecule']} molecules x {ds.sizes['variant']} variants; "
          f"diffraction {ds.diffraction.nbytes / 2**20:.0f} MiB in {total} chunks (one per image)")

    sub = ds.diffraction.sel(molecule=molecule).isel(variant=variants)
    print(f"selection: molecule {molecule!r}, variants {sub.variant.values.tolist()}: "
          f"{sub.data.npartitions} chunks of {total}")

    # count what is read: wrap the store backend's reads of the part files
    reads = []
    original = backend.PartsArray._read

    def counting(self, key):
        out = original(self, key)
        reads.append(out.size // (out.shape[-2] * out.shape[-1]))  # images in this read
        return out

    backend.PartsArray._read = counting
    try:
        values = sub.values
    finally:
        backend.PartsArray._read = original
    print(f"read {sum(reads)} images ({values.nbytes / 2**20:.2f} MiB) of {ds.sizes['molecule'] * ds.sizes['variant']}")
    print(f"mean log10 intensity per variant: {np.round(np.log10(values.mean(axis=(1, 2))), 3)}")


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    main(*sys.argv[1:3])
