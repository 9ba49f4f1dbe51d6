"""A run, end to end: config -> data, model, algorithm -> engine -> test evaluation -> records -> figures.

This is what ``foveal train``, ``foveal evaluate`` and ``foveal demo`` call, and what every other
recipe and benchmark calls, so that every number foveal reports is made by the same code. A run folder holds::

    config.yaml          the resolved config (a resumed run must match it)
    metrics.csv          iteration,split,name,value (training and validation)
    tensorboard/         the same scalars for TensorBoard
    checkpoints/         best.* and last.* (safetensors + JSON)
    results.json         the final numbers, machine-readable
    records/             glimpses_<split>.npz: where the model looked on every evaluated image
    figures/             glimpse heatmaps per step, example glimpses, validation curve (PNG)

Nothing is written before the config is known to be runnable: every section is checked, the data,
model and algorithm are built and their geometry checked against each other
(:func:`foveal.recipes.experiment.check_experiment`) before ``config.yaml`` is saved, so a mistake caught at the start leaves the folder as it was and
the corrected command can use it. What fails later but before the first iteration has run (a corrupt
image in the first batch, a sequence file the algorithm checks as it reads, a ``last`` checkpoint that
does not load, Ctrl-C) is undone (:class:`foveal.runfolder.FolderStart`): the folder is left exactly as
it was, byte for byte, or not there if it was not. A folder that holds a ``config.yaml`` but no
checkpoint yet (a run that failed before its first checkpoint) takes the new config too.

One process writes a run folder at a time: :func:`train_run` and :func:`evaluate_run` lock it
(:func:`foveal.runfolder.hold`, an operating-system lock released when the process ends), and a second
process is refused, naming the first (host, pid).

Under torchrun (``torchrun --nproc-per-node=N -m foveal train ...``, :mod:`foveal.training.distributed`)
every process runs :func:`train_run` on the same config: each checks and builds the same experiment,
trains its share of every batch, and only rank 0 writes the folder and tests the best checkpoint
(the others wait for it, so that every process leaves :func:`train_run` together). ``results.json``
records ``training.world_size``, and every checkpoint's JSON ``info.world_size``.

A posterior run (a model of kind "posterior", :mod:`foveal.boed`) has no glimpse policy to record:
its evaluation reports accuracy and entropy after t = 0..T uniformly random glimpses on the
algorithm's grid (records/posterior_curves_<split>.json, figures/posterior_curves.png).
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import torch
import yaml
from torch.utils.data import Dataset

from foveal import __version__, runfolder
from foveal.checkpoint import checkpoint_paths, load_checkpoint
from foveal.config import EvaluateConfig, config_differences, dump_config, section_config
from foveal.evaluation import plots
from foveal.evaluation.boed_plots import plot_posterior_curves
from foveal.evaluation.budget import budget_evaluation, write_budget
from foveal.evaluation.collect import collect_glimpses, make_figures, record_metrics, save_record
from foveal.evaluation.posterior_curves import posterior_curves
from foveal.files import atomic_write_json
from foveal.models import MODELS, load_model, model_spec
from foveal.policies import make_policy
from foveal.recipes.experiment import Experiment, build_algorithm_of, build_data, build_experiment, check_experiment, \
    check_run_config
from foveal.runfolder import FolderStart
from foveal.training import TrainConfig, distributed, evaluate, fit
from foveal.training.base import PolicyEvaluation


def check_run_dir(cfg: dict[str, Any], run_dir: Path) -> None:
    """Refuse a folder whose run was made with another config; reads only, writes nothing.

    Two differences are allowed: ``train.device``, ``train.patience``/``patience_on`` and
    ``train.checkpoint_every`` (where a run trains, when it stops and how often it saves are not what it
    is: a run stopped on one device may continue on another, or with a longer patience), and more ``train.iterations`` with a constant learning rate. The
    engine then continues from the last checkpoint, exactly as one longer run would have (a cosine
    schedule depends on the length, so there it stays an error). A folder without a last checkpoint holds
    nothing to resume (a start that failed), so any config may take it over.
    """
    saved = run_dir / "config.yaml"
    if not saved.exists() or not checkpoint_paths(run_dir / "checkpoints" / "last")[1].exists():
        return
    try:
        old = yaml.safe_load(saved.read_text())
    except yaml.YAMLError:
        old = None
    if not isinstance(old, dict):
        raise ValueError(f"{saved}: not a foveal run config (not a YAML mapping); restore it, or use a new --run-dir")
    old, cfg = _without_free_fields(old), _without_free_fields(cfg)
    diff = config_differences(old, cfg)
    if diff and not longer_constant_run(old, cfg):
        raise ValueError(f"{saved}: this run folder was made with another config; differing fields: "
                         + "; ".join(diff[:8]) + ". Use a new --run-dir, or the same config to resume "
                         "(only train.iterations may grow, with train.lr_schedule=constant).")


_FREE_TRAIN_FIELDS = ("device", "patience", "patience_on", "checkpoint_every")  # not what a run is


def _without_free_fields(cfg: dict[str, Any]) -> dict[str, Any]:
    train = cfg.get("train")
    free = {k: v for k, v in train.items() if k not in _FREE_TRAIN_FIELDS} if isinstance(train, dict) else train
    return cfg if free is train else {**cfg, "train": free}


def prepare_run_dir(cfg: dict[str, Any], run_dir: Path) -> None:
    """Check the folder (:func:`check_run_dir`), create it and save the config as ``config.yaml``."""
    check_run_dir(cfg, run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    dump_config(cfg, run_dir / "config.yaml")


def longer_constant_run(old: dict[str, Any], new: dict[str, Any]) -> bool:
    """True if ``new`` is ``old`` with more ``train.iterations`` and a constant learning rate."""
    old_train, new_train = old.get("train") or {}, new.get("train") or {}
    if new_train.get("lr_schedule", "constant") != "constant":
        return False
    try:
        longer = int(new_train["iterations"]) > int(old_train["iterations"])
    except (KeyError, TypeError, ValueError):
        return False
    same_length = {**old, "train": {**old_train, "iterations": new_train["iterations"]}}
    return longer and not config_differences(same_length, new)


def train_run(cfg: dict[str, Any], run_dir: Path, *, progress: Optional[Callable] = None,
              stop_after: Optional[int] = None, init_from: Optional[str | Path] = None,
              test: bool = True, on_built: Optional[Callable[[Experiment], None]] = None) -> Optional[dict[str, Any]]:
    """Train (resuming if the folder has a last checkpoint), then evaluate the best checkpoint.

    The global RNG is seeded with ``train.seed`` before the model is built, so that seeds differ in
    their initial weights and a run restarted from scratch starts from the same weights. An algorithm
    with ``prepare(train_set) -> train_set`` gets to check (and may wrap) the training set first, e.g.
    partial supervision validates its sequence file against it.

    Args:
        init_from: checkpoint whose weights a fresh run starts from (a later stage of a multi-stage
            recipe); a resumed run loads its own last checkpoint over them, as ``fit`` always does.
        test: evaluate the best checkpoint on ``evaluate.split`` afterwards; False only trains (and validates).
        on_built: called with the checked experiment before anything is written (rank 0), e.g. for the CLI's
            warnings about it.

    Returns the results dict (also written to ``results.json``), or None if ``stop_after`` stopped
    the run early or ``test`` is False, and on every rank but 0 of a data-parallel run.
    """
    run_dir = Path(run_dir)
    world = distributed.world()
    train_cfg, eval_cfg = check_run_config(cfg)
    distributed.local_batch_size(train_cfg.batch_size, "train.batch_size")  # one share per process of each batch
    distributed.device(train_cfg.device)  # a device this machine lacks: refused before anything is built
    start = FolderStart(run_dir) if world.main else None
    took = False
    try:
        took = hold_run_dir(run_dir)
        return _train_run(cfg, run_dir, train_cfg, eval_cfg, start, progress, stop_after, init_from, test, on_built)
    except BaseException:
        if start is not None:
            start.undo()  # a start that failed (or was interrupted) before its first iteration leaves no trace
        raise
    finally:
        if took:
            runfolder.release(run_dir)  # written: another process may continue it now


def hold_run_dir(run_dir: Path) -> bool:
    """Rank 0 locks the folder (:func:`foveal.runfolder.hold`; True if it took the lock); every rank raises if
    it could not, so that no rank waits for a rank that has given up."""
    problem, took = None, False
    if distributed.world().main:
        try:
            took = runfolder.hold(run_dir)
        except ValueError as err:
            problem = str(err)
    problem = distributed.all_gather_objects(problem)[0]
    if problem is not None:
        raise ValueError(problem)
    return took


def _train_run(cfg: dict[str, Any], run_dir: Path, train_cfg: TrainConfig, eval_cfg: EvaluateConfig,
               start: Optional[FolderStart], progress: Optional[Callable], stop_after: Optional[int],
               init_from: Optional[str | Path], test: bool,
               on_built: Optional[Callable[[Experiment], None]]) -> Optional[dict[str, Any]]:
    world = distributed.world()
    check_run_dir(cfg, run_dir)
    torch.manual_seed(train_cfg.seed)
    exp = build_experiment(cfg) if test else build_experiment(cfg, ("train", "val"))
    check_experiment(exp, train_cfg)
    if on_built is not None and world.main:
        on_built(exp)
    prepare = getattr(exp.algorithm, "prepare", None)
    train_set = prepare(exp.data["train"]) if prepare is not None else exp.data["train"]
    if init_from is not None:
        load_checkpoint(init_from, model=exp.model)
    info = {"config": cfg, "model": model_spec(exp.model), "foveal_version": __version__,
            "init_from": None if init_from is None else str(init_from), "world_size": world.size}
    if world.main:
        prepare_run_dir(cfg, run_dir)  # only now: the config is known to build

    def started(done: int, total: int, logs: Optional[dict] = None) -> None:
        if start is not None:
            start.done()  # an iteration has run: the folder is this run's now
        if progress is not None:
            progress(done, total, logs)

    result = fit(exp.model, exp.algorithm, train_set, exp.data["val"], train_cfg, run_dir,
                 info=info, progress=started, stop_after=stop_after)
    if start is not None:
        start.done()
    results = None
    if (result.iterations == train_cfg.iterations or result.settled) and test and world.main:
        training = {"iterations": result.iterations, "settled": result.settled, "patience": train_cfg.patience,
                    "best_iteration": result.best_iteration,
                    "best_validation": result.best_value, "wall_time_s": result.run_time,
                    "iterations_per_s": result.run_iterations_per_second,
                    "this_call": {"wall_time_s": result.wall_time, "iterations_per_s": result.iterations_per_second},
                    "train_config": dataclasses.asdict(train_cfg), "world_size": world.size}
        results = evaluate_run(result.best_checkpoint, run_dir, dataset=exp.data[eval_cfg.split], training=training)
    distributed.barrier()  # the other ranks wait for rank 0's test; a next stage may read what it wrote
    return results


def evaluate_run(checkpoint: str | Path, out_dir: Path, *, dataset: Optional[Dataset] = None,
                 split: Optional[str] = None, overrides: Optional[dict[str, Any]] = None,
                 training: Optional[dict[str, Any]] = None, repeats: int = 1,
                 device: Optional[str] = None, exit_rule: str = "confidence",
                 thresholds: Sequence[float] = ()) -> dict[str, Any]:
    """Test a checkpoint: metrics, accuracy after each glimpse, a glimpse record and figures.

    Every test image is rolled out once (:func:`foveal.evaluation.collect.collect_glimpses`): the test
    numbers and the glimpse record come from that rollout, so they agree under a sampling policy too.
    An algorithm whose ``metrics`` measure something else besides (the Saccader's stage 1 reports its
    all-cells classifier) has those under ``"algorithm_metrics"``.

    Args:
        checkpoint: prefix of a foveal checkpoint (``run/checkpoints/best``).
        out_dir: where results.json, records/ and figures/ go.
        dataset: the split to test on (default: the config's ``evaluate.split``).
        overrides: algorithm settings to change for this evaluation (e.g. ``test_samples``).
        training: numbers from training to store beside the test numbers.
        repeats: rollouts per test image, each scored (sampled evaluation, e.g. ``overrides=
            {"eval_policy": "sample"}, repeats=5`` as the official trainer); the record keeps the first.
        device: where to evaluate (default: the run's ``train.device``).
        exit_rule, thresholds: also evaluate under early exit (:mod:`foveal.evaluation.budget`), one pass per
            threshold of the rule; ``budget.{json,csv,md}`` and figures go to ``out_dir``, the numbers to
            ``results["budget"]``. Needs one rollout per image (``test_samples`` and ``repeats`` 1).
    """
    model, info = load_model(checkpoint)
    cfg = info["config"]
    # keys of runs trained before the evaluate: section was checked are ignored, as they were then
    known = {f.name for f in dataclasses.fields(EvaluateConfig)}
    eval_cfg = section_config("evaluate", EvaluateConfig, {k: v for k, v in cfg["evaluate"].items() if k in known})
    split = split or eval_cfg.split
    if dataset is None:
        dataset = build_data(cfg, (split,))[split]
    name = cfg["algorithm"]["name"]
    algorithm = build_algorithm_of({"algorithm": {**cfg["algorithm"], **(overrides or {})}})
    device = distributed.device(device or cfg["train"].get("device", "auto"))  # rank 0's GPU under torchrun
    model.to(device)
    batch_size = eval_cfg.batch_size
    seed = int(cfg["train"].get("seed", 0))
    torch.manual_seed(seed)
    start = time.perf_counter()
    if thresholds:
        check_budget_settings(algorithm, repeats, info["model"]["name"])
    if info["model"]["name"] in MODELS.names(kind="posterior"):
        results = evaluate_posterior(model, algorithm, dataset, batch_size=batch_size, device=device, seed=seed)
        results.update({"split": split, "model": info["model"]["name"], "algorithm": name, "checkpoint": str(checkpoint),
                        "eval_time_s": time.perf_counter() - start, "foveal_version": __version__})
        return _write_posterior_results(results, Path(out_dir), split, cfg, training)
    record = collect_glimpses(model, algorithm, dataset, batch_size, device, eval_cfg.examples, repeats)
    numbers = record_metrics(record)
    results = {
        "dataset": dataset.name, "split": split, "num_images": len(dataset),
        "model": info["model"]["name"], "algorithm": name, "checkpoint": str(checkpoint),
        "num_glimpses": int(record["locations"].shape[1]),
        "test_accuracy": numbers["accuracy"], "test_error": 1 - numbers["accuracy"], "test_ce": numbers["ce"],
        "accuracy_per_glimpse": numbers["accuracy_per_glimpse"],
        "eval_policy": algorithm.config.eval_policy, "test_samples": algorithm.config.test_samples,
        "repeats": repeats,
    }
    if type(algorithm).metrics is not PolicyEvaluation.metrics:
        results["algorithm_metrics"] = evaluate(model, algorithm, dataset, batch_size=batch_size, device=device)
    results.update(eval_time_s=time.perf_counter() - start, foveal_version=__version__)
    if training:
        results["training"] = training
    out_dir = Path(out_dir)
    with runfolder.holding(out_dir):  # one writer (inside train_run, which holds it already: nothing to do)
        atomic_write_json(out_dir / "results.json", results)
        record_path = save_record(record, model, dataset, out_dir / "records" / f"glimpses_{split}.npz")
        if eval_cfg.figures:
            results["figures"] = [str(p) for p in make_figures(record_path, out_dir)]
        if thresholds:
            torch.manual_seed(seed)
            budget = budget_evaluation(model, dataset, rule=exit_rule, thresholds=thresholds,
                                       max_glimpses=algorithm.config.num_glimpses,
                                       policy=make_policy(algorithm.config.eval_policy, model=model),
                                       batch_size=batch_size, device=device, seed=seed, label=info["model"]["name"])
            files = write_budget({"dataset": dataset.name, "split": split, "methods": [budget]}, out_dir)
            results["budget"] = {"rule": exit_rule, "cost": budget["cost"], "exit": budget["exit"],
                                 "files": [str(p) for p in files]}
        if eval_cfg.figures or thresholds:
            atomic_write_json(out_dir / "results.json", results)
    return results


def check_budget_settings(algorithm: Any, repeats: int, model_name: str) -> None:
    """Early exit decides per rollout: refuse Monte-Carlo averaging and repeated rollouts, naming the setting."""
    if model_name in MODELS.names(kind="posterior"):
        raise ValueError(f"--thresholds: early exit needs a glimpse model with a policy; {model_name!r} is a "
                         "posterior network")
    if algorithm.config.test_samples != 1:
        raise ValueError(f"algorithm.test_samples: early exit stops each rollout on its own prediction; expected 1 "
                         f"with --thresholds, found {algorithm.config.test_samples}")
    if repeats != 1:
        raise ValueError(f"--repeats: expected 1 with --thresholds (one rollout per image), found {repeats}")


def evaluate_posterior(model, algorithm, dataset: Dataset, *, batch_size: int, device: torch.device,
                       seed: int) -> dict[str, Any]:
    """A posterior network's numbers: the algorithm's metrics, and accuracy / entropy after t = 0..T random glimpses.

    ``test_accuracy`` is the accuracy after T random glimpses; ``accuracy_per_glimpse`` lists it after
    each glimpse t = 1..T (as for glimpse models), ``curves`` gives t = 0..T.
    """
    metrics = evaluate(model, algorithm, dataset, batch_size=batch_size, device=device)
    T = algorithm.config.num_glimpses
    grid = algorithm.config.make_grid(tuple(dataset.image_shape[1:]))
    curves = {k: [float(v) for v in c] for k, c in posterior_curves(model, dataset, grid, T, batch_size=batch_size,
                                                                     seed=seed, device=device).items()}
    return {"dataset": dataset.name, "num_images": len(dataset), "num_glimpses": T,
            "grid": {"rows": list(grid.rows), "cols": list(grid.cols), "glimpse_size": grid.glimpse_size},
            "test_accuracy": curves["accuracy"][-1], "test_error": 1 - curves["accuracy"][-1],
            "test_ce": curves["ce"][-1], "accuracy_per_glimpse": curves["accuracy"][1:],
            "random_t_metrics": metrics, "curves": {"random": curves}}


def _write_posterior_results(results: dict[str, Any], out_dir: Path, split: str, cfg: dict[str, Any],
                             training: Optional[dict[str, Any]]) -> dict[str, Any]:
    if training:
        results["training"] = training
    with runfolder.holding(out_dir):
        return _write_posterior_files(results, out_dir, split, cfg)


def _write_posterior_files(results: dict[str, Any], out_dir: Path, split: str, cfg: dict[str, Any]) -> dict[str, Any]:
    record = out_dir / "records" / f"posterior_curves_{split}.json"
    record.parent.mkdir(parents=True, exist_ok=True)
    keys = ("dataset", "split", "num_images", "num_glimpses", "grid", "curves", "checkpoint")
    record.write_text(json.dumps({k: results[k] for k in keys}, indent=2))
    if cfg["evaluate"].get("figures", True):
        figures = [plot_posterior_curves(record, out_dir / "figures" / "posterior_curves.png")]
        metrics = out_dir / "metrics.csv"
        if metrics.exists():
            figures.append(plots.plot_training_summary(metrics, out_dir / "figures" / "training_curves.png"))
        results["figures"] = [str(p) for p in figures]
    atomic_write_json(out_dir / "results.json", results)
    return results
