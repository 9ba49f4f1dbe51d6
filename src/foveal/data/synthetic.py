"""Translated and cluttered variants of a base dataset (Mnih et al. 2014, "Recurrent Models of Visual Attention").

``translated-<base>``
    Each base image (``h x w``, e.g. 28x28) is placed at a uniformly random position
    ``top in [0, canvas - h]``, ``left in [0, canvas - w]`` on a zero ``canvas x canvas`` image
    (option ``canvas``, default 60; 100 as in the paper's larger task works too).

``cluttered-<base>``
    The translated image plus ``clutter`` pieces of ``piece x piece`` pixels (default 8), each cut at a
    uniformly random position from a uniformly random OTHER image of the same split of the base, and
    pasted at a uniformly random position on the canvas. The default count follows the paper's two
    settings, 4 pieces on 60x60 and 8 on 100x100, and grows linearly with the canvas area in between
    and beyond: ``clutter = round(4 + (canvas**2 - 3600) / 1600)``.

    Pieces are combined with the canvas by a pixel-wise **max**: clutter may brighten the background
    inside the object's box but never darkens (erases) a stroke of the object, and overlapping pieces
    do not cut each other either. (The paper does not say how pieces combine; max keeps the label's
    evidence intact, which is what a "cluttered" benchmark means to test.)

Any base with images no larger than the canvas works (``translated-mnist5k``, ``cluttered-fashion-mnist``,
``cluttered-imagefolder`` with ``image_size=28``, ...); options other than ``canvas``, ``clutter`` and
``piece`` go to the base. Labels, classes and split membership are the base's; item ``i`` is built from
base item ``i``.

Randomness is per item: the draws for item ``index`` come from
``PCG64(SeedSequence([seed, split_id, index]))`` (``split_id``: train 0, val 1, test 2, annotate 3) as raw
64-bit words mapped to ``[0, n)`` by ``(word * n) >> 64``, in the order object (top, left), then per piece
(source image, source top, source left, target top, target left). SeedSequence and the PCG64 bit stream are
fixed by numpy, so an item is identical on every machine; nothing is precomputed, each item is drawn when
it is first read. A batch (:meth:`PlacedDataset.load_batch`, what a ``DataLoader`` asks for) is made at once,
with the same draws and pixels as the items one by one. On a base of bytes (``bytes_exact``: the built-in
MNIST and Fashion-MNIST sets) an item is then kept as its bytes, ``C x canvas x canvas`` of them (216 MB
for the 60,000 items of a 60x60 training split once every item has been read), and read back from them bit
for bit: every epoch after the first costs a gather instead of a generation (measured: a batch of 128
cluttered 60x60 images through the engine's DataLoader, collating included, 8 ms made and 2.8 ms read
back). A copy sent to a worker process goes without them. ``translated-X`` and ``cluttered-X`` with the
same seed place the object identically.
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import torch
from torch import Tensor

from foveal.data.base import SPLIT_IDS, DataError, FovealDataset, as_positive_int
from foveal.data.rng import pcg64_raw, uniform_below

DEFAULT_CANVAS, DEFAULT_PIECE = 60, 8


def default_clutter(canvas: int) -> int:
    """4 pieces on 60x60, 8 on 100x100 (Mnih et al. 2014), linear in the canvas area."""
    return max(0, round(4 + (canvas * canvas - 3600) / 1600))


class PlacedDataset(FovealDataset):
    """A base dataset's images placed on a larger zero canvas, optionally with clutter.

    Args:
        base: the dataset whose items are placed; its images are ``[C, h, w]`` with ``h, w <= canvas``.
        kind: ``"translated"`` or ``"cluttered"``.
        canvas: side of the square output image; items are ``[C, canvas, canvas]``.
        clutter: number of clutter pieces (``"cluttered"`` only); ``None`` = :func:`default_clutter`.
        piece: side of a square clutter piece, ``<= min(h, w)``.
        seed: non-negative int that, with the split and the index, fixes every random draw.
    """

    def __init__(self, base: FovealDataset, kind: str, *, canvas: int = DEFAULT_CANVAS,
                 clutter: Optional[int] = None, piece: int = DEFAULT_PIECE, seed: int = 0):
        if kind not in ("translated", "cluttered"):
            raise DataError(f"kind: expected 'translated' or 'cluttered', found {kind!r}")
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise DataError(f"seed: expected a non-negative int, found {seed!r}")
        self.base, self.kind, self.seed = base, kind, int(seed)
        self.canvas = as_positive_int(canvas, "canvas")
        c, h, w = base.image_shape
        if h > self.canvas or w > self.canvas:
            raise DataError(f"canvas: expected at least the {base.name} image size {h}x{w}, found {self.canvas}")
        if kind == "cluttered":
            self.piece = as_positive_int(piece, "piece")
            if self.piece > min(h, w):
                raise DataError(f"piece: expected at most the {base.name} image size {h}x{w}, found {self.piece}")
            self.clutter = default_clutter(self.canvas) if clutter is None else clutter
            if isinstance(self.clutter, bool) or not isinstance(self.clutter, (int, np.integer)) or self.clutter < 0:
                raise DataError(f"clutter: expected a non-negative int, found {clutter!r}")
            self.clutter = int(self.clutter)
            if self.clutter and len(base) < 2:
                raise DataError(f"{base.name} {base.split}: expected at least 2 images to cut clutter from "
                                f"other images, found {len(base)}")
        else:
            self.piece, self.clutter = 0, 0
        self.bytes_exact = base.bytes_exact  # the canvas and max-combined pieces hold base pixels only
        self._bytes: Optional[Tensor] = None  # [N, C, S, S] uint8, rows filled as they are first made
        self._made: Optional[Tensor] = None  # [N] bool
        self.name = f"{kind}-{base.name}"
        self.split = base.split
        self.labels = base.labels
        self.num_classes, self.class_names = base.num_classes, list(base.class_names)
        self.image_shape = (c, self.canvas, self.canvas)

    def _draws(self, indices: Sequence[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(top [B], left [B], pieces [B, clutter, 5])`` of items ``indices``; a piece is ``(source, src_top,
        src_left, top, left)``. The words of item ``i`` are ``PCG64(SeedSequence([seed, split_id, i]))``'s
        (module docstring), made for the whole batch at once by :func:`foveal.data.rng.pcg64_raw`."""
        _, h, w = self.base.image_shape
        n, s, p = len(self.base), self.canvas, self.piece
        index = np.asarray(indices, dtype=np.int64)
        entropy = np.stack([np.full_like(index, self.seed), np.full_like(index, SPLIT_IDS[self.split]), index], 1)
        words = pcg64_raw(entropy, 2 + 5 * self.clutter)  # [B, 2 + 5K]
        bounds = [s - h + 1, s - w + 1] + [n - 1, h - p + 1, w - p + 1, s - p + 1, s - p + 1] * self.clutter
        draws = uniform_below(words, np.array(bounds, dtype=np.uint64)[None])  # [B, 2 + 5K]
        pieces = draws[:, 2:].reshape(len(index), self.clutter, 5)
        pieces[:, :, 0] += pieces[:, :, 0] >= index[:, None]  # any image but this one
        return draws[:, 0], draws[:, 1], pieces

    def object_box(self, index: int) -> tuple[int, int, int, int]:
        """``(top, left, height, width)`` of the base image inside item ``index``'s canvas, in pixels."""
        top, left, _ = self._draws([self.check_index(index)])
        return int(top[0]), int(left[0]), self.base.image_shape[1], self.base.image_shape[2]

    def clutter_boxes(self, index: int) -> list[tuple[int, int, int, int, int]]:
        """``[(source_index, top, left, piece, piece), ...]``: where item ``index``'s clutter pieces were pasted."""
        pieces = self._draws([self.check_index(index)])[2][0]
        return [(int(src), int(t), int(l), self.piece, self.piece) for src, _, _, t, l in pieces]

    def __getstate__(self) -> dict:
        """Without the kept bytes (a worker process makes its own, instead of receiving hundreds of MB)."""
        return {**self.__dict__, "_bytes": None, "_made": None}

    def load_batch(self, indices: Sequence[int]) -> torch.Tensor:
        """``[B, C, S, S]``: the items :meth:`make_batch` makes, each made once on a base of bytes and read
        back from its kept bytes after that (module docstring), bit for bit the same floats."""
        if not self.bytes_exact or len(indices) == 0:
            return self.make_batch(indices)
        if self._bytes is None:
            self._bytes = torch.empty(len(self), *self.image_shape, dtype=torch.uint8)  # pages as they are written
            self._made = torch.zeros(len(self), dtype=torch.bool)
        rows = torch.as_tensor(indices, dtype=torch.int64)
        new = torch.unique(rows[~self._made[rows]])
        if len(new):
            self._bytes[new] = self.make_batch(new.tolist()).mul_(255.0).round_().to(torch.uint8)
            self._made[new] = True
        return self._bytes[rows].to(torch.float32).div_(255.0)  # as the base makes its floats from its bytes

    def make_batch(self, indices: Sequence[int]) -> torch.Tensor:
        """``[B, C, S, S]`` made at once: the object copied onto the zero canvas, then each clutter piece
        max-combined in order; one indexed copy per piece over the whole batch, no loop over items."""
        c, h, w = self.base.image_shape
        B, S, p = len(indices), self.canvas, self.piece
        canvas = torch.zeros(B, S, S, c)  # channels last: one advanced index per pixel
        if B == 0:
            return canvas.permute(0, 3, 1, 2)
        top, left, pieces = (torch.from_numpy(a) for a in self._draws(indices))
        b = torch.arange(B)[:, None, None]

        def pixels(t: Tensor, l: Tensor, height: int, width: int) -> tuple[Tensor, Tensor, Tensor]:
            """Index of the ``height x width`` boxes at ``(t, l)``: ``[B, height, width]`` by broadcasting."""
            return b, (t[:, None] + torch.arange(height))[:, :, None], (l[:, None] + torch.arange(width))[:, None, :]

        canvas[pixels(top, left, h, w)] = self.base.load_batch(list(indices)).permute(0, 2, 3, 1)
        for k in range(self.clutter):
            source, src_top, src_left, dst_top, dst_left = pieces[:, k].unbind(1)  # [B] each
            cut = self.base.load_crops(source.tolist(), src_top.tolist(), src_left.tolist(), p)  # [B, C, p, p]
            where = pixels(dst_top, dst_left, p, p)
            canvas[where] = torch.maximum(canvas[where], cut.permute(0, 2, 3, 1))  # clutter never erases the object
        return canvas.permute(0, 3, 1, 2).contiguous()

    def load(self, index: int) -> torch.Tensor:
        """One item by slices (cheaper than :meth:`load_batch`'s index tensors for a single image)."""
        top, left, pieces = (a[0].tolist() for a in self._draws([index]))
        c, h, w = self.base.image_shape
        p = self.piece
        image = torch.zeros(c, self.canvas, self.canvas)  # [C, S, S]
        image[:, top:top + h, left:left + w] = self.base[index]["image"]
        for source, src_top, src_left, dst_top, dst_left in pieces:
            cut = self.base[source]["image"][:, src_top:src_top + p, src_left:src_left + p]  # [C, p, p]
            region = image[:, dst_top:dst_top + p, dst_left:dst_left + p]
            region.copy_(torch.maximum(region, cut))  # max: clutter never erases the object
        return image
