r"""BagNet-lowD: class logits on a grid of locations, each from a patch of limited size, in one pass.

Brendel & Bethge (2019) keep a ResNet but replace most 3x3 convolutions by 1x1 ones and drop the
padding, so that output position (i, j) depends only on the input patch

.. math::  X^{ij} = x[:, iS : iS + R, jS : jS + R]

with the *receptive field* (RF) ``R`` and the *stride* ``S`` fixed by construction. Each layer with
kernel ``k`` adds ``(k - 1) * S_before`` to ``R`` and multiplies ``S`` by its stride; with no padding
the output is exactly the grid ``LocationGrid.from_stride(image_size, R, S)`` of
:mod:`foveal.retina` (top-left pixels ``iS``), ``(H - R) // S + 1`` cells a side. Elsayed et al.
(2019, "Saccader") use ``R = 77, S = 8`` (BagNet-77, a 19 x 19 grid at 224 px) and add a low-dimensional
"what" bottleneck before the logits (BagNet-lowD)::

    features = ResNet(x)                    # [B, D, h, w], D = 4 * width * 8 (2048 at width 64)
    what     = ReLU(conv1x1(features))      # [B, what_dim, h, w]
    logits   = conv1x1(what)                # [B, K, h, w]: one class vector per location

Layouts (``layout``; ``"auto"`` picks by the smaller image side, so the RF is about a third of it)::

    name        RF  stride  grid at        stem stride  strides     3x3 blocks per stage
    bagnet-77   77    8     224 px: 19x19  1            (2,2,2,1)   (2,2,2,2)   the paper's
    bagnet-49   49    8     128 px: 10x10  1            (2,2,2,1)   (1,1,1,2)
    bagnet-19   19    4      60 px: 11x11  2            (1,2,1,1)   (1,1,1,0)
    bagnet-9     9    2      28 px: 10x10  1            (2,1,1,1)   (1,1,0,0)

The small layouts are narrow (``width`` 8 to 16) so that they train on a CPU; the 60 px one strides in
its stem, since full-resolution stages cost most of the time there.

The RF limit is exact in eval mode. In training mode BatchNorm's batch statistics mix all
positions and images, as in any BagNet; only the (tiny) dependence through those statistics crosses it.

:class:`BagNet` is also a *grid classifier*: its :meth:`BagNet.rollout` reads the logits of the cells a
policy picks and averages them over time (see :func:`grid_rollout`), which is how the engineered
policies of the Saccader paper (random, ordered logits, Sobel) are scored.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, NamedTuple, Optional

import torch
from torch import Tensor, nn
from torch.distributions import Categorical

from foveal.config import check_fields
from foveal.models.base import Policy, PolicyState, Rollout
from foveal.models.early_exit import ExitRule, StepRecorder
from foveal.models.registry import MODELS
from foveal.retina import LocationGrid

# Paper's Eq. 1 and 3 subtract 1e5 * C from the scores of visited cells: exp() of that is exactly 0
# in float32, so a visited cell can never be sampled again.
VISITED_PENALTY = 1e5

LAYOUTS: dict[str, dict] = {
    "bagnet-77": {"stem_stride": 1, "strides": (2, 2, 2, 1), "kernel3": (2, 2, 2, 2), "blocks": (3, 4, 6, 3),
                  "width": 64, "what_dim": 512},
    "bagnet-49": {"stem_stride": 1, "strides": (2, 2, 2, 1), "kernel3": (1, 1, 1, 2), "blocks": (1, 1, 1, 2),
                  "width": 16, "what_dim": 128},
    "bagnet-19": {"stem_stride": 2, "strides": (1, 2, 1, 1), "kernel3": (1, 1, 1, 0), "blocks": (1, 1, 1, 1),
                  "width": 8, "what_dim": 64},
    "bagnet-9": {"stem_stride": 1, "strides": (2, 1, 1, 1), "kernel3": (1, 1, 0, 0), "blocks": (1, 1, 1, 1),
                 "width": 8, "what_dim": 64},
}


def auto_layout(image_size: tuple[int, int]) -> str:
    """The layout whose RF is about a third of the smaller image side (224 -> 77, 60 -> 19, 28 -> 9)."""
    side = min(image_size)
    return "bagnet-77" if side >= 192 else "bagnet-49" if side >= 96 else "bagnet-19" if side >= 48 else "bagnet-9"


@dataclass(frozen=True)
class BagNetConfig:
    """Settings of a :class:`BagNet`; layout fields left ``None`` come from ``layout``.

    Attributes:
        in_channels, num_classes, image_size: from the data.
        layout: a name of :data:`LAYOUTS` or ``"auto"`` (by image size).
        stem_stride: stride of the 3x3 stem convolution.
        strides: stride of the first block of each stage.
        kernel3: how many of each stage's first blocks use a 3x3 convolution (the others 1x1).
        blocks: bottleneck blocks per stage.
        width: bottleneck width of stage 1 (doubling per stage; block outputs are 4x wider).
        what_dim: the "what" bottleneck before the logits (lowD).
    """

    in_channels: int
    num_classes: int
    image_size: tuple[int, int]
    layout: str = "auto"
    stem_stride: Optional[int] = None
    strides: Optional[tuple[int, ...]] = None
    kernel3: Optional[tuple[int, ...]] = None
    blocks: Optional[tuple[int, ...]] = None
    width: Optional[int] = None
    what_dim: Optional[int] = None

    def __post_init__(self) -> None:
        check_fields(self, "model")
        object.__setattr__(self, "image_size", tuple(int(v) for v in self.image_size))
        name = auto_layout(self.image_size) if self.layout == "auto" else self.layout
        if name not in LAYOUTS:
            raise ValueError(f"{type(self).__name__}.layout: expected 'auto' or one of {sorted(LAYOUTS)}, "
                             f"found {self.layout!r}")
        object.__setattr__(self, "layout", name)
        for key, value in LAYOUTS[name].items():
            if getattr(self, key) is None:
                object.__setattr__(self, key, value)
            elif isinstance(value, tuple):
                object.__setattr__(self, key, tuple(int(v) for v in getattr(self, key)))
        stages = len(self.strides)
        for key in ("kernel3", "blocks"):
            if len(getattr(self, key)) != stages:
                raise ValueError(f"{type(self).__name__}.{key}: expected {stages} values (one per stage), "
                                 f"found {getattr(self, key)}")
        if any(k > b for k, b in zip(self.kernel3, self.blocks)):
            raise ValueError(f"{type(self).__name__}.kernel3: expected at most blocks={self.blocks} per stage, "
                             f"found {self.kernel3}")
        for key in ("in_channels", "num_classes", "stem_stride", "width", "what_dim"):
            if int(getattr(self, key)) < 1:
                raise ValueError(f"{type(self).__name__}.{key}: expected a positive integer, "
                                 f"found {getattr(self, key)!r}")
        if min(self.image_size) < self.receptive_field:
            H, W = self.image_size
            raise ValueError(f"model.layout: the receptive field {self.receptive_field} px of {name} is larger than "
                             f"the {H}x{W} images (from the data); expected 'auto' or a smaller layout")

    @property
    def receptive_field(self) -> int:
        return _geometry(self)[0]

    @property
    def stride(self) -> int:
        return _geometry(self)[1]

    # The names foveal's glimpse records use (foveal.recipes.run.save_record): a cell's patch is the glimpse.
    @property
    def glimpse_size(self) -> int:
        return self.receptive_field

    @property
    def num_scales(self) -> int:
        return 1

    @property
    def scale_factor(self) -> int:
        return 2

    def make_grid(self) -> LocationGrid:
        return LocationGrid.from_stride(self.image_size, self.receptive_field, self.stride)


def _kernels(cfg: BagNetConfig) -> list[list[tuple[int, int]]]:
    """``(kernel, stride)`` of the spatial conv of every block, stage by stage."""
    return [[(3 if b < k3 else 1, s if b == 0 else 1) for b in range(n)]
            for s, k3, n in zip(cfg.strides, cfg.kernel3, cfg.blocks)]


def _geometry(cfg: BagNetConfig) -> tuple[int, int]:
    rf, stride = 3, cfg.stem_stride  # the 3x3 stem
    for stage in _kernels(cfg):
        for k, s in stage:
            rf += (k - 1) * stride
            stride *= s
    return rf, stride


class Bottleneck(nn.Module):
    """1x1 -> kxk (stride s, no padding) -> 1x1, plus the shortcut cropped to the same positions.

    Output position p reads input positions ``s*p .. s*p + k - 1``; the shortcut is taken at input
    position ``s * (p + o)`` with ``o = ((k - 1) // 2) // s``, which lies inside that window, so the
    block never widens the receptive field beyond its kxk conv.
    """

    def __init__(self, in_ch: int, mid: int, out: int, kernel: int, stride: int) -> None:
        super().__init__()
        self.offset = ((kernel - 1) // 2) // stride
        self.body = nn.Sequential(
            nn.Conv2d(in_ch, mid, 1, bias=False), nn.BatchNorm2d(mid), nn.ReLU(inplace=True),
            nn.Conv2d(mid, mid, kernel, stride=stride, bias=False), nn.BatchNorm2d(mid), nn.ReLU(inplace=True),
            nn.Conv2d(mid, out, 1, bias=False), nn.BatchNorm2d(out),
        )
        self.shortcut = (nn.Identity() if in_ch == out and stride == 1 else
                         nn.Sequential(nn.Conv2d(in_ch, out, 1, stride=stride, bias=False), nn.BatchNorm2d(out)))

    def forward(self, x: Tensor) -> Tensor:
        y = self.body(x)
        h, w, o = y.shape[2], y.shape[3], self.offset
        return torch.relu(y + self.shortcut(x)[:, :, o:o + h, o:o + w])


class GridMaps(NamedTuple):
    """One pass of the representation network: ``features [B, D, h, w]``, ``what [B, what_dim, h, w]``,
    ``logits [B, K, h, w]``; cell ``g = i * w + j`` of the grid is position (i, j)."""

    features: Tensor
    what: Tensor
    logits: Tensor


class BagNet(nn.Module):
    """BagNet-lowD (module docstring); ``encode`` gives the maps, ``rollout`` reads them glimpse by glimpse."""

    def __init__(self, cfg: BagNetConfig) -> None:
        super().__init__()
        self.config = cfg
        self.grid = cfg.make_grid()
        w = cfg.width
        self.stem = nn.Sequential(nn.Conv2d(cfg.in_channels, w, 3, stride=cfg.stem_stride, bias=False),
                                  nn.BatchNorm2d(w), nn.ReLU(inplace=True))
        layers, channels = [], w
        for index, stage in enumerate(_kernels(cfg)):
            mid = w * 2**index
            for kernel, stride in stage:
                layers.append(Bottleneck(channels, mid, 4 * mid, kernel, stride))
                channels = 4 * mid
        self.stages = nn.Sequential(*layers)
        self.feature_dim = channels
        self.what = nn.Sequential(nn.Conv2d(channels, cfg.what_dim, 1), nn.ReLU(inplace=True))
        self.classifier = nn.Conv2d(cfg.what_dim, cfg.num_classes, 1)
        self.register_buffer("grid_locations", self.grid.locations(), persistent=False)  # [G, 2]

    def encode(self, images: Tensor) -> GridMaps:
        """images ``[B, C, H, W]`` -> :class:`GridMaps` on the ``grid.shape`` grid."""
        cfg = self.config
        if tuple(images.shape[1:]) != (cfg.in_channels, *cfg.image_size):
            raise ValueError(f"{type(self).__name__}: expected images [B, {cfg.in_channels}, {cfg.image_size[0]}, "
                             f"{cfg.image_size[1]}], found {list(images.shape)}")
        features = self.stages(self.stem(images))
        what = self.what(features)
        return GridMaps(features, what, self.classifier(what))

    def rollout(self, images: Tensor, num_glimpses: int, *, policy: Optional[Policy] = None,
                forced_locations: Optional[Tensor] = None, exit_rule: Optional[ExitRule] = None) -> Rollout:
        """Read the logits of ``num_glimpses`` cells (:func:`grid_rollout`).

        BagNet has no location network: with ``policy=None`` cells are drawn uniformly among the
        unvisited ones (``log_prob = -log(G - t)``).
        """
        maps = self.encode(images)
        return grid_rollout(self.grid, self.grid_locations, maps.logits, lambda visited, rows: torch.zeros_like(visited),
                            num_glimpses, images, policy=policy, forced_locations=forced_locations,
                            exit_rule=exit_rule)


def grid_rollout(grid: LocationGrid, grid_locations: Tensor, logit_map: Tensor,
                 scores: Callable[[Tensor, Optional[Tensor]], Tensor], num_glimpses: int, images: Tensor, *,
                 policy: Optional[Policy] = None, forced_locations: Optional[Tensor] = None,
                 hidden: Optional[Tensor] = None, exit_rule: Optional[ExitRule] = None) -> Rollout:
    """The rollout of every grid model: pick a cell, read its logits, average over time.

    Step t: the model's policy is ``Categorical(logits = scores(C) - 1e5 * C)`` over the G cells, with
    ``C [B, G]`` the memory of visited cells (1 = visited); the cell comes from a sample of it, the
    ``policy`` or ``forced_locations`` (snapped to the nearest cell); ``C`` marks it. The prediction
    after t + 1 glimpses averages the logits read so far, ``logits[:, t] = mean_{s <= t} z_{l_s}``
    (= the softmax of the averaged log-probabilities of Eq. 4 and 6 of the Saccader paper).

    Args:
        grid, grid_locations: the cells and their ``[G, 2]`` centres.
        logit_map: ``[B, K, h, w]`` class logits of every cell.
        scores: ``(C [b, G], rows) -> [b, G]`` unmasked location logits (may depend on C, as the Saccader cell
            does) of the images ``rows [b]`` of the batch (None: all B, in order).
        hidden: what :class:`PolicyState` shows as the model's state (None for these models).
        exit_rule: stop each image once the rule fires (:mod:`foveal.models.early_exit`); later steps read
            cells for the undecided images only.

    Returns:
        A :class:`Rollout` with ``indices``; ``baseline`` is zero (these models learn none).
    """
    B, K = logit_map.shape[:2]
    G = len(grid)
    if num_glimpses > G:
        raise ValueError(f"num_glimpses: expected at most the {G} cells of the {grid.shape[0]}x{grid.shape[1]} "
                         f"grid (no cell is read twice), found {num_glimpses}")
    if forced_locations is not None and forced_locations.shape[:2] != (B, num_glimpses):
        raise ValueError(f"forced_locations: expected shape ({B}, {num_glimpses}, 2), "
                         f"found {tuple(forced_locations.shape)}")
    cell_logits = logit_map.flatten(2).transpose(1, 2)  # [B, G, K]
    visited = logit_map.new_zeros(B, G)
    steps = StepRecorder(B, num_glimpses, exit_rule, logit_map.device)
    rows, subset = torch.arange(B, device=logit_map.device), None  # subset: batch rows still looking, None = all
    read = logit_map.new_zeros(B, 0, K)  # [b, t, K] the logits read so far
    indices = torch.zeros(B, 0, dtype=torch.long, device=logit_map.device)  # [b, t]
    for t in range(num_glimpses):
        dist = Categorical(logits=scores(visited, subset) - VISITED_PENALTY * visited, validate_args=False)
        if policy is None:
            index = dist.sample()  # no gradient: REINFORCE scores it through log_prob
        else:
            seen = grid_locations[indices]
            index = grid.nearest_index(policy(PolicyState(t, hidden if subset is None or hidden is None else hidden[subset], seen, dist,
                                                            grid, subset), images).detach())
        if forced_locations is not None:
            given = forced_locations[:, t].to(grid_locations)
            free = torch.isnan(given).any(-1)
            index = torch.where(free, index, grid.nearest_index(torch.nan_to_num(given)))
        z = cell_logits[rows if subset is None else subset, index]  # [b, K]
        read = torch.cat([read, z[:, None]], 1)
        logits = read.cumsum(1)[:, -1] / (t + 1)  # cumsum, not a running sum: the same floats as a fixed-T mean
        steps.record(locations=grid_locations[index], log_prob=dist.log_prob(index), logits=logits,
                     baseline=z.new_zeros(len(index)), indices=index, entropy=dist.entropy())
        visited = visited.index_put((rows[:len(index)], index), visited.new_ones(len(index)))
        indices = torch.cat([indices, index[:, None]], 1)
        keep = steps.stop(logits)
        if keep is not None:  # only the undecided images go on
            subset = steps.subset
            visited, read, indices, images = visited[keep], read[keep], indices[keep], images[keep]
            forced_locations = None if forced_locations is None else forced_locations[keep]
        if steps.finished:
            break
    return steps.rollout()


@MODELS.register("bagnet", kind="grid")
def bagnet(**config) -> BagNet:
    """BagNet-lowD (Brendel & Bethge 2019): class logits on a grid of cells, each from one patch.

    Settings: :class:`BagNetConfig` (layout by image size by default)."""
    return BagNet(BagNetConfig(**config))


__all__ = ["BagNet", "BagNetConfig", "GridMaps", "LAYOUTS", "VISITED_PENALTY", "auto_layout", "grid_rollout"]
