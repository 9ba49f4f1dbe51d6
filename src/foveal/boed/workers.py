r"""Several workers on one output folder: who each one is, claims on units of work, and writes that are
safe on a shared file system (NFS, Lustre, GPFS).

**Who.** :func:`worker_from_environment` reads a worker's rank and the number of workers from the
launcher's environment: torchrun's ``RANK`` / ``WORLD_SIZE`` (and ``LOCAL_RANK``, the GPU to use), else
Slurm's job array (``SLURM_ARRAY_TASK_ID`` - ``SLURM_ARRAY_TASK_MIN``, over ``SLURM_ARRAY_TASK_COUNT``)
and/or ``srun`` tasks (``SLURM_PROCID`` over ``SLURM_NTASKS``, ``SLURM_LOCALID``); both Slurm levels
together number the tasks of every array element one after the other.

**Claims.** A unit of work ``name`` is claimed by creating ``<folder>/<name>.<g>`` with
``O_CREAT | O_EXCL`` (one creator wins, on NFS too); the file records host, pid and time, and its holder
touches it every ``timeout / 4`` s from a thread while it works. The highest generation ``g`` is the
current claim. It is *stale* when its holder ran on this host (same host name and pid namespace) and its
pid is gone, or when it was not touched for ``timeout`` s (a dead worker elsewhere); a stale claim is
taken over by creating generation ``g + 1``, again with ``O_EXCL``, so two workers never both take it
over. A holder that was only slow finishes and loses the race to publish (below): nothing is lost or
written twice.

**Writes.** Temporary names hold host, pid and a random token (a pid alone repeats across hosts);
finished files are moved in with ``os.replace`` (last writer wins: for files whose content does not
depend on the writer) or published with ``os.link`` (first writer wins: shared state every worker must
read the same), and a folder of files with ``os.rename`` (first wins: a chunk's two files at once).
Clocks: staleness compares file modification times (set by the file server) with this host's clock;
keep ``timeout`` well above the clock skew and the client's attribute cache (NFS: up to 60 s).
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, Optional

from foveal.files import unique_token, write_temporary

__all__ = ["Worker", "worker_from_environment", "worker_device", "publish_file",
           "publish_dir", "private_dir", "Claim", "ClaimBoard", "run_once", "HOST"]

HOST = socket.gethostname()


def _pid_namespace() -> str:
    try:
        return os.readlink("/proc/self/ns/pid")  # e.g. "pid:[4026531836]"; containers on one host differ
    except OSError:
        return ""


_PIDNS = _pid_namespace()


# --------------------------------------------------------------------------------------------- who
@dataclass(frozen=True)
class Worker:
    """This process's place among the workers: ``rank`` in ``0 .. world_size - 1``, the node-local rank
    (which GPU; None if the launcher sets none) and which launcher said so."""

    rank: int
    world_size: int
    local_rank: Optional[int] = None
    source: str = ""


def _integers(env: Mapping[str, str], names: tuple[str, ...], launcher: str) -> list[int]:
    missing = [n for n in names if env.get(n) in (None, "")]
    if missing:
        present = [n for n in names if n not in missing]
        raise ValueError(f"--shard auto: {launcher}'s environment is incomplete: found {', '.join(present)}, "
                         f"expected {', '.join(missing)} too")
    try:
        return [int(env[n]) for n in names]
    except ValueError:
        found = ", ".join(f"{n}={env[n]!r}" for n in names)
        raise ValueError(f"--shard auto: expected integers in {launcher}'s environment, found {found}") from None


def worker_from_environment(env: Mapping[str, str]) -> Worker:
    """The worker that ``env`` (e.g. ``os.environ``) describes (module docstring); a ValueError naming the
    variables when none is set or they disagree."""
    if any(n in env for n in ("RANK", "WORLD_SIZE")):  # torchrun (inside Slurm too: its ranks already count nodes)
        rank, world = _integers(env, ("RANK", "WORLD_SIZE"), "torchrun")
        local = int(env["LOCAL_RANK"]) if env.get("LOCAL_RANK", "").isdigit() else None
        return _checked(Worker(rank, world, local, "torchrun"), f"RANK={rank}, WORLD_SIZE={world}")
    array = tasks = None
    if "SLURM_ARRAY_TASK_ID" in env:
        task, low, count = _integers(env, ("SLURM_ARRAY_TASK_ID", "SLURM_ARRAY_TASK_MIN", "SLURM_ARRAY_TASK_COUNT"),
                                     "a Slurm job array")
        step = int(env["SLURM_ARRAY_TASK_STEP"]) if env.get("SLURM_ARRAY_TASK_STEP", "").isdigit() else 1
        if (task - low) % step:
            raise ValueError(f"--shard auto: SLURM_ARRAY_TASK_ID={task} is not SLURM_ARRAY_TASK_MIN={low} plus a "
                             f"multiple of SLURM_ARRAY_TASK_STEP={step}; submit a range like --array=0-{count - 1}")
        array = (task - low) // step, count
        _checked(Worker(*array), f"(SLURM_ARRAY_TASK_ID - SLURM_ARRAY_TASK_MIN) / step = {array[0]}, "
                                 f"SLURM_ARRAY_TASK_COUNT={count} (submit a range like --array=0-{count - 1}, "
                                 f"without gaps)")
    if "SLURM_PROCID" in env:
        names = ("SLURM_PROCID", "SLURM_STEP_NUM_TASKS" if "SLURM_STEP_NUM_TASKS" in env else "SLURM_NTASKS")
        tasks = tuple(_integers(env, names, "srun"))
        _checked(Worker(*tasks), f"{names[0]}={tasks[0]}, {names[1]}={tasks[1]}")
    if array is None and tasks is None:
        raise ValueError("--shard auto: expected torchrun's RANK and WORLD_SIZE, a Slurm job array's "
                         "SLURM_ARRAY_TASK_ID/_MIN/_COUNT or srun's SLURM_PROCID and SLURM_NTASKS in the "
                         "environment, found none of them; launch with torchrun, sbatch --array or srun, "
                         "or give --shard I/N")
    local = int(env["SLURM_LOCALID"]) if tasks is not None and env.get("SLURM_LOCALID", "").isdigit() else None
    source = "+".join(s for s, given in (("slurm-array", array is not None), ("srun", tasks is not None)) if given)
    array, tasks = array or (0, 1), tasks or (0, 1)
    return Worker(array[0] * tasks[1] + tasks[0], array[1] * tasks[1], local, source)


def _checked(worker: Worker, found: str) -> Worker:
    if worker.world_size < 1 or not 0 <= worker.rank < worker.world_size:
        raise ValueError(f"--shard auto: expected 0 <= rank < number of workers, found {found}")
    return worker


def worker_device(device: str, local_rank: Optional[int]) -> str:
    """``device`` for the worker of node-local rank ``local_rank``: ``cuda`` (or ``auto`` with CUDA) becomes
    ``cuda:<local_rank mod visible GPUs>``; anything else is kept."""
    import torch

    if local_rank is None or device not in ("cuda", "auto") or not torch.cuda.is_available():
        return device
    return f"cuda:{local_rank % torch.cuda.device_count()}"


# ------------------------------------------------------------------------------------------ writes
def publish_file(path: Path, data: bytes) -> bool:
    """Write ``path`` only if it does not exist (first writer wins, atomically); True if this call wrote it."""
    tmp = write_temporary(path, data)
    try:
        os.link(tmp, path)
        return True
    except FileExistsError:
        return False
    except OSError as err:  # a file system without hard links: the same, up to a narrow race
        if err.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP):
            raise
        if path.exists():
            return False
        os.replace(tmp, path)
        return True
    finally:
        tmp.unlink(missing_ok=True)


def private_dir(parent: Path) -> Path:
    """A new empty folder ``parent/.tmp-<unique token>`` (files written there are this process's alone)."""
    folder = parent / f".tmp-{unique_token()}"
    folder.mkdir(parents=True)
    return folder


def publish_dir(tmp: Path, path: Path) -> bool:
    """Move the folder ``tmp`` to ``path`` unless ``path`` exists (first wins; its files appear together).

    True if this call published it; otherwise ``tmp`` is removed."""
    try:
        os.rename(tmp, path)  # onto a non-empty folder: ENOTEMPTY or EEXIST, nothing moved
        return True
    except OSError as err:
        if err.errno not in (errno.ENOTEMPTY, errno.EEXIST):
            raise
        shutil.rmtree(tmp, ignore_errors=True)
        return False


# ------------------------------------------------------------------------------------------ claims
class Claim:
    """A held claim (see :meth:`ClaimBoard.try_claim`); touched from a thread until :meth:`release`.

    A context manager: released on leaving, also after an exception."""

    def __init__(self, path: Path, heartbeat: float) -> None:
        self.path = path
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, args=(heartbeat,), daemon=True,
                                        name=f"claim {path.name}")
        self._thread.start()

    def _beat(self, interval: float) -> None:
        while not self._stop.wait(interval):
            try:
                os.utime(self.path)
            except OSError:
                return  # removed: the folder was cleaned up

    def release(self) -> None:
        self._stop.set()
        self._thread.join()
        self.path.unlink(missing_ok=True)

    def __enter__(self) -> "Claim":
        return self

    def __exit__(self, *exc) -> None:
        self.release()


