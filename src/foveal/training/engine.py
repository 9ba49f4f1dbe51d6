"""The one training loop of foveal: iterations, validation, metrics, checkpoints, exact resume.

Every algorithm trains through :func:`fit`, and validation and the final test use :func:`evaluate`.
The engine knows no model: it calls ``algorithm.loss(model, batch) -> LossOutput`` to train and
``algorithm.metrics(model, batch) -> dict`` to evaluate (:mod:`foveal.training.base`).

A run folder::

    metrics.csv                   iteration,split,name,value   (split "train" or "val")
    tensorboard/                  the same scalars, plus train/it_per_s
    checkpoints/last.{json,safetensors}   model, optimizer, RNG states, iteration, best so far
    checkpoints/best.{json,safetensors}   the model at the best validation ``monitor`` value

Exact resume. Everything the loop does at iteration ``i`` is a function of ``i`` and of the state
in ``last``: the data order (:class:`foveal.training.loop.IterationBatches`), the learning rate
(:func:`foveal.training.loop.lr_factor`), the log window's partial sums, the global torch and Python
RNG states (which dropout and glimpse sampling consume). So calling :func:`fit` again on a run folder
with ``checkpoints/last.json`` continues from it, after cutting ``metrics.csv`` back to that
iteration, and on CPU produces the same ``metrics.csv`` and weights, bit for bit, as a run that was
never stopped. (On CUDA, bit-equality also needs deterministic kernels; data-loader workers get
fresh seeds on resume, which matters only for random augmentation inside a dataset.) Timing is kept
out of ``metrics.csv`` and checkpoints for that reason: ``it_per_s`` goes to TensorBoard and to
``progress`` only.

Data-parallel (torchrun, :mod:`foveal.training.distributed`): the same loop runs on every rank, on its
slice of each global batch, with the gradients averaged by DistributedDataParallel; rank 0 alone
writes the run folder, and ``last`` also holds every other rank's RNG states and log window
(``extra_state["rank_states"]``) and the number of processes (``extra_state["world_size"]``), so the
run resumes exactly with the same number of processes, and is refused with another.
"""

from __future__ import annotations

import dataclasses
import json
import math
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from foveal.checkpoint import checkpoint_paths, load_checkpoint, save_checkpoint
from foveal.training import distributed
from foveal.training.base import Algorithm, LossOutput
from foveal.training.loop import (EvaluationBatches, IterationBatches, LogWindow, MetricsLog, batch_size_of,
                                  check_finite, lr_factor, to_device)
from foveal.training.train_config import TRAJECTORY_FIELDS, TrainConfig, check_int

__all__ = ["TrainConfig", "FitResult", "fit", "evaluate"]

Progress = Callable[[int, int, dict[str, float]], None]
StepLoss = Callable[[dict[str, Any]], LossOutput]
@dataclass
class FitResult:
    """What :func:`fit` did.

    Attributes:
        iterations: iterations done so far in the run (including those before a resume).
        best_value: best ``monitor`` value so far (None before the first validation).
        best_iteration: iteration of ``best_value``.
        best_checkpoint: prefix of the best checkpoint (``run_dir/checkpoints/best``).
        last_checkpoint: prefix of the last checkpoint (``run_dir/checkpoints/last``).
        val_metrics: the latest validation metrics, with the ``val/`` prefix.
        wall_time: seconds spent in this call.
        iterations_per_second: iterations done in this call / ``wall_time``.
        run_time: seconds the whole run has trained for, over all calls (a killed call counts up to its
            last checkpoint; None for runs resumed from checkpoints that predate this field).
        run_iterations_per_second: ``iterations / run_time`` (None with ``run_time``).
        settled: the run stopped before ``config.iterations`` because its patience ran out
            (``TrainConfig.patience``); a later call on the folder trains nothing more.
    """

    iterations: int
    best_value: Optional[float]
    best_iteration: Optional[int]
    best_checkpoint: Path
    last_checkpoint: Path
    val_metrics: dict[str, float]
    wall_time: float
    iterations_per_second: float
    run_time: Optional[float] = None
    run_iterations_per_second: Optional[float] = None
    settled: bool = False


