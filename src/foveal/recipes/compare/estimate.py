"""How long a comparison will take: measured training speed of every method, times the plan.

:func:`estimate_comparison` trains each method for a few hundred iterations (the first seed, in
``<out>/estimate/``, deleted first), timing iterations ``2..N`` through the engine's progress callback
(so data loading, validation every ``val_every`` and checkpoints count; building the experiment does
not), then adds up::

    total = sum over methods and seeds of  iterations / (it/s of the method)
          + one test evaluation per run (timed once: evaluate + glimpse record, twice the metric pass)
          + its sampled evaluation (``evaluate_repeats`` = M > 0): M times the metric pass, M rollouts per image
          + RAM+: pretrain_iterations / (it/s of the pretraining stage) per seed, and the salience maps once
            (their per-image cost timed on a few batches, times the training split's size)

Inputs that do not exist yet are replaced by stand-ins of the same cost: random sequences on the model's
grid for NOGS and PS-RAM (a supervised image costs the same whatever its sequence), random salience maps
for RAM+'s pretraining, and an untrained ``posterior-cnn`` (or ``inputs.posterior`` if given) to time
the salience computation. The speed is the machine's at the time of measurement with the torch
thread count in force (``OMP_NUM_THREADS``), which the result records.
"""

from __future__ import annotations

import dataclasses
import shutil
import time
from pathlib import Path
from typing import Callable

import torch

from foveal.models import create_model, load_model
from foveal.recipes.compare.config import CompareConfig, method_config, plan_runs
from foveal.recipes.compare.inputs import ComparisonInputs
from foveal.recipes.compare.run import train_task
from foveal.recipes.experiment import build_experiment
from foveal.training import evaluate
from foveal.training.salience_pretraining import salience

__all__ = ["estimate_comparison"]


class _Timer:
    """Progress callback recording when iteration 1 and the last iteration ended."""

    def __init__(self) -> None:
        self.first = self.last = None
        self.iterations = 0

    def __call__(self, iteration: int, total: int, logs: dict) -> None:
        now = time.perf_counter()
        if self.first is None:
            self.first = now
        self.last, self.iterations = now, iteration

    @property
    def rate(self) -> float:
        return (self.iterations - 1) / max(self.last - self.first, 1e-9) if self.iterations > 1 else float("nan")


def _rate_key(cfg: CompareConfig, name: str, stage: str) -> str:
    """Which measured speed a stage uses: RAM+'s second stage is RAM's (same algorithm and network)."""
    method = cfg.method(name)
    if stage == "pretrain":
        return f"{name} (pretraining)"
    if method.kind == "ram+":
        plain = next((m.name for m in cfg.methods if m.kind == "ram" and not m.algorithm and not m.overrides), None)
        return plain or name
    return name


def estimate_comparison(cfg: CompareConfig, out: Path, *, iterations: int = 300, workers: int = 1,
                        device: str = "cpu", log: Callable[[str], None] = lambda message: None) -> dict:
    """Measure each method's speed and estimate the comparison's total time (module docstring), and its wall
    time with ``workers`` runs at once (:func:`wall_time`). ``device``: where the test pass is timed (the
    runs' ``train.device``)."""
    if iterations < 3:
        raise ValueError(f"--estimate: expected at least 3 iterations to time, found {iterations}")
    scratch = Path(out) / "estimate"
    shutil.rmtree(scratch, ignore_errors=True)
    # Stand-ins of the same cost for inputs that may not exist yet (module docstring).
    stand_in = dataclasses.replace(cfg, inputs={**cfg.inputs, "posterior": None, "stand_ins": True})
    inputs = ComparisonInputs(stand_in, scratch, log)
    rates: dict[str, float] = {}
    seed = cfg.seeds[0]
    for task in plan_runs(stand_in, scratch):
        key = _rate_key(cfg, task.method, task.stage)
        if task.seed != seed or key in rates:
            continue
        if task.needs == "ps-ram":  # no RAM run to sample from yet: a supervised image costs the same anyway
            task.needs = "nogs"
        if inputs.resolve(task) is not None:
            continue  # e.g. PS-HGS without part annotations: not part of the comparison
        task.config["train"]["iterations"] = max(task.config["train"]["iterations"], iterations)
        task.init_from = None
        timer = _Timer()
        log(f"timing {iterations} iterations of {task.method}" + (" (pretraining)" if task.stage == "pretrain" else ""))
        train_task(task, progress=timer, stop_after=iterations)
        rates[key] = timer.rate
        log(f"  {rates[key]:.2f} it/s")
    # one test evaluation and the salience maps
    exp = build_experiment(method_config(cfg, cfg.methods[0], seed), splits=("train", cfg.run["evaluate"]["split"]))
    test = exp.data[cfg.run["evaluate"]["split"]]
    start = time.perf_counter()
    evaluate(exp.model, exp.algorithm, test, batch_size=int(cfg.run["evaluate"]["batch_size"]), device=device)
    one_pass = time.perf_counter() - start
    eval_s = 2 * one_pass + 3.0  # + the glimpse record pass and figures
    # M rollouts per image, each a pass of the same cost (a sampled location costs what the mode does), + figures
    sampled_s = cfg.evaluate_repeats * one_pass + 3.0 if cfg.evaluate_repeats > 0 else 0.0
    salience_s = 0.0
    if any(m.kind == "ram+" for m in cfg.methods):
        network = _posterior_for_timing(cfg, inputs)
        k = min(64, len(inputs.train_set))
        images = torch.stack([inputs.train_set[i]["image"] for i in range(k)])
        grid = inputs.grid()
        salience(network, images, grid, mode=cfg.inputs["salience_mode"])  # warm-up
        start = time.perf_counter()
        salience(network, images, grid, mode=cfg.inputs["salience_mode"])
        salience_s = (time.perf_counter() - start) / k * len(inputs.train_set)
    est = _total(cfg, rates, eval_s, salience_s, iterations, sampled_s)
    est["workers"] = workers
    est["wall_s"] = wall_time(cfg, est, workers)
    return est


