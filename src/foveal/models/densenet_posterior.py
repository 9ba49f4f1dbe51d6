"""DenseNet-121 as the attentional variational posterior for large images (``posterior-densenet121``).

The paper's posterior for CelebA-HQ (224 px) and CUB (Harvey et al. 2021, Sec. 4 and its code) is an
ImageNet DenseNet-121 reading ``[x * m, m]``, ``[B, C + 1, H, W]`` (:func:`foveal.retina.masked_input`),
whose first convolution gets one extra input channel for the mask ``m``, initialised to zero, and whose
1,000-way ImageNet head is replaced by a new one with ``K`` outputs (classes, or attributes when
``multilabel``). As for :class:`foveal.models.posterior_cnn.PosteriorCNN`, the zero mask channel means that
right after loading, the features of ``[x * m, m]`` equal those of the ImageNet network on ``x * m``:

    features(conv0' * [x * m, m]) = features(conv0 * (x * m))    with conv0' = [conv0, 0]

ImageNet weights come from a local file only (nothing is downloaded): ``weights=`` a ``.safetensors``
or ``.pth`` / ``.pt`` file holding torchvision's ``densenet121`` state dict for ``C``-channel images
(:func:`foveal.models.densenet.read_state_dict`; its ``classifier.*`` entries, if any, are dropped).
The model's ``config`` then records the file as ``pretrained_from`` and sets ``weights=None``, so a
checkpoint's spec (:func:`foveal.models.model_spec`) rebuilds the network without the file: the
checkpoint's own weights replace the ImageNet ones anyway.

Cost: 7.0 M parameters; ~2.9 G multiply-adds per 224 px image. The network needs at least 32 px per
side (five halvings of the resolution).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch
from torch import Tensor, nn

from foveal.config import check_fields
from foveal.models.densenet import DenseNet, read_state_dict
from foveal.models.posterior_cnn import expand_first_conv
from foveal.models.registry import MODELS

__all__ = ["DenseNetPosteriorConfig", "DenseNetPosterior", "load_imagenet_weights", "posterior_densenet121"]

MIN_SIZE = 32  # conv0, pool0 and three transitions each halve the resolution


@dataclass(frozen=True)
class DenseNetPosteriorConfig:
    """Settings of a :class:`DenseNetPosterior`.

    Attributes:
        in_channels, num_classes, image_size: from the data (``num_classes`` = number of attributes when
            ``multilabel``); ``image_size`` is only checked (at least 32 px per side).
        multilabel: per-attribute Bernoulli outputs instead of one categorical.
        drop_rate: dropout after each dense layer (torchvision's ``drop_rate``).
        weights: a local torchvision DenseNet-121 weight file for ``in_channels``-channel images, read
            once when the network is built; None: random initialisation.
        pretrained_from: where the initial weights came from; only a record, never read (set from
            ``weights`` after loading).
    """

    in_channels: int
    num_classes: int
    image_size: tuple[int, int]
    multilabel: bool = False
    drop_rate: float = 0.0
    weights: Optional[str] = None
    pretrained_from: Optional[str] = None

    def __post_init__(self) -> None:
        check_fields(self, "model")
        object.__setattr__(self, "image_size", tuple(int(v) for v in self.image_size))
        for name in ("in_channels", "num_classes"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"DenseNetPosteriorConfig.{name}: expected a positive integer, "
                                 f"found {getattr(self, name)!r}")
        if len(self.image_size) != 2 or min(self.image_size) < MIN_SIZE:
            raise ValueError(f"DenseNetPosteriorConfig.image_size: expected (H, W) with H, W >= {MIN_SIZE}, "
                             f"found {self.image_size}")
        if not 0 <= self.drop_rate < 1:
            raise ValueError(f"DenseNetPosteriorConfig.drop_rate: expected in [0, 1), found {self.drop_rate}")
        if self.weights is not None:
            object.__setattr__(self, "weights", str(self.weights))


class DenseNetPosterior(DenseNet):
    """``[B, C + 1, H, W]`` masked input -> ``[B, K]`` logits; see the module docstring.

    Its state-dict keys are torchvision's (``features.conv0.weight`` ... ``classifier.bias``), with a
    ``[64, C + 1, 7, 7]`` first convolution and a ``K``-way head.
    """

    def __init__(self, cfg: DenseNetPosteriorConfig) -> None:
        super().__init__(growth_rate=32, block_config=(6, 12, 24, 16), num_init_features=64, bn_size=4,
                         drop_rate=cfg.drop_rate, in_channels=cfg.in_channels + 1, num_classes=cfg.num_classes)
        with torch.no_grad():
            self.first_conv.weight[:, cfg.in_channels].zero_()  # mask channel: see the module docstring
        self.config = cfg
        if cfg.weights is not None:
            load_imagenet_weights(self, cfg.weights)
            self.config = dataclasses.replace(cfg, weights=None, pretrained_from=cfg.weights)  # spec needs no file

    @property
    def first_conv(self) -> nn.Conv2d:
        return self.features.conv0

    @property
    def multilabel(self) -> bool:
        return self.config.multilabel

    def forward(self, x: Tensor) -> Tensor:
        """x: ``[B, C + 1, H, W]`` from :func:`foveal.retina.masked_input` -> ``[B, K]`` logits."""
        C = self.config.in_channels
        if x.dim() != 4 or x.shape[1] != C + 1 or min(x.shape[2:]) < MIN_SIZE:
            raise ValueError(f"DenseNetPosterior: expected input [B, {C + 1}, H, W] (image channels + mask, "
                             f"H, W >= {MIN_SIZE}), found {list(x.shape)}")
        return super().forward(x)


def _listed(keys: list[str], limit: int = 6) -> str:
    more = f" and {len(keys) - limit} more" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more


def load_imagenet_weights(model: DenseNetPosterior, path: str | Path) -> None:
    """Load a torchvision DenseNet-121 state dict for plain ``C``-channel images into ``model``.

    The first convolution ``[64, C, 7, 7]`` gains the zero mask channel (:func:`expand_first_conv`); the
    file's ``classifier.*`` entries are ignored (the model keeps its new ``K``-way head); a file without
    BatchNorm ``num_batches_tracked`` entries (the original ImageNet file) is accepted.

    Raises:
        FileNotFoundError, ValueError: no readable file, missing or unexpected keys, or wrong shapes; the
            message names the file and the offending keys.
    """

    state = {k: v for k, v in read_state_dict(path).items() if not k.startswith("classifier.")}
    expected = {k: v for k, v in model.state_dict().items() if not k.startswith("classifier.")}
    missing = [k for k in expected if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in expected]
    if missing or unexpected:
        raise ValueError(f"weights {path}: expected a torchvision DenseNet-121 state dict; "
                         f"missing keys: {_listed(missing) or 'none'}; unexpected keys: {_listed(unexpected) or 'none'}")
    C = model.config.in_channels
    conv0 = state["features.conv0.weight"]
    if tuple(conv0.shape) != (64, C, 7, 7):
        raise ValueError(f"weights {path}: features.conv0.weight: expected [64, {C}, 7, 7] (a network for "
                         f"{C}-channel images, before the mask channel is added), found {list(conv0.shape)}")
    state["features.conv0.weight"] = expand_first_conv(conv0)
    wrong = [f"{k} {list(v.shape)} (expected {list(expected[k].shape)})" for k, v in state.items()
             if v.shape != expected[k].shape]
    if wrong:
        raise ValueError(f"weights {path}: wrong shapes, not DenseNet-121: {_listed(wrong)}")
    result = model.load_state_dict(state, strict=False)
    assert all(k.startswith("classifier.") for k in result.missing_keys), result.missing_keys  # checked above


@MODELS.register("posterior-densenet121", kind="posterior")
def posterior_densenet121(**config) -> DenseNetPosterior:
    """DenseNet-121 attentional variational posterior (the paper's CelebA-HQ annotator).

    Settings: :class:`DenseNetPosteriorConfig`."""
    return DenseNetPosterior(DenseNetPosteriorConfig(**config))
