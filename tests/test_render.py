"""The kernel alone (render.py, grid.py), against numpy's definitions, on real adk coordinates."""

import numpy as np
import pytest

from conftest import quiet_universe
from molmnist_dask import Grid, InputError
from molmnist_dask.render import (NonFiniteCoordinates, bin_index, center_positions, diffraction,
                                  project, render)
from oracle import relative_error


@pytest.fixture(scope="module")
def adk_frames(md):
    """Float32 positions of three adk frames and the Z of each atom (guessed from names)."""
    from oracle import atomic_numbers

    u = quiet_universe(md.PSF, md.DCD)
    z = atomic_numbers(u.atoms)
    frames = []
    for i in (0, 50, 97):
        u.trajectory[i]
        frames.append(u.atoms.positions.copy())
    return np.array(frames), z


def test_grid_coordinates_follow_the_contract():
    g = Grid(size=7, extent=21.0, oversampling=2)
    assert g.pixel == 3.0 and g.qsize == 14
    np.testing.assert_allclose(g.centers, -10.5 + 3.0 * (np.arange(7) + 0.5), rtol=0, atol=1e-12)
    assert np.array_equal(g.q, np.fft.fftshift(np.fft.fftfreq(14, d=3.0)))
    edges = np.histogram_bin_edges([0], bins=7, range=(-10.5, 10.5))
    np.testing.assert_array_equal(g.edges, edges)


@pytest.mark.parametrize("kwargs", [dict(size=0), dict(size=-1), dict(size=2.5), dict(size=True),
                                    dict(extent=0), dict(extent=-3.0), dict(extent=float("inf")),
                                    dict(extent="10"), dict(oversampling=0)])
def test_grid_rejects_bad_values_naming_them(kwargs):
    with pytest.raises(InputError, match=list(kwargs)[0]):
        Grid(**{"size": 8, "extent": 10.0, **kwargs})


def test_bin_index_matches_histogram_on_edges_and_outside():
    edges = np.linspace(-5.0, 5.0, 11)
    rng = np.random.default_rng(0)
    values = np.concatenate([edges, np.nextafter(edges, -np.inf), np.nextafter(edges, np.inf),
                             rng.uniform(-6, 6, 2000), [-5.0, 5.0, -5.000001, 5.000001]])
    idx, inside = bin_index(values, edges)
    counts = np.bincount(idx[inside], minlength=10)
    np.testing.assert_array_equal(counts, np.histogram(values, bins=edges)[0])
    np.testing.assert_array_equal(inside, (values >= -5.0) & (values <= 5.0))


@pytest.mark.parametrize("size,extent", [(32, 64.0), (33, 70.0), (50, 37.3)])
def test_project_equals_histogram2d(adk_frames, size, extent):
    frames, z = adk_frames
    g = Grid(size=size, extent=extent)
    pos = frames[1].astype(np.float64) - frames[1].astype(np.float64).mean(axis=0)
    image, lost_atoms, lost_e = project(pos, z, g)
    half = extent / 2
    ref = np.histogram2d(pos[:, 1], pos[:, 0], bins=size, range=[[-half, half]] * 2, weights=z)[0]
    np.testing.assert_array_equal(image, ref)
    outside = (np.abs(pos[:, 0]) > half) | (np.abs(pos[:, 1]) > half)
    assert lost_atoms == outside.sum() and lost_e == z[outside].sum()
    assert image.sum() + lost_e == z.sum()


def test_center_positions():
    pos = np.array([[0, 0, 0], [2, 0, 0], [0, 4, 2]], dtype=np.float32)
    w = np.array([1.0, 1.0, 2.0])
    np.testing.assert_allclose(center_positions(pos, w, "geometry").mean(axis=0), 0, atol=1e-15)
    c = center_positions(pos, w, "electrons")
    np.testing.assert_allclose(w @ c, 0, atol=1e-14)
    assert center_positions(pos, w, None).dtype == np.float64
    np.testing.assert_array_equal(center_positions(pos, w, None), pos)
    with pytest.raises(ValueError):
        center_positions(pos, w, "mass")


@pytest.mark.parametrize("n", [8, 9, 16, 15])
@pytest.mark.parametrize("k", [1, 2, 3])
def test_diffraction_equals_fftshift_abs_fft2_squared(n, k):
    rng = np.random.default_rng(n * 10 + k)
    shapes = rng.poisson(3.0, size=(3, n, n)).astype(np.float32)
    d = diffraction(shapes, k)
    assert d.dtype == np.float32 and d.shape == (3, k * n, k * n)
    for s, got in zip(shapes, d):
        ref = np.fft.fftshift(np.abs(np.fft.fft2(s.astype(np.float64), s=(k * n, k * n))) ** 2)
        assert relative_error(got, ref) < 1e-6


