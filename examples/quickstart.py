"""Quickstart: build a dataset from an MD trajectory, save it, open it lazily, look at it.

    python examples/quickstart.py [OUT]        # OUT defaults to adk-store

Uses the adenylate kinase (adk) trajectory that ships with MDAnalysisTests
(pip install MDAnalysisTests): 3341 atoms, 98 frames of a closed -> open transition.
"""

import sys

import molmnist_dask as mm
from MDAnalysisTests.datafiles import DCD, PSF


def main(out="adk-store"):
    # one source per molecule: topology, trajectory, selection (paths only; nothing is read yet
    # beyond a quick check)
    src = mm.TrajectorySource("adk", PSF, DCD, selection="protein")
    ds = mm.build_dataset([src], size=128, extent=80.0, variants=20)  # lazy: a dask graph
    print(ds)

    mm.save_dataset(ds, out)  # rendered block by block, each block written by its worker
    ds = mm.open_dataset(out)  # lazy again: nothing read until indexed
    print(ds)

    image = ds.shape.sel(molecule="adk", variant=5).values  # reads one image
    pattern = ds.diffraction.sel(molecule="adk", variant=5)
    print(f"variant 5: {image.sum():.0f} electrons in view "
          f"(of {int(ds.n_electrons.sel(molecule='adk'))}), "
          f"{int(ds.lost_atoms.sel(molecule='adk', variant=5))} atoms outside it")
    print(f"diffraction at q = 0: {float(pattern.sel(qx=0, qy=0)):.4g} electrons^2 "
          f"(= the electrons in view, squared)")
    print(f"pixel {ds.attrs['pixel_size']:.3f} A; q from {float(ds.qx.min()):.3f} to "
          f"{float(ds.qx.max()):.3f} cycles/A")


if __name__ == "__main__":
    main(*sys.argv[1:])
