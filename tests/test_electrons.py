"""Electrons per atom: topology elements, guessed elements, and atoms without an element."""

import numpy as np
import pytest

import molmnist_dask as mm
import oracle
from conftest import computed, quiet_universe
from molmnist_dask.electrons import atomic_numbers, electron_counts


def test_symbols_to_atomic_numbers():
    z = atomic_numbers(["C", "H", "N", "O", "S", "Na", "NA", "CL", "Fe", "", " ", "DUMMY", "X"])
    np.testing.assert_array_equal(z, [6, 1, 7, 8, 16, 11, 11, 17, 26, 0, 0, 0, 0])


def test_psf_has_no_elements_so_they_are_guessed_from_names(md):
    u = quiet_universe(md.PSF, md.DCD)
    assert not hasattr(u.atoms, "elements")
    z, summary = electron_counts(u.atoms)
    np.testing.assert_array_equal(z, oracle.atomic_numbers(quiet_universe(md.PSF).atoms))
    assert summary == {"n_atoms": 3341, "n_electrons": int(z.sum()), "n_no_element": 0,
                       "elements_guessed": True}
    # names like CA (alpha carbon) are carbon, not calcium
    ca = u.select_atoms("name CA")
    assert set(electron_counts(ca)[0]) == {6}


def test_topology_elements_are_used_and_empty_ones_weigh_nothing(md):
    """TPR carries elements; TIP4P's virtual sites (MW) have an empty one."""
    u = quiet_universe(md.TPR, md.XTC)
    assert hasattr(u.atoms, "elements")
    z, summary = electron_counts(u.atoms)
    mw = u.atoms.names == "MW"
    assert mw.sum() == 11084
    assert (z[mw] == 0).all() and (z[~mw] > 0).all()
    assert summary["n_no_element"] == 11084 and summary["elements_guessed"] is False
    np.testing.assert_array_equal(z, oracle.atomic_numbers(u.atoms))


def test_guessed_virtual_sites_weigh_nothing(md):
    """GRO has no elements: the guesser makes MW a DUMMY, which carries no electrons."""
    u = quiet_universe(md.GRO)
    z, summary = electron_counts(u.atoms)
    mw = u.atoms.names == "MW"
    assert (z[mw] == 0).all() and summary["n_no_element"] == mw.sum() == 11084
    np.testing.assert_array_equal(z, oracle.atomic_numbers(u.atoms))  # (adds elements to u)
    # the same system from its TPR, where the elements are given, has the same electrons
    assert summary["n_electrons"] == electron_counts(quiet_universe(md.TPR).atoms)[1]["n_electrons"]


def test_blank_element_in_a_pdb_is_counted_and_weighs_nothing(md, made):
    src = mm.TrajectorySource("pdb", made.blank_pdb, md.DCD)
    lazy = mm.build_dataset([src], size=32, extent=100.0, variants=2)
    assert list(lazy["n_no_element"].values) == [1]
    assert list(lazy["elements_guessed"].values) == [0]
    psf = mm.build_dataset([mm.TrajectorySource("psf", md.PSF, md.DCD)], size=32, extent=100.0, variants=2)
    # atom 6 is a hydrogen: one electron fewer than the same protein with every element
    assert lazy["n_electrons"].values[0] == psf["n_electrons"].values[0] - 1
    ds, ref_ds = computed(lazy), computed(psf)
    np.testing.assert_array_equal(ds["shape"].sum(("y", "x")).values,
                                  ref_ds["shape"].sum(("y", "x")).values - 1)
    ref = oracle.render(made.blank_pdb, [md.DCD], "all", ds.frame.values[0], 32, 100.0)
    assert (ref.z == 0).sum() == 1
    np.testing.assert_array_equal(ds["shape"].values[0], ref.shape.astype(np.float32))


def test_tpr_dataset_counts_atoms_without_element(md):
    src = mm.TrajectorySource("water", md.TPR, md.XTC, selection="resname SOL")
    ds = mm.build_dataset([src], size=16, extent=120.0, variants=2)
    u = quiet_universe(md.TPR)
    water = u.select_atoms("resname SOL")
    assert list(ds["n_atoms"].values) == [len(water)]
    assert list(ds["n_no_element"].values) == [int((water.names == "MW").sum())]
    assert list(ds["n_electrons"].values) == [10 * water.n_residues]  # H2O: 10 electrons


@pytest.mark.parametrize("selection,expected", [("name CA", 6), ("name SD", 16), ("name N", 7)])
def test_selection_electrons(md, selection, expected):
    ds = mm.build_dataset([mm.TrajectorySource("adk", md.PSF, md.DCD, selection=selection)],
                          size=8, extent=100.0, variants=1)
    n = len(quiet_universe(md.PSF).select_atoms(selection))
    assert list(ds["n_electrons"].values) == [expected * n]
