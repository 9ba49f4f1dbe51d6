"""The attentional variational posterior (AVP) CNN: ``q(theta | glimpses)`` from a masked image.

Input embedding (Harvey et al. 2021, Fig. 3): the glimpses taken so far become an image-sized mask
``m`` (1 = seen); the network reads ``[x * m, m]``, ``[B, C + 1, H, W]``
(:func:`foveal.retina.masked_input`). This is invariant to the order of the glimpses and handles any
number of them, so one network serves every step of the annotator.

:class:`PosteriorCNN` is a small default for small images (28-64 px; ~0.1 M parameters):
conv-BN-ReLU blocks, two of them with stride 2, global average pooling, one linear head giving class
logits (categorical) or one logit per binary attribute (``multilabel=True``). Large images (CelebA-HQ,
CUB) want an ImageNet backbone as in the paper (DenseNet-121, 4-channel first conv): any module
mapping ``[B, C + 1, H, W] -> [B, K]`` works with :class:`foveal.boed.posterior.NetworkPosterior`.

The mask channel of the first convolution starts at zero, so at initialisation the output does not
depend on ``m`` except through ``x * m``. Hence copying the first-conv weights of a network trained on
plain C-channel images (:func:`expand_first_conv`) gives, before any fine-tuning, exactly that network
applied to the zero-filled image ``x * m``.

What a posterior network's logits mean is fixed for every such network by :mod:`foveal.logits`: a
categorical label or, for ``multilabel`` networks, independent binary attributes.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from foveal.config import check_fields
from foveal.models.registry import MODELS

__all__ = ["PosteriorCNNConfig", "PosteriorCNN", "expand_first_conv", "posterior_cnn"]


@dataclass(frozen=True)
class PosteriorCNNConfig:
    """Settings of a :class:`PosteriorCNN`.

    Attributes:
        in_channels, num_classes, image_size: from the data (``num_classes`` = number of attributes
            when ``multilabel``). ``image_size`` is only checked, the network is size-agnostic.
        multilabel: per-attribute Bernoulli outputs instead of one categorical.
        widths: output channels of the conv-BN-ReLU blocks.
        strides: stride of each block (same length as ``widths``).
        dropout: before the linear head.
    """

    in_channels: int
    num_classes: int
    image_size: tuple[int, int]
    multilabel: bool = False
    widths: tuple[int, ...] = (32, 64, 64, 128)
    strides: tuple[int, ...] = (1, 2, 1, 2)
    dropout: float = 0.0

    def __post_init__(self) -> None:
        check_fields(self, "model")
        for name in ("image_size", "widths", "strides"):
            object.__setattr__(self, name, tuple(int(v) for v in getattr(self, name)))
        for name in ("in_channels", "num_classes"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"PosteriorCNNConfig.{name}: expected a positive integer, found {getattr(self, name)!r}")
        if not self.widths or len(self.widths) != len(self.strides):
            raise ValueError(f"PosteriorCNNConfig.strides: expected one stride per width ({len(self.widths)}), "
                             f"found {len(self.strides)}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"PosteriorCNNConfig.dropout: expected in [0, 1), found {self.dropout}")


class PosteriorCNN(nn.Module):
    """``[B, C + 1, H, W]`` masked input -> ``[B, K]`` logits; see the module docstring."""

    def __init__(self, cfg: PosteriorCNNConfig) -> None:
        super().__init__()
        self.config = cfg
        layers: list[nn.Module] = []
        channels = cfg.in_channels + 1  # + the mask channel
        for width, stride in zip(cfg.widths, cfg.strides):
            layers += [nn.Conv2d(channels, width, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(width),
                       nn.ReLU(inplace=True)]
            channels = width
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.Flatten(), nn.Dropout(cfg.dropout), nn.Linear(channels, cfg.num_classes))
        with torch.no_grad():
            self.first_conv.weight[:, cfg.in_channels].zero_()  # mask channel: see the module docstring

    @property
    def first_conv(self) -> nn.Conv2d:
        return self.features[0]

    @property
    def multilabel(self) -> bool:
        return self.config.multilabel

    def forward(self, x: Tensor) -> Tensor:
        """x: ``[B, C + 1, H, W]`` from :func:`foveal.retina.masked_input` -> ``[B, K]`` logits."""
        cfg = self.config
        if x.dim() != 4 or x.shape[1] != cfg.in_channels + 1:
            raise ValueError(f"PosteriorCNN: expected input [B, {cfg.in_channels + 1}, H, W] (image channels + mask), "
                             f"found {list(x.shape)}")
        return self.head(self.features(x).mean(dim=(2, 3)))  # global average pooling: [B, widths[-1]]


def expand_first_conv(weight: Tensor) -> Tensor:
    """``[O, C, k, k]`` first-conv weights of a plain-image network -> ``[O, C + 1, k, k]`` with a zero mask channel."""
    return torch.cat([weight, weight.new_zeros(weight.shape[0], 1, *weight.shape[2:])], dim=1)


@MODELS.register("posterior-cnn", kind="posterior")
def posterior_cnn(**config) -> PosteriorCNN:
    """The small attentional variational posterior CNN: class probabilities from a masked image.

    Settings: :class:`PosteriorCNNConfig`."""
    return PosteriorCNN(PosteriorCNNConfig(**config))

