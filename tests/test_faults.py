"""Faults and resume: a killed build, a second build, stale locks, damaged parts, a killed
worker, an unreachable scheduler, a full disk and a read-only one."""

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

import molmnist_dask as mm
from conftest import (assert_same, cli_env, closed_port, computed, looks_complete, mark_incomplete,
                      part_files, run_cli, save_sync)
from molmnist_dask import InputError, TrajectorySource
from molmnist_dask.runfile import write_run_file
from molmnist_dask.info import describe


def _stats(paths):
    return {Path(p).name: (os.stat(p).st_ino, os.stat(p).st_mtime_ns) for p in paths}


@pytest.fixture(scope="module")
def small(md, tmp_path_factory):
    """A complete store of 2 molecules x 3 blocks, its dataset, and the run file that makes it."""
    root = tmp_path_factory.mktemp("faults")
    srcs = [TrajectorySource("adk", md.PSF, md.DCD, selection="protein"),
            TrajectorySource("ca", md.PSF, md.DCD, selection="name CA")]
    opts = dict(size=32, extent=80.0, variants=8, block_size=3)
    run = write_run_file(root / "run.toml", srcs, grid={"size": 32, "extent": 80.0},
                         options={"variants": 8, "block_size": 3})
    lazy = mm.build_dataset(srcs, **opts)
    store = save_sync(lazy, root / "store", part_frames=3)
    return SimpleNamespace(root=root, srcs=srcs, opts=opts, lazy=lazy, ref=computed(lazy),
                           store=store, run=run)


@pytest.fixture
def store(small, tmp_path):
    copy = tmp_path / "store"
    shutil.copytree(small.store, copy)
    return copy


# --- an interrupted build resumes -----------------------------------------------------------

@pytest.fixture(scope="module")
def long_run(md, tmp_path_factory):
    """A run of 48 parts of one frame each, big enough to take a few seconds."""
    root = tmp_path_factory.mktemp("long")
    srcs = [TrajectorySource("adk", md.PSF, md.DCD)]
    run = write_run_file(root / "run.toml", srcs, grid={"size": 128, "extent": 90.0, "oversampling": 2},
                         options={"block_size": 1, "variants": 48})
    lazy = mm.build_dataset(srcs, size=128, extent=90.0, oversampling=2, block_size=1, variants=48)
    return SimpleNamespace(root=root, run=run, lazy=lazy, ref=computed(lazy), n_parts=48)


def test_killed_build_resumes_keeping_finished_parts(long_run, cluster, tmp_path, capsys):
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "molmnist_dask.cli", "build", str(long_run.run), "-o", str(out),
           "--workers", "2", "--no-progress", "--part-frames", "1"]
    # its own session, so that the build, its scheduler and its workers die together
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=cli_env(), start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while len(part_files(out)) < 4 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert proc.poll() is None, proc.communicate()[1].decode()[-2000:]
        # a second build of the same output while this one runs is refused, and changes nothing
        with pytest.raises(InputError, match="another build"):
            save_sync(long_run.lazy, out)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
    assert proc.returncode == -signal.SIGKILL
    kept = part_files(out)
    assert 4 <= len(kept) < long_run.n_parts
    assert (out / ".lock").exists()  # left by the killed build
    assert not looks_complete(out)
    with pytest.raises(InputError, match="resume"):
        mm.open_dataset(out)
    assert f"parts: {len(kept)}/{long_run.n_parts}" in describe(out)
    rc, stdout, _ = run_cli(["info", out], capsys)
    assert rc == 0 and f"parts: {len(kept)}/{long_run.n_parts}" in stdout and "INCOMPLETE" in stdout
    before = _stats(kept)

    # the same command again (on the session's cluster) takes over the dead build's lock
    rc, stdout, stderr = run_cli(["build", long_run.run, "-o", out, "--no-progress",
                                  "--cluster", cluster.scheduler_address], capsys)
    assert rc == 0, stderr
    assert _stats(kept) == before  # finished parts kept as they were
    assert len(part_files(out)) == long_run.n_parts and not (out / ".lock").exists()
    assert_same(mm.open_dataset(out), long_run.ref)
    assert not list((out / "parts").glob(".*.tmp")), "temporary files of the killed build left behind"


