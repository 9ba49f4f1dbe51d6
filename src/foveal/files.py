"""Writing files so that a reader never sees half of one: a temporary name beside the file, then ``os.replace``.

Every file foveal writes for others to read while it runs (checkpoints, sequence files, ``results.json``,
a comparison's report, the annotator's shared files) goes through :func:`atomic_write`:
the bytes go to ``.<name>.tmp-<host>-<pid>-<random>`` beside ``path``, are flushed to disk, and the temporary
file is renamed onto ``path`` in one step. A process killed on the way leaves the old file (or none), never a
truncated one. Temporary names carry host, pid and a random token (:func:`unique_token`), so processes on
several hosts of a shared file system never write the same temporary file. :func:`write_temporary` is
the first half alone, for callers that publish the file another way (``os.link``: the first writer wins).
"""

from __future__ import annotations

import json
import os
import secrets
import socket
from pathlib import Path
from typing import Any, Optional

__all__ = ["unique_token", "write_temporary", "atomic_write", "atomic_write_json"]


def unique_token() -> str:
    """``<host>-<pid>-<random>``: a temporary name no other process makes, on any host of a shared file
    system (a pid alone repeats across hosts)."""
    host = "".join(c if c.isalnum() or c in "-_" else "_" for c in socket.gethostname())[:64]
    return f"{host}-{os.getpid()}-{secrets.token_hex(4)}"


def write_temporary(path: Path, data: bytes) -> Path:
    """Write ``data`` to a host-unique temporary file beside ``path``, flushed to disk; returns its path.
    The caller moves it into place (``os.replace``) or links it (first writer wins) and removes it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{unique_token()}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file and ``os.replace``: never a half-written file."""
    tmp = write_temporary(path, data)
    try:
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_json(path: Path, value: Any, *, indent: Optional[int] = 2) -> None:
    """:func:`atomic_write` of ``json.dumps(value, indent=indent)`` (no final newline)."""
    atomic_write(path, json.dumps(value, indent=indent).encode())
