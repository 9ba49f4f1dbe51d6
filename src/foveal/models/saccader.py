r"""Saccader (Elsayed, Kornblith & Le 2019): a BagNet-lowD, an attention network and the Saccader cell.

One pass of :meth:`Saccader.encode` gives, on the grid of the representation network
(:mod:`foveal.models.bagnet`), the class logits of every cell and the mixed "what + where" features::

    features, what, logits = BagNet-lowD(x)                  # [B, D, h, w], [B, d_what, h, w], [B, K, h, w]
    where = attention(features)                              # 1x1 / dilated 3x3 convs, BN, ReLU: wide RF
    F     = conv1x1([what, where])                           # [B, d, h, w], linear mixing

The **Saccader cell** then picks cells one after the other. With ``C^{t-1} [h, w]`` the memory of
visited cells (1 = visited) and a learned vector ``a`` (Eq. 1-3 of the paper):

.. math::

    G^t_{ij} = \sum_p F_{ijp} a_p / \sqrt{d} - 10^5 C^{t-1}_{ij}, \qquad \tilde G^t = \mathrm{softmax}_{ij}(G^t)

    h^t_k = \sum_{ij} F_{ijk} \tilde G^t_{ij}, \qquad \tilde h^t = \mathrm{softmax}_k(h^t)

    R^t_{ij} = \sum_k F_{ijk} \tilde h^t_k - 10^5 C^{t-1}_{ij}, \qquad \pi^t = \mathrm{softmax}_{ij}(R^t)

The cell first selects relevant locations (``G``), then the feature channels those locations share
(``h``), then scores every cell by those channels (``R``). Because ``exp(-1e5)`` is 0 in float32, a
visited cell has probability exactly 0: no cell is chosen twice, greedy or sampled. The class
prediction after t glimpses averages the logits of the cells read so far
(:func:`foveal.models.bagnet.grid_rollout`).

Training (:mod:`foveal.training.saccader`): (1) the representation network on Eq. 4,
(2) the location network (attention, mixing, cell) on Eq. 5 with the representation frozen,
(3) everything with REINFORCE on Eq. 6. ``init_from`` (a builder argument, so a stage's config names
the previous stage's checkpoint) loads weights before training; a resumed run then loads its own
``last`` checkpoint over them.

:class:`SaccaderPatch` is the Saccader-NASNet analogue: a frozen Saccader picks the cells and a
separate small CNN classifies the patches, optionally cut from a higher-resolution copy of the image.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from foveal.checkpoint import load_checkpoint, read_checkpoint_info
from foveal.models.bagnet import VISITED_PENALTY, BagNet, BagNetConfig, GridMaps, grid_rollout
from foveal.models.base import Policy, Rollout
from foveal.models.early_exit import ExitRule, StepRecorder
from foveal.models.registry import MODELS
from foveal.retina import extract_glimpses

__all__ = ["SaccaderConfig", "Saccader", "SaccaderCell", "SmallCNN", "SmallCNNConfig", "SaccaderPatch",
           "SaccaderPatchConfig", "load_init"]


@dataclass(frozen=True)
class SaccaderConfig(BagNetConfig):
    """Settings of a :class:`Saccader`: those of its :class:`BagNetConfig` plus the location network's.

    Attributes:
        where_widths: widths of the attention network's two (1x1, dilated 3x3) pairs; None: half and a
            quarter of the feature width for bagnet-77 (2048 -> 1024 -> 512, the paper's), an eighth and a
            sixteenth for the small layouts.
        mixed_dim: channels ``d`` of the mixed features F; None: ``what_dim``.
        dilation: dilation of the attention network's 3x3 convolutions (2 in the paper).
    """

    where_widths: Optional[tuple[int, int]] = None
    mixed_dim: Optional[int] = None
    dilation: int = 2

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.where_widths is not None:
            widths = tuple(int(v) for v in self.where_widths)
            if len(widths) != 2 or min(widths) < 1:
                raise ValueError(f"{type(self).__name__}.where_widths: expected two positive integers, "
                                 f"found {self.where_widths!r}")
            object.__setattr__(self, "where_widths", widths)
        if self.mixed_dim is not None and int(self.mixed_dim) < 1:
            raise ValueError(f"{type(self).__name__}.mixed_dim: expected a positive integer, found {self.mixed_dim!r}")
        if int(self.dilation) < 1:
            raise ValueError(f"{type(self).__name__}.dilation: expected a positive integer, found {self.dilation!r}")


def _conv_bn_relu(cin: int, cout: int, kernel: int, dilation: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, kernel, padding=dilation * (kernel // 2), dilation=dilation, bias=False),
            nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


class SaccaderCell(nn.Module):
    """Eq. 1-3 (module docstring): mixed features and visited memory -> location logits ``R``."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.a = nn.Parameter(torch.randn(dim))

    def macs(self, inputs: tuple[Tensor, Tensor], output: Tensor) -> int:
        """Multiply-adds of one call (:mod:`foveal.evaluation.cost`): the three ``G x d`` products of Eq. 1-3."""
        mixed = inputs[0]
        return 3 * mixed.numel()

    def forward(self, mixed: Tensor, visited: Tensor) -> Tensor:
        """mixed: ``[B, d, h, w]``; visited: ``[B, G]`` 0/1 -> ``R [B, G]`` (visited cells at -1e5)."""
        feats = mixed.flatten(2)  # [B, d, G]
        d = feats.shape[1]
        penalty = VISITED_PENALTY * visited
        g = torch.einsum("bdg,d->bg", feats, self.a) / math.sqrt(d) - penalty  # Eq. 1
        h = torch.einsum("bdg,bg->bd", feats, g.softmax(-1))  # Eq. 2: channels of the selected cells
        return torch.einsum("bdg,bd->bg", feats, h.softmax(-1)) - penalty  # Eq. 3


class Saccader(nn.Module):
    """The Saccader model (module docstring); ``rollout`` is the seam every glimpse model shares."""

    def __init__(self, cfg: SaccaderConfig) -> None:
        super().__init__()
        self.config = cfg
        self.representation = BagNet(cfg)  # reads only the BagNetConfig fields
        self.grid = self.representation.grid
        D = self.representation.feature_dim
        paper = cfg.layout == "bagnet-77"
        w1, w2 = cfg.where_widths or ((D // 2, D // 4) if paper else (max(D // 8, 4), max(D // 16, 4)))
        self.attention = nn.Sequential(*_conv_bn_relu(D, w1, 1), *_conv_bn_relu(w1, w1, 3, cfg.dilation),
                                       *_conv_bn_relu(w1, w2, 1), *_conv_bn_relu(w2, w2, 3, cfg.dilation))
        d = cfg.mixed_dim or cfg.what_dim
        self.mix = nn.Conv2d(cfg.what_dim + w2, d, 1)  # linear: no activation
        self.cell = SaccaderCell(d)

    def encode(self, images: Tensor) -> GridMaps:
        """The representation network's maps (:class:`foveal.models.bagnet.GridMaps`)."""
        return self.representation.encode(images)

    def mixed_features(self, maps: GridMaps) -> Tensor:
        """F ``[B, d, h, w]`` from the "what" features and the attention network's "where" features."""
        return self.mix(torch.cat([maps.what, self.attention(maps.features)], 1))

    def rollout(self, images: Tensor, num_glimpses: int, *, policy: Optional[Policy] = None,
                forced_locations: Optional[Tensor] = None, exit_rule: Optional[ExitRule] = None) -> Rollout:
        """Unroll the cell for ``num_glimpses`` steps (:func:`foveal.models.bagnet.grid_rollout`).

        ``policy=None`` samples from the cell's policy (training); ``policies.greedy_policy`` takes its
        arg-max (the paper's test-time rule). ``log_prob`` is always the cell's log-probability of the
        cells read, whoever chose them. The representation network reads the whole image once, before the
        first glimpse, whatever ``exit_rule`` decides later (its cost is the same for every image).
        """
        maps = self.encode(images)
        mixed = self.mixed_features(maps)
        return grid_rollout(self.grid, self.representation.grid_locations, maps.logits,
                            lambda visited, rows: self.cell(mixed if rows is None else mixed[rows], visited),
                            num_glimpses, images, policy=policy, forced_locations=forced_locations,
                            exit_rule=exit_rule)


def load_init(model: nn.Module, checkpoint: str) -> None:
    """Load the weights of a foveal checkpoint of a ``bagnet`` or ``saccader`` into ``model``.

    A ``bagnet`` checkpoint fills ``model.representation`` (or the model itself, if it is a BagNet); a
    ``saccader`` checkpoint fills a Saccader, or the ``saccader`` part of a :class:`SaccaderPatch`.
    """
    if Path(str(checkpoint)).suffix.lower() in (".pth", ".pt", ".pkl", ".bin"):
        raise ValueError(f"model.init_from={checkpoint}: expected a foveal checkpoint (safetensors + JSON, given as "
                         "run/checkpoints/best), found a PyTorch file; foveal never unpickles one")
    source = read_checkpoint_info(checkpoint).get("model", {}).get("name")
    targets = {"bagnet": [model, getattr(model, "representation", None),
                          getattr(getattr(model, "saccader", None), "representation", None)],
               "saccader": [model, getattr(model, "saccader", None)]}
    for target in targets.get(source, []):
        if target is not None and type(target).__name__ == {"bagnet": "BagNet", "saccader": "Saccader"}[source]:
            state = load_checkpoint(checkpoint).model_state
            try:
                target.load_state_dict(state)
            except RuntimeError as err:
                raise ValueError(f"init_from={checkpoint}: its {source} weights do not fit this model "
                                 f"(same layout and sizes needed): {str(err).splitlines()[0]}") from None
            return
    raise ValueError(f"init_from={checkpoint}: expected a checkpoint of a 'bagnet' or 'saccader' model that fits "
                     f"a {type(model).__name__}, found one of {source!r}")


@MODELS.register("saccader", kind="grid")
def saccader(*, init_from: Optional[str] = None, **config) -> Saccader:
    """Saccader (Elsayed et al. 2019): BagNet-lowD features; a cell picks grid cells one by one.

    Settings: :class:`SaccaderConfig`; ``init_from`` loads a previous stage's weights (not part of the config:
    the checkpoint this model is saved in is self-contained)."""
    model = Saccader(SaccaderConfig(**config))
    if init_from:
        load_init(model, init_from)
    return model


@dataclass(frozen=True)
class SmallCNNConfig:
    """Settings of a :class:`SmallCNN`.

    Attributes:
        in_channels, num_classes, image_size: from the data (the network is size-agnostic).
        widths, strides: conv-BN-ReLU blocks (3x3, padding 1).
    """

    in_channels: int
    num_classes: int
    image_size: tuple[int, int]
    widths: tuple[int, ...] = (32, 64, 64, 128)
    strides: tuple[int, ...] = (1, 2, 1, 2)

    def __post_init__(self) -> None:
        for name in ("image_size", "widths", "strides"):
            object.__setattr__(self, name, tuple(int(v) for v in getattr(self, name)))
        if not self.widths or len(self.widths) != len(self.strides):
            raise ValueError(f"{type(self).__name__}.strides: expected one stride per width ({len(self.widths)}), "
                             f"found {len(self.strides)}")
        for name in ("in_channels", "num_classes"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{type(self).__name__}.{name}: expected a positive integer, "
                                 f"found {getattr(self, name)!r}")


class SmallCNN(nn.Module):
    """``[B, C, H, W] -> [B, K]`` logits: conv-BN-ReLU blocks, global average pooling, a linear head."""

    def __init__(self, cfg: SmallCNNConfig) -> None:
        super().__init__()
        self.config = cfg
        layers: list[nn.Module] = []
        channels = cfg.in_channels
        for width, stride in zip(cfg.widths, cfg.strides):
            layers += [nn.Conv2d(channels, width, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(width),
                       nn.ReLU(inplace=True)]
            channels = width
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(channels, cfg.num_classes)

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 4 or x.shape[1] != self.config.in_channels:
            raise ValueError(f"SmallCNN: expected input [B, {self.config.in_channels}, H, W], found {list(x.shape)}")
        return self.head(self.features(x).mean(dim=(2, 3)))


@MODELS.register("small-cnn", kind="classifier")
def small_cnn(**config) -> SmallCNN:
    """A small plain CNN on whole images: the occlusion analysis's full-image classifier.

    Settings: :class:`SmallCNNConfig`."""
    return SmallCNN(SmallCNNConfig(**config))


@dataclass(frozen=True)
class SaccaderPatchConfig(SaccaderConfig):
    """Settings of a :class:`SaccaderPatch`: its Saccader's (at ``policy_image_size``) and its patch CNN's.

    Attributes:
        image_size: the size of the images the model is given (from the data).
        policy_image_size: the size the Saccader sees (the images are area-downsampled to it);
            None: ``image_size``. Patches are cut from the given images, ``RF * image / policy`` px a side.
        patch_widths, patch_strides: the patch CNN (:class:`SmallCNNConfig`).
    """

    policy_image_size: Optional[tuple[int, int]] = None
    patch_widths: tuple[int, ...] = (32, 64, 64, 128)
    patch_strides: tuple[int, ...] = (1, 2, 1, 2)

    def __post_init__(self) -> None:
        full = tuple(int(v) for v in self.image_size)
        policy = full if self.policy_image_size is None else tuple(int(v) for v in self.policy_image_size)
        # The Saccader's settings are checked at the size it sees; the config keeps the given size.
        object.__setattr__(self, "image_size", policy)
        super().__post_init__()
        object.__setattr__(self, "image_size", full)
        object.__setattr__(self, "policy_image_size", policy)
        if full[0] * policy[1] != full[1] * policy[0] or full[0] % policy[0]:
            raise ValueError(f"{type(self).__name__}.policy_image_size: expected a whole fraction of "
                             f"image_size {full}, found {policy}")
        for name in ("patch_widths", "patch_strides"):
            object.__setattr__(self, name, tuple(int(v) for v in getattr(self, name)))

    @property
    def factor(self) -> int:
        return self.image_size[0] // self.policy_image_size[0]

    @property
    def glimpse_size(self) -> int:
        return self.receptive_field * self.factor

    def saccader_config(self) -> SaccaderConfig:
        keep = {f for f in SaccaderConfig.__dataclass_fields__}
        values = {k: getattr(self, k) for k in keep}
        return SaccaderConfig(**{**values, "image_size": self.policy_image_size})


class SaccaderPatch(nn.Module):
    """A frozen Saccader picks cells; a :class:`SmallCNN` classifies the patches (module docstring).

    Only the patch CNN learns: the Saccader's parameters have ``requires_grad=False`` and it always runs
    in eval mode (its BatchNorm statistics stay those it was trained with).
    """

    def __init__(self, cfg: SaccaderPatchConfig) -> None:
        super().__init__()
        self.config = cfg
        self.saccader = Saccader(cfg.saccader_config())
        self.saccader.requires_grad_(False)
        self.grid = self.saccader.grid
        self.patch_net = SmallCNN(SmallCNNConfig(cfg.in_channels, cfg.num_classes, (cfg.glimpse_size,) * 2,
                                                 cfg.patch_widths, cfg.patch_strides))

    def train(self, mode: bool = True) -> "SaccaderPatch":
        super().train(mode)
        self.saccader.eval()  # frozen: see the class docstring
        return self

    def rollout(self, images: Tensor, num_glimpses: int, *, policy: Optional[Policy] = None,
                forced_locations: Optional[Tensor] = None, exit_rule: Optional[ExitRule] = None) -> Rollout:
        """The Saccader's rollout on the downsampled images, with the patch CNN's logits instead of its own.

        Under ``exit_rule`` the frozen Saccader still chooses all ``num_glimpses`` cells (its choices do not
        depend on the patch CNN, and a cell step costs a few dot products), but the patch CNN, nearly all of
        the per-glimpse cost, runs on the patches of the undecided images only.
        """
        cfg = self.config
        if tuple(images.shape[1:]) != (cfg.in_channels, *cfg.image_size):
            raise ValueError(f"SaccaderPatch: expected images [B, {cfg.in_channels}, {cfg.image_size[0]}, "
                             f"{cfg.image_size[1]}], found {list(images.shape)}")
        small = images if cfg.factor == 1 else F.avg_pool2d(images, cfg.factor)
        with torch.no_grad():  # stop-gradient: the frozen Saccader only chooses where to look
            ro = self.saccader.rollout(small, num_glimpses, policy=policy, forced_locations=forced_locations)
        B, T = ro.indices.shape
        if exit_rule is None:
            patches = extract_glimpses(images.repeat_interleave(T, 0), ro.locations.reshape(B * T, 2), cfg.glimpse_size)
            z = self.patch_net(patches[:, 0]).view(B, T, -1)  # [B, T, K]
            steps = torch.arange(1, T + 1, device=z.device, dtype=z.dtype)
            return Rollout(locations=ro.locations, log_prob=ro.log_prob, logits=z.cumsum(1) / steps[:, None],
                           baseline=ro.baseline, indices=ro.indices, entropy=ro.entropy)
        recorder = StepRecorder(B, T, exit_rule, images.device)
        read = images.new_zeros(B, 0, ro.logits.shape[-1])  # [b, t, K] patch logits of the undecided images
        for t in range(T):
            rows = recorder.rows
            patch = extract_glimpses(images[rows], ro.locations[rows, t], cfg.glimpse_size)[:, 0]
            z = self.patch_net(patch)  # [b, K]
            read = torch.cat([read, z[:, None]], 1)
            logits = read.cumsum(1)[:, -1] / (t + 1)  # the floats of the fixed-T cumulative mean
            recorder.record(locations=ro.locations[rows, t], log_prob=ro.log_prob[rows, t], logits=logits,
                            baseline=ro.baseline[rows, t], indices=ro.indices[rows, t], entropy=ro.entropy[rows, t])
            keep = recorder.stop(logits)
            if keep is not None:
                read = read[keep]
            if recorder.finished:
                break
        return recorder.rollout()


@MODELS.register("saccader-patch", kind="grid")
def saccader_patch(*, init_from: Optional[str] = None, **config) -> SaccaderPatch:
    """Saccader-NASNet analogue: a trained Saccader's cells, classified by a patch CNN.

    Settings: :class:`SaccaderPatchConfig`; ``init_from`` names the trained Saccader."""
    model = SaccaderPatch(SaccaderPatchConfig(**config))
    if init_from:
        load_init(model, init_from)
    return model
