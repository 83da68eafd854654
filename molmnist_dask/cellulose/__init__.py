"""The paper's molecules: cellulose I-beta microfibrils and their structural variants.

The seed paper's CHARMM trajectories of ten I-beta microfibrils are not distributed, so this
subpackage makes stand-ins: atomistic fibrils (hydrogens included) cut from the deposited
crystal structure, and per fibril a trajectory of structural variants, from straight to the
most twisted, with thermal displacement.

    from molmnist_dask.cellulose import synthesize
    run_file = synthesize("fibrils", variants=100)     # 2x2.pdb, 2x2.dcd, ..., run.toml

Modules: `crystal` (unit cell and residue templates), `profiles` (the ten cross-sections),
`fibril` (one relaxed fibril as arrays), `variants` (twist and thermal displacement),
`files` (PDB/DCD through MDAnalysis), `synth` (the output folder and its run file),
`virtual` (the variants as an MDAnalysis format, ``NAME.cellvar``, made on demand: what the
default build reads; importing this package registers it with MDAnalysis).
"""

from .fibril import RESIDUES, Fibril, build_fibril
from .profiles import MOLECULES, chain_sites, label, rows
from .synth import DEFAULT_EXTENT, DEFAULT_VARIANTS, default_run, synthesize
from .virtual import write_sources
from .variants import ATOM_SIGMA, CHAIN_SIGMA, TWIST_MAX, twist, twist_rate, variant_positions

__all__ = [
    "MOLECULES", "RESIDUES", "DEFAULT_VARIANTS", "DEFAULT_EXTENT", "TWIST_MAX", "ATOM_SIGMA",
    "CHAIN_SIGMA", "Fibril", "build_fibril", "rows", "label", "chain_sites", "twist",
    "twist_rate", "variant_positions", "synthesize", "default_run", "write_sources",
]
