r"""Exact EPE scoring with local updates: a candidate glimpse changes only a window of every feature map.

The greedy step scores every (cell, completion) pair: the posterior CNN reads completion ``n`` through
the mask :math:`m_{t-1} \cup m(l)`. The pairs of one completion differ from its *base* input (seen through
:math:`m_{t-1}` alone) only inside cell ``l``'s glimpse. In a stack of convolutions (BatchNorm folded,
ReLU: all local) a change inside input rows :math:`[a, b)` reaches only the outputs

.. math::  i \in \big[\lceil (a + p - k + 1) / s \rceil,\ \lfloor (b - 1 + p) / s \rfloor\big]

of a ``k x k`` convolution with stride ``s`` and padding ``p`` (same for columns), so each layer is
recomputed on a small window only, from the base feature map with the previous layer's new window
pasted in. Global average pooling is a sum, so the pooled features are the base sum minus the base
window plus the new window; the linear head follows. The result equals the full forward (up to float
rounding), at a fraction of the cost: one full forward per completion, then windows of about
``(g / s_1 + 2)^2`` positions per layer instead of whole maps (for 12 px glimpses on 60x60 images and
three stride-2 blocks, ~5x fewer multiply-adds).

Works for :class:`~foveal.models.posterior_cnn.PosteriorCNN` (conv-BN-ReLU blocks, mean pooling, linear head).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from foveal.models.posterior_cnn import PosteriorCNN
from foveal.retina import LocationGrid, masked_input

__all__ = ["folded_layers", "cell_logits"]


def folded_layers(network: nn.Module) -> list[tuple[Tensor, Tensor, int, int, int]]:
    """A :class:`PosteriorCNN`'s blocks as ``(weight, bias, kernel, stride, padding)`` with BatchNorm folded in (eval statistics)."""

    if not isinstance(network, PosteriorCNN):
        raise ValueError(f"local updates: expected a PosteriorCNN (conv-BN-ReLU blocks, mean pooling, linear head), "
                         f"found {type(network).__name__}")
    layers, modules = [], list(network.features)
    for i in range(0, len(modules), 3):
        conv, bn = modules[i], modules[i + 1]
        scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)  # [O]
        bias = bn.bias - bn.running_mean * scale + (conv.bias * scale if conv.bias is not None else 0)
        layers.append((conv.weight * scale[:, None, None, None], bias, conv.kernel_size[0], conv.stride[0],
                       conv.padding[0]))
    return layers


def _windows(lo: Tensor, hi: Tensor, size: int, kernel: int, stride: int,
             pad: int) -> tuple[Tensor, Tensor, int, Tensor, int]:
    """Affected input ranges ``[lo, hi)`` (``[G]`` each, of ``size``) -> the affected output ranges ``[G]``, a
    common window length n, window starts ``[G]`` (kept inside the output) and the output size."""
    out_size = (size + 2 * pad - kernel) // stride + 1
    out_lo = torch.div(lo + pad - kernel + 1 + stride - 1, stride, rounding_mode="floor").clamp(min=0)
    out_hi = (torch.div(hi - 1 + pad, stride, rounding_mode="floor") + 1).clamp(max=out_size)
    n = int((out_hi - out_lo).max())
    start = torch.minimum(out_lo, torch.full_like(out_lo, out_size - n))
    return out_lo, out_hi, n, start, out_size


def _crop(x: Tensor, image: Tensor, rows: Tensor, cols: Tensor) -> Tensor:
    """``x [N, C, H, W]``, ``image [P]``, ``rows [P, h]``, ``cols [P, w]`` -> ``[P, C, h, w]``."""
    return x[image[:, None, None], :, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)


@torch.no_grad()
def cell_logits(network: nn.Module, images: Tensor, observed: Tensor, grid: LocationGrid, cells: Tensor,
                image_index: Tensor, *, batch_size: int = 256) -> Tensor:
    """Logits of ``network`` for every pair: image ``image_index[p]`` seen through ``observed`` plus cell ``cells[p]``.

    Equals ``network(masked_input(images[i] * m, m))`` with ``m = max(observed, cell mask)``, computed by
    local updates (module docstring). Runs in eval mode (restored afterwards).

    Args:
        network: a :class:`~foveal.models.posterior_cnn.PosteriorCNN`.
        images: ``[N, C, H, W]`` completions.
        observed: ``[1, H, W]`` the mask seen so far.
        grid: the cells.
        cells, image_index: ``[P]`` the pairs.
        batch_size: pairs per windowed pass.

    Returns:
        ``[P, K]`` float32 logits.
    """
    was_training = network.training
    network.eval()
    try:
        return _cell_logits(network, images, observed, grid, cells, image_index, batch_size)
    finally:
        network.train(was_training)


