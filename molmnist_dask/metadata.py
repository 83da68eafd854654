"""The data contract's coordinates and attributes around a plan's arrays (CF conventions)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import xarray as xr

from . import __version__
from . import orientation as orient

if TYPE_CHECKING:
    from .dataset import Plan


def make_dataset(p: Plan, shape, diffraction, lost_atoms, lost_electrons) -> xr.Dataset:
    """The contract's Dataset around four arrays (dask or numpy) laid out as `p` says."""
    g = p.grid
    names = [s.name for s in p.sources]
    coords = {
        "molecule": ("molecule", np.array(names, dtype=str), {"long_name": "molecule name"}),
        "label": ("molecule", np.arange(len(names), dtype=np.int64),
                  {"long_name": "class index", "units": "1"}),
        "variant": ("variant", np.arange(p.frames.shape[1], dtype=np.int64),
                    {"long_name": "structural variant index", "units": "1"}),
        "frame": (("molecule", "variant"), p.frames.astype(np.int64),
                  {"long_name": "source frame index in the molecule's trajectory", "units": "1"}),
        **molecule_metadata(p),
        "y": ("y", g.centers, {"long_name": "pixel centre y", "units": "angstrom"}),
        "x": ("x", g.centers, {"long_name": "pixel centre x", "units": "angstrom"}),
        "qy": ("qy", g.q, {"long_name": "spatial frequency qy (cycles per angstrom)",
                           "units": "angstrom-1"}),
        "qx": ("qx", g.q, {"long_name": "spatial frequency qx (cycles per angstrom)",
                           "units": "angstrom-1"}),
        **_orientation_coords(p),
    }
    data = {
        "shape": (("molecule", "variant", "y", "x"), shape,
                  {"long_name": "projected electron count per pixel", "units": "electrons"}),
        "diffraction": (("molecule", "variant", "qy", "qx"), diffraction, _diffraction_attrs(p)),
        "lost_atoms": (("molecule", "variant"), lost_atoms,
                       {"long_name": "atoms outside the field of view", "units": "1"}),
        "lost_electrons": (("molecule", "variant"), lost_electrons,
                           {"long_name": "electrons outside the field of view", "units": "electrons"}),
    }
    return xr.Dataset(data, coords=coords, attrs=dataset_attrs(p))


def molecule_metadata(p: Plan) -> dict:
    """Per-molecule metadata as coordinates along ``molecule`` (CF style: they survive any
    NetCDF round trip and follow the molecules when a dataset is sliced)."""
    infos, sources = p.infos, p.sources
    count = lambda values, name, units="1": (  # noqa: E731
        "molecule", np.array(values, dtype=np.int64), {"long_name": name, "units": units})
    text = lambda values, name: ("molecule", np.array(values, dtype=str), {"long_name": name})  # noqa: E731
    return {
        "n_atoms": count([i.n_atoms for i in infos], "selected atoms"),
        "n_electrons": count([i.n_electrons for i in infos], "electrons of the selected atoms", "electrons"),
        "n_no_element": count([i.n_no_element for i in infos], "selected atoms without an element (weight 0)"),
        "elements_guessed": count([int(i.elements_guessed) for i in infos],
                                  "1 where elements were guessed from atom names"),
        "selection": text([s.selection for s in sources], "MDAnalysis selection of the rendered atoms"),
        "topology": text([s.topology for s in sources], "topology file"),
        "trajectory": text([";".join(s.trajectory) for s in sources], "trajectory files, ';'-separated"),
    }


def _orientation_coords(p: Plan) -> dict:
    """The ``orientation`` coordinate (molecule, variant, quaternion), unless orientation is "z"
    (default datasets keep exactly the coordinates they had)."""
    o = p.options
    if o.orientation == "z":
        return {}
    variants = np.arange(p.frames.shape[1])
    q = np.stack([orient.quaternions(o.orientation, o.orientation_seed, s.name, variants)
                  for s in p.sources])
    attrs = {"long_name": "orientation: " + orient.CONVENTION, "units": "1",
             "convention": "scalar-last (x, y, z, w); active rotation; image = projection along z "
                           "of R @ (positions - centre)"}
    return {"orientation": (("molecule", "variant", "quaternion"), q, attrs),
            "quaternion": ("quaternion", np.array(["x", "y", "z", "w"]),
                           {"long_name": "quaternion component (scalar last)"})}


def _diffraction_attrs(p: Plan) -> dict:
    """The diffraction variable's attributes: they say which options made it."""
    if p.scattering == "form_factors":
        attrs = {"long_name": "far-field diffraction intensity |sum_e f0_e(|q|) FFT2(n_e)|^2",
                 "units": "electrons^2"}
    else:
        attrs = {"long_name": "far-field diffraction intensity |FFT2(shape)|^2", "units": "electrons^2"}
    if p.fluence is not None:
        attrs = {"long_name": f"photon counts, Poisson noise on {attrs['long_name']} scaled to "
                              f"{p.fluence:g} expected photons per pattern", "units": "photons"}
    return attrs


def _option_attrs(p: Plan) -> dict:
    """Attributes of the diffraction options, only where they differ from the defaults
    (so default datasets keep exactly the attributes, and store configurations, they had)."""
    attrs = {}
    if p.scattering != "electrons":
        from .formfactors import SOURCE

        attrs.update(scattering=p.scattering, form_factor_source=SOURCE)
    if p.fluence is not None:
        attrs.update(fluence=p.fluence, fluence_units="expected photons per pattern",
                     noise="Poisson photon counts; seeded by (noise_seed, molecule, variant)",
                     noise_seed=p.noise_seed)
    o = p.options
    if o.orientation != "z":
        attrs.update(orientation=orient.text(o.orientation),
                     orientation_convention=orient.CONVENTION)
        if o.orientation == "random":
            attrs.update(orientation_seed=o.orientation_seed,
                         orientations_per_frame=o.orientations_per_frame)
    return attrs


def dataset_attrs(p: Plan) -> dict:
    """Attributes: grid, centring, electron source, options, version (per-molecule metadata are
    coordinates along ``molecule``: `molecule_metadata`)."""
    return {
        "title": "molmnist-dask shape images and diffraction patterns",
        "Conventions": "CF-1.8",
        "source": f"molmnist_dask {__version__}",
        "molmnist_dask_version": __version__,
        **p.grid.attrs(),
        "projection_axis": "z",
        "center": str(p.center),
        "electron_source": "atomic number of each atom's element (MDAnalysis.guesser.tables.SYMB2Z); "
                           "topology elements, guessed from atom names where absent; 0 for no element",
        "block_size": int(max(p.block_sizes)),
        **_option_attrs(p),
    }
