"""The stateless parts of the training loop: data order, learning rate, log windows, metrics files.

Each is a function of the iteration number (or carries a small JSON-able state), which is what lets
:func:`foveal.training.engine.fit` resume a killed run exactly from its last checkpoint.
"""

from __future__ import annotations

import csv
import math
import time
from pathlib import Path
from typing import Any, Optional

import torch
from torch import Tensor
from torch.utils.data import Sampler

from foveal.files import atomic_write
from foveal.training.base import LossOutput

METRICS_HEADER = ("iteration", "split", "name", "value")
_MASK64 = (1 << 64) - 1


def _splitmix64(x: int) -> int:
    x = (x + 0x9E3779B97F4A7C15) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


def epoch_seed(seed: int, epoch: int) -> int:
    """A 63-bit seed for the shuffle of ``epoch``: the same on every machine (no ``hash()``)."""
    return _splitmix64(_splitmix64(seed & _MASK64) ^ epoch) >> 1


class IterationBatches(Sampler[list[int]]):
    """Index batches for iterations ``start + 1 .. end`` of an endless, deterministic shuffle.

    Iteration ``i`` (1-based) takes batch ``b = i - 1``: epoch ``b // per_epoch``, position
    ``b % per_epoch`` in ``torch.randperm(num_items)`` drawn from a generator seeded with
    :func:`epoch_seed`. The last partial batch of each epoch is dropped. Nothing but ``start`` is
    needed to resume, and the global RNG is never touched.

    In a data-parallel run of ``world_size`` processes, rank ``rank`` gets the ``rank``-th of the
    ``world_size`` equal slices of each of those batches (:mod:`foveal.training.distributed`): the ranks
    together see the global batches of a one-process run.
    """

    def __init__(self, num_items: int, batch_size: int, seed: int, start: int, end: int, *, rank: int = 0,
                 world_size: int = 1):
        if num_items < batch_size:
            raise ValueError(f"the train set has {num_items} items, fewer than TrainConfig.batch_size={batch_size}")
        if batch_size % world_size or not 0 <= rank < world_size:
            raise ValueError(f"TrainConfig.batch_size={batch_size}: expected a multiple of the {world_size} processes "
                             f"(rank {rank}), so that each takes an equal share")
        self.num_items, self.batch_size, self.seed = num_items, batch_size, seed
        self.per_epoch = num_items // batch_size
        self.start, self.end = start, max(start, end)
        share = batch_size // world_size
        self._slice = (rank * share, (rank + 1) * share)  # this rank's part of a global batch

    def __len__(self) -> int:
        return self.end - self.start

    def __iter__(self):
        perm, perm_epoch = None, -1
        first, last = self._slice
        for b in range(self.start, self.end):
            epoch, pos = divmod(b, self.per_epoch)
            if epoch != perm_epoch:
                generator = torch.Generator().manual_seed(epoch_seed(self.seed, epoch))
                perm, perm_epoch = torch.randperm(self.num_items, generator=generator), epoch
            yield perm[pos * self.batch_size + first:pos * self.batch_size + last].tolist()


def endless_shuffle(items: Tensor, seed: int, first: int, count: int, cache: Optional[dict] = None) -> Tensor:
    """Positions ``first .. first + count - 1`` of an endless sequence of shuffles of ``items``: epoch ``e``
    is ``items[torch.randperm(len(items))]`` from a generator seeded with :func:`epoch_seed` ``(seed, e)``.
    ``cache``: a dict that keeps the last epochs' permutations between calls (one draw per epoch)."""
    n = items.shape[0]
    parts, pos = [], first
    while pos < first + count:
        epoch, at = divmod(pos, n)
        perm = None if cache is None else cache.get((seed, epoch))
        if perm is None:
            perm = torch.randperm(n, generator=torch.Generator().manual_seed(epoch_seed(seed, epoch)))
            if cache is not None:
                for key in [k for k in cache if k[0] == seed and k[1] < epoch]:  # earlier epochs are done with
                    del cache[key]
                cache[(seed, epoch)] = perm
        take = min(n - at, first + count - pos)
        parts.append(items[perm[at:at + take]])
        pos += take
    return torch.cat(parts) if parts else items[:0]


