"""Work across processes and machines: a graph of tasks, run here in order or as Ray tasks.

foveal's two embarrassingly parallel jobs, a comparison (:mod:`foveal.recipes.compare`: every run and
every input it needs) and an annotation (:mod:`foveal.boed.annotate_folder`: one task per chunk of images),
describe their work as :class:`Task` objects: a module-level function with its arguments, the keys of the
tasks it must wait for, and what it needs (CPUs, GPUs). Two ways run the same graph:

* :func:`run_here`: one task after the other in this process, in the order given (a topological order of
  the graph); Ray is not imported.
* :func:`run_on_ray`: one Ray task per :class:`Task` on a local instance (``address=None``, sized to
  ``workers`` CPUs) or an existing cluster (``"auto"``, ``"ray://host:10001"``, ``"host:6379"``). A task's
  dependencies are passed to it as object references, so Ray starts it once they are done, on any node
  with the resources it asks for. Ray retries a task whose worker process or node died (``retries``); the
  task then starts again from what its function finds on disk (a run's last checkpoint, a chunk's saved
  part), so nothing is lost and nothing finished is done twice.

In both, an exception inside a task is *its* failure, not the graph's: it becomes a :class:`TaskResult`
with the error and the traceback; the tasks that need it are not started (``blocked``) and every other
task still runs. The caller decides what a failure means. Task functions must be importable by name on
every node (the same foveal installed there) and must make their outputs atomically
(:mod:`foveal.files`), so that a retried or repeated task never leaves half a file.

Ray runs a task in its own worker process whose working directory is not the driver's; paths a task
receives are resolved against the driver's working directory, which :func:`run_on_ray` passes along (on
a cluster all nodes must see the same file system at that path, as on Slurm with a shared home).
"""

from __future__ import annotations

import dataclasses
import os
import re
import sys
import time
import traceback as tb
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

__all__ = ["Task", "TaskResult", "run_here", "run_on_ray", "ray_address"]

LogFn = Callable[[str], None]
EndedFn = Callable[["Task", "TaskResult"], Optional[str]]


@dataclass(frozen=True, eq=False)
class Task:
    """One unit of work.

    Args:
        key: unique name within the graph (``after`` refers to it).
        fn: a module-level function (Ray pickles it by name); called as ``fn(*args, **kwargs)``.
        after: keys of the tasks that must finish first (earlier in the list given to ``run_*``).
        cpus, gpus: what the task needs on the node it runs on (Ray's ``num_cpus``/``num_gpus``); a task
            with ``cpus=k`` gets ``k`` torch threads.
        what: how progress lines name it (default: ``key``).
    """

    key: str
    fn: Callable[..., Any]
    args: tuple = ()
    kwargs: dict = field(default_factory=dict)
    after: tuple[str, ...] = ()
    cpus: float = 1.0
    gpus: float = 0.0
    what: str = ""

    @property
    def name(self) -> str:
        return self.what or self.key


@dataclass(frozen=True)
class TaskResult:
    """What a task came to: ``ok`` with the function's return ``value``; or failed with ``error`` and the
    ``traceback``; or not started (``blocked``) because the task ``blocked_by`` did not finish."""

    key: str
    ok: bool
    value: Any = None
    error: str = ""
    traceback: str = ""
    blocked_by: Optional[str] = None
    seconds: float = 0.0
    node: str = ""


def _check_graph(tasks: Sequence[Task]) -> None:
    seen: set[str] = set()
    for t in tasks:
        if not isinstance(t, Task):
            raise TypeError(f"expected foveal.cluster.Task objects, found {type(t).__name__}")
        if t.key in seen:
            raise ValueError(f"task key {t.key!r} appears twice; keys must be unique")
        missing = [k for k in t.after if k not in seen]
        if missing:
            raise ValueError(f"task {t.key!r} needs {missing}, which are not earlier in the list "
                             "(give the tasks in an order where each comes after what it needs)")
        if t.cpus < 0 or t.gpus < 0:
            raise ValueError(f"task {t.key!r}: cpus and gpus must be >= 0, found {t.cpus}, {t.gpus}")
        seen.add(t.key)


