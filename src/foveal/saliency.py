r"""Hand-crafted, label-free saliency of pixels: Sobel edge magnitude and local variance, written once.

Two callers read them, and they read channels differently on purpose:

* the Saccader paper's ranking policies ``sobel-mean`` / ``sobel-variance`` (:mod:`foveal.policies.grid`)
  take the Sobel magnitude of the **grey** image, the channel mean (``per_channel=False``), as the Saccader
  code does;
* the salient sequence maker (:mod:`foveal.sequences.makers`, :func:`saliency_map`) takes each channel's
  magnitude and **sums** them (``per_channel=True``), so an edge between two colours of equal brightness
  still counts.

The Sobel magnitude of an image ``x`` is :math:`\sqrt{(S_x * x)^2 + (S_y * x)^2}` with the 3x3 kernels
:math:`S_x = [[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]]` and :math:`S_y = S_x^\top`; local variance is the
variance in the 3x3 window around each pixel. Both pad the image by repeating its border pixels, so the
image frame itself is not an edge.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["SALIENCY_KINDS", "SOBEL_X", "sobel_magnitude", "local_variance", "saliency_map"]

SALIENCY_KINDS = ("edge", "variance")
SOBEL_X = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])  # d/dcol; its transpose d/drow


def _check(images: Tensor) -> tuple[int, int, int, int]:
    if images.dim() != 4:
        raise ValueError(f"images: expected [B, C, H, W], found {list(images.shape)}")
    return tuple(images.shape)


def sobel_magnitude(images: Tensor, *, per_channel: bool = False) -> Tensor:
    """Sobel gradient magnitude, in the dtype and on the device of ``images`` (module docstring).

    Args:
        images: ``[B, C, H, W]``.
        per_channel: False: of the channel mean, ``[B, 1, H, W]``; True: of every channel, ``[B, C, H, W]``.
    """
    B, C, H, W = _check(images)
    x = images.reshape(B * C, 1, H, W) if per_channel else images.mean(1, keepdim=True)  # [B * C or B, 1, H, W]
    kx = SOBEL_X.to(images)
    kernels = torch.stack([kx, kx.t()])[:, None]  # [2, 1, 3, 3]: d/dcol, d/drow
    g = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), kernels)  # [B * C or B, 2, H, W]
    return g.square().sum(1, keepdim=True).sqrt().reshape(B, -1, H, W)


def local_variance(images: Tensor) -> Tensor:
    """``[B, C, H, W]`` -> ``[B, C, H, W]`` variance of every channel in the 3x3 window around each pixel."""
    B, C, H, W = _check(images)
    x = F.pad(images.reshape(B * C, 1, H, W), (1, 1, 1, 1), mode="replicate")  # [B * C, 1, H + 2, W + 2]
    box = torch.full((1, 1, 3, 3), 1 / 9, dtype=images.dtype, device=images.device)
    mean = F.conv2d(x, box)
    return (F.conv2d(x.square(), box) - mean.square()).clamp_min(0).reshape(B, C, H, W)


def saliency_map(images: Tensor, kind: str = "edge") -> Tensor:
    """``[B, C, H, W]`` images -> ``[B, H, W]`` non-negative saliency, in float32, summed over channels.

    Args:
        kind: ``"edge"`` (Sobel magnitude of each channel) or ``"variance"`` (3x3 local variance).
    """
    if kind not in SALIENCY_KINDS:
        raise ValueError(f"saliency kind: expected one of {SALIENCY_KINDS}, found {kind!r}")
    x = images.float()
    per_channel = sobel_magnitude(x, per_channel=True) if kind == "edge" else local_variance(x)
    return per_channel.sum(1)
