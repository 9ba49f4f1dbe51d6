"""Settings of the training loop (:class:`TrainConfig`), checked when made; :mod:`foveal.training.engine` runs them."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Optional

__all__ = ["TrainConfig", "TRAJECTORY_FIELDS", "check_int"]

# Settings that change the training trajectory: a resumed run must keep them.
TRAJECTORY_FIELDS = ("batch_size", "lr", "weight_decay", "optimizer", "momentum", "lr_schedule", "grad_clip",
                     "log_every", "seed")


@dataclass(frozen=True)
class TrainConfig:
    """Settings of :func:`foveal.training.engine.fit`.

    Attributes:
        iterations: optimizer steps in the whole run.
        batch_size: training batch size; each epoch drops its last partial batch. In a data-parallel run
            this is the global batch, shared equally by the processes (a multiple of their number).
        lr: base learning rate.
        weight_decay: L2 penalty (``adam``, ``sgd``) or decoupled decay (``adamw``).
        optimizer: ``"adam"``, ``"adamw"`` or ``"sgd"``.
        momentum: SGD momentum (unused by Adam).
        lr_schedule: ``"constant"`` or ``"cosine"`` (from ``lr`` at iteration 1 towards 0 at the end).
        grad_clip: maximum global gradient norm, or None for no clipping.
        val_every: validate every this many iterations, and at the last one.
        val_batches: validate on the first this many batches of the val set; None for all of it.
        checkpoint_every: save ``last`` every this many iterations (also at every validation and at
            the end); None means ``val_every``.
        log_every: write train metrics every this many iterations, averaged over them.
        seed: seeds torch and Python ``random`` at the start of a fresh run (rank r of a data-parallel run:
            :func:`foveal.training.distributed.rank_seed`), and the data order.
        device: ``"auto"`` (CUDA if available), ``"cpu"``, ``"cuda"`` or ``"cuda:N"`` (data-parallel:
            ``"auto"`` and ``"cuda"`` put each process on ``cuda:LOCAL_RANK``).
        num_workers: DataLoader worker processes.
        monitor: validation metric that picks ``best`` (``"val/<name>"``).
        monitor_mode: ``"max"`` or ``"min"``: whether a larger or a smaller ``monitor`` is better.
        tensorboard: also write TensorBoard scalars.
        eval_batch_size: validation batch size; None means ``batch_size``.
        patience: stop once no validation metric named in ``patience_on`` (and ``monitor``) has improved
            for this many iterations: the run has settled, as a convergence measure needs (checked at each
            validation, so a multiple of ``val_every`` is exact). None trains all ``iterations``, which is
            then a cap. Not a trajectory setting: a resumed run may set, change or drop it.
        patience_on: further validation metrics whose improvement also restarts the patience, each
            ``"val/<name>:min"`` or ``"val/<name>:max"`` (e.g. ``("val/ce:min",)``, so that a run whose
            accuracy has settled while its cross-entropy still falls goes on).
        compile: run the training loss through ``torch.compile`` (validation stays eager). It pays on a GPU,
            where a rollout is hundreds of small kernels; on one CPU core RAM's step is about a quarter faster
            after about a minute of compiling (``benchmarks/throughput/throughput.py --compile``). Results equal the
            eager ones up to floating point, so a run may be resumed with it on or off.
    """

    iterations: int
    batch_size: int
    lr: float
    weight_decay: float = 0.0
    optimizer: str = "adam"
    momentum: float = 0.9
    lr_schedule: str = "constant"
    grad_clip: Optional[float] = None
    val_every: int = 500
    val_batches: Optional[int] = None
    checkpoint_every: Optional[int] = None
    log_every: int = 50
    seed: int = 0
    device: str = "auto"
    num_workers: int = 0
    monitor: str = "val/accuracy"
    monitor_mode: str = "max"
    tensorboard: bool = True
    eval_batch_size: Optional[int] = None
    patience: Optional[int] = None
    patience_on: tuple[str, ...] = ()
    compile: bool = False

    def __post_init__(self) -> None:
        for name in ("iterations", "batch_size", "val_every", "log_every"):
            check_int(name, getattr(self, name), minimum=1)
        for name in ("val_batches", "checkpoint_every", "eval_batch_size", "patience"):
            if getattr(self, name) is not None:
                check_int(name, getattr(self, name), minimum=1)
        check_int("num_workers", self.num_workers, minimum=0)
        check_int("seed", self.seed, minimum=None)
        _check_number("lr", self.lr, "a positive number", lambda v: v > 0)
        _check_number("weight_decay", self.weight_decay, "a number >= 0", lambda v: v >= 0)
        _check_number("momentum", self.momentum, "a number in [0, 1)", lambda v: 0 <= v < 1)
        if self.grad_clip is not None:
            _check_number("grad_clip", self.grad_clip, "None or a positive number", lambda v: v > 0)
        _check_choice("optimizer", self.optimizer, ("adam", "adamw", "sgd"))
        _check_choice("lr_schedule", self.lr_schedule, ("constant", "cosine"))
        _check_choice("monitor_mode", self.monitor_mode, ("max", "min"))
        if not isinstance(self.monitor, str) or not self.monitor.startswith("val/"):
            raise ValueError(f"TrainConfig.monitor: expected a validation metric 'val/<name>', found {self.monitor!r}")
        if isinstance(self.patience_on, list):  # from YAML
            object.__setattr__(self, "patience_on", tuple(self.patience_on))
        entries = self.patience_on if isinstance(self.patience_on, tuple) else (None,)
        for entry in entries:
            if not (isinstance(entry, str) and entry.startswith("val/") and ":" in entry
                    and entry.rsplit(":", 1)[-1] in ("min", "max")):
                raise ValueError(f"TrainConfig.patience_on: expected a list of 'val/<name>:min' or 'val/<name>:max', "
                                 f"found {self.patience_on!r}")
        if not isinstance(self.device, str) or not (self.device in ("auto", "cpu", "cuda")
                                                    or self.device.startswith("cuda:")):
            raise ValueError(f"TrainConfig.device: expected 'auto', 'cpu', 'cuda' or 'cuda:N', found {self.device!r}")
        for name in ("tensorboard", "compile"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"TrainConfig.{name}: expected true or false, found {getattr(self, name)!r}")


def check_int(name: str, value: Any, *, minimum: Optional[int], owner: str = "TrainConfig") -> None:
    if isinstance(value, bool) or not isinstance(value, int) or (minimum is not None and value < minimum):
        kind = {None: "an integer", 0: "an integer >= 0", 1: "a positive integer"}[minimum]
        raise ValueError(f"{owner}.{name}: expected {kind}, found {value!r}")


def _check_number(name: str, value: Any, expected: str, ok: Callable[[float], bool]) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or not ok(value):
        raise ValueError(f"TrainConfig.{name}: expected {expected}, found {value!r}")


def _check_choice(name: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"TrainConfig.{name}: expected one of {list(choices)}, found {value!r}")