def _execute(task: Task, deps: Sequence[TaskResult]) -> TaskResult:
    """Run ``task`` unless a dependency did not finish; the task's own exception becomes its result."""
    for dep in deps:
        if not dep.ok:
            return TaskResult(task.key, False, error=f"not started: it needs {dep.key}, which did not finish",
                              blocked_by=dep.key)
    start = time.perf_counter()
    try:
        value = task.fn(*task.args, **task.kwargs)
    except Exception as err:
        message = "; ".join(line.strip() for line in str(err).splitlines() if line.strip())
        return TaskResult(task.key, False, error=f"{type(err).__name__}: {message}", traceback=tb.format_exc(),
                          seconds=time.perf_counter() - start)
    return TaskResult(task.key, True, value=value, seconds=time.perf_counter() - start)


def _call(task: Task, cwd: str, *deps: TaskResult) -> TaskResult:
    """:func:`_execute` in a Ray worker: the driver's working directory, ``task.cpus`` torch threads. The
    dependencies come as top-level arguments: Ray resolves those (not references inside a list) and starts
    the task only once they are done."""
    if os.path.isdir(cwd):
        os.chdir(cwd)
    threads = max(1, int(task.cpus))
    os.environ["OMP_NUM_THREADS"] = str(threads)
    if "torch" in sys.modules:  # else torch reads OMP_NUM_THREADS when the task imports it
        sys.modules["torch"].set_num_threads(threads)
    result = _execute(task, deps)
    return dataclasses.replace(result, node=os.uname().nodename) if result.blocked_by is None else result


def _line(task: Task, result: TaskResult) -> str:
    if result.ok:
        where = f" on {result.node}" if result.node else ""
        return f"finished {task.name} ({result.seconds:.0f} s{where})"
    if result.blocked_by is not None:
        return f"not started: {task.name}: {result.error.removeprefix('not started: ')}"
    return f"FAILED {task.name}: {result.error}"


def _say(log: LogFn, line: Optional[str]) -> None:
    if line is not None:
        log(line)


def run_here(tasks: Sequence[Task], *, log: LogFn = lambda m: None, ended: EndedFn = _line) -> dict[str, TaskResult]:
    """Every task in the order given, in this process (its threads as they are); results by key.

    ``ended(task, result)``, called here as each task ends, gives the line to log (None: none); the default
    says finished / FAILED / not started."""
    _check_graph(tasks)
    results: dict[str, TaskResult] = {}
    for task in tasks:
        results[task.key] = _execute(task, [results[k] for k in task.after])
        _say(log, ended(task, results[task.key]))
    return results


def ray_address(value: Optional[str]) -> Optional[str]:
    """``--ray``'s value as :func:`ray.init` takes it: None or ``""``/``local``: a new local instance;
    anything else (``auto``, ``host:port``, ``ray://host:10001``) an existing cluster."""
    if value is None or value.strip() in ("", "local"):
        return None
    return value.strip()


def _with_this_foveal(env: Optional[dict[str, str]]) -> dict[str, str]:
    """``env`` with the folder holding the foveal this process runs first on ``PYTHONPATH``, so that a local
    instance's workers import the same foveal (a source checkout too) whatever is installed."""
    root = str(Path(__file__).resolve().parents[1])
    given = (env or {}).get("PYTHONPATH", os.environ.get("PYTHONPATH", ""))
    paths = [root, *[p for p in given.split(os.pathsep) if p and p != root]]
    return {**(env or {}), "PYTHONPATH": os.pathsep.join(paths)}


def _check_fits(ray: Any, tasks: Sequence[Task], started_here: bool) -> None:
    """A task that asks more GPUs than any node has would wait forever: refuse it before any starts."""
    gpus = max((t.gpus for t in tasks), default=0.0)
    most = max((n.get("Resources", {}).get("GPU", 0.0) for n in ray.nodes() if n.get("Alive")), default=0.0)
    if gpus > most:
        if started_here:
            ray.shutdown()
        raise ValueError(f"a task asks for {gpus:g} GPU(s), and no node of this Ray instance has as many (at most "
                         f"{most:g}): give the nodes GPUs (ray start --num-gpus) or run the tasks on CPUs")


