"""A comparison as a graph of steps: every planned run, its sampled evaluation and every generated input the
runs share, what each step needs, the status files of steps that did not finish, and running one step
(:class:`StepRunner`). :mod:`foveal.recipes.compare.graph` runs them as tasks, here or on Ray; its docstring
describes the graph."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from foveal.files import atomic_write
from foveal.recipes.compare.config import CompareConfig, RunTask, slug

__all__ = ["Step", "Outcome", "Failure", "RunsFailed", "plan_steps", "StepRunner", "train_task",
           "evaluate_sampled", "sampled_done", "status_path", "write_status", "read_status", "clear_status", "STATUS",
           "LogFn"]


STATUS = "status"  # <out>/status/<step>.txt: failed / blocked / skipped / stopped, the reason, a traceback
_MADE = ("salience", "ps-ram", "hgs")  # foveal.recipes.compare.inputs.MADE (that module imports torch)
LogFn = Callable[[str], None]


@dataclass(frozen=True)
class Step:
    """One node of the graph (module docstring): train ``task``, evaluate its best checkpoint with sampled
    locations (``repeats`` > 0), or make the input ``need``."""

    name: str
    after: tuple[str, ...] = ()
    task: Optional[RunTask] = None
    need: Optional[str] = None  # one of _MADE, when task is None
    seed: Optional[int] = None  # the seed an input is made with
    repeats: int = 0  # > 0: the sampled evaluation of task, M rollouts per test image

    @property
    def what(self) -> str:
        if self.task is None:
            return f"input {self.need}" + ("" if self.seed is None or self.need != "ps-ram" else f" (seed {self.seed})")
        t = self.task
        if self.repeats:
            return f"{t.method} seed {t.seed} (sampled evaluation, M={self.repeats})"
        return f"{t.method} seed {t.seed}" + (" (pretraining)" if t.stage == "pretrain" else "")


@dataclass(frozen=True)
class Outcome:
    """What a step that did not raise came to: ``done``, ``skipped`` (no inputs for it), ``stopped``
    (``stop_after``) or ``blocked`` (a step it needs did not finish); ``detail``: the test accuracy or the
    reason. (A step that raises: :class:`foveal.cluster.TaskResult` holds its error.)"""

    name: str
    status: str
    detail: str = ""


@dataclass(frozen=True)
class Failure:
    what: str
    folder: Path
    error: str
    status_file: Path

    def __str__(self) -> str:
        return f"{self.what} in {self.folder}: {self.error} (traceback: {self.status_file})"


class RunsFailed(Exception):
    """Some runs failed; the others finished (those that need a failed one were not started).

    Attributes:
        failures: one per failed step, with its folder and error.
        skipped: methods skipped for want of inputs, with the reason (as
            :func:`foveal.recipes.compare.graph.run_steps` returns).
        blocked: steps not started because a step they need failed.
    """

    def __init__(self, failures: list[Failure], skipped: dict[str, str], blocked: list[str]) -> None:
        self.failures, self.skipped, self.blocked = failures, skipped, blocked
        lines = "; ".join(str(f) for f in failures)
        not_started = f"; not started, as they need a failed step: {', '.join(blocked)}" if blocked else ""
        super().__init__(f"{len(failures)} step(s) failed, every other run went on: {lines}{not_started}. "
                         "Fix the cause and run the same command again: finished runs are skipped")


def step_name(task: RunTask) -> str:
    return f"{slug(task.method)}-seed-{task.seed}" + ("-pretrain" if task.stage == "pretrain" else "")


def plan_steps(cfg: CompareConfig, tasks: list[RunTask]) -> list[Step]:
    """The steps of these planned runs, in their order with each input just before its first run and each
    run's sampled evaluation (``cfg.evaluate_repeats`` > 0; not of RAM+'s pretraining) just after it (a
    topological order of the graph). PS-RAM's input (``ps_ram_source: auto``) waits for the RAM run of
    its seed when that run is among ``tasks``; otherwise it needs that run finished already. Nothing waits
    for a sampled evaluation."""
    ram = next((m.name for m in cfg.methods if m.kind == "ram"), None)
    auto = cfg.inputs["ps_ram_source"] == "auto"
    runs = {(t.method, t.seed, t.stage): step_name(t) for t in tasks}
    steps: list[Step] = []
    made: set[str] = set()
    for t in tasks:
        after = []
        if t.needs in _MADE:
            per_seed = t.needs == "ps-ram" and auto
            name = f"input-{t.needs}" + (f"-seed{t.seed}" if per_seed else "")
            if name not in made:
                source = runs.get((ram, t.seed, "train")) if per_seed else None
                steps.append(Step(name, (source,) if source else (), need=t.needs,
                                  seed=t.seed if t.needs == "ps-ram" else None))
                made.add(name)
            after.append(name)
        if t.kind == "ram+" and t.stage == "train" and (t.method, t.seed, "pretrain") in runs:
            after.append(runs[(t.method, t.seed, "pretrain")])
        steps.append(Step(step_name(t), tuple(after), task=t))
        if t.stage == "train" and cfg.evaluate_repeats > 0:
            steps.append(Step(f"{step_name(t)}-sampled", (step_name(t),), task=t, repeats=cfg.evaluate_repeats))
    return steps


# ------------------------------------------------------------------------------------------ status files
def status_path(out: Path, name: str) -> Path:
    return Path(out) / STATUS / f"{name}.txt"


def write_status(out: Path, name: str, status: str, detail: str, trace: str = "") -> Path:
    path = status_path(out, name)
    atomic_write(path, f"{status}\n{detail}\n{trace}".encode())  # a step that needs it never reads half a file
    return path


def read_status(out: Path, name: str) -> Optional[tuple[str, str]]:
    """``(status, detail)`` of a step that ended without finishing, or None."""
    path = status_path(out, name)
    try:
        status, _, rest = path.read_text().partition("\n")
    except FileNotFoundError:
        return None
    return status, rest.partition("\n")[0]


def clear_status(out: Path, name: str) -> None:
    status_path(out, name).unlink(missing_ok=True)


# --------------------------------------------------------------------------------------------- one step
def train_task(task: RunTask, *, progress: Optional[Callable] = None, stop_after: Optional[int] = None) -> Optional[dict]:
    """Train one planned run (resuming it if interrupted) and evaluate it; the results dict, or None
    when ``stop_after`` stopped it first.

    :func:`foveal.recipes.run.train_run`, which calls the algorithm's ``prepare(train_set)`` (sequence /
    salience files checked against the training set) and, for a fresh ``ram+`` second stage, starts
    from the weights of ``init_from``.
    """
    from foveal.recipes.run import train_run  # here: it imports torch, which a worker sets up first

    return train_run(task.config, task.run_dir, progress=progress, stop_after=stop_after, init_from=task.init_from)


SAMPLED_OVERRIDES = {"eval_policy": "sample"}  # the official partial-supervision trainer's test policy


def sampled_done(task: RunTask, repeats: int) -> bool:
    """Whether ``task``'s sampled evaluation exists with ``repeats`` rollouts per image (another M: to do
    again), of the run as it is now (a run to be continued is evaluated again once it has been)."""
    if not task.done:
        return False
    try:
        return json.loads((task.sampled_dir / "results.json").read_text()).get("repeats") == repeats
    except (FileNotFoundError, json.JSONDecodeError):
        return False


def evaluate_sampled(task: RunTask, repeats: int, *, device: Optional[str] = None) -> dict:
    """Test ``task``'s best checkpoint with sampled locations, ``repeats`` rollouts per test image, each
    scored (:func:`foveal.recipes.run.evaluate_run`), into ``task.sampled_dir``; the results dict.

    Args:
        device: where to evaluate (default: the comparison's ``train.device`` of the run, which may
            differ from the one the checkpoint was trained on).
    """
    from foveal.recipes.run import evaluate_run  # here: it imports torch, which a worker sets up first

    return evaluate_run(task.run_dir / "checkpoints" / "best", task.sampled_dir, overrides=dict(SAMPLED_OVERRIDES),
                        repeats=repeats, device=device or task.config["train"].get("device"))


class StepRunner:
    """Runs one step, here or in a Ray worker: makes an input, resolves a run's inputs and trains it, or
    evaluates a finished run with sampled locations. Holds nothing another process needs: a worker builds
    its own from ``(cfg, out)``.

    Args:
        device: the ``train.device`` of the runs (``cuda`` for a Ray task with a GPU), or None for the config's own.
        progress: makes ``(callback, close)`` for each run's training (the CLI's progress bar).
        stop_after: stop each run after this iteration (timing, smoke tests).
    """

    def __init__(self, cfg: CompareConfig, out: Path, *, device: Optional[str] = None, log: LogFn = lambda m: None,
                 progress: Optional[Callable] = None, stop_after: Optional[int] = None) -> None:
        from foveal.recipes.compare.inputs import ComparisonInputs  # here: it imports torch

        self.inputs = ComparisonInputs(cfg, out, log)
        self.device, self.progress, self.stop_after = device, progress, stop_after

    def done(self, step: Step) -> bool:
        if step.task is None:
            return self.inputs.made(step.need, step.seed)
        return sampled_done(step.task, step.repeats) if step.repeats else step.task.done

    def run(self, step: Step) -> Outcome:
        """The step's outcome; an exception is the step's failure and propagates (the caller reports it with
        the run's folder; the other runs go on)."""
        if step.task is None:
            reason = self.inputs.make(step.need, step.seed)
            return Outcome(step.name, "skipped" if reason else "done", reason or "")
        if step.repeats:
            results = evaluate_sampled(step.task, step.repeats, device=self.device)
            return Outcome(step.name, "done", f"test accuracy {results['test_accuracy']:.4f}")
        return self._train(step)

    def _train(self, step: Step) -> Outcome:
        task = step.task
        reason = self.inputs.resolve(task)
        if reason is not None:
            return Outcome(step.name, "skipped", reason)
        if self.device is not None:
            task.config["train"]["device"] = self.device
        # a finished run continued to more iterations: its sampled evaluation is of the shorter run; gone
        # before training (once the folder is known to take this config), so that a continuation killed
        # after training still gets a new one
        from foveal.recipes.run import check_run_dir

        check_run_dir(task.config, task.run_dir)
        (task.sampled_dir / "results.json").unlink(missing_ok=True)
        callback, close = self.progress() if self.progress is not None else (None, lambda: None)
        try:
            results = train_task(task, progress=callback, stop_after=self.stop_after)
        finally:
            close()
        if results is None:
            return Outcome(step.name, "stopped", f"stopped after iteration {self.stop_after}")
        return Outcome(step.name, "done", f"test accuracy {results['test_accuracy']:.4f}")
