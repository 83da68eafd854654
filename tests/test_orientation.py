"""Orientations (molmnist_dask.orientation): view directions and random rotations, recorded per
image, checked against the independent oracle (tests/oracle.py) and scipy's rotations."""

from __future__ import annotations

import hashlib
import warnings

try:  # Python >= 3.11
    import tomllib
except ModuleNotFoundError:  # pragma: no cover
    import tomli as tomllib

import numpy as np
import pytest
import xarray as xr
from scipy.spatial.transform import Rotation

import molmnist_dask as mm
import oracle
from conftest import computed, run_cli, save_sync
from molmnist_dask import orientation as orient
from molmnist_dask.dataset import render_block
from molmnist_dask.errors import InputError

SIZE, EXTENT = 32, 80.0


def _adk(md, name="adk", selection="all"):
    return mm.TrajectorySource(name, md.PSF, md.DCD, selection=selection)


def _build(sources, **options):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        lazy = mm.build_dataset(sources, **{"size": SIZE, "extent": EXTENT, **options})
    return lazy, computed(lazy)


def _oracle(md, ds, m=0, selection="all", **kwargs):
    rotations = ds.orientation.values[m] if "orientation" in ds.coords else None
    kwargs.setdefault("center", ds.attrs["center"] if ds.attrs["center"] != "None" else None)
    return oracle.render(md.PSF, [md.DCD], selection, ds.frame.values[m], ds.sizes["x"],
                         ds.attrs["grid_extent"], oversampling=ds.attrs["oversampling"],
                         rotations=rotations, **kwargs)


def _assert_matches_oracle(ds, ref, m=0):
    np.testing.assert_array_equal(ds.shape.values[m], ref.shape.astype(np.float32))
    np.testing.assert_array_equal(ds.lost_atoms.values[m], ref.lost_atoms)
    for got, want in zip(ds.diffraction.values[m], ref.diffraction):
        assert oracle.relative_error(got, want) < 1e-5


@pytest.fixture(scope="module")
def random_build(md):
    """adk, 6 frames x 2 random orientations each, seed 7, blocks of 5 variants."""
    return _build([_adk(md)], variants=6, orientation="random", orientation_seed=7,
                  orientations_per_frame=2, block_size=5)


# -- parsing and validation ------------------------------------------------------------------

@pytest.mark.parametrize("spec, expected", [
    ("z", "z"), ("x", "x"), ("random", "random"), ([1, 0, 0], (1.0, 0.0, 0.0)),
    ((0, -2.5, 1), (0.0, -2.5, 1.0)), (np.array([1.0, 1.0, 0.0]), (1.0, 1.0, 0.0)),
    ("1,0,0", (1.0, 0.0, 0.0)), ("-1, 0.5 ,2", (-1.0, 0.5, 2.0)),
])
def test_parse_names_and_vectors(spec, expected):
    assert orient.parse(spec) == expected
    assert mm.BuildOptions(orientation=spec).orientation == expected


@pytest.mark.parametrize("options, key", [
    ({"orientation": "w"}, "orientation"), ({"orientation": "X"}, "orientation"),
    ({"orientation": [0, 0, 0]}, "orientation"), ({"orientation": "0,0,0"}, "orientation"),
    ({"orientation": [1, float("nan"), 0]}, "orientation"), ({"orientation": [np.inf, 0, 0]}, "orientation"),
    ({"orientation": [1, 0]}, "orientation"), ({"orientation": "1,a,0"}, "orientation"),
    ({"orientation": [True, 0, 0]}, "orientation"), ({"orientation": 3}, "orientation"),
    ({"orientation_seed": -1}, "orientation_seed"), ({"orientation_seed": 1.5}, "orientation_seed"),
    ({"orientation": "random", "orientations_per_frame": 0}, "orientations_per_frame"),
    ({"orientation": "random", "orientations_per_frame": 2.0}, "orientations_per_frame"),
    ({"orientation": "x", "orientations_per_frame": 3}, "orientations_per_frame"),
])
def test_bad_orientation_options_are_one_line_naming_the_key(options, key):
    with pytest.raises(InputError, match=f"^{key}") as err:
        mm.BuildOptions(**options)
    assert "\n" not in str(err.value)


def test_defaults_add_nothing():
    o = mm.BuildOptions(orientation="z", orientation_seed=0, orientations_per_frame=1)
    assert o == mm.BuildOptions() and o.non_default() == {} and o.render_options() == {}
    assert mm.BuildOptions(orientation="x").render_options() == {"orientation": "x"}