@torch.no_grad()
def evaluate(model: nn.Module, algorithm: Algorithm, dataset: Dataset, *, batch_size: int,
             device: torch.device | str, max_batches: Optional[int] = None, num_workers: int = 0,
             across_ranks: bool = False) -> dict[str, float]:
    """Mean of ``algorithm.metrics`` over ``dataset`` in order, weighted by batch size.

    Runs in eval mode without gradients and restores the model's previous mode. Uses its own data
    generator, so the global RNG is consumed only by the algorithm (e.g. glimpse sampling).

    Args:
        max_batches: stop after this many batches (the first ones); None for the whole dataset.
        across_ranks: in a data-parallel run, every rank evaluates every R-th batch and the per-batch
            numbers are gathered and summed in batch order: the one-process result on every rank (a
            collective: every rank must call it). Ignored in one process.
    """
    device = torch.device(device)
    w = distributed.world() if across_ranks else distributed.World()
    batches = EvaluationBatches(len(dataset), batch_size, max_batches, rank=w.rank, world_size=w.size)
    loader = DataLoader(dataset, batch_sampler=batches, num_workers=num_workers, pin_memory=device.type == "cuda",
                        generator=torch.Generator())
    was_training = model.training
    model.eval()
    rows: list[tuple[int, int, dict[str, float]]] = []  # (batch number, batch size, metrics)
    try:
        for i, batch in zip(batches.numbers, loader):
            metrics = algorithm.metrics(model, to_device(batch, device))
            rows.append((i, batch_size_of(batch), {name: float(value) for name, value in metrics.items()}))
    finally:
        model.train(was_training)
    if w.size > 1:
        rows = sorted(row for ranks in distributed.all_gather_objects(rows) for row in ranks)
    sums: dict[str, float] = {}
    weights: dict[str, int] = {}
    for _, n, metrics in rows:
        for name, value in metrics.items():
            sums[name] = sums.get(name, 0.0) + value * n
            weights[name] = weights.get(name, 0) + n
    return {name: total / weights[name] for name, total in sums.items()}


@dataclass
class _RunState:
    """What ``last`` restores besides model, optimizer and RNG."""

    iteration: int = 0
    best_value: Optional[float] = None
    best_iteration: Optional[int] = None
    val_metrics: dict[str, float] = dataclasses.field(default_factory=dict)
    train_logs: dict[str, float] = dataclasses.field(default_factory=dict)
    seconds_before: Optional[float] = 0.0  # training time of earlier calls (None: unknown, old checkpoint)
    # patience (TrainConfig.patience): "val/<name>" -> [best value, iteration it was reached], for every
    # TrainConfig.patience_on metric (the monitor's best is best_value / best_iteration)
    improved: dict[str, list] = dataclasses.field(default_factory=dict)


