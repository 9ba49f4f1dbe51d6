"""The machine: one resolver for every setting that names a device, and the allocator setting.

``"auto"`` is CUDA when available, else the CPU; any name torch accepts (``"cpu"``, ``"cuda"``,
``"cuda:1"``) is kept as given, and asking for CUDA on a machine without it is an error that names
the setting, instead of a silent fall-back to the CPU.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


def resolve_device(name: "str | torch.device", field: str = "train.device") -> "torch.device":
    """``name`` -> a ``torch.device``; ``field`` is the setting named in the error."""
    import torch  # here, not above: the CLI imports this module before torch, to set the allocator first

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


def speed_up_allocator() -> None:
    """Keep freed memory in the process instead of returning it to the OS at once (glibc only; a no-op elsewhere).

    glibc returns freed blocks to the OS eagerly; small CNNs then spend most of their time in system
    calls (REFERENCE.md measured 2.4x). Call it before the allocations start (the CLI and benchmarks do).
    """
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 1 << 30)  # M_MMAP_THRESHOLD
        libc.mallopt(-1, 1 << 30)  # M_TRIM_THRESHOLD
    except (OSError, AttributeError):
        pass
