"""The annotator's view of a posterior network: :class:`NetworkPosterior` adapts any network reading
``masked_input(images, masks)`` (:mod:`foveal.models.posterior_cnn`, :mod:`foveal.models.densenet_posterior`)
to the :class:`foveal.boed.epe.Posterior` protocol."""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor, nn

from foveal.boed.local import cell_logits
from foveal.retina import masked_input

__all__ = ["NetworkPosterior"]


class NetworkPosterior:
    """A :class:`foveal.boed.epe.Posterior` around any network reading ``masked_input(images, masks)``.

    Calls the network in eval mode (BatchNorm running statistics, no dropout) without gradients, on
    ``device``; restores the network's train/eval mode afterwards.

    Args:
        network: maps ``[B, C + 1, H, W]`` to ``[B, K]`` logits.
        multilabel: Bernoulli attributes; default: ``network.multilabel`` if it has one, else False.
        device: where to run the network (default: where its parameters are).
    """

    def __init__(self, network: nn.Module, *, multilabel: Optional[bool] = None,
                 device: Optional[torch.device] = None) -> None:
        self.network = network
        self.multilabel = bool(getattr(network, "multilabel", False) if multilabel is None else multilabel)
        self.device = device if device is not None else next(network.parameters()).device

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
            out = self.network(masked_input(images.to(self.device), masks.to(self.device)))
        finally:
            self.network.train(was_training)
        return out.float().to(images.device)