# -- the rotations themselves ----------------------------------------------------------------

DIRECTIONS = [(1, 0, 0), (0, 1, 0), (0, 0, 1), (0, 0, -1), (1e-9, 0, -1), (0, 1e-12, 1), (1, 2, 3),
              (-0.3, 0.2, -5.0), (1, -1, 0)]


@pytest.mark.parametrize("d", DIRECTIONS)
def test_view_direction_is_turned_onto_z(d):
    q = orient.towards_z(d)
    assert abs(np.linalg.norm(q) - 1) < 1e-15 and q[3] >= 0
    unit = np.asarray(d, float) / np.linalg.norm(d)
    np.testing.assert_allclose(Rotation.from_quat(q).apply(unit), [0, 0, 1], atol=1e-12)
    np.testing.assert_allclose(oracle.rotation_matrix(q) @ unit, [0, 0, 1], atol=1e-12)
    # shortest arc: it turns about d x z, so that axis stays put (when d is not along z)
    axis = np.cross(unit, [0, 0, 1])
    if np.linalg.norm(axis) > 1e-6:
        np.testing.assert_allclose(oracle.rotation_matrix(q) @ axis, axis, atol=1e-12)


def test_named_axes_and_their_in_plane_convention():
    r_x = orient.matrices(orient.quaternions("x", 0, "m", [0]))[0]
    r_y = orient.matrices(orient.quaternions("y", 0, "m", [0]))[0]
    # "x": image x axis = the molecule's -z, image y axis = its y; "y": image x = x, image y = -z
    np.testing.assert_allclose(r_x[:2], [[0, 0, -1], [0, 1, 0]], atol=1e-15)
    np.testing.assert_allclose(r_y[:2], [[1, 0, 0], [0, 0, -1]], atol=1e-15)
    np.testing.assert_allclose(orient.quaternions("x", 0, "m", [0]), orient.quaternions([3, 0, 0], 5, "n", [9]))
    assert orient.rotations("z", 0, "m", [0, 1]) is None


def test_matrices_are_scipys_for_scalar_last_quaternions():
    q = orient.quaternions("random", 3, "adk", range(50))
    np.testing.assert_allclose(orient.matrices(q), Rotation.from_quat(q).as_matrix(), atol=1e-14)
    np.testing.assert_allclose(orient.matrices(q), [oracle.rotation_matrix(v) for v in q], atol=1e-14)


def test_random_quaternions_are_unit_canonical_and_reproducible():
    q = orient.quaternions("random", 11, "adk", range(200))
    np.testing.assert_allclose(np.linalg.norm(q, axis=1), 1, atol=1e-15)
    assert (q[:, 3] >= 0).all()
    # each variant's own, whatever the others asked for with it
    np.testing.assert_array_equal(q[57], orient.quaternions("random", 11, "adk", [57])[0])
    for size in (1, 3, 8, 17):
        for start in range(0, 200, size):
            part = range(start, min(start + size, 200))
            np.testing.assert_array_equal(orient.quaternions("random", 11, "adk", part), q[part])
    assert not np.allclose(q[:5], orient.quaternions("random", 12, "adk", range(5)))
    assert not np.allclose(q[:5], orient.quaternions("random", 11, "adk2", range(5)))


def test_random_rotations_are_uniform():
    """Over many draws: each rotated axis, and the view direction R^T z, has mean ~0 and
    second moment ~I/3, as for directions uniform on the sphere (and the rotation angle has the
    Haar density (1 - cos t)/pi: mean angle pi/2 + 2/pi)."""
    n = 20000
    r = orient.matrices(orient.quaternions("random", 0, "uniformity", range(n)))
    for v in (r[:, :, 2], r[:, :, 0], r[:, 2, :]):  # R z, R x, and the view direction R^T z
        assert np.abs(v.mean(axis=0)).max() < 0.02  # std 0.004
        np.testing.assert_allclose(v.T @ v / n, np.eye(3) / 3, atol=0.012)  # std 0.002
    angle = np.arccos(np.clip((np.trace(r, axis1=1, axis2=2) - 1) / 2, -1, 1))
    assert abs(angle.mean() - (np.pi / 2 + 2 / np.pi)) < 0.02  # std 0.004


# -- images against the oracle ---------------------------------------------------------------

