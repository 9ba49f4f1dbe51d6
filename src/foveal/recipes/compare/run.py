"""``foveal compare``'s runs: train every planned run of a comparison (:mod:`foveal.recipes.compare.config`)
that is not finished, after its inputs (:mod:`foveal.recipes.compare.inputs`) are made; resumable."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional

import yaml

from foveal.config import config_differences
from foveal.recipes.compare.config import CompareConfig, RunTask, plan_runs, restrict
from foveal.recipes.compare.inputs import ComparisonInputs
from foveal.recipes.run import train_run

__all__ = ["train_task", "run_comparison", "save_compare_config"]


def train_task(task: RunTask, *, progress: Optional[Callable] = None, stop_after: Optional[int] = None) -> Optional[dict]:
    """Train one planned run (resuming it if interrupted) and evaluate it; the results dict, or None
    when ``stop_after`` stopped it first.

    :func:`foveal.recipes.run.train_run`, which calls the algorithm's ``prepare(train_set)`` (sequence /
    salience files checked against the training set) and, for a fresh ``ram+`` second stage, starts
    from the weights of ``init_from``.
    """
    return train_run(task.config, task.run_dir, progress=progress, stop_after=stop_after, init_from=task.init_from)


def run_comparison(cfg: CompareConfig, out: Path, *, log: Callable[[str], None] = lambda message: None,
                   progress: Optional[Callable[[], tuple[Optional[Callable], Callable[[], None]]]] = None,
                   methods: Optional[tuple[str, ...]] = None, seeds: Optional[tuple[int, ...]] = None,
                   stop_after: Optional[int] = None) -> dict[str, str]:
    """Train every planned run that is not finished yet (module docstring); returns the skipped methods
    with the reason (e.g. PS-HGS without part annotations).

    Args:
        log: receives one line per event (inputs made, run started / skipped / finished).
        progress: makes ``(callback, close)`` for each run's training (the CLI's progress bar).
        methods, seeds: train only these (the report still covers every finished run); one the config
            lacks is an error.
        stop_after: stop each run after this iteration (timing, smoke tests).
    """
    wanted = restrict(cfg, methods, seeds)
    train_methods, train_seeds = {m.name for m in wanted.methods}, set(wanted.seeds)
    out = Path(out)
    save_compare_config(cfg, out)
    inputs = ComparisonInputs(cfg, out, log)
    inputs.preflight()
    skipped: dict[str, str] = {}
    for task in plan_runs(cfg, out):
        if task.method not in train_methods or task.seed not in train_seeds or task.method in skipped:
            continue
        what = f"{task.method} seed {task.seed}" + (" (pretraining)" if task.stage == "pretrain" else "")
        if task.done:
            log(f"finished already: {what}")
            continue
        reason = inputs.resolve(task)
        if reason is not None:
            skipped[task.method] = reason
            log(f"skipping {task.method}: {reason}")
            continue
        log(f"training {what} in {task.run_dir}")
        callback, close = progress() if progress is not None else (None, lambda: None)
        try:
            results = train_task(task, progress=callback, stop_after=stop_after)
        finally:
            close()
        if results is not None:
            log(f"finished {what}: test accuracy {results['test_accuracy']:.4f}")
    return skipped


def save_compare_config(cfg: CompareConfig, out: Path) -> None:
    """Write ``compare.yaml`` (the resolved comparison); a folder made with another one is an error."""
    resolved = {"run": cfg.run, "seeds": list(cfg.seeds), "inputs": dict(cfg.inputs),
                "methods": [{"name": m.name, "kind": m.kind, "sequences": m.sequences, "algorithm": dict(m.algorithm),
                             "overrides": list(m.overrides)} for m in cfg.methods],
                "convergence": {"ce_tolerance": cfg.ce_tolerance, "accuracy_tolerance": cfg.accuracy_tolerance,
                                "target_accuracy": cfg.target_accuracy}}
    path = out / "compare.yaml"
    out.mkdir(parents=True, exist_ok=True)
    if path.exists():
        old = yaml.safe_load(path.read_text()) or {}
        shared = {k: old.get(k) for k in ("run", "inputs")}
        diff = config_differences(shared, {k: resolved[k] for k in ("run", "inputs")})
        if diff:
            raise ValueError(f"{path}: this comparison folder was made with another config; differing fields: "
                             + "; ".join(diff[:6]) + ". Use a new --out, or the same config to resume.")
    path.write_text(yaml.safe_dump(resolved, sort_keys=False))
