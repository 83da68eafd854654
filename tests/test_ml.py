"""molmnist_dask.ml: the torch Dataset (batch reads, splits, transforms, cached statistics),
the networks, metrics, the phase-retrieval baseline and the training example.

CI installs torch, so there these tests must run: they skip only where torch is absent and
the environment variable CI is not "true".
"""

from __future__ import annotations

import importlib
import os
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from conftest import save_sync

import molmnist_dask as mm
from molmnist_dask.errors import InputError

try:
    import torch
except ImportError:  # pragma: no cover - CI has torch
    torch = None

needs_torch = pytest.mark.skipif(torch is None and os.environ.get("CI") != "true",
                                 reason="torch not installed (pip install '.[ml]')")


SELECTIONS = {"adk": "all", "ca": "name CA", "bb": "backbone", "heavy": "not name H*"}


def _adk_store(path, **save):
    """4 molecules x 10 variants at 32 px in parts of 4 variants (3 per molecule)."""
    from MDAnalysisTests.datafiles import DCD, PSF

    sources = [mm.TrajectorySource(n, PSF, DCD, selection=s) for n, s in SELECTIONS.items()]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = mm.build_dataset(sources, extent=64.0, size=32, variants=10)
        return save_sync(ds, path, part_frames=4, **save)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """Shapes deflated: what h5py reads."""
    return _adk_store(tmp_path_factory.mktemp("ml") / "store", compression={"shape": 1})


@pytest.fixture(scope="module")
def zstd_store(tmp_path_factory):
    """Shapes compressed with zstd, which h5py cannot read without hdf5plugin."""
    return _adk_store(tmp_path_factory.mktemp("ml") / "zstd", compression={"shape": ("zstd", 1)})


def test_import_without_torch_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)  # import torch now fails
    for name in [m for m in sys.modules if m.startswith("molmnist_dask.ml")]:
        monkeypatch.delitem(sys.modules, name)
    with pytest.raises(ImportError, match=r"pip install 'molmnist-dask\[ml\]'"):
        importlib.import_module("molmnist_dask.ml")
    import molmnist_dask  # noqa: F401 - the package itself never needs torch
    assert "molmnist_dask.ml" not in sys.modules


def _part_files(store) -> list:
    """A store's part files, as the store names them (`molmnist_dask.store.parts`)."""
    from molmnist_dask.store import parts

    return sorted(Path(p.path) for p in parts(store))


@needs_torch
def test_splits_hold_out_contiguous_ranges_or_molecules():
    from molmnist_dask.ml import split_items

    a = split_items(4, 100, seed=1)  # default: contiguous ranges of the variant axis
    assert {k: v.tolist() for k, v in a.items()} == \
        {k: v.tolist() for k, v in split_items(4, 100, seed=1).items()}
    variants = [np.unique(a[s][:, 1]) for s in ("train", "val", "test")]
    assert [len(v) for v in variants] == [80, 10, 10]
    assert not (set(variants[0]) & set(variants[1]) or set(variants[0]) & set(variants[2]))
    for held in variants[1:]:  # one range of 10 consecutive variants each
        assert np.array_equal(held, np.arange(held[0], held[0] + 10))
    assert all(set(a[s][:, 0]) == {0, 1, 2, 3} for s in ("train", "val", "test"))  # every molecule seen
    b = split_items(4, 10, by="molecule", fractions=(2, 1, 1), seed=0)
    mols = [set(b[s][:, 0]) for s in ("train", "val", "test")]
    assert [len(m) for m in mols] == [2, 1, 1] and len(mols[0] | mols[1] | mols[2]) == 4
    assert len(b["test"]) == 10 and len(a["all"]) == 400
    r = split_items(4, 100, by="random", seed=1)  # scattered variants: the leaky split
    assert len(np.unique(r["test"][:, 1])) == 10 and np.diff(np.unique(r["test"][:, 1])).max() > 1
    assert not np.array_equal(split_items(4, 100, seed=2)["test"], a["test"])
    with pytest.raises(InputError, match="by must be"):
        split_items(4, 10, by="frame")


