"""The molmnist command: build from a run file, flags over the run file, info, verify,
consolidate; and bad input: one line naming the fault, exit status 2, no output that looks done."""

import subprocess
import sys
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
