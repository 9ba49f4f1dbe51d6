"""DenseNet-121 in plain PyTorch, with torchvision's parameter names (no torchvision import).

DenseNet (Huang et al., *Densely Connected Convolutional Networks*, CVPR 2017) feeds every layer of a
dense block the concatenation of all earlier outputs of the block. Layer ``l`` of a block that starts
with ``k0`` channels reads ``k0 + (l - 1) k`` channels (``k`` = growth rate) and adds ``k`` new ones:

    h_l = conv3x3(relu(bn(conv1x1(relu(bn([x_0, x_1, ..., x_{l-1}]))))))   # bottleneck: 4k channels

Between blocks a transition ``bn-relu-conv1x1-avgpool2`` halves the channels (compression 0.5) and
the resolution. DenseNet-121 = stem (7x7/2 conv, 3x3/2 max-pool, 64 channels), blocks of 6, 12, 24
and 16 layers with ``k = 32``, a final BatchNorm, ReLU, global average pooling and a linear head:
7,978,856 parameters for 3 input channels and 1,000 classes, 727 state-dict entries (121 BatchNorms
x 5 + 120 convolutions + the head's weight and bias).

The module tree copies torchvision's ``torchvision.models.densenet`` exactly (``features.conv0``,
``features.denseblock1.denselayer1.norm1`` ... ``features.transition1.conv``, ``features.norm5``,
``classifier``) so that torchvision's ImageNet state dict loads with ``strict=True``
(:func:`read_state_dict` also renames the old ``norm.1`` / ``conv.1`` keys of the original weight
file, as torchvision does). Dense layers here always concatenate eagerly; torchvision's
memory-efficient checkpointing is left out (it changes memory, not results).
"""

from __future__ import annotations

import re
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["DenseNet", "densenet121", "read_state_dict"]


class _DenseLayer(nn.Module):
    """``[B, C_in, H, W]`` (the block's features so far) -> ``[B, growth, H, W]`` new features."""

    def __init__(self, in_features: int, growth_rate: int, bn_size: int, drop_rate: float) -> None:
        super().__init__()
        self.norm1 = nn.BatchNorm2d(in_features)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv1 = nn.Conv2d(in_features, bn_size * growth_rate, kernel_size=1, bias=False)
        self.norm2 = nn.BatchNorm2d(bn_size * growth_rate)
        self.relu2 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(bn_size * growth_rate, growth_rate, kernel_size=3, padding=1, bias=False)
        self.drop_rate = float(drop_rate)

    def forward(self, x: Tensor) -> Tensor:
        out = self.conv2(self.relu2(self.norm2(self.conv1(self.relu1(self.norm1(x))))))
        return F.dropout(out, p=self.drop_rate, training=self.training) if self.drop_rate > 0 else out


class _DenseBlock(nn.ModuleDict):
    """``[B, C, H, W]`` -> ``[B, C + num_layers * growth, H, W]``: each layer reads all before it."""

    def __init__(self, num_layers: int, in_features: int, bn_size: int, growth_rate: int, drop_rate: float) -> None:
        super().__init__()
        for i in range(num_layers):
            self.add_module(f"denselayer{i + 1}", _DenseLayer(in_features + i * growth_rate, growth_rate, bn_size,
                                                              drop_rate))

    def forward(self, x: Tensor) -> Tensor:
        features = [x]
        for layer in self.values():
            features.append(layer(torch.cat(features, 1)))
        return torch.cat(features, 1)


class _Transition(nn.Sequential):
    """``[B, C_in, H, W]`` -> ``[B, C_out, H / 2, W / 2]``."""

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__()
        self.norm = nn.BatchNorm2d(in_features)
        self.relu = nn.ReLU(inplace=True)
        self.conv = nn.Conv2d(in_features, out_features, kernel_size=1, bias=False)
        self.pool = nn.AvgPool2d(kernel_size=2, stride=2)