@needs_torch
def test_items_equal_direct_computation(store):
    from molmnist_dask.ml import DiffractionDataset

    ds = mm.open_dataset(store)
    data = DiffractionDataset(store, "test", normalize="image", target_scale=None)
    assert len(data) == 4 and data.stats is None
    for i in range(len(data)):
        x, y = data[i]
        m, v = data.items[i]
        p = np.log1p(ds.diffraction.values[m, v].astype(np.float64))
        np.testing.assert_allclose(x[0].numpy(), (p - p.mean()) / (p.std() + 1e-8), rtol=1e-5, atol=1e-5)
        np.testing.assert_array_equal(y[0].numpy(), ds.shape.values[m, v])
        assert x.shape == y.shape == (1, 32, 32) and x.dtype == torch.float32
    train = DiffractionDataset(store, "train", log="log10", floor=10.0)
    kept = sorted(set(train.items[:, 1]))
    x_all = np.log10(np.maximum(ds.diffraction.values[:, kept].astype(np.float64), 10.0))
    assert train.stats.mean == pytest.approx(x_all.mean(), rel=1e-6)
    assert train.stats.std == pytest.approx(x_all.std(), rel=1e-5)
    assert train.stats.target_max == float(ds.shape.values[:, kept].max())
    test = DiffractionDataset(store, "test", log="log10", floor=10.0, stats=train.stats, return_label=True)
    x, y, label = test[1]
    m, v = test.items[1]
    expected = (np.log10(np.maximum(ds.diffraction.values[m, v], 10.0)) - train.stats.mean) / (train.stats.std + 1e-8)
    np.testing.assert_allclose(x[0].numpy(), expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(y[0].numpy(), ds.shape.values[m, v] / train.stats.target_max, rtol=1e-6)
    assert label == m


@needs_torch
def test_batches_equal_items_in_the_order_asked(store):
    from molmnist_dask.ml import DiffractionDataset, collate
    from molmnist_dask.ml import reader

    for kwargs in ({"size": 12, "return_label": True}, {"normalize": "image", "target_scale": "image"}):
        data = DiffractionDataset(store, "all", **kwargs)
        asked = [37, 2, 11, 2, 20, 39, 0, 5]  # across molecules and parts, out of order, repeated
        batch = data.__getitems__(asked)
        single = [data[i] for i in asked]
        assert len(batch) == len(asked)
        for got, one in zip(batch, single):
            assert all(torch.equal(a, b) if torch.is_tensor(a) else a == b for a, b in zip(got, one))
        tensors = collate(batch)  # the ready-made batch: the same, without a copy
        assert torch.equal(tensors[0], torch.stack([b[0] for b in single]))
        memory = DiffractionDataset(store, "all", in_memory=True, stats=data.stats, **kwargs)
        assert memory._files is None  # read once, files closed
        for got, one in zip(memory.__getitems__(asked), single):
            assert torch.equal(got[0], one[0]) and torch.equal(got[1], one[1])
    # read on 1 or 3 threads, or in a DataLoader's workers: the same batch
    everything = list(range(len(data)))[::-1]
    one, three = (DiffractionDataset(store, "all", size=12, read_threads=t, stats=data.stats)
                  for t in (1, 3))
    assert (one.read_threads, three.read_threads) == (1, 3)
    for a, b in zip(one.__getitems__(everything), three.__getitems__(everything)):
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    # a batch opens only the parts it needs, once each
    data = DiffractionDataset(store, "all", normalize=None, target_scale=None)
    data.__getitems__([0, 1, 2, 12])  # variants 0-2 of molecule 0 (one part) and 2 of molecule 1
    assert sorted(data._files.open) == sorted({data._parts[w].path for w in data._where[0][[0, 1, 2, 12]]})
    assert len(data._files.open) == 2 and all(isinstance(p, reader._Part) for p in data._files.open.values())


@needs_torch
@pytest.mark.parametrize("layout", ["default", "raw, no checksums", "one file"])
def test_chunks_decode_what_hdf5_reads(store, tmp_path, layout):
    """Every image decoded from its chunk's bytes equals HDF5's own read, whatever the filters."""
    import h5py

    from molmnist_dask.ml.chunks import Chunks, open_fd

    if layout == "default":  # shapes shuffled, deflated, checksummed; patterns checksummed
        files, filters = _part_files(store), {"shape": [3, 2, 1], "diffraction": [3]}
    elif layout == "raw, no checksums":
        raw = _adk_store(tmp_path / "raw", compression={"shape": 0}, checksums=False)
        files, filters = _part_files(raw), {"shape": [], "diffraction": []}
    else:  # all molecules in one file: chunks of a (molecule, variant) grid
        files = [mm.consolidate(store, tmp_path / "one.nc", progress=False)]
        filters = {"shape": [3, 2, 1], "diffraction": [3]}
    for path in files:
        fd = open_fd(str(path))
        with h5py.File(path) as f:
            for var in ("shape", "diffraction"):
                chunks = Chunks.of(f[var], fd)
                assert chunks.filters == filters[var]
                want = f[var][...]
                for repeat in range(2):  # the second time, checksums already verified
                    got = np.full_like(want, np.nan)
                    for m, i in np.ndindex(want.shape[:2]):
                        np.testing.assert_array_equal(chunks.image(m, i, slice(3, 8)), want[m, i, 3:8])
                        got[m, i] = chunks.image(m, i)
                    np.testing.assert_array_equal(got, want)
                    assert chunks.checked.all() == (3 in filters[var])
                assert chunks.plain == (var == "diffraction" or 1 not in filters[var])
        os.close(fd)


@needs_torch
@pytest.mark.parametrize("size, length", [(4, 160004), (4, 4003), (8, 17), (2, 1)])
def test_unshuffle_undoes_hdf5s_byte_planes(size, length):
    from molmnist_dask.ml.chunks import unshuffle

    data = np.random.default_rng(length).integers(0, 256, length, dtype=np.uint8)
    whole = length // size * size
    # HDF5's shuffle: byte k of every element, for k = 0..size-1, then the leftover bytes
    planes = [data[:whole].reshape(-1, size)[:, k] for k in range(size)]
    shuffled = np.concatenate(planes + [data[whole:]]).tobytes()
    np.testing.assert_array_equal(unshuffle(shuffled, size), data)


@needs_torch
def test_a_corrupt_image_names_its_file(store, tmp_path):
    import shutil

    import h5py

    from molmnist_dask.ml import DiffractionDataset

    copy = tmp_path / "copy"
    shutil.copytree(store, copy)
    part = _part_files(copy)[1]
    corrupt = {"diffraction": (2, 100), "shape": (3, 10)}  # (variant, byte): raw; deflated
    for var, (variant, at) in corrupt.items():
        with h5py.File(part) as f:
            offset = f[var].id.get_chunk_info_by_coord((0, variant, 0, 0)).byte_offset + at
        with open(part, "r+b") as fh:  # one bit flipped on disk
            fh.seek(offset)
            byte = fh.read(1)[0]
            fh.seek(offset)
            fh.write(bytes([byte ^ 0x10]))
    data = DiffractionDataset(copy, "all", log=None, normalize=None, target_scale=None)
    good = DiffractionDataset(store, "all", log=None, normalize=None, target_scale=None)
    which, local = data._where
    in_part = which == [p.path for p in data._parts].index(str(part))
    clean = np.flatnonzero(~in_part | (local > 3))
    for var, (variant, _) in corrupt.items():
        bad = int(np.flatnonzero(in_part & (local == variant))[0])
        with pytest.raises(InputError, match=rf"{part.name}: cannot read {var}\[0, {variant}\]"):
            data.__getitems__([0, bad])
        with pytest.raises(InputError, match=rf"{part.name}: cannot read {var}\[0, {variant}\]"):
            data.__getitems__([bad, *clean])  # on several threads: the same error
    for i in np.flatnonzero(in_part & (local > 3)):  # the rest of the file still reads
        assert torch.equal(data[i][0], good[i][0]) and torch.equal(data[i][1], good[i][1])


@needs_torch
def test_netcdf4_reads_what_h5py_cannot(store, zstd_store, monkeypatch):
    from molmnist_dask.ml import DiffractionDataset

    asked = [30, 1, 17]
    expected = DiffractionDataset(store, "all", size=16).__getitems__(asked)
    import h5py

    for got, want in zip(DiffractionDataset(zstd_store, "all", size=16).__getitems__(asked), expected):
        assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])  # zstd: same values
    original = h5py.h5z.filter_avail
    monkeypatch.setattr(h5py.h5z, "filter_avail", lambda code: code != 1 and original(code))
    data = DiffractionDataset(store, "all", size=16)  # as h5py without deflate
    for got, want in zip(data.__getitems__(asked), expected):
        assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
    for part in data._files.open.values():
        assert part.readers["shape"][1] is None and part.nc is not None  # shapes: netCDF4
        assert part.readers["diffraction"][1] is not None  # patterns: chunks
    monkeypatch.setattr(h5py.h5z, "filter_avail", original)
    monkeypatch.setitem(sys.modules, "numcodecs", None)  # no numcodecs: h5py reads (and checks)
    data = DiffractionDataset(store, "all", size=16)
    for got, want in zip(data.__getitems__(asked), expected):
        assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
    assert all(p.readers[v][1] is None for p in data._files.open.values() for v in ("shape", "diffraction"))
    monkeypatch.setitem(sys.modules, "h5py", None)  # import h5py now fails
    for got, want in zip(DiffractionDataset(store, "all", size=16).__getitems__(asked), expected):
        assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])