def fit(model: nn.Module, algorithm: Algorithm, train_set: Dataset, val_set: Dataset, config: TrainConfig,
        run_dir: str | Path, *, info: Optional[dict[str, Any]] = None, progress: Optional[Progress] = None,
        stop_after: Optional[int] = None) -> FitResult:
    """Train ``model`` with ``algorithm`` for ``config.iterations`` iterations, resuming if possible.

    Args:
        run_dir: the run folder (module docstring); if ``checkpoints/last.json`` exists there, training
            continues from it.
        info: free-form JSON-able dict stored in every checkpoint (e.g. run config and model spec).
        progress: ``progress(iteration, total, logs)``, called after every iteration with the latest
            train averages (and ``it_per_s``) and validation metrics (``val/...``); must not modify ``logs``.
        stop_after: return after this iteration as if the process were killed there (no extra
            checkpoint), e.g. to train in chunks.
    """
    if stop_after is not None:
        check_int("stop_after", stop_after, minimum=0, owner="fit")
    started = time.perf_counter()
    run_dir = Path(run_dir)
    last_path, best_path = run_dir / "checkpoints" / "last", run_dir / "checkpoints" / "best"
    world = distributed.world()
    distributed.local_batch_size(config.batch_size)  # a batch the processes cannot share equally: refused
    device = distributed.device(config.device, "TrainConfig.device")
    model.to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError(f"{type(model).__name__}: no trainable parameters")
    optimizer = _build_optimizer(params, config)
    window = LogWindow(device)
    distributed.barrier()  # whatever rank 0 wrote before (a previous call's last checkpoint) is there for all
    if checkpoint_paths(last_path)[1].exists():
        state = _resume(last_path, model, optimizer, window, config, device)
    else:
        state = _RunState()
        seed = distributed.rank_seed(config.seed, world.rank)
        torch.manual_seed(seed)
        random.seed(seed)
    start = state.iteration
    _check_same_start(last_path, start)
    end = config.iterations if stop_after is None else min(config.iterations, stop_after)
    settled = settled_at(state, config, start)
    if settled:
        end = start  # a run whose patience ran out is finished: nothing more to train
    loader = _train_loader(train_set, config, start, end, device)
    step_loss = distributed.loss_function(model, algorithm, device, compile=config.compile)
    shown: dict[str, float] = {f"val/{k}": v for k, v in state.val_metrics.items()}

    def run_seconds() -> Optional[float]:
        return None if state.seconds_before is None else state.seconds_before + time.perf_counter() - started

    def save_last(iteration: int) -> None:
        others = _other_ranks_states(window, device)  # a collective: every rank is here
        if not world.main:
            return
        extra = {"best_value": state.best_value, "best_iteration": state.best_iteration,
                 "improved": state.improved, "window": window.state_dict(), "train_config": dataclasses.asdict(config),
                 "train_seconds": run_seconds(), "world_size": world.size}
        if others:
            extra["rank_states"] = others
        save_checkpoint(last_path, model=model, optimizer=optimizer, rng=True, iteration=iteration, info=info,
                        metrics={"val": state.val_metrics, "train": state.train_logs}, extra_state=extra)

    log = MetricsLog(run_dir, keep_until=start, tensorboard=config.tensorboard) if world.main else _NoLog()
    try:
        model.train()
        for it, batch in enumerate(loader, start=start + 1):
            window.add(_train_step(step_loss, optimizer, params, to_device(batch, device), config, it))
            state.iteration = it
            final = it == config.iterations
            if it % config.log_every == 0 or final:
                logs, rate = window.averages()
                state.train_logs = distributed.mean_of_logs(logs)  # the same on every rank: all check it
                check_finite(it, state.train_logs)
                log.write(it, "train", state.train_logs)
                log.write(it, "train", {"it_per_s": rate}, csv_rows=False)
                shown.update(state.train_logs, it_per_s=rate)
            validated = it % config.val_every == 0 or final
            if validated:
                _validate(model, algorithm, val_set, config, device, state, it)
                log.write(it, "val", state.val_metrics)
                shown.update({f"val/{k}": v for k, v in state.val_metrics.items()})
                if state.best_iteration == it and world.main:
                    save_checkpoint(best_path, model=model, rng=False, iteration=it, info=info,
                                    metrics={"val": state.val_metrics})
            settled = validated and settled_at(state, config, it)
            if validated or it % (config.checkpoint_every or config.val_every) == 0 or settled:
                save_last(it)
            if progress is not None and world.main:
                progress(it, config.iterations, shown)
            if settled:
                break
    finally:
        log.close()
    distributed.barrier()  # every rank returns once rank 0 has written the folder

    wall = time.perf_counter() - started
    total = run_seconds()
    return FitResult(iterations=state.iteration, best_value=state.best_value, best_iteration=state.best_iteration,
                     best_checkpoint=best_path, last_checkpoint=last_path,
                     val_metrics={f"val/{k}": v for k, v in state.val_metrics.items()}, wall_time=wall,
                     iterations_per_second=(state.iteration - start) / max(wall, 1e-9), run_time=total,
                     run_iterations_per_second=None if total is None else state.iteration / max(total, 1e-9),
                     settled=settled)


def settled_at(state: _RunState, config: TrainConfig, iteration: int) -> bool:
    """True once every patience metric has gone ``config.patience`` iterations without improving."""
    if config.patience is None or iteration >= config.iterations:
        return False
    names = [entry.rsplit(":", 1)[0] for entry in config.patience_on]
    if state.best_iteration is None or any(name not in state.improved for name in names):
        return False  # not validated since patience was set: go on
    last = max([state.best_iteration, *(state.improved[name][1] for name in names)])
    return iteration - last >= config.patience


