"""An image bank on disk: the empirical image distribution that stochastic image completion draws from.

The paper's bank is 1.5 M GAN samples (plus their horizontal flips); here any source works: a
dataset's training images (:meth:`ImageBank.build`), a generator callable (:meth:`ImageBank.from_generator`),
or a tensor (:meth:`ImageBank.from_tensor`, in memory, for tests and small problems).

On disk a bank is two files::

    bank.npy    [N, C, H, W] uint8 (pixel * 255, rounded) or float16 (pixel), a plain .npy (no pickles)
    bank.json   {"format": "foveal-image-bank", "version": 1, "shape": [N, C, H, W], "dtype": "uint8",
                 "flips": true, "source": "fashion-mnist/train"}

:meth:`ImageBank.open` memory-maps the ``.npy`` (``np.load(mmap_mode="r", allow_pickle=False)``), so a bank
larger than memory is read lazily. Horizontal flips are *virtual*: with ``flips`` the bank has ``2N``
images, image ``N + i`` being image ``i`` mirrored left-right; nothing extra is stored.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Iterator, Optional

import numpy as np
import torch
from torch import Tensor

__all__ = ["ImageBank"]

_FORMAT, _VERSION = "foveal-image-bank", 1
_SCALES = {"uint8": 255.0, "float16": 1.0}


def sidecar_path(path: Path) -> Path:
    return path.with_suffix(".json")


class ImageBank:
    """``len(bank)`` images ``[C, H, W]`` in [0, 1], stored as an ``[N, C, H, W]`` array, plus virtual flips.

    Args:
        array: ``[N, C, H, W]`` uint8 (pixel * 255) or float16 (pixel); may be a memory map.
        flips: also serve the N mirrored images as indices ``N..2N-1``.
        source: where the images came from (kept in the sidecar).
    """

    def __init__(self, array: np.ndarray, *, flips: bool = False, source: str = "") -> None:
        if array.ndim != 4 or str(array.dtype) not in _SCALES:
            raise ValueError(f"ImageBank: expected an [N, C, H, W] array of dtype {sorted(_SCALES)}, "
                             f"found shape {array.shape} dtype {array.dtype}")
        self.array = array
        self.flips = bool(flips)
        self.source = source
        self.scale = _SCALES[str(array.dtype)]

    @property
    def stored(self) -> int:
        """N, the number of stored (unflipped) images."""
        return self.array.shape[0]

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(int(v) for v in self.array.shape[1:])

    def __len__(self) -> int:
        return self.stored * (2 if self.flips else 1)

    # ----------------------------------------------------------------------------------------- making
    @classmethod
    def from_tensor(cls, images: Tensor, *, flips: bool = False, dtype: str = "float16", source: str = "tensor") -> "ImageBank":
        """An in-memory bank from ``[N, C, H, W]`` images in [0, 1]."""
        return cls(_encode(images, dtype), flips=flips, source=source)

    @classmethod
    def from_generator(cls, generate: Callable[[int], Tensor], count: int, path: str | Path, *,
                       batch_size: int = 256, flips: bool = False, dtype: str = "uint8",
                       source: str = "generator") -> "ImageBank":
        """Write ``count`` images from ``generate(b) -> [b, C, H, W]`` (in [0, 1]) to ``path`` and open it."""
        def batches() -> Iterator[Tensor]:
            done = 0
            while done < count:
                b = min(batch_size, count - done)
                images = generate(b)
                if images.shape[0] != b:
                    raise ValueError(f"generate({b}): expected {b} images, found {images.shape[0]}")
                done += b
                yield images
        return cls._write(batches(), count, path, flips=flips, dtype=dtype, source=source)

    @classmethod
    def build(cls, dataset, path: str | Path, *, flips: bool = True, dtype: str = "uint8",
              limit: Optional[int] = None, source: Optional[str] = None) -> "ImageBank":
        """Write the images of a dataset (items ``{"image": [C, H, W], ...}``) to ``path`` and open it.

        Args:
            limit: keep only the first ``limit`` images.
            source: recorded in the sidecar; default ``"<dataset.name>/<dataset.split>"``.
        """
        count = len(dataset) if limit is None else min(limit, len(dataset))
        name = source or f"{getattr(dataset, 'name', type(dataset).__name__)}/{getattr(dataset, 'split', '?')}"
        def batches(size: int = 256) -> Iterator[Tensor]:
            for s in range(0, count, size):
                yield torch.stack([dataset[i]["image"] for i in range(s, min(s + size, count))])
        return cls._write(batches(), count, path, flips=flips, dtype=dtype, source=name)

    @classmethod
    def _write(cls, batches: Iterator[Tensor], count: int, path: str | Path, *, flips: bool, dtype: str,
               source: str) -> "ImageBank":
        if dtype not in _SCALES:
            raise ValueError(f"ImageBank dtype: expected one of {sorted(_SCALES)}, found {dtype!r}")
        if count < 1:
            raise ValueError(f"ImageBank: expected at least one image, found count={count}")
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        out = None
        done = 0
        for images in batches:
            if out is None:
                out = np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=(count, *images.shape[1:]))
            if tuple(images.shape[1:]) != out.shape[1:]:
                raise ValueError(f"{path}: expected every image of shape {out.shape[1:]}, found {tuple(images.shape[1:])} "
                                 f"at image {done}")
            out[done:done + images.shape[0]] = _encode(images, dtype)
            done += images.shape[0]
        out.flush()
        meta = {"format": _FORMAT, "version": _VERSION, "shape": list(out.shape), "dtype": dtype, "flips": bool(flips),
                "source": source}
        sidecar_path(path).write_text(json.dumps(meta, indent=1))
        del out
        return cls.open(path)

    @classmethod
    def open(cls, path: str | Path) -> "ImageBank":
        """Memory-map a bank written by :meth:`build` / :meth:`from_generator` (``.npy`` + ``.json`` sidecar)."""
        path = Path(path)
        meta_path = sidecar_path(path)
        for p in (path, meta_path):
            if not p.exists():
                raise FileNotFoundError(f"{p}: image bank file not found (a bank is <name>.npy + <name>.json)")
        meta = json.loads(meta_path.read_text())
        if meta.get("format") != _FORMAT:
            raise ValueError(f"{meta_path}: field 'format': expected {_FORMAT!r}, found {meta.get('format')!r}")
        array = np.load(path, mmap_mode="r", allow_pickle=False)
        if list(array.shape) != meta["shape"] or str(array.dtype) != meta["dtype"]:
            raise ValueError(f"{path}: expected shape {meta['shape']} dtype {meta['dtype']} (from {meta_path.name}), "
                             f"found shape {list(array.shape)} dtype {array.dtype}")
        return cls(array, flips=meta["flips"], source=meta.get("source", ""))

    # ---------------------------------------------------------------------------------------- reading
    def images(self, indices: Tensor) -> Tensor:
        """``[n]`` bank indices (flips included) -> float32 ``[n, C, H, W]`` in [0, 1]."""
        idx = indices.long().cpu()
        if idx.numel() and (idx.min() < 0 or idx.max() >= len(self)):
            raise IndexError(f"ImageBank.images: expected indices in [0, {len(self)}), found {idx.min()}..{idx.max()}")
        base = (idx % self.stored).numpy()
        order = np.argsort(base, kind="stable")  # sorted reads are kinder to a memory map
        out = np.empty((len(base), *self.array.shape[1:]), dtype=np.float32)
        out[order] = self.array[base[order]]
        images = torch.from_numpy(out).div_(self.scale)
        flipped = idx >= self.stored
        images[flipped] = images[flipped].flip(-1)
        return images

    def regions(self, indices: Tensor, corner: tuple[int, int], size: int) -> Tensor:
        """``[n]`` bank indices -> float32 ``[n, C * size * size]``: their ``size x size`` regions at ``corner``."""
        idx = indices.long().cpu()
        r, c = corner
        W = self.array.shape[3]
        out = torch.empty(idx.shape[0], self.array.shape[1], size, size)
        for flipped in (False, True):
            rows = (idx >= self.stored) if flipped else (idx < self.stored)
            if not rows.any():
                continue
            cols = slice(W - c - size, W - c) if flipped else slice(c, c + size)  # mirrored region, see region_chunks
            base = (idx[rows] % self.stored).numpy()
            block = torch.from_numpy(np.asarray(self.array[base, :, r:r + size, cols], dtype=np.float32))
            out[rows] = block.flip(-1) if flipped else block
        return out.div_(self.scale).flatten(1)

    def region_chunks(self, corner: tuple[int, int], size: int, chunk: int = 4096) -> Iterator[tuple[int, Tensor]]:
        """Every bank image's ``size x size`` region at top-left ``corner``, in index order.

        Yields:
            ``(start, regions [b, C * size * size])`` float32, for indices ``start..start + b - 1``.
        """
        r, c = corner
        W = self.array.shape[3]
        for flipped in ((False, True) if self.flips else (False,)):
            # The region of a mirrored image is the mirror of the region at the mirrored columns.
            cols = slice(W - c - size, W - c) if flipped else slice(c, c + size)
            for s in range(0, self.stored, chunk):
                block = np.asarray(self.array[s:s + chunk, :, r:r + size, cols], dtype=np.float32)
                regions = torch.from_numpy(block).div_(self.scale)
                if flipped:
                    regions = regions.flip(-1)
                yield s + (self.stored if flipped else 0), regions.flatten(1)


def _encode(images: Tensor, dtype: str) -> np.ndarray:
    """float ``[N, C, H, W]`` in [0, 1] -> the storage dtype."""
    x = images.detach().float().clamp(0, 1).cpu()
    if dtype == "uint8":
        return x.mul(255).round().to(torch.uint8).numpy()
    if dtype == "float16":
        return x.half().numpy()
    raise ValueError(f"ImageBank dtype: expected one of {sorted(_SCALES)}, found {dtype!r}")