def _cell_logits(network, images, observed, grid, cells, image_index, batch_size) -> Tensor:
    layers = folded_layers(network)
    N, C, H, W = images.shape
    device = images.device
    if cells.shape[0] == 0:
        return images.new_zeros(0, network.config.num_classes)
    seen = observed.to(images)[None]  # [1, 1, H, W]
    base = [masked_input(images, seen.expand(N, 1, H, W))]  # a_0 .. a_L: [N, C_l, H_l, W_l]
    for weight, bias, _, stride, pad in layers:
        base.append(F.relu(F.conv2d(base[-1], weight, bias, stride=stride, padding=pad)))
    base_sum = base[-1].sum((2, 3))  # [N, C_L]
    pads = [layer[4] for layer in layers]
    padded = [F.pad(a, (p, p, p, p)) for a, p in zip(base[:-1], pads)]  # the input of layer l, padded as it pads
    raw = F.pad(images, (pads[0],) * 4)  # completions, unmasked
    raw_seen = F.pad(seen, (pads[0],) * 4)
    # Per layer and axis: output window starts [G] and the common length n (module docstring).
    g = grid.glimpse_size
    corners = grid.corners().to(device)  # [G, 2]
    ranges = [(corners[:, 0], corners[:, 0] + g, H), (corners[:, 1], corners[:, 1] + g, W)]
    plan = []
    for _, _, kernel, stride, pad in layers:
        step = []
        for axis, (lo, hi, size) in enumerate(ranges):
            out_lo, out_hi, n, start, out_size = _windows(lo, hi, size, kernel, stride, pad)
            step.append((start, n))
            ranges[axis] = (out_lo, out_hi, out_size)
        plan.append(step)
    out = []
    for s in range(0, cells.shape[0], batch_size):
        cell, img = cells[s:s + batch_size].to(device), image_index[s:s + batch_size].to(device)
        pooled = base_sum[img].clone()  # [P, C_L]
        new = None
        for l, ((weight, bias, kernel, stride, pad), ((r0, nr), (c0, nc))) in enumerate(zip(layers, plan)):
            # input rows / cols of this layer's window, in padded coordinates
            rows = (stride * r0[cell])[:, None] + torch.arange(stride * (nr - 1) + kernel, device=device)  # [P, mr]
            cols = (stride * c0[cell])[:, None] + torch.arange(stride * (nc - 1) + kernel, device=device)  # [P, mc]
            if l == 0:
                r, c = corners[cell, :1] + pad, corners[cell, 1:] + pad  # [P, 1] the cell, padded coordinates
                in_cell = (((rows >= r) & (rows < r + g))[:, :, None] & ((cols >= c) & (cols < c + g))[:, None, :])
                mask = torch.maximum(_crop(raw_seen, torch.zeros_like(img), rows, cols), in_cell[:, None].to(images))
                x = torch.cat([_crop(raw, img, rows, cols) * mask, mask], 1)  # [P, C + 1, mr, mc]
            else:
                x = _crop(padded[l], img, rows, cols)  # base values, then the previous window's new values
                (pr, pnr), (pc, pnc) = plan[l - 1]
                rel_r, rel_c = rows - pad - pr[cell][:, None], cols - pad - pc[cell][:, None]
                ok_r, ok_c = (rel_r >= 0) & (rel_r < pnr), (rel_c >= 0) & (rel_c < pnc)
                pasted = _crop(new, torch.arange(len(img), device=device), rel_r.clamp(0, pnr - 1),
                               rel_c.clamp(0, pnc - 1))
                x = torch.where((ok_r[:, :, None] & ok_c[:, None, :])[:, None], pasted, x)
            new = F.relu(F.conv2d(x, weight, bias, stride=stride))  # [P, O, nr, nc]
        rows = r0[cell][:, None] + torch.arange(nr, device=device)
        cols = c0[cell][:, None] + torch.arange(nc, device=device)
        pooled += new.sum((2, 3)) - _crop(base[-1], img, rows, cols).sum((2, 3))
        out.append(network.head(pooled / (base[-1].shape[2] * base[-1].shape[3])))
    return torch.cat(out).float()
