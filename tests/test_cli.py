"""The molmnist command: build from a run file, flags over the run file, info, verify,
consolidate; and bad input: one line naming the fault, exit status 2, no output that looks done."""

import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import xarray as xr

import molmnist_dask as mm
from conftest import assert_same, cli_env, computed, looks_complete, run_cli
from molmnist_dask import TrajectorySource
from molmnist_dask.runfile import load_run_file, write_run_file


@pytest.fixture(scope="module")
def run(md, tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    srcs = [TrajectorySource("adk", md.PSF, md.DCD, selection="protein"),
            TrajectorySource("ca", md.PSF, md.DCD, selection="name CA")]
    path = write_run_file(root / "run.toml", srcs, grid={"size": 32, "extent": 80.0},
                          options={"variants": 4, "block_size": 2})
    cfg = load_run_file(path)
    return SimpleNamespace(root=root, path=path, sources=srcs,
                           ref=computed(mm.build_dataset(cfg.sources, cfg.options)))


def test_build_then_info(run, cluster, tmp_path, capsys):
    out = tmp_path / "store"
    rc, stdout, stderr = run_cli(["build", run.path, "-o", out, "--no-progress",
                                  "--cluster", cluster.scheduler_address], capsys)
    assert rc == 0, stderr
    assert f"wrote {out}" in stdout and "dashboard" in stdout
    assert_same(mm.open_dataset(out), run.ref)
    rc, stdout, _ = run_cli(["info", out], capsys)
    assert rc == 0
    assert "parts: 4/4" in stdout and "complete" in stdout  # 8 frames, 2 threads: 2 parts each
    assert "adk" in stdout and "ca" in stdout and "32 x 32" in stdout
    rc, stdout, _ = run_cli(["verify", out], capsys)
    assert rc == 0 and "valid checksums" in stdout
    rc, stdout, _ = run_cli(["consolidate", out, tmp_path / "one.nc", "--no-progress"], capsys)
    assert rc == 0
    assert_same(mm.open_dataset(tmp_path / "one.nc"), run.ref)


def test_flags_override_the_run_file(run, cluster, tmp_path, capsys):
    out = tmp_path / "over"
    rc, _, stderr = run_cli(["build", run.path, "-o", out, "--size", "24", "--extent", "60",
                             "--variants", "3", "--oversampling", "2", "--center", "none",
                             "--block-size", "1", "--no-progress", "--cluster",
                             cluster.scheduler_address], capsys)
    assert rc == 0, stderr
    ds = mm.open_dataset(out)
    assert ds.sizes["x"] == 24 and ds.sizes["qx"] == 48 and ds.sizes["variant"] == 3
    assert ds.attrs["grid_extent"] == 60.0 and ds.attrs["center"] == "None"
    assert ds.attrs["block_size"] == 1
    ref = computed(mm.build_dataset(run.sources, size=24, extent=60.0, variants=3, oversampling=2,
                                    center=None, block_size=1))
    assert_same(ds, ref)


def test_build_in_a_subprocess(run, cluster, tmp_path):
    out = tmp_path / "sub.nc"
    cmd = [sys.executable, "-m", "molmnist_dask.cli", "build", str(run.path), "-o", str(out),
           "--cluster", cluster.scheduler_address, "--no-progress"]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, env=cli_env(), timeout=180)
    assert done.returncode == 0, done.stderr
    assert f"wrote {out}" in done.stdout
    assert not (tmp_path / "sub.nc.parts").exists()
    with xr.open_dataset(out) as ds:
        assert_same(ds.load(), run.ref, attrs=False)


# --- bad input ------------------------------------------------------------------------------

MOLECULE = '[[molecule]]\nname = "{name}"\ntopology = "{top}"\ntrajectory = ["{traj}"]\nselection = "{sel}"\n{extra}\n'


def _molecule(name="adk", top=None, traj=None, sel="all", extra="", md=None):
    return MOLECULE.format(name=name, top=top or md.PSF, traj=traj or md.DCD, sel=sel, extra=extra)


