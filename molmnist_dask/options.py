"""Build options, typed and validated once: `BuildOptions`.

`BuildOptions` holds every option that changes what a build computes (grid, centring,
scattering, noise, frames taken). The run-file loader, the CLI and the Python API all make
one, and it is carried unchanged into the plan, the graph tokens, the dataset attributes and
the store's configuration check. (The package's settings, which change how a build is cut
into tasks but never a byte of its output, are `molmnist_dask.settings`.)
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from .errors import InputError
from .validate import non_negative_int, one_of, positive_float, positive_int

CENTERS = ("geometry", "electrons", None)
SCATTERING = ("electrons", "form_factors")


@dataclass(frozen=True)
class BuildOptions:
    """Every option of a build; validated when made, immutable after.

    Parameters
    ----------
    size : int
        Pixels per side of the shape image.
    extent : float, optional
        Field of view in angstrom; None: the planner picks one that holds every molecule's
        first frame with margin.
    oversampling : int
        Zero-pad shapes to ``oversampling * size`` before the transform.
    center : {"geometry", "electrons", None}
        Subtract each frame's centre of geometry, of electrons, or nothing.
    scattering : {"electrons", "form_factors"}
        What each atom scatters in the pattern: its electron count Z, or its X-ray form
        factor f0(|q|).
    fluence : float, optional
        Poisson photon counts with this expected total per pattern; None: noise-free.
    noise_seed : int
        Seed of the photon noise, per (seed, molecule, variant).
    variants : int, optional
        Frames taken per molecule, evenly spread; None: every frame of the range.
    block_size : int, optional
        Frames per chunk of the lazy dataset; None: automatic (about 32 MiB a chunk).
    orientation : {"z", "x", "y", "random"} or 3-vector
        How each molecule is turned before it is projected along z (`molmnist_dask.orientation`):
        not at all (``"z"``), viewed along a fixed direction (``"x"``, ``"y"``, a vector or
        its text ``"1,0,0"``), or a uniformly random rotation per (seed, molecule, variant).
    orientation_seed : int
        Seed of the ``"random"`` orientations.
    orientations_per_frame : int
        K random orientations of each frame taken (``orientation="random"`` only): the
        molecule's variants are then its frames x K, each frame's K images in a row.

    Examples
    --------
    >>> BuildOptions(size=64).replace(extent=80.0).extent
    80.0
    """

    size: int = 200
    extent: float | None = None
    oversampling: int = 1
    center: str | None = "geometry"
    scattering: str = "electrons"
    fluence: float | None = None
    noise_seed: int = 0
    variants: int | None = None
    block_size: int | None = None
    orientation: str | tuple = "z"
    orientation_seed: int = 0
    orientations_per_frame: int = 1

    def __post_init__(self):
        fix = lambda k, v: object.__setattr__(self, k, v)  # noqa: E731 (frozen dataclass)
        fix("size", positive_int("size", self.size))
        if self.extent is not None:
            fix("extent", positive_float("extent", self.extent, "angstrom"))
        fix("oversampling", positive_int("oversampling", self.oversampling))
        one_of("center", self.center, CENTERS)
        one_of("scattering", self.scattering, SCATTERING)
        if self.fluence is not None:
            fix("fluence", positive_float("fluence", self.fluence, "photons per pattern"))
        fix("noise_seed", non_negative_int("noise_seed", self.noise_seed))
        fix("variants", positive_int("variants", self.variants, optional=True))
        fix("block_size", positive_int("block_size", self.block_size, optional=True))
        self._check_orientation(fix)

    def _check_orientation(self, fix) -> None:
        from .orientation import parse

        fix("orientation", parse(self.orientation))
        fix("orientation_seed", non_negative_int("orientation_seed", self.orientation_seed))
        k = positive_int("orientations_per_frame", self.orientations_per_frame)
        if k > 1 and self.orientation != "random":
            raise InputError(f"orientations_per_frame = {k} needs orientation='random' "
                             f"(a fixed orientation gives the same image {k} times)")
        fix("orientations_per_frame", k)

    @classmethod
    def make(cls, options: "BuildOptions | dict | None" = None, **changes) -> "BuildOptions":
        """Options from an existing `BuildOptions` or a mapping, with ``changes`` on top.

        Unknown names are an InputError naming them; ``changes`` whose value is None are
        ignored only for ``extent``/``variants``/``block_size``/``fluence`` if not given
        explicitly (they mean "automatic" or "none" anyway).
        """
        if options is None:
            options = cls()
        elif isinstance(options, dict):
            options = cls.from_mapping(options)
        elif not isinstance(options, cls):
            raise InputError(f"options must be a BuildOptions or a dict, got {type(options).__name__}")
        return options.replace(**changes) if changes else options

    @classmethod
    def from_mapping(cls, values: dict, where: str = "") -> "BuildOptions":
        """Options from a mapping of names; an unknown name is an InputError naming it."""
        names = cls.names()
        for key in values:
            if key not in names:
                prefix = f"{where}: " if where else ""
                raise InputError(f"{prefix}unknown option '{key}' (allowed: {', '.join(names)})")
        return cls(**values)

    @classmethod
    def names(cls) -> tuple:
        """The option names, in order."""
        return tuple(f.name for f in dataclasses.fields(cls))

    def replace(self, **changes) -> "BuildOptions":
        """A copy with ``changes``, validated; an unknown name is an InputError."""
        unknown = sorted(set(changes) - set(self.names()))
        if unknown:
            raise InputError(f"unknown option '{unknown[0]}' (allowed: {', '.join(self.names())})")
        return dataclasses.replace(self, **changes)

    def non_default(self) -> dict:
        """The options that differ from the defaults (graph tokens and attributes use them, so
        that default builds keep the keys and attributes they always had)."""
        default = BuildOptions()
        return {k: getattr(self, k) for k in self.names() if getattr(self, k) != getattr(default, k)}

    def render_options(self) -> dict:
        """What the kernel needs beyond the grid and centre (only non-defaults)."""
        out = {}
        if self.scattering != "electrons":
            out["scattering"] = self.scattering
        if self.fluence is not None:
            out.update(fluence=self.fluence, noise_seed=self.noise_seed)
        if self.orientation != "z":
            out["orientation"] = self.orientation
            if self.orientation == "random":
                out["orientation_seed"] = self.orientation_seed
        return out

    def __dask_tokenize__(self):
        # only what differs from the defaults: graph keys stay the same when options are added
        return ("BuildOptions", sorted(self.non_default().items(), key=str))

    def keys(self) -> tuple:
        """The option names: ``build_dataset(sources, **options)`` works too."""
        return self.names()

    def __getitem__(self, name: str):
        """``options["size"]``, as a run file names it."""
        if name not in self.names():
            raise KeyError(name)
        return getattr(self, name)

    def asdict(self) -> dict:
        """Every option by name."""
        return {k: getattr(self, k) for k in self.names()}