class ClaimBoard:
    """Claims on named units of work, as files in ``folder`` (module docstring).

    Args:
        folder: shared by every worker.
        timeout: seconds without a touch after which another host's claim is stale.
    """

    def __init__(self, folder: str | Path, timeout: float) -> None:
        if not timeout > 0:
            raise ValueError(f"ClaimBoard.timeout: expected seconds > 0, found {timeout!r}")
        self.folder, self.timeout = Path(folder), float(timeout)

    def listing(self) -> dict[str, list[int]]:
        """``{name: [generations, ascending]}`` of every claim file (one directory read)."""
        try:
            names = os.listdir(self.folder)
        except FileNotFoundError:
            return {}
        out: dict[str, list[int]] = {}
        for n in names:
            stem, _, generation = n.rpartition(".")
            if stem and generation.isdigit():
                out.setdefault(stem, []).append(int(generation))
        return {k: sorted(v) for k, v in out.items()}

    def holder(self, name: str, generations: Optional[list[int]] = None) -> Optional[dict]:
        """The current claim's record plus ``age`` (s) and ``stale``; None if nobody claims ``name``.

        ``generations``: the name's claim files as :meth:`listing` found them (default: read now)."""
        generations = self.listing().get(name, []) if generations is None else generations
        if not generations:
            return None
        path = self.folder / f"{name}.{generations[-1]}"
        try:
            age = time.time() - path.stat().st_mtime
            record = json.loads(path.read_text() or "{}")  # empty: its creator is writing it
        except FileNotFoundError:
            return None  # released meanwhile
        except (json.JSONDecodeError, UnicodeDecodeError):
            record = {}
        dead = (record.get("host") == HOST and record.get("pid_namespace") == _PIDNS
                and isinstance(record.get("pid"), int) and record["pid"] != os.getpid()
                and not _pid_alive(record["pid"]))
        return {**record, "generation": generations[-1], "age": age, "stale": dead or age > self.timeout}

    def try_claim(self, name: str, generations: Optional[list[int]] = None) -> Optional[Claim]:
        """Claim ``name`` if nobody holds it or its claim is stale; None if a live worker holds it (or
        another worker took it over first). ``generations``: as for :meth:`holder`."""
        current = self.holder(name, generations)
        if current is not None and not current["stale"]:
            return None
        generation = 0 if current is None else current["generation"] + 1
        path = self.folder / f"{name}.{generation}"
        self.folder.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return None
        record = {"host": HOST, "pid": os.getpid(), "pid_namespace": _PIDNS, "time": time.time(),
                  "took_over": None if current is None else {k: current.get(k) for k in ("host", "pid", "time")}}
        try:
            with os.fdopen(fd, "w") as f:
                f.write(json.dumps(record))
            return Claim(path, self.timeout / 4)
        except BaseException:  # e.g. SystemExit from a SIGTERM handler: no holder would ever release it
            path.unlink(missing_ok=True)
            raise


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def run_once(board: ClaimBoard, name: str, done: Callable[[], bool], make: Callable[[], None], *,
             poll: float) -> bool:
    """Make something exactly once among the workers: the one that claims ``name`` runs ``make()``, the
    others wait (checking every ``poll`` s) until ``done()``, taking over if the maker's claim goes stale.

    Returns True if this worker ran ``make``."""
    while not done():
        claim = board.try_claim(name)
        if claim is None:
            time.sleep(poll)
            continue
        with claim:
            if done():  # made while this worker was claiming
                return False
            make()
        return True
    return False