def _cases(md, made, tmp_path):
    """(id, run-file text or None, extra argv, output name, words the error line must hold)."""
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    grid = "[grid]\nsize = 16\nextent = 100.0\n\n"
    m = lambda **k: _molecule(md=md, **k)  # noqa: E731
    return [
        ("missing-trajectory", grid + m(traj=str(tmp_path / "gone.dcd")), [], "out", ["adk", "gone.dcd"]),
        ("not-a-dcd", grid + m(traj=made.not_dcd), [], "out", ["adk", "x.dcd"]),
        ("atom-count-mismatch", grid + m(traj=md.XTC), [], "out", ["adk", "adk_oplsaa.xtc"]),
        ("invalid-selection", grid + m(sel="protein and"), [], "out", ["adk", "protein and"]),
        ("empty-selection", grid + m(sel="resname XYZ"), [], "out", ["adk", "resname XYZ"]),
        ("start-beyond", grid + m(extra="start = 500"), [], "out", ["adk", "start=500"]),
        ("stop-beyond", grid + m(extra="stop = 500"), [], "out", ["adk", "stop=500"]),
        ("nan-coordinates", grid + m(name="nanmol", traj=made.nan), [], "out", ["nanmol", "NaN", "frame 2"]),
        ("nan-coordinates-nc", grid + m(name="nanmol", traj=made.nan), [], "out.nc", ["nanmol", "frame 2"]),
        ("size-flag-zero", grid + m(), ["--size", "0"], "out", ["--size"]),
        ("extent-flag-negative", grid + m(), ["--extent", "-5"], "out", ["--extent"]),
        ("size-zero-in-file", "[grid]\nsize = 0\n\n" + m(), [], "out", ["size"]),
        ("extent-negative-in-file", "[grid]\nextent = -1.0\n\n" + m(), [], "out", ["extent"]),
        ("duplicate-names", grid + m() + m(), [], "out", ["duplicate", "adk"]),
        ("unknown-key", "[grid]\nsise = 16\n\n" + m(), [], "out", ["run.toml", "sise"]),
        ("mistyped-key", grid + m(extra="selecton = 'all'"), [], "out", ["run.toml", "selecton"]),
        ("wrong-type", "[grid]\nsize = '16'\n\n" + m(), [], "out", ["run.toml", "size"]),
        ("frame-counts-differ", grid + m() + m(name="gro", top=md.GRO, traj=md.XTC), [], "out",
         ["adk: 98", "gro: 10"]),
        ("variants-beyond-frames", grid + m(name="gro", top=md.GRO, traj=md.XTC), ["--variants", "11"],
         "out", ["gro", "variants=11"]),
        ("output-under-a-file", grid + m(extra="stop = 3"), [], blocker / "out", ["a-file"]),
        ("output-in-proc", grid + m(extra="stop = 3"), [], "/proc/molmnist-test/out", ["/proc/molmnist-test"]),
        ("missing-run-file", None, [], "out", ["nothere.toml"]),
    ]


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")  # MDAnalysis
def test_bad_input_one_line_exit_2_no_output(md, made, cluster, tmp_path, capsys):
    problems = []
    for case_id, text, argv, out_name, words in _cases(md, made, tmp_path):
        folder = tmp_path / case_id
        folder.mkdir()
        run_file = folder / ("run.toml" if text is not None else "nothere.toml")
        if text is not None:
            run_file.write_text(text)
        out = out_name if str(out_name).startswith("/") else folder / out_name
        rc, stdout, stderr = run_cli(["build", run_file, "-o", out, "--no-progress",
                                      "--cluster", cluster.scheduler_address, *argv], capsys)
        errors = [line for line in stderr.splitlines() if "error:" in line]
        if rc != 2:
            problems.append(f"{case_id}: exit {rc}, stderr {stderr[-300:]!r}")
        elif len(errors) != 1:
            problems.append(f"{case_id}: {len(errors)} error lines in {stderr[-500:]!r}")
        else:
            missing = [w for w in words if w not in errors[0]]
            if missing:
                problems.append(f"{case_id}: {errors[0]!r} lacks {missing}")
        # (MDAnalysis' DCDReader.__del__ fails on a file whose header it could not read and
        # Python prints that as "Exception ignored in ..."; that is upstream, not ours)
        if "Traceback" in stderr and "Exception ignored in" not in stderr:
            problems.append(f"{case_id}: traceback printed")
        if looks_complete(out):
            problems.append(f"{case_id}: {out} looks complete")
    assert not problems, "\n".join(problems)


