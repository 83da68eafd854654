"""A lease on a folder, so that two builds (or two syntheses) never write it at once.

Why a lease, and not ``flock``/``fcntl`` or the ``filelock`` package: on Lustre (NERSC),
byte-range and flock locks work only where the file system is mounted with ``flock``, and a
lock held by a node that vanished stays until the servers evict that client. A lease needs
only what every shared POSIX file system gives: an exclusive create (``O_EXCL``), renames
and small writes. It tells a dead build from a live one on any host:

- the holder writes ``FOLDER/.lock``: one JSON line (host, pid, a random token, a beat
  counter and the time it expires) and a thread renews it every ``renew`` seconds
  (``molmnist.lock.renew``, at most a quarter of the lease; molmnist.yaml has the defaults),
  raising the beat;
- another process, on this host, takes over at once when the holder's pid is gone;
- on another host (or for a pid this host cannot see) it watches the beat: a holder that
  beats is alive (a one-line `InputError`), one that has not beaten for ``lease`` seconds
  of the watcher's own clock (``molmnist.lock.lease``) is dead, and its lock is
  taken over. So a build killed with its node resumes on any node, after at most a lease;
  no clock needs to agree with another, except to skip the wait for a lock whose expiry
  lies more than a lease in the past.

Taking over renames the stale lock to a private name and checks it is the one judged dead
(if a live lock was moved by mistake, it is put back). The environment variable
``MOLMNIST_LOCK_HOST`` replaces the host name, for tests of several hosts on one machine.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid
from pathlib import Path

from .errors import InputError
from .settings import seconds

NAME = ".lock"
RECORD_BYTES = 512  # the lock file is padded to this: a renewal is one write of one block


def host() -> str:
    """This machine's name as the lock records it."""
    return os.environ.get("MOLMNIST_LOCK_HOST") or socket.gethostname()


