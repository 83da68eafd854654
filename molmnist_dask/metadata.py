"""The data contract's coordinates and attributes around a plan's arrays.

Files follow CF-1.11 and ACDD-1.3: units UDUNITS parses (a count per pixel is "1", the word
"electrons" is in the long_name), ``axis`` on the image axes, no ``_FillValue`` on coordinates,
``ancillary_variables`` linking the images to their ``orientation``, and the discovery
attributes (title, summary, keywords, references, history, date_created...). Per-frame labels
(`molmnist_dask.labels`) and per-molecule metadata, provenance included
(`molmnist_dask.provenance`), are coordinates, so they follow any selection and survive any
NetCDF round trip.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import xarray as xr

from . import __version__
from . import orientation as orient
from .errors import InputError
from .provenance import command_line, fingerprint, now, resolved
from .sources import frame_labels

if TYPE_CHECKING:
    from .planning import Build as Plan

CONVENTIONS = "CF-1.11, ACDD-1.3"
PAPER = ("Y. Zhang, S. Farrell, M. Crowley, L. Makowski and J. Deslippe, A Molecular-MNIST dataset for "
         "machine learning study on diffraction imaging and microscopy (2020), "
         "https://doi.org/10.48550/arXiv.1911.07644")
KEYWORDS = ("diffraction imaging, coherent diffraction imaging, electron microscopy, X-ray diffraction, "
            "molecular dynamics, projection images, machine learning, benchmark dataset, Molecular-MNIST")
#: Attributes that describe one build, not the dataset (the store's configuration check skips them).
BUILD_ATTRS = ("history", "date_created", "product_version")


def _coord(dims, values, long_name: str, units: str | None = None, **extra) -> tuple:
    attrs = {"long_name": long_name, **({"units": units} if units is not None else {}), **extra}
    return (dims, values, attrs)


def make_dataset(p: Plan, shape, diffraction, lost_atoms, lost_electrons) -> xr.Dataset:
    """The contract's Dataset around four arrays (dask or numpy) laid out as `p` says."""
    g = p.grid
    names = [s.name for s in p.sources]
    image = {"coverage_content_type": "modelResult"}
    if p.options.orientation != "z":  # CF's link from each image to its rotation
        image["ancillary_variables"] = "orientation"
    coords = {
        "molecule": _coord("molecule", np.array(names, dtype=str), "molecule name"),
        "label": _coord("molecule", np.arange(len(names), dtype=np.int64), "class index", "1"),
        "variant": _coord("variant", np.arange(p.frames.shape[1], dtype=np.int64),
                          "structural variant index", "1"),
        "frame": _coord(("molecule", "variant"), p.frames.astype(np.int64),
                        "source frame index in the molecule's trajectory", "1"),
        **frame_label_coords(p),
        **molecule_metadata(p),
        # the images are projections onto the x-y plane: CF's projection coordinates. The
        # reciprocal axes have no standard_name, and an axis without one reads as latitude or
        # longitude to CF tools: none there.
        "y": _coord("y", g.centers, "pixel centre y", "angstrom", axis="Y", standard_name="projection_y_coordinate"),
        "x": _coord("x", g.centers, "pixel centre x", "angstrom", axis="X", standard_name="projection_x_coordinate"),
        "qy": _coord("qy", g.q, "spatial frequency qy (cycles per angstrom)", "angstrom-1"),
        "qx": _coord("qx", g.q, "spatial frequency qx (cycles per angstrom)", "angstrom-1"),
        **_orientation_coords(p),
    }
    data = {
        "shape": (("molecule", "variant", "y", "x"), shape,
                  {"long_name": "projected electron count per pixel (electrons)", "units": "1", **image}),
        "diffraction": (("molecule", "variant", "qy", "qx"), diffraction, {**_diffraction_attrs(p), **image}),
        "lost_atoms": (("molecule", "variant"), lost_atoms,
                       {"long_name": "atoms outside the field of view", "units": "1",
                        "coverage_content_type": "qualityInformation"}),
        "lost_electrons": (("molecule", "variant"), lost_electrons,
                           {"long_name": "electrons outside the field of view (electrons)", "units": "1",
                            "coverage_content_type": "qualityInformation"}),
    }
    ds = xr.Dataset(data, coords=coords, attrs=dataset_attrs(p))
    for c in ds.coords.values():  # CF: no _FillValue on coordinates (xarray adds NaN to floats)
        c.encoding["_FillValue"] = None
    return ds