def test_worker_side_error_is_one_line_with_the_default_cluster(md, made, tmp_path):
    run_file = write_run_file(tmp_path / "run.toml", [TrajectorySource("nanmol", md.PSF, made.nan)],
                              grid={"size": 16, "extent": 100.0})
    cmd = [sys.executable, "-m", "molmnist_dask.cli", "build", str(run_file), "-o", str(tmp_path / "out"),
           "--workers", "1", "--no-progress"]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, env=cli_env(), timeout=180)
    assert done.returncode == 2 and "frame 2" in done.stderr
    assert [line for line in done.stderr.splitlines() if line.strip()] == \
        [f"molmnist: error: molecule 'nanmol': NaN or infinite coordinates in frame 2 of {made.nan}"]


def test_info_and_verify_of_what_is_not_a_store(tmp_path, capsys):
    for command in ("info", "verify"):
        rc, _, stderr = run_cli([command, tmp_path / "nothing"], capsys)
        assert rc == 2 and "nothing" in stderr


# --- issue 18: the CLI answers mistakes well (each through the command, in a subprocess) -------

def _molmnist(*argv, cwd=None, timeout=180):
    """``python -m molmnist_dask.cli ARGV``: (exit status, stdout lines, stderr lines)."""
    done = subprocess.run([sys.executable, "-m", "molmnist_dask.cli", *map(str, argv)], cwd=cwd,
                          capture_output=True, text=True, env=cli_env(), timeout=timeout)
    lines = lambda text: [line for line in text.splitlines() if line.strip()]  # noqa: E731
    return done.returncode, lines(done.stdout), lines(done.stderr)


@pytest.fixture(scope="module")
def built(run, cluster, tmp_path_factory):
    """A finished store of the run file (4 parts)."""
    out = tmp_path_factory.mktemp("built") / "store"
    rc, _, err = _molmnist("build", run.path, "-o", out, "--no-progress", "--cluster",
                           cluster.scheduler_address)
    assert rc == 0, err
    return out