@needs_torch
def test_statistics_are_cached_and_recomputed_when_the_store_changes(store, monkeypatch):
    from molmnist_dask.ml import DiffractionDataset

    for old in store.glob("ml-stats-*.json"):
        old.unlink()
    calls = []
    original = DiffractionDataset.compute_stats

    def counting(self):
        calls.append(1)
        return original(self)

    monkeypatch.setattr(DiffractionDataset, "compute_stats", counting)
    first = DiffractionDataset(store, "train", size=16)
    assert len(calls) == 1 and len(list(store.glob("ml-stats-*.json"))) == 1
    again = DiffractionDataset(store, "train", size=16)
    assert len(calls) == 1 and again.stats == first.stats  # read from the cache
    DiffractionDataset(store, "train", size=8)  # other settings: their own cache file
    assert len(calls) == 2 and len(list(store.glob("ml-stats-*.json"))) == 2
    part = _part_files(store)[0]
    os.utime(part, ns=(part.stat().st_atime_ns, part.stat().st_mtime_ns + 10**9))  # rewritten
    changed = DiffractionDataset(store, "train", size=16)
    assert len(calls) == 3 and changed.stats == first.stats


@needs_torch
def test_dataloader_workers_open_their_own_files(store, zstd_store, tmp_path):
    from torch.utils.data import DataLoader

    from molmnist_dask.ml import DiffractionDataset, area_resample

    nc = mm.consolidate(zstd_store, tmp_path / "one.nc", progress=False)
    for path in (store, zstd_store, nc):  # zstd shapes: read through netCDF4
        data = DiffractionDataset(path, "train", by="molecule", fractions=(3, 1, 0), size=16)
        assert data._files is None  # statistics read, files closed: nothing open in the parent
        batches = list(DataLoader(data, batch_size=8, num_workers=2))
        assert data._files is None  # the workers opened them, not the parent
        xs = torch.cat([b[0] for b in batches])
        ys = torch.cat([b[1] for b in batches])
        assert xs.shape == (30, 1, 16, 16) and ys.shape == (30, 1, 16, 16)
        direct = [data[i] for i in (0, 13, 29)]
        for i, (x, y) in zip((0, 13, 29), direct):
            assert torch.equal(xs[i], x) and torch.equal(ys[i], y)
        m, v = data.items[29]
        with mm.open_dataset(path) as ds:  # what netCDF4 reads, whatever the filter
            truth = area_resample(ds.shape.values[m, v], 16) / data.stats.target_max
        np.testing.assert_allclose(ys[29, 0].numpy(), truth, rtol=1e-6)
        data.close()