def test_x_projection_is_histogram_of_y_and_minus_z(md):
    """Viewing along x equals numpy's histogram2d of the molecule's (y, -z), exactly: the
    documented in-plane axes."""
    _, ds = _build([_adk(md)], variants=3, orientation="x")
    pos, z = oracle.positions(md.PSF, [md.DCD], "all", ds.frame.values[0])
    half = EXTENT / 2
    for image, p in zip(ds.shape.values[0], pos):
        ref = np.histogram2d(p[:, 1], -p[:, 2], bins=SIZE, range=[[-half, half]] * 2, weights=z)[0]
        np.testing.assert_array_equal(image, ref.astype(np.float32))
    # ... which is the z projection of the molecule rotated by the recorded quaternion
    q = ds.orientation.values[0]
    np.testing.assert_allclose(q, [[0, -np.sqrt(0.5), 0, np.sqrt(0.5)]] * 3, atol=1e-15)
    _assert_matches_oracle(ds, _oracle(md, ds))
    # a vector along x is the same view
    _, vec = _build([_adk(md)], variants=3, orientation=[2.0, 0, 0])
    np.testing.assert_array_equal(vec.shape.values, ds.shape.values)


@pytest.mark.parametrize("orientation, center", [("y", "geometry"), ((1, 2, 3), "electrons"),
                                                 ((0, 0, -1), None), ("random", "electrons")])
def test_fixed_and_random_orientations_equal_the_oracle(md, orientation, center):
    _, ds = _build([_adk(md, selection="protein")], variants=4, orientation=orientation, center=center,
                   oversampling=2, extent=100.0)
    _assert_matches_oracle(ds, _oracle(md, ds, selection="protein", center=center))


def test_recorded_quaternions_reproduce_the_images(md, random_build):
    lazy, ds = random_build
    q = ds.orientation.values[0]
    assert ds.orientation.dims == ("molecule", "variant", "quaternion")
    assert ds.orientation.dtype == np.float64 and q.shape == (12, 4)
    np.testing.assert_allclose(np.linalg.norm(q, axis=1), 1, atol=1e-15)
    assert list(ds.quaternion.values) == ["x", "y", "z", "w"]
    assert "scalar last" in ds.orientation.attrs["long_name"] and ds.orientation.attrs["units"] == "1"
    _assert_matches_oracle(ds, _oracle(md, ds))
    # ... and they are those of (seed, molecule, variant)
    np.testing.assert_array_equal(q, orient.quaternions("random", 7, "adk", range(12)))


def test_orientations_per_frame_repeat_each_frame(random_build):
    lazy, ds = random_build
    frames = ds.frame.values[0]
    assert ds.sizes["variant"] == 12 and (frames[0::2] == frames[1::2]).all()
    assert len(set(frames)) == 6
    assert not np.array_equal(ds.shape.values[0, 0], ds.shape.values[0, 1])
    assert ds.attrs["orientation"] == "random" and ds.attrs["orientations_per_frame"] == 2
    assert ds.attrs["orientation_seed"] == 7


def test_same_image_whatever_the_blocks(md, random_build):
    _, ds = random_build
    for block_size in (1, 12):
        _, other = _build([_adk(md)], variants=6, orientation="random", orientation_seed=7,
                          orientations_per_frame=2, block_size=block_size)
        for v in ("shape", "diffraction", "lost_atoms", "orientation"):
            np.testing.assert_array_equal(other[v].values, ds[v].values)
    # one variant rendered alone, as any caller of render_block would
    lazy, _ = random_build
    grid = mm.Grid(SIZE, EXTENT)
    shape, diffraction, lost, _ = render_block(_adk(md), ds.frame.values[0, [9]], grid, "geometry",
                                               orientation="random", orientation_seed=7, variants=[9])
    np.testing.assert_array_equal(shape[0], ds.shape.values[0, 9])
    np.testing.assert_array_equal(diffraction[0], ds.diffraction.values[0, 9])


def test_molecules_draw_their_own_orientations(md):
    _, ds = _build([_adk(md, "a"), _adk(md, "b")], variants=2, orientation="random")
    assert not np.allclose(ds.orientation.values[0], ds.orientation.values[1])
    _assert_matches_oracle(ds, _oracle(md, ds, m=1), m=1)