class FixedShareBatches(Sampler[list[int]]):
    """Index batches for iterations ``start + 1 .. end`` with exactly ``per_batch`` items of ``chosen`` in each
    (the official PS trainer's ``--fixed_attention_prop``), the rest from the other items.

    Batch ``b = i - 1`` takes positions ``b * k ..`` of an endless shuffle of ``chosen`` and ``b * (B - k) ..``
    of one of the others (:func:`endless_shuffle`, two seeds drawn from ``seed``), then shuffles the two
    together: a pure function of seed and iteration, like :class:`IterationBatches`, so a run resumes
    exactly. Rank ``rank`` of ``world_size`` takes its equal slice of each global batch (its own count of
    ``chosen`` items varies; the global count does not).
    """

    def __init__(self, num_items: int, chosen: Tensor, batch_size: int, per_batch: int, seed: int, start: int,
                 end: int, *, rank: int = 0, world_size: int = 1):
        if batch_size % world_size or not 0 <= rank < world_size:
            raise ValueError(f"TrainConfig.batch_size={batch_size}: expected a multiple of the {world_size} processes "
                             f"(rank {rank}), so that each takes an equal share")
        is_chosen = torch.zeros(num_items, dtype=torch.bool)
        is_chosen[chosen.long()] = True
        self.chosen, self.others = is_chosen.nonzero().flatten(), (~is_chosen).nonzero().flatten()
        if not 0 <= per_batch <= batch_size:
            raise ValueError(f"FixedShareBatches: expected 0 <= per_batch <= {batch_size}, found {per_batch}")
        if (per_batch and not len(self.chosen)) or (per_batch < batch_size and not len(self.others)):
            raise ValueError(f"FixedShareBatches: {per_batch} of {batch_size} per batch from {len(self.chosen)} "
                             f"chosen and {len(self.others)} other items")
        self.batch_size, self.per_batch, self.seed = batch_size, per_batch, seed
        self.start, self.end = start, max(start, end)
        share = batch_size // world_size
        self._slice = (rank * share, (rank + 1) * share)

    def __len__(self) -> int:
        return self.end - self.start

    def __iter__(self):
        k, rest = self.per_batch, self.batch_size - self.per_batch
        seeds = [_splitmix64(self.seed & _MASK64 ^ tag) >> 1 for tag in (1, 2, 3)]  # chosen, others, mixing
        first, last = self._slice
        cache: dict = {}
        for b in range(self.start, self.end):
            batch = torch.cat([endless_shuffle(self.chosen, seeds[0], b * k, k, cache),
                               endless_shuffle(self.others, seeds[1], b * rest, rest, cache)])
            mix = torch.randperm(self.batch_size, generator=torch.Generator().manual_seed(epoch_seed(seeds[2], b)))
            yield batch[mix][first:last].tolist()


class EvaluationBatches(Sampler[list[int]]):
    """Consecutive index batches of ``batch_size`` over ``num_items`` in order (the last may be smaller), the
    first ``max_batches`` of them; rank ``rank`` of ``world_size`` takes batches ``rank, rank + world_size, ...``.

    :attr:`numbers` are the batch numbers this rank gets, in the order they are yielded."""

    def __init__(self, num_items: int, batch_size: int, max_batches: int | None = None, *, rank: int = 0,
                 world_size: int = 1):
        total = -(-num_items // batch_size)
        if max_batches is not None:
            total = min(total, max_batches)
        self.num_items, self.batch_size = num_items, batch_size
        self.numbers = range(rank, total, world_size)

    def __len__(self) -> int:
        return len(self.numbers)

    def __iter__(self):
        for i in self.numbers:
            yield list(range(i * self.batch_size, min((i + 1) * self.batch_size, self.num_items)))


def lr_factor(schedule: str, iteration: int, iterations: int) -> float:
    """Multiplier of the base learning rate at ``iteration`` (1-based); cosine decays from 1 towards 0."""
    if schedule == "constant":
        return 1.0
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * (iteration - 1) / iterations))
    raise ValueError(f"lr_schedule: expected 'constant' or 'cosine', found {schedule!r}")


