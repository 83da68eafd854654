"""Lazy slicing: open a saved dataset with plain xarray and read some variants, and only those.

    python examples/lazy_slicing.py STORE [MOLECULE]     # e.g. molecular-mnist 4x4

``xr.open_dataset(store)`` (this package's xarray backend) reads only the index; indexing the
images reads just the images asked for, from the part files that hold them. This script counts
the images read and the part files touched.
"""

import sys

import numpy as np
import xarray as xr

from molmnist_dask.store import backend


def main(store, molecule=None, variants=slice(0, None, 10)):
    ds = xr.open_dataset(store)  # lazy: nothing but the index is read
    molecule = molecule or str(ds.molecule.values[0])
    print(f"{store}: {ds.sizes['molecule']} molecules x {ds.sizes['variant']} variants; "
          f"diffraction {ds.diffraction.nbytes / 2**20:.0f} MiB (float32, uncompressed), unread")
    sub = ds.diffraction.sel(molecule=molecule).isel(variant=variants)

    # count what is read: wrap the part files' array, which reads each molecule's variants at once
    reads, touched = [], set()
    original = backend.PartsArray._molecule

    def counting(self, m, variants, ky, kx):
        reads.append(len(variants))  # images in this read
        for p in np.unique(np.searchsorted(self.starts[m], variants, side="right") - 1):
            touched.add(self.parts[m][p].name)
        return original(self, m, variants, ky, kx)

    backend.PartsArray._molecule = counting
    try:
        values = sub.values
    finally:
        backend.PartsArray._molecule = original
    print(f"molecule {molecule!r}, variants {sub.variant.values.tolist()[:5]}...: read {sum(reads)} images "
          f"({values.nbytes / 2**20:.2f} MiB) from {len(touched)} part file(s): {', '.join(sorted(touched))}")
    print(f"mean log10 intensity of the first variants: {np.round(np.log10(values.mean(axis=(1, 2)))[:5], 3)}")


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    main(*sys.argv[1:3])
