"""The machine: one resolver for every setting that names a device, the launcher's world, the allocator setting.

``"auto"`` is CUDA when available, else the CPU; any name torch accepts (``"cpu"``, ``"cuda"``,
``"cuda:1"``) is kept as given, and asking for CUDA on a machine without it is an error that names
the setting, instead of a silent fall-back to the CPU.

One process of a data-parallel run (:mod:`foveal.training.distributed`) passes its ``local_rank``:
``"auto"`` (with GPUs) and ``"cuda"`` then mean ``cuda:LOCAL_RANK``, one GPU per process, and a fixed
``"cuda:N"`` is refused (every rank would share GPU N).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Mapping, Optional

if TYPE_CHECKING:
    import torch


def launcher_world_size(env: Optional[Mapping[str, str]] = None) -> int:
    """The number of processes torchrun started (its ``WORLD_SIZE``; 1 without torchrun). No torch import."""
    value = (os.environ if env is None else env).get("WORLD_SIZE", "1")
    if not value.isdigit() or int(value) < 1:
        raise ValueError(f"WORLD_SIZE={value!r} in the environment: expected a positive integer (torchrun sets it)")
    return int(value)


def resolve_device(name: "str | torch.device", field: str = "train.device", *,
                   local_rank: Optional[int] = None) -> "torch.device":
    """``name`` -> a ``torch.device``; ``field`` is the setting named in the error.

    Args:
        local_rank: this process's rank on its machine in a data-parallel run (torchrun's ``LOCAL_RANK``):
            ``"auto"`` with GPUs and ``"cuda"`` become ``cuda:<local_rank>``. None: one process.
    """
    import torch  # here, not above: the CLI imports this module before torch, to set the allocator first

    if local_rank is not None:
        return _rank_device(torch, name, field, local_rank)
    if isinstance(name, torch.device):
        device = name
    elif name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        try:
            device = torch.device(name)
        except (RuntimeError, TypeError) as error:
            raise ValueError(f"{field}: expected 'auto', 'cpu', 'cuda' or 'cuda:N', found {name!r}") from error
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"{field}: {str(name)!r} requested but CUDA is not available; use 'auto' or 'cpu'")
    return device


def _rank_device(torch, name: "str | torch.device", field: str, local_rank: int) -> "torch.device":
    """The device of local rank ``local_rank`` of a data-parallel run (see :func:`resolve_device`)."""
    text = str(name)
    if text == "auto" and not torch.cuda.is_available() or text == "cpu":
        return torch.device("cpu")
    if text not in ("auto", "cuda"):
        device = resolve_device(name, field)  # a bad name or a missing GPU: the one-process error
        if device.type == "cuda":
            raise ValueError(f"{field}: {text!r} would put every process of this torchrun job on one GPU; "
                             "use 'cuda' or 'auto' (each process takes cuda:LOCAL_RANK)")
        return device
    count = torch.cuda.device_count()
    if count == 0:
        raise ValueError(f"{field}: {text!r} requested but CUDA is not available; use 'auto' or 'cpu'")
    if local_rank >= count:
        raise ValueError(f"{field}: torchrun's LOCAL_RANK={local_rank}, but this machine has {count} GPU(s); "
                         f"start at most {count} processes per machine (--nproc-per-node={count}), or use 'cpu'")
    return torch.device("cuda", local_rank)


def speed_up_allocator() -> None:
    """Keep freed memory in the process instead of returning it to the OS at once (glibc only; a no-op elsewhere).

    glibc returns freed blocks to the OS eagerly; small CNNs then spend most of their time in system
    calls (2.4x slower, measured: docs/background.md). Call it before the allocations start (the CLI and benchmarks do).
    """
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 1 << 30)  # M_MMAP_THRESHOLD
        libc.mallopt(-1, 1 << 30)  # M_TRIM_THRESHOLD
    except (OSError, AttributeError):
        pass