def frame_label_coords(p: Plan) -> dict:
    """Per-frame labels (`molmnist_dask.labels`) as float64 coordinates along (molecule,
    variant): the known ones first (twist, time), NaN where a molecule lacks a label."""
    from .labels import KNOWN

    per_molecule = [frame_labels(s, i, p.frames[m]) for m, (s, i) in enumerate(zip(p.sources, p.infos))]
    names = [n for n in KNOWN if any(n in labels for labels in per_molecule)]
    names += list(dict.fromkeys(n for labels in per_molecule for n in labels if n not in KNOWN))
    coords = {}
    for name in names:
        values = np.full(p.frames.shape, np.nan)
        first = None
        for m, labels in enumerate(per_molecule):
            label = labels.get(name)
            if label is None:
                continue
            if first is not None and label.units != first.units:
                raise InputError(f"molecule '{p.sources[m].name}': label {name!r} in {label.units}, "
                                 f"but in {first.units} for another molecule ({p.sources[m].labels})")
            first = first or label
            values[m] = label.values
        coords[name] = _coord(("molecule", "variant"), values, first.long_name, first.units)
    return coords


def molecule_metadata(p: Plan) -> dict:
    """Per-molecule metadata as coordinates along ``molecule`` (CF style: they survive any
    NetCDF round trip and follow the molecules when a dataset is sliced), the input files'
    provenance included (`molmnist_dask.provenance`)."""
    infos, sources = p.infos, p.sources
    count = lambda values, name, units="1": (  # noqa: E731
        "molecule", np.array(values, dtype=np.int64), {"long_name": name, "units": units})
    text = lambda values, name: ("molecule", np.array(values, dtype=str), {"long_name": name})  # noqa: E731
    files = lambda s, f: ";".join(f(t) for t in s.trajectory)  # noqa: E731
    return {
        "n_atoms": count([i.n_atoms for i in infos], "selected atoms"),
        "n_electrons": count([i.n_electrons for i in infos], "electrons of the selected atoms"),
        "n_no_element": count([i.n_no_element for i in infos], "selected atoms without an element (weight 0)"),
        "elements_guessed": count([int(i.elements_guessed) for i in infos],
                                  "1 where elements were guessed from atom names"),
        "selection": text([s.selection for s in sources], "MDAnalysis selection of the rendered atoms"),
        "topology": text([s.topology for s in sources], "topology file, as given"),
        "trajectory": text([";".join(s.trajectory) for s in sources], "trajectory files, as given, ';'-separated"),
        "topology_resolved": text([resolved(s.topology) for s in sources], "topology file, absolute path"),
        "trajectory_resolved": text([files(s, resolved) for s in sources],
                                    "trajectory files, absolute paths, ';'-separated"),
        "topology_fingerprint": text([fingerprint(s.topology) for s in sources],
                                     "topology file: size=bytes mtime=UTC blake2b=digest (molmnist_dask.provenance)"),
        "trajectory_fingerprint": text([files(s, fingerprint) for s in sources],
                                       "trajectory files: size=bytes mtime=UTC blake2b=digest, ';'-separated"),
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
    """The diffraction variable's attributes: they say which options made it (a count per
    pixel, units "1"; what it counts is in the long_name)."""
    if p.options.scattering == "form_factors":
        long_name = "far-field diffraction intensity |sum_e f0_e(|q|) FFT2(n_e)|^2 (electrons^2)"
    else:
        long_name = "far-field diffraction intensity |FFT2(shape)|^2 (electrons^2)"
    if p.options.fluence is not None:
        long_name = (f"photon counts, Poisson noise on {long_name} scaled to {p.options.fluence:g} expected "
                     "photons per pattern")
    return {"long_name": long_name, "units": "1"}


def _option_attrs(p: Plan) -> dict:
    """Attributes of the diffraction options, only where they differ from the defaults
    (so default datasets keep exactly the attributes, and store configurations, they had)."""
    attrs = {}
    if p.options.scattering != "electrons":
        from .formfactors import SOURCE

        attrs.update(scattering=p.options.scattering, form_factor_source=SOURCE)
    if p.options.fluence is not None:
        attrs.update(fluence=p.options.fluence, fluence_units="expected photons per pattern",
                     noise="Poisson photon counts; seeded by (noise_seed, molecule, variant)",
                     noise_seed=p.options.noise_seed)
    o = p.options
    if o.orientation != "z":
        attrs.update(orientation=orient.text(o.orientation),
                     orientation_convention=orient.CONVENTION)
        if o.orientation == "random":
            attrs.update(orientation_seed=o.orientation_seed,
                         orientations_per_frame=o.orientations_per_frame)
    return attrs


def variant_attrs(p: Plan) -> dict:
    """How the variants were made, for the built-in cellulose fibrils (``.cellvar`` sources):
    the generator, its seed, twist range and thermal displacements. A value the molecules do
    not share is listed per molecule ("2x2: 0.19; 3x3: 0.25")."""
    cellvar = [(s.name, f) for s in p.sources for f in s.trajectory if f.endswith(".cellvar")]
    if not cellvar:
        return {}
    from .cellulose import virtual

    specs = {name: virtual.read_spec(path) for name, path in cellvar}

    def value(key):
        values = {name: spec[key] for name, spec in specs.items()}
        distinct = set(values.values())
        return distinct.pop() if len(distinct) == 1 else "; ".join(f"{n}: {v}" for n, v in values.items())

    return {
        "variants_generator": "molmnist_dask.cellulose.variants: the relaxed I-beta fibril twisted about "
                              "its axis by variants_twist_min + (variants_twist_max - variants_twist_min) "
                              "* v / (V - 1) degree/nm, plus Gaussian displacements of each chain "
                              "(variants_chain_sigma) and atom (variants_atom_sigma), seeded by "
                              "(variants_seed, molecule, variant)",
        "variants_generator_version": int(virtual.VERSION),
        "variants_seed": value("seed"),
        "variants_twist_min": 0.0,
        "variants_twist_max": value("twist_max"),
        "variants_twist_units": "degree/nm",
        "variants_atom_sigma": value("atom_sigma"),
        "variants_chain_sigma": value("chain_sigma"),
        "variants_sigma_units": "angstrom (RMS per axis)",
        "variants_residues": value("residues"),
    }


def dataset_attrs(p: Plan) -> dict:
    """Attributes: CF and ACDD discovery attributes, grid, centring, electron source, options,
    version, how variants were made (per-molecule metadata are coordinates along ``molecule``:
    `molecule_metadata`). ``history`` and ``date_created`` describe this build (`BUILD_ATTRS`)."""
    created = getattr(p, "created", None) or now()
    return {
        "title": "molmnist-dask shape images and diffraction patterns",
        "summary": "Projected electron-count images (shape) of molecular dynamics frames and their "
                   "far-field diffraction patterns (diffraction), one per molecule and structural "
                   "variant, rendered by molmnist_dask from the trajectories named in the topology "
                   "and trajectory coordinates; a Molecular-MNIST style benchmark for machine "
                   "learning in diffraction imaging and microscopy.",
        "keywords": KEYWORDS,
        "Conventions": CONVENTIONS,
        "references": PAPER,
        "source": f"molmnist_dask {__version__}",
        "history": f"{created} molmnist_dask {__version__}: {command_line()}",
        "date_created": created,
        "product_version": __version__,
        "comment": "shape[y, x] is the histogram of the centred atoms' (y, x) positions weighted by "
                   "their atomic numbers; diffraction is fftshift(|fft2(shape)|^2) (see the "
                   "variables' long_name); per-frame labels (twist, time) are coordinates along "
                   "(molecule, variant), the inputs' provenance coordinates along molecule.",
        "standard_name_vocabulary": "CF Standard Name Table",
        "processing_level": "simulation: rendered from molecular dynamics (or generated) atomic coordinates",
        "molmnist_dask_version": __version__,
        **p.grid.attrs(),
        "projection_axis": "z",
        "center": str(p.options.center),
        "electron_source": "atomic number of each atom's element (MDAnalysis.guesser.tables.SYMB2Z); "
                           "topology elements, guessed from atom names where absent; 0 for no element",
        "block_size": int(max(p.block_sizes)),
        **variant_attrs(p),
        **_option_attrs(p),
    }