def _note_improvements(state: _RunState, config: TrainConfig, iteration: int) -> None:
    """Record in ``state.improved`` which ``patience_on`` metrics reached a new best at this validation (the
    monitor's is ``state.best_iteration``)."""
    for name, mode in (entry.rsplit(":", 1) for entry in config.patience_on):
        key = name[len("val/"):]
        if key not in state.val_metrics:
            raise ValueError(f"TrainConfig.patience_on: {name!r} is not among the validation metrics "
                             f"{sorted('val/' + k for k in state.val_metrics)}")
        value = float(state.val_metrics[key])
        best = state.improved.get(name)
        if best is None or (value > best[0] if mode == "max" else value < best[0]):
            state.improved[name] = [value, iteration]


class _NoLog:
    """What ranks other than 0 write: nothing."""

    def write(self, *args: Any, **kwargs: Any) -> None:
        pass

    def close(self) -> None:
        pass


def _other_ranks_states(window: LogWindow, device: torch.device) -> Optional[list[dict[str, Any]]]:
    """On rank 0 of a data-parallel run: ``[{"rng": ..., "window": ...} of rank 1, rank 2, ...]``; else None."""
    if distributed.world().size == 1:
        return None
    gathered = distributed.gather_to_main({"rng": distributed.rng_state(device), "window": window.state_dict()})
    return None if gathered is None else gathered[1:]


def _check_same_start(last_path: Path, start: int) -> None:
    """Every rank must resume from the same iteration (one run folder, shared by every machine)."""
    starts = distributed.all_gather_objects(start)
    if len(set(starts)) > 1:
        raise ValueError(f"{last_path}: the processes of this run start from different iterations {starts} (by rank); "
                         "the run folder must be one folder that every machine of the torchrun job sees")


def _train_loader(train_set: Dataset, config: TrainConfig, start: int, end: int, device: torch.device) -> DataLoader:
    """Batches for iterations ``start + 1 .. end``; its own generator keeps the global RNG untouched.

    A training set with a ``batch_sampler(batch_size, seed, start, end, *, rank, world_size)`` method (an
    algorithm's :meth:`prepare` may return one, e.g. a fixed supervised count per batch) chooses its own
    batches; it must be a pure function of seed and iteration, as :class:`IterationBatches` is."""
    world = distributed.world()
    make = getattr(train_set, "batch_sampler", None)
    if make is not None:
        batches = make(config.batch_size, config.seed, start, end, rank=world.rank, world_size=world.size)
    else:
        batches = IterationBatches(len(train_set), config.batch_size, config.seed, start, end, rank=world.rank,
                                   world_size=world.size)
    return DataLoader(train_set, batch_sampler=batches, num_workers=config.num_workers,
                      pin_memory=device.type == "cuda", generator=torch.Generator().manual_seed(config.seed + start))


def _train_step(step_loss: StepLoss, optimizer: torch.optim.Optimizer, params: list[nn.Parameter],
                batch: dict[str, Any], config: TrainConfig, iteration: int) -> LossOutput:
    for group in optimizer.param_groups:
        group["lr"] = config.lr * lr_factor(config.lr_schedule, iteration, config.iterations)
    out = step_loss(batch)  # algorithm.loss(model, batch); data-parallel: through DDP (gradients averaged)
    optimizer.zero_grad(set_to_none=True)
    out.loss.backward()
    if config.grad_clip is not None:
        nn.utils.clip_grad_norm_(params, config.grad_clip)
    optimizer.step()
    return out


def _validate(model: nn.Module, algorithm: Algorithm, val_set: Dataset, config: TrainConfig, device: torch.device,
              state: _RunState, iteration: int) -> None:
    """Evaluate on ``val_set`` (split over the ranks), store the metrics in ``state`` and note a new best there."""
    distributed.broadcast_buffers(model)  # every rank evaluates the model rank 0 saves (its BatchNorm statistics)
    state.val_metrics = evaluate(model, algorithm, val_set, batch_size=config.eval_batch_size or config.batch_size,
                                 device=device, max_batches=config.val_batches, num_workers=config.num_workers,
                                 across_ranks=True)
    name = config.monitor[len("val/"):]
    if name not in state.val_metrics:
        raise ValueError(f"TrainConfig.monitor: {config.monitor!r} is not among the validation metrics "
                         f"{sorted('val/' + k for k in state.val_metrics)}")
    value = float(state.val_metrics[name])
    best = state.best_value
    if best is None or math.isnan(best) or (value > best if config.monitor_mode == "max" else value < best):
        state.best_value, state.best_iteration = value, iteration
    _note_improvements(state, config, iteration)