def test_other_configuration_on_the_same_output_is_refused(small, store, cluster, capsys):
    before, text = _stats(part_files(store)), (store / "index.nc").read_bytes()
    other = mm.build_dataset(small.srcs, **{**small.opts, "size": 24})
    with pytest.raises(InputError, match="different configuration"):
        save_sync(other, store)
    rc, _, stderr = run_cli(["build", small.run, "-o", store, "--variants", "6", "--no-progress",
                             "--cluster", cluster.scheduler_address], capsys)
    assert rc == 2 and "different configuration" in stderr and str(store) in stderr
    other_blocks = mm.build_dataset(small.srcs, **{**small.opts, "block_size": 4})
    save_sync(other_blocks, store, part_frames=4)  # chunks and part sizes change no byte: kept
    assert _stats(part_files(store)) == before and (store / "index.nc").read_bytes() == text
    assert_same(mm.open_dataset(store), small.ref)


def _dead_pid() -> int:
    p = subprocess.Popen(["true"])
    p.wait()
    return p.pid


def _make_incomplete(store, n=1):
    mark_incomplete(store, n)


def test_stale_lock_of_a_dead_process_is_taken_over(small, store):
    from test_lock import holder

    _make_incomplete(store)
    proc = holder(store)  # a real build's lease, then the build dies
    proc.kill()
    proc.wait()
    save_sync(small.lazy, store)
    assert not (store / ".lock").exists()
    assert_same(mm.open_dataset(store), small.ref)


@pytest.mark.parametrize("host", [None, "node0042"])
def test_lock_of_a_live_build_is_respected(small, store, host):
    from test_lock import holder

    _make_incomplete(store)
    proc = holder(store, host)  # alive, renewing its lease (on this host or another)
    try:
        before, lock = _stats(part_files(store)), (store / ".lock").read_bytes()
        with pytest.raises(InputError, match="another build") as err:
            save_sync(small.lazy, store)
        assert str(proc.pid) in str(err.value) and "\n" not in str(err.value)
        assert _stats(part_files(store)) == before
    finally:
        proc.kill()
        proc.wait()


# --- damaged parts are found, named and recomputed ------------------------------------------