def run_on_ray(tasks: Sequence[Task], *, address: Optional[str] = None, workers: Optional[int] = None,
               retries: int = 3, log: LogFn = lambda m: None, env: Optional[dict[str, str]] = None,
               ended: EndedFn = _line) -> dict[str, TaskResult]:
    """Every task as a Ray task (module docstring); their results by key (in the order given).

    Args:
        address: None for a new local instance with ``workers`` CPUs (default: this machine's); else an
            existing cluster (:func:`ray_address`), whose size its nodes decide.
        retries: how often Ray starts a task again whose worker process or node died (not for an
            exception the task raised: that is its result).
        log: one line when the instance is up (with the dashboard address where there is one), then one per
            task as it finishes, fails or is not started.
        env: environment variables for the tasks' worker processes (e.g. ``PYTHONPATH``); a local instance's
            workers also get the folder of this process's foveal first on ``PYTHONPATH``.
        ended: as in :func:`run_here`, called in this process (the driver) as each task ends.
    """
    _check_graph(tasks)
    try:
        import ray
    except ImportError as err:  # a declared dependency; a broken install says so plainly
        raise RuntimeError("--ray needs the 'ray' package (pip install 'ray>=2.40'); it is not importable here: "
                           f"{err}") from err
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
        raise ValueError(f"--workers: expected a positive number of CPUs for the local Ray instance, found {workers!r}")
    if retries < 0:
        raise ValueError(f"retries: expected >= 0, found {retries}")
    started_here = not ray.is_initialized()
    if started_here:
        if address is None:
            env = _with_this_foveal(env)
        runtime_env = {"env_vars": dict(env)} if env else None
        if address is None:
            context = ray.init(num_cpus=workers or os.cpu_count(), include_dashboard=False, log_to_driver=False,
                               runtime_env=runtime_env, configure_logging=False)
        else:
            context = ray.init(address=address, log_to_driver=False, runtime_env=runtime_env,
                               configure_logging=False)
        dashboard = getattr(context, "dashboard_url", "") or ""
        cpus = ray.cluster_resources().get("CPU", 0)
        where = "a local Ray instance" if address is None else f"the Ray cluster at {address}"
        log(f"{len(tasks)} task(s) on {where} ({cpus:g} CPUs, {len(ray.nodes())} node(s))"
            + (f"; dashboard: http://{dashboard}" if dashboard else ""))
    _check_fits(ray, tasks, started_here)
    remote = ray.remote(_call)
    cwd = os.getcwd()
    refs: dict[str, Any] = {}
    by_ref: dict[Any, Task] = {}
    results: dict[str, TaskResult] = {}
    try:
        for task in tasks:
            ref = remote.options(num_cpus=task.cpus, num_gpus=task.gpus, max_retries=retries,
                                 retry_exceptions=False, name=task.key).remote(
                task, cwd, *[refs[k] for k in task.after])
            refs[task.key] = ref
            by_ref[ref] = task
        waiting = list(refs.values())
        while waiting:
            ready, waiting = ray.wait(waiting, num_returns=1)
            for ref in ready:
                task = by_ref[ref]
                try:
                    result = ray.get(ref)
                except Exception as err:  # its worker or node died more often than retries allow, or
                    # the task could not be unpickled there (a function that node cannot import)
                    text = re.sub(r"\x1b\[[0-9;]*m", "", str(err)).strip()
                    result = TaskResult(task.key, False, error=f"{type(err).__name__}: Ray could not run it: "
                                        + " ".join(text.split())[:500], traceback=text)
                results[task.key] = result
                _say(log, ended(task, result))
    except BaseException:
        for ref in refs.values():
            ray.cancel(ref, force=True)
        raise
    finally:
        if started_here:
            ray.shutdown()
    return {t.key: results[t.key] for t in tasks}