def test_render_stops_at_nonfinite_frame_naming_it(adk_frames):
    frames, z = adk_frames
    bad = frames.copy()
    bad[2, 7, 1] = np.inf
    with pytest.raises(NonFiniteCoordinates) as err:
        render(bad, z, Grid(16, 80.0))
    assert err.value.index == 2


def test_render_block_shapes_and_dtypes(adk_frames):
    frames, z = adk_frames
    r = render(frames, z, Grid(24, 60.0, oversampling=2), center="electrons")
    assert r.shape.shape == (3, 24, 24) and r.shape.dtype == np.float32
    assert r.diffraction.shape == (3, 48, 48) and r.diffraction.dtype == np.float32
    assert r.lost_atoms.dtype == np.int64 and r.lost_electrons.dtype == np.float64
    np.testing.assert_allclose(r.shape.sum(axis=(1, 2)) + r.lost_electrons, z.sum())
    empty = render(frames[:0], z, Grid(8, 10.0))
    assert empty.shape.shape == (0, 8, 8) and empty.diffraction.shape == (0, 8, 8)


# -- rotations (molmnist_dask.orientation) -----------------------------------------------------

def _rotations(n, seed=0):
    from scipy.spatial.transform import Rotation

    return Rotation.random(n, rng=np.random.default_rng(seed)).as_matrix()


@pytest.mark.parametrize("center", ["geometry", "electrons", None])
def test_render_rotates_the_centred_positions(adk_frames, center):
    """shape = histogram2d of (R @ centred positions) along y, x, exactly; patterns and counts too."""
    frames, z = adk_frames
    g = Grid(40, 90.0, oversampling=2)
    rot = _rotations(len(frames))
    r = render(frames, z, g, center, rotations=rot)
    half = 45.0
    for i, (pos, m) in enumerate(zip(frames, rot)):
        p = center_positions(pos, z, center) @ m.T
        ref = np.histogram2d(p[:, 1], p[:, 0], bins=40, range=[[-half, half]] * 2, weights=z)[0]
        np.testing.assert_array_equal(r.shape[i], ref.astype(np.float32))
        outside = (np.abs(p[:, :2]) > half).any(axis=1)
        assert r.lost_atoms[i] == outside.sum() and r.lost_electrons[i] == pytest.approx(z[outside].sum())
        want = np.fft.fftshift(np.abs(np.fft.fft2(ref, s=(80, 80))) ** 2)
        assert relative_error(r.diffraction[i], want) < 1e-6


def test_rotated_render_reads_frames_from_a_reused_buffer(adk_frames):
    """Each frame is used before the next is asked for: a reader may reuse its buffer."""
    frames, z = adk_frames
    rot = _rotations(len(frames), seed=1)
    buffer = np.empty_like(frames[0])

    def reader():
        for f in frames:
            buffer[:] = f
            yield buffer

    g = Grid(32, 80.0)
    a, b = render(reader(), z, g, rotations=rot), render(frames, z, g, rotations=rot)
    np.testing.assert_array_equal(a.shape, b.shape)
    np.testing.assert_array_equal(a.diffraction, b.diffraction)


def test_half_turn_about_z_flips_the_image(adk_frames):
    """R = diag(-1, -1, 1) maps (x, y) to (-x, -y): the image turned by 180 degrees (odd size,
    so the pixel grid is symmetric about the centre, up to atoms on edges)."""
    frames, z = adk_frames
    g = Grid(33, 99.0)
    turned = render(frames, z, g, rotations=np.tile(np.diag([-1.0, -1.0, 1.0]), (3, 1, 1)))
    plain = render(frames, z, g)
    np.testing.assert_array_equal(turned.shape, plain.shape[:, ::-1, ::-1])


def test_frame_loop_serves_the_form_factor_renderer(adk_frames):
    """The form-factor renderer shares the electron renderer's loop: same shapes and counts,
    and its per-element images are histogram2d's of each element's atoms."""
    from molmnist_dask.formfactors import _ElementCounts, render_form_factors
    from molmnist_dask.render import frame_loop

    frames, z = adk_frames
    g = Grid(24, 70.0)
    rot = _rotations(len(frames), seed=2)
    index = np.where(z == 1, 0, np.where(z == 6, 1, 2))  # H, C, other
    plain = render(frames, z, g, rotations=rot)
    ff = render_form_factors(frames, z, index, ["H", "C", "N"], g, rotations=rot)
    np.testing.assert_array_equal(ff.shape, plain.shape)
    np.testing.assert_array_equal(ff.lost_atoms, plain.lost_atoms)
    counts = _ElementCounts(index, 3, 24)
    for i, image, n_lost, e_lost, flat in frame_loop(frames, z, g, "geometry", rot):
        p = center_positions(frames[i], z, "geometry") @ rot[i].T
        for e, images in enumerate(counts(flat)):
            sel = index == e
            ref = np.histogram2d(p[sel, 1], p[sel, 0], bins=24, range=[[-35.0, 35.0]] * 2)[0]
            np.testing.assert_array_equal(images, ref)