def timings() -> tuple:
    """(lease, renew) in seconds, from dask's config ``molmnist.lock.lease`` / ``.renew``.

    A holder beats at least four times a lease, so one late beat never makes it look dead:
    the renewal is the configured one or a quarter of the lease, whichever is shorter.
    """
    lease, renew = seconds("lock.lease"), seconds("lock.renew")
    if not renew < lease:
        raise InputError(f"molmnist.lock.renew ({renew:g}) must be below molmnist.lock.lease ({lease:g})")
    return lease, min(renew, lease / 4)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class StoreLock:
    """``with StoreLock(folder):`` holds ``folder/.lock`` as a renewed lease.

    Parameters
    ----------
    root : path-like
        The folder (a store, a synthesis folder); it must exist.
    what : str
        What the holder does, for the message another process prints ("build", "synthesis").
    wait : bool
        Whether to wait (at most a lease) to learn if a lock from another host is alive;
        without waiting such a lock is refused.

    Raises
    ------
    InputError
        On entering, if a live process holds the lock.
    """

    def __init__(self, root, what: str = "build", wait: bool = True):
        self.path = Path(root) / NAME
        self.what = what
        self.wait = wait
        self.token = uuid.uuid4().hex
        self.lost = False
        self._fd = None
        self._beat = 0
        self._stop = threading.Event()
        self._thread = None

    # -- holding -----------------------------------------------------------------------------

    def __enter__(self):
        self.lease, self.renew = timings()
        for _ in range(20):
            if self._create():
                self._thread = threading.Thread(target=self._renew_loop, daemon=True,
                                                name=f"molmnist-lock-{self.path.parent.name}")
                self._thread.start()
                return self
            self._take_over_if_dead()
        raise InputError(f"{self.path}: cannot take the lock (it keeps changing hands)")

    def __exit__(self, *exc):
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        try:
            if (self._read() or {}).get("token") == self.token:
                self.path.unlink(missing_ok=True)
        finally:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None

    def check(self) -> None:
        """Raise `InputError` if the lease was lost (taken over while this process stalled)."""
        if self.lost:
            raise InputError(f"{self.path.parent}: lost its lock to another {self.what} "
                             f"(this process stalled longer than the {self.lease:g} s lease)")

    def _record(self) -> bytes:
        now = time.time()
        data = {"host": host(), "pid": os.getpid(), "token": self.token, "beat": self._beat,
                "what": self.what, "renewed": round(now, 3), "expires": round(now + self.lease, 3)}
        return json.dumps(data).encode().ljust(RECORD_BYTES - 1) + b"\n"

    def _create(self) -> bool:
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        os.pwrite(fd, self._record(), 0)
        os.fsync(fd)
        self._fd = fd
        return True

    def _renew_loop(self) -> None:
        while not self._stop.wait(self.renew):
            current = self._read()
            if current is not None and current.get("token") != self.token:
                self.lost = True    # taken over: stop writing into another holder's lock
                return
            self._beat += 1
            try:
                os.pwrite(self._fd, self._record(), 0)
            except OSError:
                pass                # a full or flaky file system: the next beat tries again

    # -- another holder ------------------------------------------------------------------------

    def _read_raw(self):
        try:
            return self.path.read_bytes()
        except (FileNotFoundError, IsADirectoryError):
            return None

    def _read(self):
        """The lock's record; None if there is no lock; {} if it cannot be read (being written)."""
        for _ in range(5):
            raw = self._read_raw()
            if raw is None:
                return None
            try:
                record = json.loads(raw)
                if isinstance(record, dict) and "token" in record:
                    return record
            except ValueError:
                pass
            time.sleep(0.05)   # created but not yet written: look again
        return {}

    def _take_over_if_dead(self) -> None:
        record = self._read()
        if record is None:
            return                      # released meanwhile: try to create it again
        if not self._dead(record):
            if self._read() is None:
                return                  # released while we watched: try to create it again
            raise InputError(self._busy_message(record))
        private = self.path.with_name(f"{NAME}.stale-{uuid.uuid4().hex[:8]}")
        try:
            os.rename(self.path, private)
        except FileNotFoundError:
            return                      # another process took it over first
        try:
            moved = json.loads(private.read_bytes())
        except ValueError:
            moved = {}
        if moved.get("token") != record.get("token") or moved.get("beat") != record.get("beat"):
            try:                        # not the lock judged dead: put it back
                os.link(private, self.path)
            except FileExistsError:
                pass
        private.unlink(missing_ok=True)

    def _dead(self, record: dict) -> bool:
        if not record:                  # unreadable for a while: dead if not touched for a lease
            return self._age() > self.lease
        if record.get("host") == host():
            pid = record.get("pid")
            return not (isinstance(pid, int) and _alive(pid)) or record.get("expires", 0) < time.time()
        if record.get("expires", 0) < time.time() - self.lease:
            return True                 # expired long ago, even allowing for skewed clocks
        if not self.wait:
            return False
        return self._stops_beating(record)

    def _stops_beating(self, record: dict) -> bool:
        """Watch another host's lock for a lease (our own clock): dead if its beat never moves."""
        deadline = time.monotonic() + self.lease + self.renew
        while time.monotonic() < deadline:
            time.sleep(min(self.renew / 2, 1.0))
            now = self._read()
            if now is None:
                return False            # released: try to create it again
            if now.get("token") != record.get("token") or now.get("beat") != record.get("beat"):
                return False            # it beats: alive
        return True

    def _age(self) -> float:
        try:
            return time.time() - self.path.stat().st_mtime
        except FileNotFoundError:
            return 0.0

    def _busy_message(self, record: dict) -> str:
        who = f"{record.get('what', 'build')} on {record.get('host', '?')}, pid {record.get('pid', '?')}"
        return (f"{self.path.parent}: another {who} holds its lock and is alive; wait for it to "
                f"finish or stop it (a dead holder's lock is taken over after {self.lease:g} s)")