class DenseNet(nn.Module):
    """DenseNet-BC ``[B, in_channels, H, W] -> [B, num_classes]``; see the module docstring.

    Args:
        growth_rate: channels each dense layer adds (``k``).
        block_config: dense layers per block.
        num_init_features: channels of the stem convolution.
        bn_size: bottleneck width as a multiple of ``growth_rate``.
        drop_rate: dropout after each dense layer.
        in_channels, num_classes: input channels and outputs of the linear head.

    Attributes:
        num_features: channels of the final feature map (1,024 for DenseNet-121).
    """

    def __init__(self, *, growth_rate: int = 32, block_config: tuple[int, ...] = (6, 12, 24, 16),
                 num_init_features: int = 64, bn_size: int = 4, drop_rate: float = 0.0, in_channels: int = 3,
                 num_classes: int = 1000) -> None:
        super().__init__()
        self.features = nn.Sequential()
        self.features.add_module("conv0", nn.Conv2d(in_channels, num_init_features, kernel_size=7, stride=2, padding=3,
                                                    bias=False))
        self.features.add_module("norm0", nn.BatchNorm2d(num_init_features))
        self.features.add_module("relu0", nn.ReLU(inplace=True))
        self.features.add_module("pool0", nn.MaxPool2d(kernel_size=3, stride=2, padding=1))
        channels = num_init_features
        for i, num_layers in enumerate(block_config):
            self.features.add_module(f"denseblock{i + 1}", _DenseBlock(num_layers, channels, bn_size, growth_rate,
                                                                       drop_rate))
            channels += num_layers * growth_rate
            if i != len(block_config) - 1:
                self.features.add_module(f"transition{i + 1}", _Transition(channels, channels // 2))
                channels //= 2
        self.features.add_module("norm5", nn.BatchNorm2d(channels))
        self.num_features = channels
        self.classifier = nn.Linear(channels, num_classes)
        for m in self.modules():  # torchvision's initialisation
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)

    def forward_features(self, x: Tensor) -> Tensor:
        """``[B, in_channels, H, W]`` -> ``[B, num_features]`` globally pooled features (before the head)."""
        return F.adaptive_avg_pool2d(F.relu(self.features(x)), 1).flatten(1)

    def forward(self, x: Tensor) -> Tensor:
        """``[B, in_channels, H, W]`` -> ``[B, num_classes]`` logits."""
        return self.classifier(self.forward_features(x))


def densenet121(*, in_channels: int = 3, num_classes: int = 1000, drop_rate: float = 0.0) -> DenseNet:
    """DenseNet-121: growth 32, blocks (6, 12, 24, 16), bottleneck 4k, 64 stem channels (randomly initialised)."""
    return DenseNet(growth_rate=32, block_config=(6, 12, 24, 16), num_init_features=64, bn_size=4,
                    drop_rate=drop_rate, in_channels=in_channels, num_classes=num_classes)


# The original ImageNet file names dense-layer modules ``norm.1``, ``relu.1``, ``conv.1``, ...; torchvision
# renames them on load with this pattern, and so do we.
_OLD_KEY = re.compile(r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var))$")


def read_state_dict(path: str | Path) -> dict[str, Tensor]:
    """Tensors of a local weight file: ``.safetensors``, or ``.pth`` / ``.pt`` read with ``weights_only=True``.

    A ``.pth`` holding ``{"state_dict": {...}}`` or ``{"model": {...}}`` is unwrapped, a ``module.`` prefix
    (DataParallel) is stripped and old torchvision dense-layer keys (``norm.1``) are renamed (``norm1``).

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: an unknown extension, an unreadable file, a pickle of anything but tensors (refused, never
            run), or a file that holds no dictionary of tensors; one line naming the file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights: expected a weight file at {path}, found none")
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            state = load_file(str(path))
        except Exception as err:  # safetensors raises its own error type
            raise ValueError(f"weights {path}: not a readable safetensors file ({_first_line(err)})") from None
    elif suffix in (".pth", ".pt"):
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except (RuntimeError, EOFError, OSError) as err:  # not a torch file, or truncated
            raise ValueError(f"weights {path}: not a readable PyTorch weight file ({_first_line(err)})") from None
        except Exception as err:  # the weights-only unpickler's refusal: a pickle of more than tensors (never run)
            if type(err).__name__ != "UnpicklingError":  # matched by name: foveal imports no pickle module
                raise
            refused = re.search(r"GLOBAL ([\w.]+)", str(err))
            if refused is None:
                detail = re.search(r"Unsupported [^.\n]*", str(err))
                raise ValueError(f"weights {path}: not a readable PyTorch weight file "
                                 f"({detail.group(0) if detail else _first_line(err)})") from None
            raise ValueError(f"weights {path}: refused, a pickle that would create Python objects besides tensors "
                             f"({refused.group(1)}); save a plain state dict, or convert it to .safetensors where "
                             "it was made") from None
        for wrapper in ("state_dict", "model"):
            if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
                state = state[wrapper]
    else:
        raise ValueError(f"weights {path}: expected a .safetensors, .pth or .pt file, found {path.name!r}")
    if not isinstance(state, dict):
        raise ValueError(f"weights {path}: expected a dictionary of tensors (a state dict), found a "
                         f"{type(state).__name__}")
    for key, value in state.items():
        if not isinstance(value, Tensor):
            raise ValueError(f"weights {path}: expected a dictionary of tensors (a state dict), found entry "
                             f"{key!r} holding a {type(value).__name__}")
    out = {}
    for key, value in state.items():
        key = key[len("module."):] if key.startswith("module.") else key
        match = _OLD_KEY.match(key)
        out[match.group(1) + match.group(2) if match else key] = value
    return out


def _first_line(err: BaseException) -> str:
    """The first sentence of an error from torch or safetensors."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return lines[0].split(". ")[0].rstrip(".") if lines else type(err).__name__