@needs_torch
def test_downsampling_keeps_electrons_and_crops_q(store):
    from molmnist_dask.ml import DiffractionDataset, area_resample, center_crop

    ds = mm.open_dataset(store)
    data = DiffractionDataset(store, "all", log=None, normalize=None, target_scale=None, size=12)
    x, y = data[5]
    m, v = data.items[5]
    assert y.shape == x.shape == (1, 12, 12)
    assert float(y.sum()) == pytest.approx(float(ds.shape.values[m, v].sum()), rel=1e-5)
    np.testing.assert_array_equal(x[0].numpy(), ds.diffraction.values[m, v, 10:22, 10:22])
    centre = center_crop(np.fft.fftshift(np.arange(64).reshape(8, 8)), 4)
    assert centre[2, 2] == 0  # q = 0 stays at k // 2
    image = np.arange(36.0).reshape(6, 6)
    np.testing.assert_allclose(area_resample(image, 3), image.reshape(3, 2, 3, 2).sum(axis=(1, 3)))
    assert area_resample(image.astype(np.float32), 3).dtype == np.float32
    with pytest.raises(InputError, match="size"):
        DiffractionDataset(store, size=64)


@needs_torch
def test_bad_options(store, tmp_path):
    from molmnist_dask.ml import DiffractionDataset

    with pytest.raises(InputError, match="split"):
        DiffractionDataset(store, "holdout")
    with pytest.raises(InputError, match="log"):
        DiffractionDataset(store, log="ln")
    with pytest.raises(InputError, match="in_memory"):
        DiffractionDataset(store, in_memory="yes")
    with pytest.raises(InputError, match="read_threads must be a positive integer, got 0"):
        DiffractionDataset(store, read_threads=0)
    with pytest.raises(InputError, match="no such dataset"):
        DiffractionDataset(tmp_path / "none")


