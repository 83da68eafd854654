"""Provenance: how a dataset's input files are recorded, and the build's history line.

A file is recorded by its path as the user gave it, its resolved path, and a fingerprint:
``size=BYTES mtime=ISO-8601 blake2b=HEX``. The digest is BLAKE2b (128-bit) of the file's size
(8 bytes, little-endian) followed by its whole content when it is at most `WHOLE` bytes, else
by three blocks of `BLOCK` bytes: the first, the middle (from ``(size - BLOCK) // 2``) and the
last. It recognises a file again after a move or a copy (same size and digest) at the cost of
reading 3 MiB, whatever its size; it is not a checksum of every byte. `same_file` compares a
file with a recorded fingerprint, ignoring the modification time.
"""

from __future__ import annotations

import datetime
import hashlib
import os
import shlex
import sys
from functools import lru_cache
from pathlib import Path

BLOCK = 2**20
WHOLE = 3 * BLOCK


def file_digest(path) -> str:
    """``blake2b:HEX``, the content digest of a file (see the module's docstring)."""
    size = os.path.getsize(path)
    h = hashlib.blake2b(size.to_bytes(8, "little"), digest_size=16)
    with open(path, "rb") as f:
        if size <= WHOLE:
            h.update(f.read())
        else:
            for start in (0, (size - BLOCK) // 2, size - BLOCK):
                f.seek(start)
                h.update(f.read(BLOCK))
    return f"blake2b:{h.hexdigest()}"


def fingerprint(path) -> str:
    """``size=BYTES mtime=ISO-8601 blake2b=HEX`` of a file (UTC modification time)."""
    st = os.stat(path)
    return _fingerprint(os.path.realpath(path), st.st_size, st.st_mtime_ns)


@lru_cache(maxsize=256)
def _fingerprint(path: str, size: int, mtime_ns: int) -> str:
    # cached by (path, size, mtime): one build after another reads each input once
    mtime = datetime.datetime.fromtimestamp(mtime_ns / 1e9, datetime.timezone.utc)
    digest = file_digest(path).replace(":", "=", 1)
    return f"size={size} mtime={mtime.isoformat(timespec='seconds').replace('+00:00', 'Z')} {digest}"


def same_file(path, recorded: str) -> bool:
    """Whether ``path`` holds the file a fingerprint recorded: same size and digest (the
    modification time may differ: a copy, a move)."""
    def key(text):
        fields = dict(item.split("=", 1) for item in text.split())
        return fields.get("size"), fields.get("blake2b")

    return key(fingerprint(path)) == key(recorded)


def resolved(path) -> str:
    """The absolute path of a file, symbolic links resolved."""
    return str(Path(path).resolve())


def now() -> str:
    """The current UTC time, ISO 8601 to the second (ACDD's date_created)."""
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def command_line() -> str:
    """The command that runs this process, as a shell would take it (``molmnist build ...``,
    ``train.py --size 64``); "python" for an interactive session."""
    argv = list(sys.argv)
    if not argv or not argv[0] or argv[0] == "-c":
        return "python" + (" -c ..." if argv[:1] == ["-c"] else "")
    return shlex.join([os.path.basename(argv[0]), *argv[1:]])