def test_form_factors_rotate_too(md):
    """Form-factor patterns of a rotated molecule equal a direct computation on the oracle's
    rotated positions, and its shapes those of the electron build."""
    from test_options import _f0

    _, ds = _build([_adk(md)], variants=2, orientation="random", orientation_seed=3,
                   scattering="form_factors", size=24, extent=64.0)
    _, plain = _build([_adk(md)], variants=2, orientation="random", orientation_seed=3, size=24,
                      extent=64.0)
    np.testing.assert_array_equal(ds.shape.values, plain.shape.values)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        u = oracle.universe(md.PSF, [md.DCD])
        u.guess_TopologyAttrs(to_guess=["elements"])
    elements = np.array([e.strip().title() for e in u.atoms.elements])
    pos, _ = oracle.positions(md.PSF, [md.DCD], "all", ds.frame.values[0])
    freq = np.fft.fftfreq(24, d=64.0 / 24)
    q = np.hypot(freq[:, None], freq[None, :])
    for v, (p, quat) in enumerate(zip(pos, ds.orientation.values[0])):
        p = p @ oracle.rotation_matrix(quat).T
        amplitude = np.zeros((24, 24), complex)
        for e in sorted(set(elements)):
            sel = elements == e
            image = np.histogram2d(p[sel, 1], p[sel, 0], bins=24, range=[[-32.0, 32.0]] * 2)[0]
            amplitude += _f0(e, q) * np.fft.fft2(image)
        expected = np.fft.fftshift(np.abs(amplitude) ** 2)
        np.testing.assert_allclose(ds.diffraction.values[0, v], expected, rtol=1e-4, atol=1e-6 * expected.max())


# -- "z" stays what it was -------------------------------------------------------------------

#: sha256 (first 16 hex digits) of a default build's shape and lost_atoms (adk, size 32, extent
#: 64, 5 variants), computed before orientations existed. Shapes are sums of integer Z, exact
#: on every platform.
Z_DIGESTS = {"shape": "7b08e7067c218581", "lost_atoms": "d1121951b5f53f18"}


def _digest(a) -> str:
    return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()[:16]


def test_z_is_the_build_of_before(md):
    lazy_default, default = _build([_adk(md)], size=32, extent=64.0, variants=5)
    lazy_z, z = _build([_adk(md)], size=32, extent=64.0, variants=5, orientation="z",
                       orientation_seed=4, orientations_per_frame=1)
    assert lazy_default.diffraction.data.name == lazy_z.diffraction.data.name
    assert lazy_default.attrs.keys() == z.attrs.keys() and "orientation" not in z.attrs
    assert "orientation" not in z.coords and "quaternion" not in z.dims
    for v in ("shape", "diffraction", "lost_atoms", "lost_electrons"):
        np.testing.assert_array_equal(default[v].values, z[v].values)
    assert _digest(z.shape.values) == Z_DIGESTS["shape"]
    assert _digest(z.lost_atoms.values) == Z_DIGESTS["lost_atoms"]
    ref = _oracle(md, z, center="geometry")
    np.testing.assert_array_equal(z.shape.values[0], ref.shape.astype(np.float32))


# -- store, run files, CLI -------------------------------------------------------------------

@pytest.fixture(scope="module")
def saved(random_build, tmp_path_factory):
    """The random build saved as a store and as one .nc file."""
    lazy, _ = random_build
    root = tmp_path_factory.mktemp("orientation-store")
    return save_sync(lazy, root / "store"), save_sync(lazy, root / "one.nc")


def test_same_images_whatever_the_parts_and_sub_blocks(random_build, tmp_path):
    """Stores cut into other parts, written a frame at a time, hold the lazy build's images."""
    import dask

    lazy, ds = random_build
    with dask.config.set({"molmnist.sub-block-bytes": 1}):
        store = save_sync(lazy, tmp_path / "parts-of-5", part_frames=5)
    files = sorted((store / "parts").glob("*.nc"))
    assert len(files) == 3  # 12 variants in parts of at most 5
    with xr.open_mfdataset([[str(f) for f in files]], combine="nested", concat_dim=["molecule", "variant"]) as back:
        for v in ("shape", "diffraction", "lost_atoms", "orientation"):
            np.testing.assert_array_equal(back[v].values, ds[v].values)


