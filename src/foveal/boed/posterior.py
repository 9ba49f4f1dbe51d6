"""The annotator's view of a posterior network: :class:`NetworkPosterior` adapts any network reading
``masked_input(images, masks)`` (:mod:`foveal.models.posterior_cnn`, :mod:`foveal.models.densenet_posterior`)
to the :class:`foveal.boed.epe.Posterior` protocol."""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor, nn

from foveal.boed.local import cell_logits
from foveal.retina import masked_input

__all__ = ["NetworkPosterior", "PRECISIONS"]

PRECISIONS = ("fp32", "bf16")


class NetworkPosterior:
    """A :class:`foveal.boed.epe.Posterior` around any network reading ``masked_input(images, masks)``.

    Calls the network in eval mode (BatchNorm running statistics, no dropout) without gradients, on
    ``device``; restores the network's train/eval mode afterwards.

    Args:
        network: maps ``[B, C + 1, H, W]`` to ``[B, K]`` logits.
        multilabel: Bernoulli attributes; default: ``network.multilabel`` if it has one, else False.
        device: where to run the network (default: where its parameters are).
        precision: ``"fp32"``, or ``"bf16"``: the forward under ``torch.autocast`` in bfloat16 (on GPUs with
            bf16 matrix units several times the fp32 rate; logits are returned in float32 either way).
        channels_last: run convolutions in the channels-last memory format (faster cuDNN kernels on GPUs);
            the network's parameters are converted once, here.
        compile: run :meth:`logits`' forward through ``torch.compile(network)`` (compiled at the first call
            and again for a new batch shape, then faster, mostly on GPUs; needs a C++ compiler on the CPU).
            :meth:`cell_logits` (local updates) runs the network's layers one by one, uncompiled.
    """

    def __init__(self, network: nn.Module, *, multilabel: Optional[bool] = None,
                 device: Optional[torch.device] = None, precision: str = "fp32", channels_last: bool = False,
                 compile: bool = False) -> None:
        if precision not in PRECISIONS:
            raise ValueError(f"NetworkPosterior.precision: expected one of {PRECISIONS}, found {precision!r}")
        self.network = network
        self.multilabel = bool(getattr(network, "multilabel", False) if multilabel is None else multilabel)
        self.device = torch.device(device) if device is not None else next(network.parameters()).device
        self.precision, self.channels_last, self.compile = precision, channels_last, bool(compile)
        if channels_last:
            network.to(memory_format=torch.channels_last)
        # the compiled module shares the network's parameters and train/eval mode
        self._forward = torch.compile(network) if compile else network

    def cell_logits(self, images: Tensor, observed: Tensor, grid, cells: Tensor, image_index: Tensor, *,
                    batch_size: int = 256) -> Tensor:
        """Logits of every (cell, image) pair by local updates (:func:`foveal.boed.local.cell_logits`).

        ``[N, C, H, W]`` images, ``[1, H, W]`` observed mask, ``[P]`` cells and image indices -> ``[P, K]``
        (float32, on ``images.device``); equal to :meth:`logits` of the pairs up to float rounding. Needs a
        :class:`foveal.models.posterior_cnn.PosteriorCNN`.
        """
        out = cell_logits(self.network, images.to(self.device), observed.to(self.device), grid, cells.to(self.device),
                          image_index.to(self.device), batch_size=batch_size)
        return out.float().to(images.device)

    @torch.no_grad()
    def logits(self, images: Tensor, masks: Tensor) -> Tensor:
        """``[B, C, H, W]``, ``[B, 1, H, W]`` -> ``[B, K]`` logits (float32, on ``images.device``)."""
        was_training = self.network.training
        self.network.eval()
        try:
            x = masked_input(images.to(self.device), masks.to(self.device))
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.precision == "bf16"):
                out = self._forward(x)
        finally:
            self.network.train(was_training)
        return out.float().to(images.device)
