"""A lock file that keeps two builds from writing the same store at once."""

from __future__ import annotations

import os
import socket
from pathlib import Path

from .errors import InputError


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class StoreLock:
    """``with StoreLock(folder):`` holds ``folder/.lock``; a live holder makes it an InputError.

    A lock left by a process that died (same host, pid gone) is taken over, so a build killed
    by its wall time can be resumed.
    """

    def __init__(self, root: Path):
        self.path = Path(root) / ".lock"

    def __enter__(self):
        me = f"{socket.gethostname()} {os.getpid()}"
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                if self._held_by_live_process():
                    raise InputError(f"{self.path.parent}: another build is writing it "
                                     f"({self.path.read_text().strip()}); wait for it or stop it") from None
                self.path.unlink(missing_ok=True)
                continue
            with os.fdopen(fd, "w") as f:
                f.write(me)
            return self
        raise InputError(f"{self.path}: cannot take the store lock")

    def _held_by_live_process(self) -> bool:
        try:
            host, pid = self.path.read_text().split()
        except (OSError, ValueError):
            return False
        return host != socket.gethostname() or _alive(int(pid))

    def __exit__(self, *exc):
        self.path.unlink(missing_ok=True)
