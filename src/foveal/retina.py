"""Batched multi-scale glimpse extraction, location grids and observation masks.

A *glimpse* at location ``l = (row, col)`` in ``[-1, 1]^2`` is a stack of ``num_scales`` square
patches centred on the same pixel: scale ``k`` covers ``size * factor**k`` pixels a side and is
average-pooled back to ``size x size`` (Mnih et al. 2014 use 3 scales, factor 2). Pixels outside the
image read as zero.

Coordinates (used everywhere in foveal):

* ``l = -1`` is the top (left) edge of the image, ``+1`` the bottom (right) edge; the glimpse centre
  in pixels is ``c = (l + 1) / 2 * H``.
* The top-left pixel of a ``g``-pixel patch is ``floor(c - g / 2 + 0.5)``, i.e. the centre rounded
  half-up. :class:`LocationGrid` picks centres so that this gives back exactly the grid's top-left
  pixels, the form in which the released near-optimal glimpse sequences are written (row first).

Everything is vectorised over the batch: one gather per scale, no Python loop over samples
(``benchmarks/retina/retina.py`` measures it against :func:`extract_glimpses_loop`, the per-sample
reference the tests compare it with for exact equality).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor


def _check_locations(locations: Tensor, name: str = "locations") -> None:
    if locations.shape[-1] != 2:
        raise ValueError(f"{name}: expected a last dimension of 2 (row, col), found shape {tuple(locations.shape)}")


def top_left(locations: Tensor, image_size: tuple[int, int], size: int) -> Tensor:
    """Top-left pixel of the ``size``-pixel square centred at ``locations``.

    Args:
        locations: ``[..., 2]`` (row, col) in [-1, 1]; values outside are clamped.
        image_size: ``(H, W)``.
        size: side of the square in pixels.

    Returns:
        ``[..., 2]`` int64 (row, col), possibly negative or past the edge (zero padding).
    """
    _check_locations(locations)
    hw = torch.tensor(image_size, dtype=torch.float64, device=locations.device)
    centre = (locations.to(torch.float64).clamp(-1, 1) + 1) / 2 * hw  # [..., 2] pixels
    return torch.floor(centre - size / 2 + 0.5).long()


def crop(images: Tensor, corners: Tensor, size: int) -> Tensor:
    """Cut ``size x size`` patches, zero outside the image, with one gather for the whole batch.

    Pixels outside the image read the nearest pixel inside (clamped indices, so no padded copy of the
    images is made) and are then multiplied by zero: the result of cutting from a zero-padded image
    (for non-negative images exactly; a negative pixel outside becomes -0.0, which equals 0.0).

    Args:
        images: ``[B, C, H, W]``.
        corners: ``[B, 2]`` int64 top-left (row, col) of each patch, may lie outside the image.
        size: patch side in pixels.

    Returns:
        ``[B, C, size, size]``.
    """
    B, C, H, W = images.shape
    if corners.shape != (B, 2):
        raise ValueError(f"crop: expected corners of shape ({B}, 2), found {tuple(corners.shape)}")
    offsets = torch.arange(size, device=images.device)
    rows = corners[:, :1].to(images.device) + offsets  # [B, size]
    cols = corners[:, 1:].to(images.device) + offsets
    flat = rows.clamp(0, H - 1)[:, :, None] * W + cols.clamp(0, W - 1)[:, None, :]  # [B, size, size]
    patch = images.flatten(2).gather(2, flat.view(B, 1, size * size).expand(B, C, size * size)).view(B, C, size, size)
    # zero outside: two products with 0/1 rows and columns (x * 1 is exact), cheaper than a [B, size, size] mask
    patch *= ((rows >= 0) & (rows < H)).to(patch.dtype)[:, None, :, None]
    patch *= ((cols >= 0) & (cols < W)).to(patch.dtype)[:, None, None, :]
    return patch


def extract_glimpses(images: Tensor, locations: Tensor, size: int, num_scales: int = 1, factor: int = 2) -> Tensor:
    """Multi-scale glimpses at continuous locations.

    Args:
        images: ``[B, C, H, W]``.
        locations: ``[B, 2]`` (row, col) in [-1, 1].
        size: side of the finest patch (and of every returned patch) in pixels.
        num_scales: number of patches; scale k covers ``size * factor**k`` pixels.
        factor: integer growth of the side from one scale to the next.

    Returns:
        ``[B, num_scales, C, size, size]``; coarser scales are average-pooled by ``factor**k``.
    """
    if images.dim() != 4:
        raise ValueError(f"images: expected [B, C, H, W], found shape {tuple(images.shape)}")
    if locations.shape != (images.shape[0], 2):
        raise ValueError(f"locations: expected shape ({images.shape[0]}, 2), found {tuple(locations.shape)}")
    if num_scales < 1 or factor < 1 or size < 1:
        raise ValueError(f"expected size, num_scales, factor >= 1, found {size}, {num_scales}, {factor}")
    image_size = (images.shape[2], images.shape[3])
    # One gather, of the largest square: a finer square is centred in it, and where (largest - side) / 2
    # is an integer, floor(centre - side / 2 + 0.5) moves by exactly that offset, so a slice holds the
    # pixels a gather of its own would (an odd size with an even factor: the finest scale is cut alone).
    largest = size * factor ** (num_scales - 1)
    outer = crop(images, top_left(locations, image_size, largest), largest)  # [B, C, largest, largest]
    scales = []
    for k in range(num_scales):
        side = size * factor**k
        at, odd = divmod(largest - side, 2)
        patch = crop(images, top_left(locations, image_size, side), side) if odd else outer[:, :, at:at + side, at:at + side]
        scales.append(F.avg_pool2d(patch, kernel_size=factor**k) if k > 0 else patch)
    return torch.stack(scales, dim=1)


def extract_glimpses_loop(images: Tensor, locations: Tensor, size: int, num_scales: int = 1, factor: int = 2) -> Tensor:
    """Per-sample reference of :func:`extract_glimpses`: plain slicing, a Python loop.

    Kept for the equality tests and the speed benchmark; do not use it in training.
    """
    B, C, H, W = images.shape
    out = images.new_zeros(B, num_scales, C, size, size)
    for b in range(B):
        for k in range(num_scales):
            side = size * factor**k
            r0, c0 = (int(v) for v in top_left(locations[b], (H, W), side))
            patch = images.new_zeros(C, side, side)
            r_lo, r_hi = max(r0, 0), min(r0 + side, H)
            c_lo, c_hi = max(c0, 0), min(c0 + side, W)
            if r_lo < r_hi and c_lo < c_hi:
                patch[:, r_lo - r0 : r_hi - r0, c_lo - c0 : c_hi - c0] = images[b, :, r_lo:r_hi, c_lo:c_hi]
            if k > 0:
                patch = F.avg_pool2d(patch[None], kernel_size=factor**k)[0]
            out[b, k] = patch
    return out


def observation_mask(locations: Tensor, image_size: tuple[int, int], size: int) -> Tensor:
    """Union of the pixels seen by the finest scale of each glimpse so far.

    Args:
        locations: ``[B, t, 2]`` (row, col) in [-1, 1]; ``t`` may be 0 (nothing seen).
        image_size: ``(H, W)``.
        size: glimpse side in pixels.

    Returns:
        ``[B, 1, H, W]`` float mask, 1 where some glimpse saw the pixel.
    """
    _check_locations(locations)
    B, t, _ = locations.shape
    H, W = image_size
    if t == 0:
        return locations.new_zeros(B, 1, H, W, dtype=torch.float32)
    corners = top_left(locations, image_size, size)  # [B, t, 2]
    r = torch.arange(H, device=locations.device)
    c = torch.arange(W, device=locations.device)
    in_rows = (r >= corners[..., 0, None]) & (r < corners[..., 0, None] + size)  # [B, t, H]
    in_cols = (c >= corners[..., 1, None]) & (c < corners[..., 1, None] + size)  # [B, t, W]
    seen = (in_rows[..., :, None] & in_cols[..., None, :]).any(dim=1)  # [B, H, W]
    return seen[:, None].float()


def masked_input(images: Tensor, mask: Tensor) -> Tensor:
    """Input of a posterior network: the seen pixels and the mask, ``[B, C + 1, H, W]``."""
    if mask.shape != (images.shape[0], 1, *images.shape[2:]):
        raise ValueError(f"mask: expected shape {(images.shape[0], 1, *images.shape[2:])}, found {tuple(mask.shape)}")
    return torch.cat([images * mask, mask], dim=1)


@dataclass(frozen=True)
class LocationGrid:
    """A discrete set of allowed glimpse positions, given by top-left pixels (row, col).

    Cells are numbered row-major: ``index = i * len(cols) + j``.

    Examples:
        ``LocationGrid.from_linspace((224, 224), 16, 0, 207, 50)`` is the grid of the released CelebA-HQ
        near-optimal glimpse sequences (50 x 50 positions ``int(numpy.linspace(0, 207, 50))`` = 0, 4, 8, 12,
        16, 21, ..., 202, 207); ``LocationGrid.from_count((224, 224), 16, 50)`` spreads 50 positions over
        0..208 instead (up to 2 px from the release's). ``LocationGrid.from_stride(
        (128, 128), 32, 8)`` is 13 x 13 positions 0, 8, ..., 96 (the paper's CUB grid is described as 12 x 12,
        8 px apart). :meth:`from_spec` reads any of these from a short string (the CLI's ``--grid``).
    """

    image_size: tuple[int, int]
    glimpse_size: int
    rows: tuple[int, ...]
    cols: tuple[int, ...]

    def __post_init__(self) -> None:
        H, W = self.image_size
        for name, values, limit in (("rows", self.rows, H), ("cols", self.cols, W)):
            if not values:
                raise ValueError(f"LocationGrid.{name}: expected at least one position, found none")
            if min(values) < 0 or max(values) + self.glimpse_size > limit:
                raise ValueError(
                    f"LocationGrid.{name}: expected top-left pixels in [0, {limit - self.glimpse_size}] "
                    f"for {self.glimpse_size} px glimpses, found {min(values)}..{max(values)}"
                )

    @classmethod
    def from_count(cls, image_size: tuple[int, int], glimpse_size: int, count: int | tuple[int, int]) -> "LocationGrid":
        """``count`` positions per axis spread evenly from one edge to the other (rounded)."""
        n_r, n_c = (count, count) if isinstance(count, int) else count
        H, W = image_size

        def spread(n: int, span: int) -> tuple[int, ...]:
            if n == 1:
                return (span // 2,)
            return tuple(int(math.floor(i * span / (n - 1) + 0.5)) for i in range(n))

        return cls(tuple(image_size), glimpse_size, spread(n_r, H - glimpse_size), spread(n_c, W - glimpse_size))

    @classmethod
    def from_stride(cls, image_size: tuple[int, int], glimpse_size: int, stride: int) -> "LocationGrid":
        """Positions every ``stride`` pixels from 0 while the glimpse fits in the image."""
        H, W = image_size
        return cls(tuple(image_size), glimpse_size, tuple(range(0, H - glimpse_size + 1, stride)),
                   tuple(range(0, W - glimpse_size + 1, stride)))

    @classmethod
    def from_linspace(cls, image_size: tuple[int, int], glimpse_size: int, start: int, stop: int,
                      num: int) -> "LocationGrid":
        """``int(numpy.linspace(start, stop, num))`` (truncated, numpy's own arithmetic) on both axes.

        The released CelebA-HQ sequences lie on ``from_linspace((224, 224), 16, 0, 207, 50)``.

        Raises:
            ValueError: ``num < 1``, or ``num`` so large that two positions truncate to the same pixel.
        """
        if isinstance(num, bool) or not isinstance(num, (int, np.integer)) or num < 1:
            raise ValueError(f"LocationGrid.from_linspace: num: expected a positive integer, found {num!r}")
        values = tuple(int(v) for v in np.linspace(start, stop, int(num)).astype(np.int64))
        if len(set(values)) != len(values):
            raise ValueError(f"LocationGrid.from_linspace: expected {num} distinct pixels in {start}..{stop}, found "
                             f"repeats (at most {abs(stop - start) + 1} fit)")
        return cls(tuple(image_size), glimpse_size, values, values)

    @classmethod
    def from_positions(cls, image_size: tuple[int, int], glimpse_size: int, rows: Sequence[int],
                       cols: Optional[Sequence[int]] = None) -> "LocationGrid":
        """Explicit top-left pixels: ``rows`` (and ``cols``, default the same), strictly increasing."""
        cols = rows if cols is None else cols
        out = []
        for name, values in (("rows", rows), ("cols", cols)):
            values = tuple(int(v) for v in values)
            if any(b <= a for a, b in zip(values, values[1:])):
                raise ValueError(f"LocationGrid.{name}: expected strictly increasing pixels, found {values[:8]}...")
            out.append(values)
        return cls(tuple(image_size), glimpse_size, out[0], out[1])

    @classmethod
    def from_spec(cls, spec: str, image_size: tuple[int, int], glimpse_size: int) -> "LocationGrid":
        """A grid from a short string (the CLI's ``--grid``):

        ==============================  =====================================================
        ``50`` or ``50x40``             :meth:`from_count` (cells per axis)
        ``stride:8``                    :meth:`from_stride`
        ``linspace:0:207:50``           :meth:`from_linspace` (start:stop:num; the release's rule)
        ``0,4,8,12``                    :meth:`from_positions`, the same pixels on both axes
        ``rows=0,4,8;cols=0,5,10``      :meth:`from_positions`, each axis given
        ==============================  =====================================================

        Raises:
            ValueError: naming the spec and the forms above.
        """
        text = str(spec).strip().replace(" ", "")
        forms = ("expected N, RxC, stride:S, linspace:START:STOP:NUM, 'r0,r1,...' or 'rows=r0,r1,...;cols=c0,c1,...'"
                 " (top-left pixels)")
        try:
            if re.fullmatch(r"\d+", text):
                return cls.from_count(image_size, glimpse_size, int(text))
            if re.fullmatch(r"\d+x\d+", text):
                r, c = text.split("x")
                return cls.from_count(image_size, glimpse_size, (int(r), int(c)))
            if re.fullmatch(r"stride:\d+", text):
                return cls.from_stride(image_size, glimpse_size, int(text.split(":")[1]))
            if re.fullmatch(r"linspace:\d+:\d+:\d+", text):
                start, stop, num = (int(v) for v in text.split(":")[1:])
                return cls.from_linspace(image_size, glimpse_size, start, stop, num)
            if re.fullmatch(r"\d+(,\d+)+", text):
                return cls.from_positions(image_size, glimpse_size, [int(v) for v in text.split(",")])
            match = re.fullmatch(r"rows=(\d+(?:,\d+)*);cols=(\d+(?:,\d+)*)", text)
            if match:
                return cls.from_positions(image_size, glimpse_size, [int(v) for v in match.group(1).split(",")],
                                          [int(v) for v in match.group(2).split(",")])
        except ValueError as err:
            raise ValueError(f"grid {spec!r}: {err}") from None
        raise ValueError(f"grid {spec!r}: {forms}")

    @property
    def shape(self) -> tuple[int, int]:
        return len(self.rows), len(self.cols)

    def __len__(self) -> int:
        return len(self.rows) * len(self.cols)

    def corners(self) -> Tensor:
        """``[G, 2]`` int64 top-left pixels of every cell, row-major."""
        r = torch.tensor(self.rows).repeat_interleave(len(self.cols))
        c = torch.tensor(self.cols).repeat(len(self.rows))
        return torch.stack([r, c], dim=1)

    def locations(self) -> Tensor:
        """``[G, 2]`` float32 centres in [-1, 1] whose :func:`top_left` is exactly :meth:`corners`."""
        hw = torch.tensor(self.image_size, dtype=torch.float64)
        centre = self.corners().double() + self.glimpse_size / 2
        return (centre / hw * 2 - 1).float()

    def index_to_location(self, index: Tensor) -> Tensor:
        """``[...]`` cell indices -> ``[..., 2]`` centres in [-1, 1]."""
        return self.locations().to(index.device)[index]

    def nearest_index(self, locations: Tensor) -> Tensor:
        """``[..., 2]`` locations in [-1, 1] -> ``[...]`` index of the cell with the nearest centre."""
        _check_locations(locations)
        grid = self.locations().to(locations.device)  # [G, 2]
        d = (locations[..., None, :].float() - grid).square().sum(-1)  # [..., G]
        return d.argmin(-1)

    def corner_to_index(self, corners: Tensor) -> Tensor:
        """``[..., 2]`` top-left pixels that lie on the grid -> ``[...]`` cell indices (error otherwise)."""
        rows = torch.tensor(self.rows, device=corners.device)
        cols = torch.tensor(self.cols, device=corners.device)
        i = (corners[..., 0, None] == rows).long()
        j = (corners[..., 1, None] == cols).long()
        if (i.sum(-1) != 1).any() or (j.sum(-1) != 1).any():
            bad = corners[(i.sum(-1) != 1) | (j.sum(-1) != 1)][0].tolist()
            raise ValueError(f"corner {bad}: expected a top-left pixel on the grid rows {self.rows[:3]}... "
                             f"cols {self.cols[:3]}..., found one off the grid")
        return i.argmax(-1) * len(self.cols) + j.argmax(-1)


def cell_masks(grid: LocationGrid, device: Optional[torch.device] = None) -> Tensor:
    """``[G, 1, H, W]`` float masks of the pixels each grid cell's glimpse sees (row-major cells)."""
    H, W = grid.image_size
    corners = grid.corners().to(device)  # [G, 2]
    rows = torch.arange(H, device=device)
    cols = torch.arange(W, device=device)
    in_r = (rows >= corners[:, :1]) & (rows < corners[:, :1] + grid.glimpse_size)  # [G, H]
    in_c = (cols >= corners[:, 1:]) & (cols < corners[:, 1:] + grid.glimpse_size)  # [G, W]
    return (in_r[:, :, None] & in_c[:, None, :])[:, None].float()
