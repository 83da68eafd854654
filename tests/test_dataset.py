"""build_dataset against the independent oracle on real trajectories, and the physics it keeps."""

import warnings

import dask.array as da
import numpy as np
import pytest

import molmnist_dask as mm
import oracle
from conftest import computed
from molmnist_dask.settings import setting

# (name, files, selection, size, extent, center, oversampling, variants)
CASES = {
    "adk-geometry-even": ("dcd", "protein", 32, 80.0, "geometry", 1, 5),
    "adk-electrons-odd-k2": ("dcd", "protein", 33, 70.0, "electrons", 2, 4),
    "adk-none-even-k2": ("dcd", "all", 40, 100.0, None, 2, 3),
    "gro-xtc-geometry-k2": ("gro", "protein", 32, 80.0, "geometry", 2, 4),
    "tpr-xtc-electrons-odd": ("tpr", "all", 31, 90.0, "electrons", 1, 3),
}


def _files(md, kind):
    return {"dcd": (md.PSF, [md.DCD]), "gro": (md.GRO, [md.XTC]), "tpr": (md.TPR, [md.XTC])}[kind]


@pytest.fixture(scope="module", params=list(CASES))
def case(request, md):
    kind, selection, size, extent, center, k, variants = CASES[request.param]
    top, traj = _files(md, kind)
    src = mm.TrajectorySource(request.param, top, traj, selection=selection)
    with warnings.catch_warnings():  # some atoms fall outside these fields of view, on purpose
        warnings.simplefilter("ignore", UserWarning)
        lazy = mm.build_dataset([src], size=size, extent=extent, center=center, oversampling=k,
                                variants=variants, block_size=2)
    ds = computed(lazy)
    ref = oracle.render(top, traj, selection, ds.frame.values[0], size, extent, center, k)
    return dict(name=request.param, lazy=lazy, ds=ds, ref=ref, size=size, extent=extent, k=k,
                center=center, selection=selection, top=top, traj=traj)


def test_shape_equals_oracle_exactly(case):
    ds, ref = case["ds"], case["ref"]
    assert ds["shape"].dtype == np.float32
    assert ds["shape"].shape == (1, len(ref.shape), case["size"], case["size"])
    np.testing.assert_array_equal(ds["shape"].values[0], ref.shape.astype(np.float32))


def test_diffraction_equals_oracle(case):
    ds, ref = case["ds"], case["ref"]
    n = case["k"] * case["size"]
    assert ds["diffraction"].dtype == np.float32
    assert ds["diffraction"].shape == (1, len(ref.shape), n, n)
    for got, want in zip(ds["diffraction"].values[0], ref.diffraction):
        assert oracle.relative_error(got, want) < 1e-5


def test_lost_counts_equal_oracle(case):
    ds, ref = case["ds"], case["ref"]
    np.testing.assert_array_equal(ds.lost_atoms.values[0], ref.lost_atoms)
    np.testing.assert_array_equal(ds.lost_electrons.values[0], ref.lost_electrons)


