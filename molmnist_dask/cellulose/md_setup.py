"""An OpenMM system of one fibril: GLYCAM06j-1 in vacuum, implicit (OBC2) or explicit (TIP3P) water.

Implicit solvent goes through OpenMM's native `GBSAOBCForce`, which is the OBC2 model
(Onufriev, Bashford & Case 2004), with Amber's mbondi2 radii and OBC screening factors. OpenMM's
generic implicit-solvent XML files (``implicit/obc2.xml``) compute the same through a
CustomGBForce, some hundred times slower here.

Explicit solvent is a rectangular TIP3P box (`WATER_PADDING` around the fibril) with PME and a
1 nm cutoff, at 1 bar through a Monte Carlo barostat: the paper's "water buffer", for GPUs.
"""

from __future__ import annotations

import zlib

import numpy as np

from ..errors import InputError
from .fibril import Fibril
from .forcefield import forcefield, prepare, require_openmm

SOLVENTS = ("implicit", "vacuum", "explicit")
PLATFORMS = ("auto", "CPU", "CUDA", "OpenCL")
MBONDI2 = {"H": 0.12, "C": 0.17, "N": 0.155, "O": 0.15}     # nm (Amber's mbondi2; H on N: 0.13)
OBC_SCREEN = {"H": 0.85, "C": 0.72, "N": 0.79, "O": 0.85}
WATER_PADDING = 1.2       # nm of water on every side of the fibril
CUTOFF = 1.0              # nm, explicit solvent
FRICTION = 1.0            # 1/ps, Langevin


def check_platform(name: str) -> str:
    """The OpenMM platform to use for ``name`` (`PLATFORMS`); InputError naming --platform if
    it is not available here.

    ``auto`` takes the first of CUDA, OpenCL and CPU that can make a context here.
    """
    require_openmm()
    if name not in PLATFORMS:
        raise InputError(f"--platform must be one of {', '.join(PLATFORMS)}, got {name!r}")
    for candidate in (("CUDA", "OpenCL", "CPU") if name == "auto" else (name,)):
        problem = _platform_problem(candidate)
        if problem is None:
            return candidate
    raise InputError(f"--platform {name}: not available here ({problem})")


def _platform_problem(name: str):
    """None if a context on platform ``name`` can be made, else why not (one line)."""
    import openmm

    try:
        platform = openmm.Platform.getPlatformByName(name)
        system = openmm.System()
        system.addParticle(1.0)
        openmm.Context(system, openmm.VerletIntegrator(0.001), platform)
    except Exception as err:   # OpenMMException: no such platform, no device, no driver
        return " ".join(str(err).split())[:160] or type(err).__name__
    return None


def platform_properties(name: str, threads: int | None = None) -> dict:
    """Mixed precision on GPUs; ``threads`` CPU threads (None: OpenMM's default, all cores)."""
    if name in ("CUDA", "OpenCL"):
        return {"Precision": "mixed"}
    if name == "CPU" and threads:
        return {"Threads": str(int(threads))}
    return {}


def make_system(fibril: Fibril, solvent: str, temperature: float):
    """The OpenMM system of a fibril: ``(system, topology, positions_nm, prepared)``.

    In explicit solvent the topology and positions include the water, after the fibril's atoms;
    the fibril's atoms come first in every case, in `Prepared.order`.
    """
    require_openmm()
    import openmm
    from openmm import app, unit

    if solvent not in SOLVENTS:
        raise InputError(f"--solvent must be one of {', '.join(SOLVENTS)}, got {solvent!r}")
    prepared = prepare(fibril)
    topology, positions = prepared.topology, prepared.positions
    if solvent == "explicit":
        ff = forcefield("amber14/tip3p.xml")
        modeller = app.Modeller(topology, positions * unit.nanometer)
        size = np.ptp(positions, axis=0) + 2 * WATER_PADDING
        modeller.addSolvent(ff, model="tip3p", boxSize=openmm.Vec3(*size) * unit.nanometer)
        topology = modeller.topology
        positions = np.array(modeller.positions.value_in_unit(unit.nanometer))
        system = ff.createSystem(topology, nonbondedMethod=app.PME, nonbondedCutoff=CUTOFF * unit.nanometer,
                                 constraints=app.HBonds, rigidWater=True)
        system.addForce(openmm.MonteCarloBarostat(1.0 * unit.bar, temperature * unit.kelvin))
    else:
        ff = forcefield()
        system = ff.createSystem(topology, nonbondedMethod=app.NoCutoff, constraints=app.HBonds)
        if solvent == "implicit":
            system.addForce(obc2_force(system, topology))
    return system, topology, positions, prepared


def obc2_force(system, topology):
    """A native `GBSAOBCForce` (OBC2) for every particle: the system's charges, mbondi2 radii
    and OBC screening factors, no cutoff."""
    import openmm

    nonbonded = next(f for f in system.getForces() if isinstance(f, openmm.NonbondedForce))
    gb = openmm.GBSAOBCForce()
    gb.setNonbondedMethod(openmm.GBSAOBCForce.NoCutoff)
    gb.setSoluteDielectric(1.0)
    gb.setSolventDielectric(78.5)
    on_nitrogen = {a.index for b in topology.bonds() for a, o in (b, b[::-1])
                   if a.element.symbol == "H" and o.element.symbol == "N"}
    for atom in topology.atoms():
        symbol = atom.element.symbol
        if symbol not in MBONDI2:
            raise InputError(f"no implicit-solvent radius for element {symbol} (atom {atom.name})")
        radius = 0.13 if atom.index in on_nitrogen else MBONDI2[symbol]
        charge = nonbonded.getParticleParameters(atom.index)[0]
        gb.addParticle(charge, radius, OBC_SCREEN[symbol])
    return gb


def random_seed(seed: int, name: str) -> int:
    """The integrator's seed for one fibril: from (seed, name), never 0 (OpenMM: 'pick one')."""
    return (zlib.crc32(f"{seed}:{name}".encode()) % (2**31 - 1)) + 1


def make_simulation(fibril: Fibril, *, solvent: str, platform: str, temperature: float,
                    timestep: float, seed: int, threads: int | None = None):
    """An OpenMM `Simulation` of the fibril, at its built positions; and its `Prepared`.

    ``timestep`` in fs, ``temperature`` in K; a Langevin (middle) integrator with bonds to
    hydrogen constrained.
    """
    require_openmm()
    import openmm
    from openmm import app, unit

    system, topology, positions, prepared = make_system(fibril, solvent, temperature)
    integrator = openmm.LangevinMiddleIntegrator(temperature * unit.kelvin, FRICTION / unit.picosecond,
                                                 timestep * unit.femtosecond)
    integrator.setRandomNumberSeed(random_seed(seed, fibril.name))
    simulation = app.Simulation(topology, system, integrator,
                                openmm.Platform.getPlatformByName(platform),
                                platform_properties(platform, threads))
    simulation.context.setPositions(positions * unit.nanometer)
    return simulation, prepared
