"""A comparison's steps as a task graph (:mod:`foveal.cluster`), run here in plan order or as Ray tasks.

A comparison is a graph of steps (:func:`foveal.recipes.compare.steps.plan_steps`): every planned run
(:func:`foveal.recipes.compare.config.plan_runs`), its sampled evaluation (``evaluate_repeats`` > 0) and
every generated input that runs share (:data:`foveal.recipes.compare.inputs.MADE`), each made by exactly
one step:

===============================  ===============================================  ==========================
step                             what it does                                     starts after
===============================  ===============================================  ==========================
``input-salience``               RAM+'s salience maps                             -
``input-ps-ram-seed<s>``         PS-RAM's sequences, sampled from RAM of seed s   the RAM run of seed s
``input-hgs``                    PS-HGS's sequences (or: PS-HGS is skipped)       -
``<method>-seed-<s>-pretrain``   RAM+'s salience pretraining                      ``input-salience``
``<method>-seed-<s>``            a run                                            its input; RAM+: its pretraining
``<method>-seed-<s>-sampled``    the run's best checkpoint, sampled locations,    ``<method>-seed-<s>``
                                 M rollouts per test image (``sampled/``)
===============================  ===============================================  ==========================

Each step that is not done becomes one :class:`foveal.cluster.Task` (:func:`run_step`, 1 CPU, or one GPU
for GPU runs), whose ``after`` are the steps it needs that are not done either. A step is done when its
run has ``results.json`` (a sampled evaluation: ``sampled/results.json`` of the same M) or its input file
exists; an interrupted run continues from its last checkpoint. So any way of running resumes what any
other left, and gives the same files (same seeds, same ``metrics.csv`` and ``results.json``):

* **here** (the default): the tasks in plan order in this process, with progress bars; Ray is not imported.
* **a local Ray instance** (``--workers N`` > 1, or ``--ray``): as many tasks at once as it has CPUs
  (``--workers``), each in a Ray worker process with one torch thread.
* **a Ray cluster** (``--ray auto`` or ``--ray host:port``): a task runs on any node with a free CPU (or
  GPU), in the driver's working directory, which every node must see (a shared file system, as on Slurm).
  A task whose worker or node dies is started again by Ray (up to 3 times) and continues the run from its
  folder's last checkpoint; a task checks first whether its step was done meanwhile.

On Slurm (``examples/slurm/compare-ray.sbatch``): start a Ray head on the first node of the allocation,
``ray start --address=<head>:6379`` on the others (one ``srun`` per node), then ``foveal compare --ray auto
...`` on the head; with ``--gpus-per-task`` each node offers its GPUs, and ``--devices`` (or a run config
on ``cuda``) gives every task one. ``docs/guides/scale-out.md`` walks through the three.

A step that raises fails: ``<out>/status/<step>.txt`` keeps its error and traceback, it is logged with its
run's folder, the steps that need it are not started (``blocked``), every other step still runs, and
:class:`RunsFailed` is raised at the end, naming each failed run's folder. A step skipped for want of
inputs (PS-HGS without part annotations) or stopped (``stop_after``) leaves its status file too, which
the steps that need it read before they start: they are skipped (with the reason) or blocked.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from foveal.cluster import Task, TaskResult, ray_address, run_here, run_on_ray
from foveal.recipes.compare.config import CompareConfig
from foveal.recipes.compare.steps import (Failure, LogFn, Outcome, RunsFailed, Step, StepRunner, clear_status,
                                          read_status, write_status)

__all__ = ["run_step", "step_tasks", "run_steps", "Placement"]


@dataclass(frozen=True)
class Placement:
    """Where the tasks run: ``ray`` None (here), ``"local"`` (a local instance of ``workers`` CPUs) or a
    cluster's address (:func:`foveal.cluster.ray_address`); ``device``: every run's ``train.device`` (None:
    the config's); ``gpus``: what each task asks of Ray."""

    ray: Optional[str] = None
    workers: Optional[int] = None
    device: Optional[str] = None
    gpus: float = 0.0

    @property
    def here(self) -> bool:
        return self.ray is None


def _starting(step: Step) -> str:
    if step.task is None:
        return f"making {step.what}"
    if step.repeats:
        return f"evaluating {step.what} in {step.task.sampled_dir}"
    return f"training {step.what} in {step.task.run_dir}"


def _obstacle(runner: StepRunner, out: Path, step: Step, needs: tuple[Step, ...]) -> Optional[Outcome]:
    """A step whose needed step ended without finishing (skipped, stopped, blocked): skipped with the same
    reason, or blocked. Read from the status files the needed steps left (a task of the graph that raised
    never gets here: the graph blocks what needs it)."""
    for dep in needs:
        if runner.done(dep):
            continue
        status = read_status(out, dep.name)
        if status is not None and status[0] == "skipped":
            return Outcome(step.name, "skipped", status[1])
        why = status[0] if status is not None else "did not finish"
        return Outcome(step.name, "blocked", f"needs {dep.what}, which {why}")
    return None


def run_step(cfg: CompareConfig, out: Path, step: Step, needs: tuple[Step, ...] = (), *,
             device: Optional[str] = None, stop_after: Optional[int] = None, log: Optional[LogFn] = None,
             progress: Optional[Callable] = None) -> Outcome:
    """One step, here or as a Ray task (a module-level function: a worker imports it by name and builds its
    own :class:`StepRunner` from ``(cfg, out)``); its outcome. An exception is the step's failure.

    Args:
        needs: the steps it needs (:attr:`Step.after`), to check that they finished.
        device: every run's ``train.device`` (``cuda``: the GPU Ray gave the task).
        log, progress: lines and progress bars (here only; a Ray worker's go nowhere).
    """
    log = log or (lambda message: None)
    runner = StepRunner(cfg, out, device=device, log=log, progress=progress, stop_after=stop_after)
    if runner.done(step):  # a retried task whose first try finished, or another process did it
        return Outcome(step.name, "done", "done already")
    outcome = _obstacle(runner, Path(out), step, needs)
    if outcome is None:
        log(_starting(step))
        outcome = runner.run(step)
    if outcome.status == "done":
        clear_status(out, step.name)
    else:  # before this task ends: the steps that need it read it when they start
        write_status(out, step.name, outcome.status, outcome.detail)
    return outcome


def step_tasks(cfg: CompareConfig, out: Path, steps: list[Step], pending: list[Step], where: Placement, *,
               stop_after: Optional[int] = None, log: Optional[LogFn] = None,
               progress: Optional[Callable] = None) -> list[Task]:
    """One task per pending step, in plan order; ``after``: the pending steps it needs."""
    by_name = {s.name: s for s in steps}
    keys = {s.name for s in pending}
    local = {"log": log, "progress": progress} if where.here else {}  # closures: never pickled
    return [Task(s.name, run_step, (cfg, Path(out), s, tuple(by_name[d] for d in s.after)),
                 {"device": where.device, "stop_after": stop_after, **local},
                 after=tuple(d for d in s.after if d in keys), cpus=1.0, gpus=where.gpus, what=s.what)
            for s in pending]


class _Record:
    """What happened to the steps of one call; :meth:`ended` is the graph's ``ended`` hook."""

    def __init__(self, out: Path, steps: list[Step], log: LogFn) -> None:
        self.out, self.log, self.by_name = Path(out), log, {s.name: s for s in steps}
        self.skipped: dict[str, str] = {}
        self.failures: list[Failure] = []
        self.blocked: list[str] = []
        self.failed: set[str] = set()

    def skip(self, step: Step, reason: str) -> Optional[str]:
        if step.task is not None and step.task.method not in self.skipped:
            self.skipped[step.task.method] = reason
            return f"skipping {step.task.method}: {reason}"
        return None

    def ended(self, task: Task, result: TaskResult) -> Optional[str]:
        step = self.by_name[task.key]
        where = f" on {result.node}" if result.node else ""
        if result.ok:
            outcome: Outcome = result.value
            if outcome.status == "done":
                return f"finished {step.what}" + (f": {outcome.detail}" if outcome.detail else "") + where
            if outcome.status == "skipped":
                return self.skip(step, outcome.detail)
            if outcome.status == "blocked":
                self.blocked.append(step.what)
                return f"not started: {step.what}: it {outcome.detail}"
            return f"{outcome.status} {step.what}: {outcome.detail}"
        if result.blocked_by is not None:
            dep = self.by_name[result.blocked_by]
            why = "failed" if result.blocked_by in self.failed else "was not started"
            write_status(self.out, step.name, "blocked", f"needs {dep.what}, which {why}")
            self.blocked.append(step.what)
            return f"not started: {step.what}: it needs {dep.what}, which {why}"
        self.failed.add(step.name)
        path = write_status(self.out, step.name, "failed", result.error, result.traceback)
        folder = step.task.run_dir if step.task is not None else self.out / "inputs"
        failure = Failure(step.what, folder, result.error, path)
        self.failures.append(failure)
        return f"FAILED {failure}{where}"

    def result(self) -> dict[str, str]:
        if self.failures:
            raise RunsFailed(self.failures, self.skipped, self.blocked)
        return self.skipped


def run_steps(cfg: CompareConfig, out: Path, steps: list[Step], where: Placement, *,
              stop_after: Optional[int] = None, log: LogFn = lambda m: None,
              progress: Optional[Callable] = None) -> dict[str, str]:
    """Every step that is not done, as tasks here or on Ray (module docstring); the methods skipped for
    want of inputs, with the reason.

    Raises:
        RunsFailed: after every step that could run has run, if some failed.
    """
    out = Path(out)
    runner = StepRunner(cfg, out, device=where.device, log=log, stop_after=stop_after)
    pending = []
    for step in steps:
        if runner.done(step):
            if step.task is not None and not step.repeats:
                log(f"finished already: {step.what}")
        else:
            pending.append(step)
    record = _Record(out, steps, log)
    if not pending:
        return record.result()
    tasks = step_tasks(cfg, out, steps, pending, where, stop_after=stop_after, log=log, progress=progress)
    if where.here:
        run_here(tasks, log=log, ended=record.ended)
    else:
        run_on_ray(tasks, address=ray_address(where.ray), workers=where.workers, log=log, ended=record.ended)
    return record.result()