@needs_torch
def test_tiny_training_on_held_out_ranges_decreases_the_loss(store):
    from molmnist_dask.ml import DiffractionDataset, UNet
    from molmnist_dask.ml.models import pattern_loss

    train = DiffractionDataset(store, "train", size=16, stripes=5, fractions=(3, 1, 1), in_memory=True)
    test = DiffractionDataset(store, "test", size=16, stripes=5, fractions=(3, 1, 1), stats=train.stats)
    held = np.unique(test.items[:, 1])
    assert len(held) == 2 and held[1] == held[0] + 1 and not set(held) & set(train.items[:, 1])
    torch.manual_seed(0)
    net = UNet(channels=(8, 16), support=torch.ones(16, 16))
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    losses = []
    for _ in range(15):
        for x, y in train.loader(batch_size=12, shuffle=True, generator=torch.Generator().manual_seed(0)):
            opt.zero_grad()
            pred = net(x)
            loss = torch.nn.functional.mse_loss(pred, y) + 0.01 * pattern_loss(
                pred, x, train.stats.target_max, train.stats.mean, train.stats.std)
            loss.backward()
            opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


@needs_torch
def test_network_shapes_and_tiny_training_run():
    from molmnist_dask.ml import EncoderDecoder

    torch.manual_seed(0)
    net = EncoderDecoder()
    convs = [m for m in net.encoder.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs] == [8, 16, 32, 64] and all(c.kernel_size == (3, 3) for c in convs)
    assert net(torch.zeros(2, 1, 40, 40)).shape == (2, 1, 40, 40)
    # learn a fixed map on 16 random images: the loss must fall
    x = torch.randn(8, 1, 16, 16)
    y = torch.nn.functional.avg_pool2d(x, 3, stride=1, padding=1).abs()
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    losses = []
    for _ in range(25):
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(net(x), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


@needs_torch
def test_ssim():
    from molmnist_dask.ml import mse, ssim

    rng = np.random.default_rng(0)
    a = rng.random((32, 32))
    assert ssim(a, a) == pytest.approx(1.0)
    assert mse(a, a) == 0
    noisy = a + 0.3 * rng.standard_normal(a.shape)
    assert ssim(noisy, a) < 0.8 and ssim(rng.random((32, 32)), a) < 0.2
    assert ssim(np.stack([a, noisy]), np.stack([a, a])) == pytest.approx((1 + ssim(noisy, a)) / 2)
    try:
        from skimage.metrics import structural_similarity
    except ImportError:
        return
    expected = structural_similarity(a, noisy, data_range=1.0, gaussian_weights=True, sigma=1.5)
    assert ssim(noisy, a, data_range=1.0) == pytest.approx(expected, abs=1e-9)


def test_phase_retrieval_recovers_an_oversampled_object():
    from molmnist_dask.phase_retrieval import align, retrieve
    from molmnist_dask.render import diffraction

    obj = np.zeros((64, 64))
    yy, xx = np.mgrid[:64, :64]
    obj[((yy - 30) ** 2 / 60 + (xx - 33) ** 2 / 30) < 1] = 2.0  # a blob well inside half the field
    obj[26:29, 30:36] += 3.0
    pattern = diffraction(obj[None], 1)[0]
    estimate = retrieve(pattern, iterations=300, seed=1)
    assert estimate.shape == obj.shape and estimate.min() >= 0
    aligned = align(estimate, obj)
    assert np.linalg.norm(aligned - obj) / np.linalg.norm(obj) < 0.15
    twin = np.roll(obj[::-1, ::-1], (5, -7), axis=(0, 1))
    np.testing.assert_allclose(align(twin, obj), obj, atol=1e-9)
    with pytest.raises(InputError, match="square"):
        retrieve(np.zeros((4, 5)))


@needs_torch
def test_training_example_runs(store, tmp_path, capsys):
    sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[1] / "examples"))
    try:
        import train_inversion
    finally:
        sys.path.pop(0)
    rc = train_inversion.main([str(store), "-o", str(tmp_path / "out"), "--size", "16", "--minutes", "0.03",
                               "--eval-images", "3", "--pr-iterations", "20", "--batch-size", "8",
                               "--fluences", "1e5", "--stripes", "5", "--threads", "1"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "held out by variant" in out and "nearest training pattern" in out and "1e+05 photons" in out
    for name in ("model-paper.pt", "model-unet-physics.pt", "metrics.json", "predictions.png"):
        assert (tmp_path / "out" / name).stat().st_size > 0