def _snapshot(folder):
    return {p: (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(folder.rglob("*"))}


def test_a_finished_build_run_again_says_complete_and_writes_nothing(run, built):
    before = _snapshot(built.parent)
    rc, out, err = _molmnist("build", run.path, "-o", built, "--no-progress")  # no --cluster
    assert (rc, out, err) == (0, [f"{built}: complete (4 parts); nothing to do"], [])
    assert _snapshot(built.parent) == before  # no lock, no index rewritten, no cluster started


def test_a_finished_nc_run_again_says_complete(run, cluster, tmp_path):
    out = tmp_path / "one.nc"
    assert _molmnist("build", run.path, "-o", out, "--no-progress", "--cluster",
                     cluster.scheduler_address)[0] == 0
    stamp = out.stat().st_mtime_ns
    assert _molmnist("build", run.path, "-o", out) == (0, [f"{out}: complete; nothing to do"], [])
    assert out.stat().st_mtime_ns == stamp


def test_an_output_that_cannot_be_a_dataset_is_refused_before_any_cluster(run, tmp_path):
    plain = tmp_path / "notes"
    plain.write_text("my notes\n")
    other = tmp_path / "photos"
    other.mkdir()
    (other / "cat.jpg").write_bytes(b"\xff\xd8")
    folder_nc = tmp_path / "dir.nc"
    folder_nc.mkdir()
    cases = [  # (argv, words of the one error line)
        (["build", run.path, "-o", plain], ["notes: exists and is a file, not a store folder"]),
        (["build", "-o", plain, "--variants", "2"], ["notes: exists and is a file"]),  # default build
        (["build", run.path, "-o", other], ["photos: exists and is not a molmnist store", "cat.jpg"]),
        (["build", run.path, "-o", folder_nc], ["dir.nc: is a folder, not a .nc file"]),
        (["build", run.path, "-o", plain / "out"], ["cannot write output", "notes is a file"]),
    ]
    before = _snapshot(tmp_path)
    for argv, words in cases:
        started = time.perf_counter()
        rc, out, err = _molmnist(*argv, cwd=tmp_path)
        assert rc == 2 and out == [] and len(err) == 1, (argv, out, err)
        assert err[0].startswith("molmnist: error: ") and all(w in err[0] for w in words), err
        assert time.perf_counter() - started < 30  # no cluster (its start prints the dashboard)
    assert _snapshot(tmp_path) == before  # nothing left behind: no molmnist-cellulose/


def test_an_output_holding_another_dataset_is_refused_before_any_cluster(run, built):
    rc, out, err = _molmnist("build", run.path, "-o", built, "--size", "16")
    assert rc == 2 and out == [] and len(err) == 1
    assert "holds another dataset" in err[0] and "dashboard" not in " ".join(out)


def _copy(store, tmp_path):
    import shutil

    return Path(shutil.copytree(store, tmp_path / "copy"))


def test_verify_tells_missing_parts_from_damaged_ones(built, tmp_path):
    from conftest import mark_incomplete, part_files

    store = _copy(built, tmp_path)
    mark_incomplete(store, n=1)
    rc, out, err = _molmnist("verify", store)
    assert rc == 2 and len(out) == 1 and out[0].endswith(": missing")
    assert err == [f"molmnist: error: {store}: 1 part(s) missing, none damaged (an unfinished build: "
                   "run the build again to make them)"]
    victim = part_files(store)[0]
    with open(victim, "r+b") as f:
        f.truncate(victim.stat().st_size // 2)
    rc, out, err = _molmnist("verify", store)
    assert rc == 2 and len(out) == 2
    assert err == [f"molmnist: error: {store}: 1 damaged part(s), and 1 missing (use --repair, then "
                   "run the build again)"]
    rc, out, err = _molmnist("verify", store, "--repair")
    assert rc == 2 and not victim.exists()
    assert err == [f"molmnist: error: {store}: 1 damaged part(s) deleted, and 1 missing; run the "
                   "build again to make them"]
    assert _molmnist("verify", built) == (0, [f"{built}: every part reads back with valid checksums"], [])


def test_a_closed_pipe_ends_quietly(built):
    # the reader is gone before molmnist writes (as `molmnist info STORE | head -0`)
    proc = subprocess.Popen([sys.executable, "-m", "molmnist_dask.cli", "info", str(built)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=cli_env())
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 141 and err == ""
    done = subprocess.run(f"{sys.executable} -m molmnist_dask.cli info {built} | head -n 1",
                          shell=True, capture_output=True, text=True, env=cli_env(), timeout=120)
    assert done.stdout.startswith(str(built)) and done.stderr == ""


def test_every_argument_has_help_with_its_default():
    import argparse

    from molmnist_dask.cli import parser

    top = parser()
    commands = next(a for a in top._actions if isinstance(a, argparse._SubParsersAction)).choices
    problems = []
    for name, sub in commands.items():
        for action in sub._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            flag = "/".join(action.option_strings) or action.dest
            words = action.help or ""
            if not words:
                problems.append(f"{name} {flag}: no help")
            elif "default" not in words and "required" not in words:
                problems.append(f"{name} {flag}: help says no default: {words!r}")
    assert not problems, "\n".join(problems)
    build = commands["build"].format_help()
    assert "frames per task" not in build
    synth = commands["synth"].format_help()
    assert "run file's" not in synth


def test_help_has_no_rest_markup():
    from molmnist_dask.cli import COMMANDS

    for argv in [["--help"]] + [[c, "--help"] for c in COMMANDS]:
        rc, out, err = _molmnist(*argv)
        assert rc == 0 and out and not err, argv
        assert not [line for line in out if "``" in line], argv
