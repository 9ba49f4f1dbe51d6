"""A run folder has one writer at a time, and a start that fails leaves it as it was.

**One writer.** :func:`hold` takes an operating-system lock (``fcntl.flock``) on ``<run folder>/.lock``,
kept until the process releases it (:func:`holding`: when it has finished writing the folder) or ends:
the operating system releases it however the process ends (a crash, ``kill -9``, a lost node), so a
folder is never left locked by a dead process. A second process asking for the same folder is refused at once with a ``ValueError`` naming
the holder (host, pid), which the file records. Holding is re-entrant within one process (a run
evaluating into its own folder, a recipe's later stage). On a platform without ``fcntl`` nothing is
locked. On network file systems ``flock`` is as good as their lock support (NFSv4: yes).

**Failed starts.** :class:`FolderStart` records what a folder holds before a run starts (the paths,
and the bytes of the few files a start rewrites: ``config.yaml``, ``metrics.csv``, ``.lock``);
:meth:`FolderStart.undo` puts it back exactly: files and folders made since are removed (the folder
itself, and any parent made for it, when it did not exist), those files' bytes and times restored.
A run calls :meth:`FolderStart.done` once it has trained its first iteration; before that, any error
(or Ctrl-C) undoes the start.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import time
from pathlib import Path
from typing import Iterator

try:
    import fcntl
except ImportError:  # not POSIX: no locking
    fcntl = None

__all__ = ["LOCK_NAME", "hold", "holding", "release", "holder", "FolderStart"]

LOCK_NAME = ".lock"
REWRITTEN = ("config.yaml", "metrics.csv", LOCK_NAME)  # the files a start may rewrite in place
_held: dict[Path, int] = {}  # folder (resolved) -> file descriptor of its locked .lock


def holder(run_dir: str | Path) -> str:
    """Who holds (or last held) ``run_dir``'s lock, as its file says: ``"host H, pid P, since T"``."""
    try:
        text = (Path(run_dir) / LOCK_NAME).read_text().strip()
    except OSError:
        text = ""
    return text or "a process that has not yet written its name"


def hold(run_dir: str | Path) -> bool:
    """Lock ``run_dir`` (made if missing) for this process, until it ends or calls :func:`release`.

    Returns:
        True if this call took the lock; False if this process held it already (or cannot lock here).

    Raises:
        ValueError: another process holds it; the message names it (host, pid).
    """
    folder = Path(run_dir).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    if folder in _held or fcntl is None:
        return False
    path = folder / LOCK_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise ValueError(f"{run_dir}: in use by another foveal process ({holder(folder)}); one process writes a "
                         f"run folder at a time: wait for it to end or stop it, or use another folder") from None
    except OSError:  # a file system without flock: go on unlocked rather than refuse every run
        os.close(fd)
        return False
    os.ftruncate(fd, 0)
    os.write(fd, f"host {socket.gethostname()}, pid {os.getpid()}, since "
                 f"{time.strftime('%Y-%m-%d %H:%M:%S %Z')}\n".encode())
    _held[folder] = fd
    return True


@contextlib.contextmanager
def holding(run_dir: str | Path) -> Iterator[None]:
    """``with holding(folder):`` :func:`hold` it for the block, then release it if the block took it (a process
    that trains or evaluates many runs, a ``foveal compare`` worker, holds each only while it writes it)."""
    took = hold(run_dir)
    try:
        yield
    finally:
        if took:
            release(run_dir)


def release(run_dir: str | Path) -> None:
    """Give up this process's lock on ``run_dir`` (a no-op if it holds none)."""
    fd = _held.pop(Path(run_dir).resolve(), None)
    if fd is not None:
        os.close(fd)  # closing the descriptor releases the flock


class FolderStart:
    """What ``run_dir`` held before a run started, to put back if the start fails (module docstring)."""

    def __init__(self, run_dir: str | Path):
        self.run_dir = Path(run_dir)
        self.finished = False
        self._made: list[Path] = []  # the folder and its parents that do not exist yet, deepest first
        folder = self.run_dir.absolute()
        while not folder.exists():
            self._made.append(folder)
            folder = folder.parent
        self._paths: set[Path] = set()
        self._saved: dict[Path, tuple[bytes, int, int]] = {}  # file -> (bytes, atime_ns, mtime_ns)
        self._held_before = self.run_dir.resolve() in _held
        if self._made:
            return
        for dirpath, dirnames, filenames in os.walk(self.run_dir):
            self._paths.update(Path(dirpath) / n for n in dirnames + filenames)
        for name in REWRITTEN:
            path = self.run_dir / name
            if path.is_file():
                st = path.stat()
                self._saved[path] = (path.read_bytes(), st.st_atime_ns, st.st_mtime_ns)

    def done(self) -> None:
        """The run has started: from now on its folder is its own."""
        self.finished = True
        self._saved.clear()

    def undo(self) -> None:
        """Put the folder back as it was (nothing, if it did not exist); releases a lock taken since."""
        if self.finished:
            return
        if not self._held_before:
            release(self.run_dir)
        if self._made:
            shutil.rmtree(self._made[0], ignore_errors=True)  # the run folder, made since
            for parent in self._made[1:]:  # its parents made since, if still empty: another process (a
                try:                        # compare worker) may have made a run folder in one meanwhile
                    parent.rmdir()
                except OSError:
                    break
            return
        now: list[Path] = []
        for dirpath, dirnames, filenames in os.walk(self.run_dir):
            now += [Path(dirpath) / n for n in dirnames + filenames]
        for path in sorted((p for p in now if p not in self._paths), key=lambda p: len(p.parts), reverse=True):
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
        for path, (data, atime, mtime) in self._saved.items():
            if not path.is_file() or path.read_bytes() != data:
                path.write_bytes(data)
            os.utime(path, ns=(atime, mtime))
        self.finished = True