def wall_time(cfg: CompareConfig, est: dict, workers: int) -> float:
    """The comparison's wall time when ``workers`` runs go at once, each at its measured one-process speed
    (so measure with the workers' thread count, e.g. ``OMP_NUM_THREADS=1`` for CPU workers): the runs are
    started in plan order (seed by seed), each on the first free worker once what it needs has finished
    (PS-RAM with ``ps_ram_source: auto`` after RAM of its seed, RAM+ after the salience maps, which one
    worker makes first). Its sampled evaluation is counted inside a run's time."""
    if workers < 1:
        raise ValueError(f"workers: expected at least 1, found {workers}")
    per_run = {row["method"]: row["seconds_per_run"] for row in est["methods"] if not row.get("skipped")}
    ram = next((m.name for m in cfg.methods if m.kind == "ram"), None)
    free = [0.0] * workers
    done: dict[tuple[str, int], float] = {}
    salience_end = None
    for seed in cfg.seeds:
        for m in cfg.methods:
            if m.name not in per_run:
                continue
            ready = 0.0
            if m.kind == "ps" and m.sequences == "ps-ram" and cfg.inputs["ps_ram_source"] == "auto" and ram in per_run:
                ready = done[(ram, seed)]
            if m.kind == "ram+":
                if salience_end is None:  # made once, by the first free worker, before the first RAM+ run
                    w = min(range(workers), key=free.__getitem__)
                    salience_end = free[w] = free[w] + est["salience_s"]
                ready = salience_end
            w = min(range(workers), key=free.__getitem__)
            start = max(free[w], ready)
            done[(m.name, seed)] = free[w] = start + per_run[m.name]
    return max(free)


def _posterior_for_timing(cfg: CompareConfig, inputs: ComparisonInputs):
    if cfg.inputs["posterior"] is not None:
        return load_model(cfg.inputs["posterior"])[0]
    C, H, W = inputs.train_set.image_shape
    return create_model("posterior-cnn", in_channels=C, num_classes=inputs.train_set.num_classes, image_size=(H, W))


def _total(cfg: CompareConfig, rates: dict[str, float], eval_s: float, salience_s: float, timed: int,
           sampled_s: float) -> dict:
    rows, total = [], salience_s
    for m in cfg.methods:
        run_iterations = method_config(cfg, m, cfg.seeds[0])["train"]["iterations"]
        key = _rate_key(cfg, m.name, "train")
        if key not in rates:
            rows.append({"method": m.name, "skipped": True})
            continue
        per_run = run_iterations / rates[key] + eval_s + sampled_s
        if m.kind == "ram+":
            per_run += cfg.inputs["pretrain_iterations"] / rates[_rate_key(cfg, m.name, "pretrain")] + eval_s
        seconds = per_run * len(cfg.seeds)
        total += seconds
        rows.append({"method": m.name, "it_per_s": rates[key],
                     "pretrain_it_per_s": rates.get(_rate_key(cfg, m.name, "pretrain")) if m.kind == "ram+" else None,
                     "iterations": run_iterations, "seconds_per_run": per_run, "runs": len(cfg.seeds), "seconds": seconds})
    return {"methods": rows, "test_evaluation_s": eval_s, "sampled_evaluation_s": sampled_s,
            "evaluate_repeats": cfg.evaluate_repeats, "salience_s": salience_s, "total_s": total,
            "total_h": total / 3600, "timed_iterations": timed, "torch_threads": torch.get_num_threads()}