def test_coordinates_follow_the_contract(case):
    ds, ref = case["ds"], case["ref"]
    size, extent, k = case["size"], case["extent"], case["k"]
    pixel = extent / size
    for c in ("x", "y"):
        assert ds[c].dtype == np.float64
        np.testing.assert_allclose(ds[c].values, -extent / 2 + (np.arange(size) + 0.5) * pixel,
                                   rtol=0, atol=1e-12 * extent)
        np.testing.assert_allclose(ds[c].values, ref.x, rtol=0, atol=1e-12 * extent)
    for c in ("qx", "qy"):
        assert ds[c].dtype == np.float64
        np.testing.assert_array_equal(ds[c].values, np.fft.fftshift(np.fft.fftfreq(k * size, d=pixel)))
        np.testing.assert_array_equal(ds[c].values, ref.q)
    assert ds.qx.values[(k * size) // 2] == 0
    assert list(ds.molecule.values) == [case["name"]]
    assert list(ds.label.values) == [0]
    np.testing.assert_array_equal(ds.variant.values, np.arange(ds.sizes["variant"]))
    assert ds.frame.dims == ("molecule", "variant") and ds.frame.dtype.kind == "i"


def test_attributes_carry_units_names_grid_and_counts(case):
    ds, ref = case["ds"], case["ref"]
    for name in list(ds.data_vars) + list(ds.coords):
        assert ds[name].attrs.get("long_name"), name
        if ds[name].dtype.kind not in "USO":  # CF: a text label (molecule name) has no unit
            assert ds[name].attrs.get("units"), name
    a = ds.attrs
    assert a["grid_size"] == case["size"] and a["grid_extent"] == case["extent"]
    assert a["pixel_size"] == pytest.approx(case["extent"] / case["size"])
    assert a["oversampling"] == case["k"]
    assert list(ds["selection"].values) == [case["selection"]]
    assert a["center"] == str(case["center"])
    assert a["molmnist_dask_version"] == mm.__version__
    assert list(ds["n_atoms"].values) == [len(ref.z)]
    assert list(ds["n_electrons"].values) == [int(ref.z.sum())]
    assert list(ds["n_no_element"].values) == [int((ref.z == 0).sum())]


# --- physics, on the same real data -------------------------------------------------------

def test_shape_sums_to_electrons_inside_the_field_of_view(case):
    ds, ref = case["ds"], case["ref"]
    total = ds["shape"].values[0].astype(np.float64).sum(axis=(1, 2))
    np.testing.assert_array_equal(total, ref.z.sum() - ref.lost_electrons)
    np.testing.assert_array_equal(total, ds["n_electrons"].values[0] - ds.lost_electrons.values[0])


def test_forward_intensity_is_total_electrons_squared(case):
    ds = case["ds"]
    n = case["k"] * case["size"]
    centre = ds["diffraction"].values[0][:, n // 2, n // 2]
    assert float(ds.qx[n // 2]) == 0 and float(ds.qy[n // 2]) == 0
    total = ds["shape"].values[0].astype(np.float64).sum(axis=(1, 2))
    np.testing.assert_allclose(centre, total**2, rtol=1e-6)


def test_parseval(case):
    ds = case["ds"]
    n = case["k"] * case["size"]  # the transform is n x n, zero padding included
    lhs = ds["diffraction"].values[0].astype(np.float64).sum(axis=(1, 2))
    rhs = n * n * (ds["shape"].values[0].astype(np.float64) ** 2).sum(axis=(1, 2))
    np.testing.assert_allclose(lhs, rhs, rtol=1e-5)


def test_friedel_symmetry(case):
    d = case["ds"]["diffraction"].values[0].astype(np.float64)
    n = d.shape[-1]
    if n % 2 == 0:
        # index 0 is the Nyquist frequency -n/2, whose partner +n/2 is not stored
        paired = d[:, 1:, 1:]
        np.testing.assert_allclose(paired, paired[:, ::-1, ::-1], rtol=2e-5, atol=1e-6 * d.max())
    else:
        np.testing.assert_allclose(d, d[:, ::-1, ::-1], rtol=2e-5, atol=1e-6 * d.max())


@pytest.fixture(scope="module")
def translated(md, made):
    """The same adk frames, as written, moved by whole pixels and moved by fractions of one."""
    srcs = [mm.TrajectorySource(name, md.PSF, path) for name, path in
            (("orig", made.grid_dcd), ("whole", made.shifted_dcd), ("fraction", made.fraction_dcd))]
    # pixel = 2 A: the whole shift (+6, -4) A is (+3, -2) pixels; the fraction (+0.75, +1.25) A
    return computed(mm.build_dataset(srcs, size=64, extent=128.0, center=None))


def test_whole_pixel_translation_rolls_shape_and_keeps_diffraction(translated):
    ds = translated
    assert int(ds.lost_atoms.sum()) == 0
    orig, whole = ds["shape"].values[0], ds["shape"].values[1]
    np.testing.assert_array_equal(whole, np.roll(orig, (-2, 3), axis=(1, 2)))
    for a, b in zip(ds["diffraction"].values[0], ds["diffraction"].values[1]):
        assert oracle.relative_error(b, a) < 1e-6


def test_fractional_translation_keeps_electrons_and_forward_intensity(translated):
    # Intensities are translation invariant only for whole-pixel shifts of the image; a shift by
    # a fraction of a pixel re-bins the atoms, and what stays exactly is the total and I(0).
    ds = translated
    n = ds.sizes["qx"]
    orig, frac = ds["shape"].values[0], ds["shape"].values[2]
    np.testing.assert_array_equal(orig.sum(axis=(1, 2)), frac.sum(axis=(1, 2)))
    assert not np.array_equal(orig, frac)
    d0, d2 = ds["diffraction"].values[0], ds["diffraction"].values[2]
    np.testing.assert_allclose(d2[:, n // 2, n // 2], d0[:, n // 2, n // 2], rtol=1e-6)
    assert oracle.relative_error(d2, d0) > 1e-3


def test_frames_are_evenly_spread_first_and_last_included(md):
    src = mm.TrajectorySource("adk", md.PSF, md.DCD, start=10, stop=61, step=2)
    ds = mm.build_dataset([src], size=16, extent=80.0, variants=6)
    frames = ds.frame.values[0]
    offered = np.arange(98)[10:61:2]
    assert frames[0] == offered[0] and frames[-1] == offered[-1]
    assert set(frames) <= set(offered) and np.all(np.diff(frames) > 0)
    gaps = np.diff(np.searchsorted(offered, frames))
    assert gaps.max() - gaps.min() <= 1
    every = mm.build_dataset([mm.TrajectorySource("adk", md.PSF, md.DCD, stop=7)], size=16, extent=80.0)
    np.testing.assert_array_equal(every.frame.values[0], np.arange(7))


def test_atoms_outside_the_field_are_counted_recorded_and_warned(md):
    src = mm.TrajectorySource("adk", md.PSF, md.DCD)
    with pytest.warns(UserWarning, match="adk.*field of view"):
        lazy = mm.build_dataset([src], size=16, extent=30.0, variants=3)
    ds = computed(lazy)
    lost = ds.lost_electrons.values[0]
    assert (ds.lost_atoms.values[0] > 0).all() and (lost > 0).all()
    total = ds["shape"].values[0].astype(np.float64).sum(axis=(1, 2))
    np.testing.assert_array_equal(total + lost, ds["n_electrons"].values[0])
    ref = oracle.render(md.PSF, [md.DCD], "all", ds.frame.values[0], 16, 30.0)
    np.testing.assert_array_equal(ds.lost_atoms.values[0], ref.lost_atoms)


def test_no_warning_when_everything_fits(md, recwarn):
    mm.build_dataset([mm.TrajectorySource("adk", md.PSF, md.DCD)], size=16, extent=120.0, variants=2)
    assert not [w for w in recwarn if "field of view" in str(w.message)]


def test_build_is_lazy_one_task_per_block(md):
    srcs = [mm.TrajectorySource("a", md.PSF, md.DCD), mm.TrajectorySource("b", md.PSF, md.DCD, selection="name CA")]
    ds = mm.build_dataset(srcs, size=16, extent=80.0, variants=10, block_size=4)
    for v in ("shape", "diffraction", "lost_atoms", "lost_electrons"):
        assert isinstance(ds[v].data, da.Array), v
    assert ds["shape"].chunks[1] == (4, 4, 2)
    renders = {k for k in dict(ds["shape"].data.__dask_graph__()) if "render" in str(k)}
    assert len(renders) == 2 * 3


def test_auto_block_size_shrinks_as_images_grow(md):
    src = mm.TrajectorySource("adk", md.PSF, md.DCD)
    blocks = {}
    for size, k in ((32, 1), (256, 1), (1024, 1), (2048, 1), (2048, 2)):
        ds = mm.build_dataset([src], size=size, extent=80.0, oversampling=k)
        blocks[(size, k)] = ds["diffraction"].data.chunksize[1]
        for v in ("shape", "diffraction"):
            chunk = ds[v].data
            nbytes = np.prod(chunk.chunksize) * chunk.dtype.itemsize
            one_image = np.prod(chunk.chunksize[2:]) * chunk.dtype.itemsize
            assert nbytes <= max(setting("block-bytes"), one_image) < 128 * 2**20, (size, k, v)
    sizes = list(blocks.values())
    assert sizes == sorted(sizes, reverse=True) and sizes[0] > sizes[-1] == 1
    assert blocks[(32, 1)] == 98  # small images: the whole trajectory in one block
    assert blocks[(2048, 1)] == 2  # 16 MiB a frame
