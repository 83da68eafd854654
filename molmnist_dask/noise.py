"""Poisson photon noise on diffraction patterns, reproducible per (seed, molecule, variant).

``fluence`` is the expected number of photons in a whole pattern: pixel ``p`` of a pattern
``I`` receives ``Poisson(fluence * I[p] / sum(I))`` photons, so the noisy pattern is in photon
counts and its total is ``fluence`` on average. (A detector seeing a fixed incident fluence
in photons per area would give larger molecules more photons; a fixed total per pattern keeps
the signal-to-noise comparable across molecules and is how simulated CDI sets are usually
quoted.)

Each pattern draws from its own generator, seeded by ``(noise_seed, molecule name,
variant index)``, so the noise does not depend on blocks, workers or the order of tasks.
"""

from __future__ import annotations

import zlib

import numpy as np


def generator(noise_seed: int, molecule: str, variant: int) -> np.random.Generator:
    """The random generator of one pattern."""
    key = zlib.crc32(str(molecule).encode("utf-8"))
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([int(noise_seed), key, int(variant)])))


def poisson_counts(pattern: np.ndarray, fluence: float, rng: np.random.Generator) -> np.ndarray:
    """Photon counts of one pattern: ``Poisson(fluence * pattern / pattern.sum())``, float32."""
    pattern = np.asarray(pattern, dtype=np.float64)
    total = pattern.sum()
    if not total > 0:
        return np.zeros(pattern.shape, np.float32)
    lam = np.clip(pattern * (fluence / total), 0, None)
    return rng.poisson(lam).astype(np.float32)


def add_noise(patterns: np.ndarray, fluence: float, noise_seed: int, molecule: str, variants) -> np.ndarray:
    """Photon counts for a block of patterns (frames, n, n) of one molecule at ``variants``."""
    out = np.empty(patterns.shape, np.float32)
    for i, v in enumerate(variants):
        out[i] = poisson_counts(patterns[i], fluence, generator(noise_seed, molecule, v))
    return out