class LogWindow:
    """Sums of the loss and of ``LossOutput.logs`` since the last train row.

    The loss and every log given as a tensor are summed on their device in float64, so an iteration
    causes no host synchronisation (the algorithms log ``x.detach()``, not ``x.item()``); they are read
    back only when a row is written. The sums go into the last checkpoint (:meth:`state_dict`), so a
    resumed run writes the same averages.
    """

    def __init__(self, device: torch.device):
        self.device = device
        self.reset()

    def reset(self) -> None:
        self.loss = torch.zeros((), dtype=torch.float64, device=self.device)
        self.sums: dict[str, float | Tensor] = {}
        self.count = 0
        self._timed, self._t0 = 0, time.perf_counter()

    def add(self, out: LossOutput) -> None:
        self.loss += out.loss.detach().double()
        for name, value in out.logs.items():
            value = value.detach().double() if isinstance(value, Tensor) else float(value)
            self.sums[name] = self.sums[name] + value if name in self.sums else value
        self.count += 1
        self._timed += 1

    def averages(self) -> tuple[dict[str, float], float]:
        """``({"loss": ..., **logs}, iterations per second)`` over the window; then starts a new one."""
        logs = {"loss": float(self.loss) / self.count, **{k: float(v) / self.count for k, v in self.sums.items()}}
        rate = self._timed / max(time.perf_counter() - self._t0, 1e-9)
        self.reset()
        return logs, rate

    def state_dict(self) -> dict[str, Any]:
        return {"loss": float(self.loss), "sums": {k: float(v) for k, v in self.sums.items()}, "count": self.count}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.reset()
        self.loss = torch.tensor(state["loss"], dtype=torch.float64, device=self.device)
        self.sums, self.count = dict(state["sums"]), int(state["count"])


class MetricsLog:
    """``metrics.csv`` (long format, flushed row by row) and, optionally, TensorBoard scalars.

    Opening it keeps only the rows with ``iteration <= keep_until`` (the checkpoint being resumed
    from; 0 for a fresh run), so a resumed run appends exactly what an uninterrupted one would have.
    """

    def __init__(self, run_dir: Path, *, keep_until: int, tensorboard: bool):
        self.path = Path(run_dir) / "metrics.csv"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        truncate_metrics(self.path, keep_until)
        self._file = open(self.path, "a", newline="")
        self._csv = csv.writer(self._file, lineterminator="\n")
        self._tb = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter  # lazy: slow to import

            self._tb = SummaryWriter(str(Path(run_dir) / "tensorboard"),
                                     purge_step=keep_until + 1 if keep_until > 0 else None)

    def write(self, iteration: int, split: str, values: dict[str, float], *, csv_rows: bool = True) -> None:
        if csv_rows:
            self._csv.writerows([iteration, split, name, repr(float(v))] for name, v in values.items())
            self._file.flush()
        if self._tb is not None:
            for name, v in values.items():
                self._tb.add_scalar(f"{split}/{name}", v, iteration)

    def close(self) -> None:
        self._file.close()
        if self._tb is not None:
            self._tb.close()


def truncate_metrics(path: Path, keep_until: int) -> None:
    """Rewrite ``path`` (atomically) with the header and its whole rows of ``iteration <= keep_until``."""
    header = ",".join(METRICS_HEADER) + "\n"
    if not path.exists() or path.stat().st_size == 0:
        path.write_text(header)
        return
    with open(path, newline="") as f:
        lines = f.readlines()
    if lines[0] != header:
        raise ValueError(f"{path}: expected the header {header.strip()!r}, found {lines[0].strip()!r}; "
                         "is this a foveal run folder?")
    # a last row without its newline was cut by a kill in mid-write: it holds no whole value
    kept = [line for line in lines[1:]
            if line.endswith("\n") and line.strip() and _row_iteration(path, line) <= keep_until]
    if len(kept) == len(lines) - 1:
        return
    atomic_write(path, (header + "".join(kept)).encode())


def _row_iteration(path: Path, line: str) -> int:
    head = line.split(",", 1)[0]
    if not head.isdigit():
        raise ValueError(f"{path}: field 'iteration': expected a whole number, found {head!r} in row {line.strip()!r}")
    return int(head)


def to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    """Every tensor value of ``batch`` on ``device``; other values unchanged."""
    non_blocking = device.type == "cuda"
    return {k: v.to(device, non_blocking=non_blocking) if isinstance(v, Tensor) else v for k, v in batch.items()}


def batch_size_of(batch: dict[str, Any]) -> int:
    """Number of examples in a batch dict: the length of ``label``, else of its first tensor."""
    value = batch.get("label")
    if not isinstance(value, Tensor):
        value = next((v for v in batch.values() if isinstance(v, Tensor)), None)
    if value is None or value.dim() == 0:
        raise ValueError(f"batch with keys {sorted(batch)}: no tensor with a batch dimension")
    return int(value.shape[0])


def check_finite(iteration: int, logs: dict[str, float]) -> None:
    if not math.isfinite(logs["loss"]):
        raise FloatingPointError(f"iteration {iteration}: the training loss is {logs['loss']}; "
                                 "lower TrainConfig.lr or set TrainConfig.grad_clip (the last checkpoint is intact)")
