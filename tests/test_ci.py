"""The README's test command runs for any user: without root or a Slurm, tests/test_slurm.py
skips in one line that says why and how to run it (run here as ``nobody`` when we are root)."""

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from conftest import REPO


def _as_a_user_without_slurm(folder: Path, how: str) -> dict:
    """The environment of a plain user's shell (CI unset) where Slurm is absent (``how``:
    "absent", no sinfo on PATH) or unreachable ("unreachable": a slurm.conf whose controller
    listens nowhere)."""
    env = {"HOME": str(folder), "MPLCONFIGDIR": str(folder), "LANG": "C.UTF-8", "PYTHONPATH": str(REPO),
           "PATH": str(folder) + (":/usr/bin:/bin" if how == "unreachable" else "")}
    if how == "unreachable":
        conf = folder / "slurm.conf"
        conf.write_text("ClusterName=none\nSlurmctldHost=localhost\nSlurmctldPort=9\nMessageTimeout=2\n"
                        "NodeName=none\nPartitionName=none Nodes=none\n")
        conf.chmod(0o644)
        env["SLURM_CONF"] = str(conf)
    return env


@pytest.mark.parametrize("how", ["absent", "unreachable"])
def test_without_root_or_slurm_the_slurm_tests_skip_in_one_line(how):
    """The module, run as ``nobody`` (when we are root; else as ourselves) without Slurm."""
    folder = Path(tempfile.mkdtemp(prefix="molmnist-nobody-"))
    try:
        folder.chmod(0o777)  # nobody writes pytest's temporary files here
        env = _as_a_user_without_slurm(folder, how)
        user = []
        if os.geteuid() == 0:
            setpriv = shutil.which("setpriv") or pytest.skip("root without setpriv cannot become nobody")
            # nobody, keeping from root only the right to read files: root's Python may lie
            # where no one else may read it (here /root is 0700); it writes, runs and asks Slurm
            # for nothing as root
            user = [setpriv, "--reuid=nobody", "--regid=nogroup", "--clear-groups",
                    "--inh-caps=+dac_read_search", "--ambient-caps=+dac_read_search"]
        cmd = [*user, sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider",
               f"--basetemp={folder / 'tmp'}", str(REPO / "tests" / "test_slurm.py")]
        done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    skipped = [line for line in done.stdout.splitlines() if line.startswith("SKIPPED")]
    # 5: pytest's "no tests collected", as the module skips whole (in a full run, 0)
    assert done.returncode == 5 and not done.stderr, done.stdout[-3000:] + done.stderr[-2000:]
    assert "1 skipped" in done.stdout and len(skipped) == 1, done.stdout[-3000:]
    why = "Slurm is not installed" if how == "absent" else "sinfo failed"
    assert why in skipped[0] and "sudo MOLMNIST_SLURM=1 bash .ci/run" in skipped[0], skipped[0]