def test_truncated_part_is_named_and_recomputed(small, store, capsys):
    victim = part_files(store)[2]
    others = _stats([p for p in part_files(store) if p != victim])
    with open(victim, "r+b") as f:
        f.truncate(victim.stat().st_size // 2)
    rc, stdout, stderr = run_cli(["verify", store], capsys)
    assert rc == 2 and victim.name in stdout and "1 damaged" in stderr
    with pytest.warns(UserWarning, match=victim.name):
        save_sync(small.lazy, store)  # the quick check finds it: it does not open
    assert _stats([p for p in part_files(store) if p != victim]) == others
    assert_same(mm.open_dataset(store), small.ref)
    assert run_cli(["verify", store], capsys)[0] == 0


def _flip_bytes_in_an_image(part: Path):
    """Flip 4 bytes in the middle of one stored (uncompressed) diffraction image."""
    import netCDF4

    with netCDF4.Dataset(part) as nc:
        image = np.asarray(nc.variables["diffraction"][0, 1], dtype="<f4")
    raw = bytearray(part.read_bytes())
    at = raw.find(image.tobytes())
    assert at > 0 and raw.count(image.tobytes()) == 1
    mid = at + image.nbytes // 2
    raw[mid:mid + 4] = bytes(b ^ 0xFF for b in raw[mid:mid + 4])
    part.write_bytes(bytes(raw))


def test_flipped_bytes_are_found_by_full_check_and_recomputed(small, store, capsys):
    victim = part_files(store)[4]
    _flip_bytes_in_an_image(victim)
    rc, stdout, stderr = run_cli(["verify", store], capsys)
    assert rc == 2 and victim.name in stdout and "--repair" in stderr
    with pytest.raises(InputError, match=victim.name):  # the checksum stops a read of that image
        mm.open_dataset(store)["diffraction"].values
    with pytest.warns(UserWarning, match=victim.name):
        save_sync(small.lazy, store, check="full")
    assert_same(mm.open_dataset(store), small.ref)


def test_verify_repair_then_build(small, store, cluster, capsys):
    victim = part_files(store)[1]
    _flip_bytes_in_an_image(victim)
    rc, stdout, stderr = run_cli(["verify", store, "--repair"], capsys)
    assert rc == 2 and victim.name in stdout and "deleted" in stderr
    assert not victim.exists() and "parts: 5/6" in describe(store)
    with pytest.raises(InputError, match="resume"):
        mm.open_dataset(store)
    rc, _, stderr = run_cli(["build", small.run, "-o", store, "--no-progress",
                             "--cluster", cluster.scheduler_address], capsys)
    assert rc == 0, stderr
    assert_same(mm.open_dataset(store), small.ref)


# --- the cluster misbehaves -------------------------------------------------------------------

def test_worker_killed_mid_build(client, md, tmp_path):
    srcs = [TrajectorySource("adk", md.PSF, md.DCD), TrajectorySource("ca", md.PSF, md.DCD, selection="name CA")]
    lazy = mm.build_dataset(srcs, size=64, extent=90.0, oversampling=2, variants=30, block_size=1)
    ref = computed(lazy)
    out = tmp_path / "out"
    pids = client.run(os.getpid)
    victim = sorted(pids.values())[0]
    killed = {}

    def kill_when_parts_appear():
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            n = len(part_files(out)) if (out / "parts").exists() else 0
            if n >= 4:
                killed["parts"] = n
                os.kill(victim, signal.SIGKILL)
                return
            time.sleep(0.005)

    watcher = threading.Thread(target=kill_when_parts_appear)
    watcher.start()
    try:
        mm.save_dataset(lazy, out, progress=False, part_frames=2)
    finally:
        watcher.join()
        client.wait_for_workers(2, timeout=60)  # the nanny restarts it for the next tests
    assert 4 <= killed["parts"] < 60, "the worker was not killed while the build ran"
    with pytest.raises(ProcessLookupError):
        os.kill(victim, 0)
    assert victim not in client.run(os.getpid).values()
    assert_same(mm.open_dataset(out), ref)


def test_unreachable_scheduler_is_a_clear_error(small, tmp_path, monkeypatch, capsys):
    import molmnist_dask.cluster as cluster_module

    monkeypatch.setattr(cluster_module, "CONNECT_TIMEOUT", "2s")
    address = f"tcp://127.0.0.1:{closed_port()}"
    t = time.monotonic()
    rc, _, stderr = run_cli(["build", small.run, "-o", tmp_path / "out", "--no-progress",
                             "--cluster", address], capsys)
    assert time.monotonic() - t < 30
    assert rc == 2 and address in stderr
    rc, _, stderr = run_cli(["build", small.run, "-o", tmp_path / "out", "--no-progress",
                             "--scheduler-file", tmp_path / "scheduler.json"], capsys)
    assert rc == 2 and "scheduler.json" in stderr
    assert not looks_complete(tmp_path / "out")


# --- the disk misbehaves ----------------------------------------------------------------------

@contextlib.contextmanager
def _tmpfs(where: Path, options: str):
    """A 1 MiB tmpfs at ``where`` (skips where mounting is not allowed), unmounted after."""
    where.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"{options}size=1m", "tmpfs", str(where)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip()}): "
                    "full and read-only disks not tested")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], capture_output=True)


@pytest.fixture
def tiny_disk(tmp_path):
    with _tmpfs(tmp_path / "tiny", "") as where:
        yield where


@pytest.fixture
def read_only_disk(tmp_path):
    with _tmpfs(tmp_path / "ro", "ro,") as where:
        yield where


def test_full_disk_is_a_clear_error_and_the_build_resumes_after(long_run, tiny_disk):
    out = tiny_disk / "out"  # 30 parts of 256 KiB of diffraction each: far over 1 MiB
    lazy = long_run.lazy.isel(variant=slice(0, 30))
    ref = long_run.ref.isel(variant=slice(0, 30))
    with pytest.raises(InputError) as err:
        save_sync(lazy, out)
    text = str(err.value)
    assert str(out) in text and "\n" not in text
    assert not looks_complete(out) and not (out / ".lock").exists()
    # room is made: the same build resumes and completes
    subprocess.run(["mount", "-o", "remount,size=64m", str(tiny_disk)], check=True)
    save_sync(lazy, out)
    assert_same(mm.open_dataset(out), ref)


