r"""Data-parallel training under torchrun: the processes of one run, and the few collectives the engine needs.

::

    torchrun --standalone --nproc-per-node=2 -m foveal train --config demo      # 2 processes, 1 run

``foveal train``, ``train-posterior``, ``train-saccader`` and ``demo`` join the world torchrun started
(:func:`start`, from the CLI; :func:`data_parallel` from Python) and every run in them trains through
:func:`foveal.training.engine.fit` as usual. Outside that world (one process, or ``foveal compare``,
whose ranks train different runs) :func:`world` is one process and every function here is a no-op.

**One run, whatever the number of processes R.** The global batch stays ``train.batch_size`` (B, a
multiple of R, else an error naming it): rank r takes the r-th slice of B/R of every batch the
one-process engine would draw (:class:`~foveal.training.loop.IterationBatches`, same seed), each rank
samples its own glimpses from its own RNG (seeded from the seed and the rank; rank 0's seed is the
seed itself), and DistributedDataParallel averages the ranks' gradients. The update then equals the
one-process update on the global batch, up to floating point, because of how the losses are made:

* a batch mean over equal shards: the mean over ranks of the shards' means is the global mean, and so
  is its gradient (cross-entropy, baseline regression, REINFORCE's mean, wake-sleep, posteriors, the
  Saccader's ``sum / B``; a term every rank adds whole, like an L2 penalty, is kept by the average);
* a SUM over the batch (partial supervision's official sequence term, docs/background.md): the average
  would divide it by R, so each rank multiplies its share by R (:mod:`foveal.training.partial_supervision`);
* a batch statistic inside the loss (the Saccader's stage-3 reward baseline, the minibatch's mean
  reward): :func:`all_reduce_mean` makes it the global batch's.

Not covered: BatchNorm in training mode normalises each rank's shard by its own statistics (as in
ordinary multi-GPU training; ``SyncBatchNorm`` is GPU-only in torch and is a collective per call,
which rollouts that branch per rank would deadlock). The running statistics kept are rank 0's, which
every rank takes before validating (:func:`broadcast_buffers`).

**Unused parameters.** A parameter may get no gradient on some ranks in some steps (a random-policy
run never uses the location network; a rank whose shard is all supervised runs no REINFORCE). The
model is wrapped with ``find_unused_parameters=True``: DDP then marks those as ready with a zero
contribution, so the average is the one-process gradient, and a parameter that no rank used keeps
``grad = None``, so the optimizer skips it exactly as in one process (zero-filled gradients would move
Adam's state and apply weight decay; ``static_graph`` needs the same parameters used in every step).
The cost is one walk of the autograd graph per step.

**Where the work is.** Only rank 0 writes (checkpoints, ``metrics.csv``, TensorBoard, results,
figures); the others wait at barriers where they must. Validation splits the batches over the ranks
and gathers the per-batch numbers, summed in batch order: the one-process numbers. Training logs
are the mean over ranks of each rank's window averages, taken every ``log_every`` iterations. Every
rank's RNG states and log window are gathered into rank 0's checkpoint (:func:`rng_state`), and a
killed run resumes exactly with the same number of processes (another number is refused).

Backends: gloo for CPU tensors, NCCL for CUDA tensors (``"cpu:gloo,cuda:nccl"`` when NCCL is there);
each process runs on ``cuda:LOCAL_RANK`` when the device is ``cuda`` or ``auto`` with GPUs
(:func:`device`). Barriers and gathered objects use a gloo group with a long timeout
(:data:`WAIT_TIMEOUT`), so the ranks can wait for rank 0's test evaluation.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import inspect
import os
import random
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Optional

import torch
import torch.distributed as dist
from torch import Tensor, nn

from foveal.runtime import launcher_world_size, resolve_device
from foveal.training.base import Algorithm, LossOutput

__all__ = ["World", "world", "is_main", "start", "stop", "data_parallel", "all_reduce_mean", "barrier",
           "all_gather_objects", "gather_to_main", "mean_of_logs", "rank_seed", "local_batch_size", "device",
           "loss_function", "broadcast_buffers", "rng_state", "set_rng_state", "WAIT_TIMEOUT"]

_DDP_OPTIONS = inspect.signature(nn.parallel.DistributedDataParallel).parameters  # torch >= 2.13: forward_sync_buffers
WAIT_TIMEOUT = datetime.timedelta(hours=12)  # barriers: the other ranks wait this long for rank 0's test evaluation


@dataclass(frozen=True)
class World:
    """The processes of one data-parallel run.

    Attributes:
        rank: this process, 0 .. size - 1 (torchrun's ``RANK``).
        size: the number of processes (``WORLD_SIZE``); 1 without torchrun.
        local_rank: this process on its machine (``LOCAL_RANK``): its GPU.
    """

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        """True on rank 0, the process that writes."""
        return self.rank == 0


_ONE = World()
_world = _ONE
_waits: Optional[Any] = None  # the gloo group of barriers and gathered objects (WAIT_TIMEOUT)


def world() -> World:
    """The data-parallel world this process trains in; ``World()`` (one process) unless :func:`start` joined one."""
    return _world


def is_main() -> bool:
    """True unless this is a rank other than 0 of a data-parallel run."""
    return _world.main


def start() -> World:
    """Join the world torchrun started (its ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``,
    ``MASTER_PORT``); with one process (no torchrun), nothing happens.

    Raises:
        ValueError: torchrun's environment is incomplete, or a process group exists already (another
            part of the program started one for itself: its ranks are not this run's).
    """
    global _world, _waits
    size = launcher_world_size()
    if size == 1 or _world.size > 1:
        return _world
    try:
        rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", os.environ["RANK"]))
    except (KeyError, ValueError):
        raise ValueError(f"WORLD_SIZE={size} in the environment, but RANK / LOCAL_RANK are missing or not integers; "
                         "start the processes with torchrun") from None
    if dist.is_initialized():
        raise ValueError("a torch.distributed process group exists already; data-parallel training starts its own "
                         "(foveal.training.distributed.start before anything else)")
    cuda = torch.cuda.is_available() and dist.is_nccl_available()
    if cuda and local_rank < torch.cuda.device_count():
        torch.cuda.set_device(local_rank)
    dist.init_process_group("cpu:gloo,cuda:nccl" if cuda else "gloo", rank=rank, world_size=size)
    _waits = dist.new_group(backend="gloo", timeout=WAIT_TIMEOUT)
    _world = World(rank, size, local_rank)
    return _world


def stop(*, wait: bool = True) -> None:
    """Leave the world: a barrier (``wait``; it avoided an intermittent abort at exit, docs/background.md), then the
    process group is destroyed. ``wait=False`` after an error: the other ranks may never come."""
    global _world, _waits
    if _world.size == 1:
        return
    try:
        if wait:
            dist.barrier(group=_waits)
    finally:
        dist.destroy_process_group()
        _world, _waits = _ONE, None


@contextlib.contextmanager
def data_parallel() -> Iterator[World]:
    """``with data_parallel() as w: train_run(...)``: :func:`start`, then :func:`stop` (no barrier after an error)."""
    joined = start()
    try:
        yield joined
    except BaseException:
        stop(wait=False)
        raise
    stop()


# ----------------------------------------------------------------------------- collectives


def all_reduce_mean(tensor: Tensor) -> Tensor:
    """The mean of ``tensor`` over the ranks, detached (a new tensor); ``tensor`` itself in one process.

    Every rank must call it at the same point: it is a collective."""
    if _world.size == 1:
        return tensor
    out = tensor.detach().clone()
    dist.all_reduce(out)
    return out / _world.size


def barrier() -> None:
    """Wait until every rank is here (at most :data:`WAIT_TIMEOUT`)."""
    if _world.size > 1:
        dist.barrier(group=_waits)


def all_gather_objects(obj: Any) -> list[Any]:
    """``[obj of rank 0, obj of rank 1, ...]`` on every rank (small picklable values; ``[obj]`` in one process)."""
    if _world.size == 1:
        return [obj]
    out: list[Any] = [None] * _world.size
    dist.all_gather_object(out, obj, group=_waits)
    return out


def gather_to_main(obj: Any) -> Optional[list[Any]]:
    """``[obj of rank 0, ...]`` on rank 0, None on the others."""
    if _world.size == 1:
        return [obj]
    out: Optional[list[Any]] = [None] * _world.size if _world.main else None
    dist.gather_object(obj, out, dst=0, group=_waits)
    return out


def mean_of_logs(logs: dict[str, float]) -> dict[str, float]:
    """Every rank's ``logs`` averaged name by name (over the ranks that have the name), the same on every rank."""
    if _world.size == 1:
        return logs
    gathered = all_gather_objects(logs)
    names = list(dict.fromkeys(name for one in gathered for name in one))
    return {name: sum(one[name] for one in gathered if name in one) / sum(name in one for one in gathered)
            for name in names}


def broadcast_buffers(module: nn.Module) -> None:
    """Rank 0's buffers (BatchNorm running statistics) copied to every rank."""
    if _world.size == 1:
        return
    for buffer in module.buffers():
        dist.broadcast(buffer, src=0)


# ----------------------------------------------------------------------------- the run's pieces


def rank_seed(seed: int, rank: int) -> int:
    """The seed of rank ``rank``'s RNGs: ``seed`` itself on rank 0 (a one-process run is rank 0), else a 63-bit
    hash of both, the same on every machine."""
    if rank == 0:
        return seed
    return int.from_bytes(hashlib.sha256(f"foveal/{seed}/{rank}".encode()).digest()[:8], "big") >> 1


def local_batch_size(batch_size: int, field: str = "TrainConfig.batch_size") -> int:
    """This rank's share of a global batch; an error naming ``field`` when the ranks cannot share it equally."""
    if batch_size % _world.size:
        raise ValueError(f"{field}: expected a multiple of the {_world.size} processes of this torchrun job (every "
                         f"process takes an equal share of each batch), found {batch_size}; use a batch size such "
                         f"as {max(1, batch_size // _world.size) * _world.size} or another --nproc-per-node")
    return batch_size // _world.size


def device(name: str | torch.device, field: str = "train.device") -> torch.device:
    """:func:`foveal.runtime.resolve_device`, on this rank's GPU (``cuda:LOCAL_RANK``) in a data-parallel run."""
    return resolve_device(name, field, local_rank=_world.local_rank if _world.size > 1 else None)


class _Loss(nn.Module):
    """``algorithm.loss(model, batch)`` as a module's ``forward``: DDP's hooks run around ``forward``, and an
    algorithm calls the model's own methods (``rollout``, ``encode``), not its ``forward``."""

    def __init__(self, model: nn.Module, loss: Callable[[nn.Module, dict[str, Any]], LossOutput]):
        super().__init__()
        self.model = model
        self.loss = loss  # a bound method, not a module: no parameters of its own

    def forward(self, batch: dict[str, Any]) -> LossOutput:
        return self.loss(self.model, batch)


# random draws (glimpse sampling, dropout) as eager draws them, from the same generator: a compiled run
# equals the eager one up to floating point and resumes exactly with either
_COMPILE_OPTIONS = {"fallback_random": True}


def loss_function(model: nn.Module, algorithm: Algorithm, on: torch.device, *,
                  compile: bool = False) -> Callable[[dict[str, Any]], LossOutput]:
    """``batch -> LossOutput`` of one training step: ``algorithm.loss`` itself in one process; in a data-parallel
    run, through DistributedDataParallel, whose backward averages the gradients over the ranks. ``compile``:
    through ``torch.compile`` (around DDP, which then splits the graph at its gradient buckets)."""
    if _world.size == 1:
        def step(batch: dict[str, Any]) -> LossOutput:
            return algorithm.loss(model, batch)

        return torch.compile(step, options=_COMPILE_OPTIONS) if compile else step
    # only rank 0's buffers are kept: no broadcast at every forward (broadcast_buffers() before validating)
    sync = "forward_sync_buffers" if "forward_sync_buffers" in _DDP_OPTIONS else "broadcast_buffers"  # torch < 2.13
    ddp = nn.parallel.DistributedDataParallel(
        _Loss(model, algorithm.loss), device_ids=[on.index] if on.type == "cuda" else None,
        find_unused_parameters=True,  # module docstring: some steps leave some parameters without a gradient
        **{sync: False})
    return torch.compile(ddp, options=_COMPILE_OPTIONS) if compile else ddp


def rng_state(on: torch.device) -> dict[str, Any]:
    """This process's RNG states (torch CPU, Python ``random``, and ``on``'s CUDA generator), as a checkpoint
    stores them: tensors and JSON values."""
    version, internal, gauss_next = random.getstate()
    state: dict[str, Any] = {"torch": torch.get_rng_state(), "python": [version, list(internal), gauss_next]}
    if on.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(on)
    return state


def set_rng_state(state: dict[str, Any], on: torch.device) -> None:
    """Restore what :func:`rng_state` captured."""
    torch.set_rng_state(state["torch"])
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    if on.type == "cuda" and state.get("cuda") is not None:
        torch.cuda.set_rng_state(state["cuda"], on)