def _resume(last_path: Path, model: nn.Module, optimizer: torch.optim.Optimizer, window: LogWindow,
            config: TrainConfig, device: torch.device) -> _RunState:
    try:
        ckpt = load_checkpoint(last_path, model=model, optimizer=optimizer, restore_rng=True)  # rank 0's RNG states
    except (ValueError, OSError) as err:
        raise ValueError(f"{err}; this run cannot resume from it: {_way_forward(last_path)}") from None
    extra = ckpt.extra_state
    world = distributed.world()
    saved_world = int(extra.get("world_size", 1))
    if saved_world != world.size and ckpt.iteration < config.iterations:
        raise ValueError(f"{ckpt.path}: this run was trained by {saved_world} process(es) and is resumed by "
                         f"{world.size}; each process's share of the batches and its RNG stream depend on their "
                         f"number, so resume it with the same: "
                         + ("foveal train (one process)" if saved_world == 1 else
                            f"torchrun --nproc-per-node={saved_world} (x nodes: {saved_world} processes in all)"))
    saved = extra.get("train_config", {})
    changed = [f"TrainConfig.{k}={saved[k]!r} there, {getattr(config, k)!r} now"
               for k in TRAJECTORY_FIELDS if k in saved and saved[k] != getattr(config, k)]
    if config.lr_schedule == "cosine" and saved.get("iterations", config.iterations) != config.iterations:
        changed.append(f"TrainConfig.iterations={saved['iterations']!r} there, {config.iterations!r} now "
                       "(the cosine schedule depends on it)")
    if changed:
        raise ValueError(f"{ckpt.path}: cannot resume with other training settings ({'; '.join(changed)}); "
                         "use a new run folder or the same settings")
    if ckpt.iteration > config.iterations:
        raise ValueError(f"{ckpt.path}: the run is at iteration {ckpt.iteration}, past "
                         f"TrainConfig.iterations={config.iterations}")
    window.load_state_dict(extra["window"])
    if world.rank > 0 and saved_world == world.size:  # this rank's own RNG states and log window
        own = extra["rank_states"][world.rank - 1]
        distributed.set_rng_state(own["rng"], device)
        window.load_state_dict(own["window"])
    return _RunState(iteration=ckpt.iteration, best_value=extra["best_value"], best_iteration=extra["best_iteration"],
                     val_metrics=dict(ckpt.metrics.get("val", {})), train_logs=dict(ckpt.metrics.get("train", {})),
                     seconds_before=extra.get("train_seconds"), improved=dict(extra.get("improved") or {}))


def _way_forward(last_path: Path) -> str:
    """What to do when ``last`` does not load: the state of ``best``, and which files to remove to start over."""
    best = last_path.with_name("best")
    over = f"remove last.json and last.safetensors from {last_path.parent} to train this run again from iteration 0"
    try:
        iteration = int(json.loads(checkpoint_paths(best)[1].read_text())["iteration"])
    except (OSError, ValueError, KeyError, TypeError):
        return f"There is no readable best checkpoint either: {over}, or use a new --run-dir"
    return (f"best.* (iteration {iteration}) is intact (foveal evaluate {best}); {over} (best is then "
            "overwritten by the new run), or use a new --run-dir")


def _build_optimizer(params: list[nn.Parameter], config: TrainConfig) -> torch.optim.Optimizer:
    # foreach: one call per operation over all parameters, as on CUDA by default; on the CPU it gives the
    # per-parameter loop's numbers bit for bit (tests/test_engine.py) with less Python per step
    if config.optimizer == "sgd":
        return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay,
                               foreach=True)
    cls = torch.optim.AdamW if config.optimizer == "adamw" else torch.optim.Adam
    return cls(params, lr=config.lr, weight_decay=config.weight_decay, foreach=True)