def test_full_disk_nc_output(small, tiny_disk):
    out = tiny_disk / "out.nc"
    lazy = mm.build_dataset(small.srcs, **{**small.opts, "size": 128, "oversampling": 2})
    with pytest.raises(InputError) as err:
        save_sync(lazy, out)
    assert "out.nc" in str(err.value) and "\n" not in str(err.value)
    assert not out.exists()


def test_full_disk_before_anything_is_written(small, tiny_disk):
    filler = tiny_disk / "filler"
    with open(filler, "wb") as f:
        try:
            while True:
                f.write(b"\0" * 65536)
                f.flush()
        except OSError:
            pass
    out = tiny_disk / "out"
    with pytest.raises(InputError) as err:
        save_sync(small.lazy, out)
    assert str(out) in str(err.value)
    assert not looks_complete(out)


def test_read_only_output(small, read_only_disk, cluster, capsys):
    out = read_only_disk / "out"
    with pytest.raises(InputError, match="Read-only") as err:
        save_sync(small.lazy, out)
    assert str(out) in str(err.value)
    rc, _, stderr = run_cli(["build", small.run, "-o", out, "--no-progress",
                             "--cluster", cluster.scheduler_address], capsys)
    assert rc == 2 and str(out) in stderr
    assert not out.exists()


# --- errors keep their culprit ----------------------------------------------------------------

@pytest.fixture(scope="module")
def corrupt_dcd(md, tmp_path_factory):
    """adk's DCD with the record marker of frame 50 overwritten: frames 0-49 and 51-97 read."""
    import MDAnalysis as mda

    raw = bytearray(Path(md.DCD).read_bytes())
    n = mda.Universe(md.PSF).atoms.n_atoms
    frame = 3 * (4 * n + 8)
    header = len(raw) - 98 * frame
    at = header + 50 * frame
    raw[at:at + 4] = b"\xff\xff\xff\x7f"
    path = tmp_path_factory.mktemp("corrupt") / "corrupt.dcd"
    path.write_bytes(bytes(raw))
    return path


def test_unreadable_frame_mid_build_names_molecule_file_and_frame(md, corrupt_dcd, client, tmp_path):
    lazy = mm.build_dataset([TrajectorySource("adk", md.PSF, str(corrupt_dcd))], size=32, extent=80.0)
    with pytest.raises(InputError) as err:
        mm.save_dataset(lazy, tmp_path / "out", progress=False)
    text = str(err.value)
    assert "'adk'" in text and "corrupt.dcd" in text and "frame 50" in text and "\n" not in text
    assert not looks_complete(tmp_path / "out")
    # the part that holds frame 50 is not there as a finished file (others may be, atomically)
    for part in part_files(tmp_path / "out"):
        start, stop = (int(x) for x in part.stem.split("-")[1:])
        assert not start <= 50 < stop, part


def test_unreadable_frame_through_the_cli(md, corrupt_dcd, tmp_path):
    run = write_run_file(tmp_path / "run.toml", [TrajectorySource("adk", md.PSF, str(corrupt_dcd))],
                         grid={"size": 32, "extent": 80.0})
    done = subprocess.run([sys.executable, "-m", "molmnist_dask.cli", "build", str(run), "-o",
                           str(tmp_path / "out"), "--workers", "1", "--no-progress"],
                          env=cli_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert "frame 50" in last and "corrupt.dcd" in last and "'adk'" in last


def test_grid_too_large_is_refused_at_plan_time(md, tmp_path, capsys):
    with pytest.raises(InputError) as err:
        mm.build_dataset([TrajectorySource("adk", md.PSF, md.DCD)], size=1_000_000, extent=80.0)
    assert "size=1000000" in str(err.value) and "TiB" in str(err.value)
    run = write_run_file(tmp_path / "run.toml", [TrajectorySource("adk", md.PSF, md.DCD)],
                         grid={"size": 1_000_000, "extent": 80.0})
    rc, _, stderr = run_cli(["build", run, "-o", tmp_path / "out", "--no-progress"], capsys)
    assert rc == 2 and "size=1000000" in stderr and len(stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()