def test_orientation_is_written_into_parts_and_index(random_build, saved):
    _, ds = random_build
    store, _ = saved
    with xr.open_dataset(store / "index.nc") as index:
        np.testing.assert_array_equal(index.orientation.values, ds.orientation.values)
        assert index.orientation.attrs == ds.orientation.attrs
    # plain xarray over the parts (MMMM-SSSSSSS-EEEEEEE.nc: molecule, first and last variant)
    files = sorted((store / "parts").glob("*.nc"))
    rows = [[str(f) for f in files if f.name.startswith(f"{m:04d}-")] for m in range(ds.sizes["molecule"])]
    with xr.open_mfdataset(rows, combine="nested", concat_dim=["molecule", "variant"]) as plain:
        np.testing.assert_array_equal(plain.orientation.values, ds.orientation.values)
        assert list(plain.quaternion.values) == ["x", "y", "z", "w"]


# A coordinate along a dimension no data variable has (``quaternion``) survives reopening.
def test_orientation_survives_open_dataset(random_build, saved):
    _, ds = random_build
    for path in saved:
        back = mm.open_dataset(path)
        assert "orientation" in back.coords, path
        assert back["orientation"].dims == ("molecule", "variant", "quaternion")
        np.testing.assert_array_equal(back["orientation"].values, ds.orientation.values)
        assert back["orientation"].attrs == ds.orientation.attrs
        assert back.attrs["orientation"] == "random"
        np.testing.assert_array_equal(back.shape.values, ds.shape.values)


def test_run_file_and_cli_take_the_orientation(md, tmp_path, capsys):
    from molmnist_dask.cli import parser
    from molmnist_dask.runfile import load_run_file, write_run_file

    run = write_run_file(tmp_path / "run.toml", [_adk(md)], grid={"size": 16, "extent": 64.0},
                         options={"variants": 2, "orientation": (1.0, 0.0, 1.0)})
    assert tomllib.loads(run.read_text())["options"]["orientation"] == [1.0, 0.0, 1.0]  # an array
    assert load_run_file(run).options.orientation == (1.0, 0.0, 1.0)
    run = write_run_file(tmp_path / "run.toml", [_adk(md)], grid={"size": 16, "extent": 64.0},
                         options={"variants": 2, "orientation": "random", "orientation_seed": 3,
                                  "orientations_per_frame": 2})
    text = run.read_text()
    options = load_run_file(run).options
    assert (options.orientation, options.orientation_seed, options.orientations_per_frame) == ("random", 3, 2)
    args = parser().parse_args(["build", "-o", "x", "--orientation", "1,0,0", "--orientation-seed", "5",
                                "--orientations-per-frame", "4"])
    assert (args.orientation, args.orientation_seed, args.orientations_per_frame) == ("1,0,0", 5, 4)
    for bad, key in (('orientation = "w"', "orientation"), ("orientation = [0, 0, 0]", "orientation"),
                     ("orientation = 1", "orientation"), ("orientations_per_frame = 0", "orientations_per_frame"),
                     ("orientation_seed = -2", "orientation_seed")):
        run.write_text(text.replace('orientation = "random"\norientation_seed = 3\norientations_per_frame = 2', bad))
        with pytest.raises(InputError, match=key):
            load_run_file(run)
    for flags, key in ((["--orientation", "sideways"], "orientation"), (["--orientation=0,0,0"], "orientation"),
                       (["--orientations-per-frame", "0"], "orientations-per-frame")):
        rc, out, err = run_cli(["build", run, "-o", tmp_path / "out", *flags], capsys)
        assert rc == 2 and key in err and len(err.strip().splitlines()) == 1, err
        assert not (tmp_path / "out").exists()


def test_cli_build_on_a_cluster(md, cluster, tmp_path, capsys):
    """The flags reach the workers: the store holds the images and orientations of the same
    build made here."""
    from molmnist_dask.runfile import write_run_file

    run = write_run_file(tmp_path / "run.toml", [_adk(md)], grid={"size": 24, "extent": 80.0},
                         options={"variants": 3, "block_size": 4})
    out = tmp_path / "store"
    rc, _, err = run_cli(["build", run, "-o", out, "--orientation", "random", "--orientation-seed", "2",
                          "--orientations-per-frame", "2", "--no-progress", "--cluster",
                          cluster.scheduler_address], capsys)
    assert rc == 0, err
    _, ref = _build([_adk(md)], size=24, extent=80.0, variants=3, block_size=4, orientation="random",
                    orientation_seed=2, orientations_per_frame=2)
    back = mm.open_dataset(out)
    np.testing.assert_array_equal(back.shape.values, ref.shape.values)
    np.testing.assert_array_equal(back.diffraction.values, ref.diffraction.values)
    with xr.open_dataset(out / "index.nc") as index:
        np.testing.assert_array_equal(index.orientation.values, ref.orientation.values)
