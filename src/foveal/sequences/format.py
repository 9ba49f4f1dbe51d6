"""The glimpse-sequence file: where to look, per image of a dataset split, T glimpses each.

A :class:`GlimpseSequences` holds, for ``N`` images of one split, the top-left pixel (row, col) of each
of their ``T`` glimpses, the convention of the released near-optimal glimpse sequences. Glimpse
models take centres in ``[-1, 1]`` instead (:mod:`foveal.retina`); :meth:`GlimpseSequences.locations`
converts (``top_left(locations(), image_size, glimpse_size) == corners`` exactly), and
:meth:`GlimpseSequences.lookup` maps a batch's ``index`` field to ``[B, T, 2]`` locations with NaN rows
for images without a sequence, which is RAM's ``forced_locations`` contract.

On disk a file ``<path>`` is two files, written atomically (temporary name + ``os.replace``), the
tensors first and the JSON last; the JSON records the SHA-256 of the tensors it belongs with.

``<path>.json`` (format ``foveal-glimpse-sequences``, version 1):

===================  =======================  ==================================================
field                type                     meaning
===================  =======================  ==================================================
``format``           str                      ``"foveal-glimpse-sequences"``
``version``          int                      1
``dataset``          str                      name for ``foveal.data.build_dataset``
``split``            str                      the split ``indices`` refer to
``image_size``       [H, W]                   image size in pixels
``glimpse_size``     int                      glimpse side in pixels (finest scale)
``num_sequences``    int                      N
``num_glimpses``     int                      T
``grid``             null or {image_size,     the allowed positions (``LocationGrid``); every
                     glimpse_size, rows,      corner then lies on it
                     cols}
``ids``              null or [N] str          item ids (folder datasets' ``image_id``)
``task``             null or str              e.g. a CelebA attribute; checked against the dataset's
                                              ``task`` on use; null = not recorded
``method``           str                      ``nogs``, ``ps-ram``, ``random``, ``imported``, ...
``provenance``       object                   how they were made (config, checkpoint, seed, timing;
                                              imports: the released folder's layout)
``tensors_file``     str                      name of the safetensors file
``tensors_sha256``   str                      its SHA-256
===================  =======================  ==================================================

``<path>.safetensors``: ``indices`` int64 ``[N]`` (positions in the split), ``corners`` int64
``[N, T, 2]`` (top-left row, col; every glimpse lies inside the image), and optionally ``epe_maps``
float32 ``[N, T, grid_h, grid_w]`` (expected posterior entropy of every cell at every step, NaN where
not computed; needs ``grid``). Indices are unique.

Checked on use: :meth:`GlimpseSequences.validate` compares a file with the built split (name, split,
image size, index range, ids, and ``task`` against the dataset's ``task``, e.g. the CelebA attribute: a
file made for another attribute is refused). A split that holds another at a known offset
(``dataset.contains_splits``: CelebA-HQ's ``annotate+train`` holds ``annotate`` at 0) accepts that
split's files; :meth:`GlimpseSequences.aligned_to` moves their indices into it.

The released text format (:mod:`foveal.sequences.official`): one file per image,
T lines ``r, c``; see those functions.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

import torch
from safetensors.torch import load as load_tensors
from safetensors.torch import save as save_tensors
from torch import Tensor

from foveal.checkpoint import checkpoint_paths
from foveal.data.base import DataError
from foveal.files import atomic_write
from foveal.retina import LocationGrid

__all__ = ["FORMAT", "VERSION", "PathLike", "GlimpseSequences", "sequence_paths"]

FORMAT = "foveal-glimpse-sequences"
VERSION = 1
PathLike = Union[str, os.PathLike]


def sequence_paths(path: PathLike) -> tuple[Path, Path]:
    """``out/seqs``, ``out/seqs.json`` or ``out/seqs.safetensors`` -> ``(seqs.json, seqs.safetensors)``: the
    same pair of files as a checkpoint's (:func:`foveal.checkpoint.checkpoint_paths`), JSON first."""
    tensors, meta = checkpoint_paths(path)
    return meta, tensors


def _grid_to_json(grid: Optional[LocationGrid]) -> Optional[dict[str, Any]]:
    if grid is None:
        return None
    return {"image_size": list(grid.image_size), "glimpse_size": grid.glimpse_size, "rows": list(grid.rows),
            "cols": list(grid.cols)}


def _grid_from_json(value: Any, where: str) -> Optional[LocationGrid]:
    if value is None:
        return None
    try:
        return LocationGrid(tuple(value["image_size"]), int(value["glimpse_size"]), tuple(value["rows"]),
                            tuple(value["cols"]))
    except (KeyError, TypeError, ValueError) as err:
        raise DataError(f"{where}: field 'grid': expected {{image_size, glimpse_size, rows, cols}} of a valid "
                        f"LocationGrid, found {value!r} ({err})") from None


_COMPARED = ("dataset", "split", "image_size", "glimpse_size", "grid", "ids", "task", "method", "provenance")


@dataclass(eq=False)
class GlimpseSequences:
    """T glimpses for each of N images of a dataset split; see the module docstring for the fields.

    Attributes:
        indices: int64 ``[N]``, unique positions in the split.
        corners: int64 ``[N, T, 2]``, top-left (row, col) of every glimpse.
        epe_maps: float32 ``[N, T, grid_h, grid_w]`` or None.
        source: the file this was loaded from (used in error messages; not saved).
    """

    dataset: str
    split: str
    image_size: tuple[int, int]
    glimpse_size: int
    indices: Tensor
    corners: Tensor
    grid: Optional[LocationGrid] = None
    ids: Optional[list[str]] = None
    task: Optional[str] = None
    method: str = "unknown"
    epe_maps: Optional[Tensor] = None
    provenance: dict = field(default_factory=dict)
    source: Optional[str] = field(default=None, repr=False)

    def __post_init__(self) -> None:
        where = self.source or "GlimpseSequences"

        def bad(name: str, expected: str, found: Any) -> DataError:
            return DataError(f"{where}: field {name!r}: expected {expected}, found {found}")

        self.image_size = tuple(int(v) for v in self.image_size)
        self.glimpse_size = int(self.glimpse_size)
        if len(self.image_size) != 2 or min(self.image_size) < 1:
            raise bad("image_size", "(H, W) positive", self.image_size)
        H, W = self.image_size
        if not 1 <= self.glimpse_size <= min(H, W):
            raise bad("glimpse_size", f"in [1, {min(H, W)}] (fits the image)", self.glimpse_size)
        for name in ("indices", "corners"):
            t = getattr(self, name)
            if not isinstance(t, Tensor) or t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
                raise bad(name, "an integer tensor", getattr(t, "dtype", type(t).__name__))
            setattr(self, name, t.detach().cpu().long())
        if self.indices.dim() != 1:
            raise bad("indices", "shape [N]", list(self.indices.shape))
        N = self.indices.shape[0]
        c_shape = tuple(self.corners.shape)
        if len(c_shape) != 3 or c_shape[0] != N or c_shape[2] != 2 or c_shape[1] < 1:
            raise bad("corners", f"shape [{N}, T >= 1, 2]", list(self.corners.shape))
        if N and self.indices.min() < 0:
            raise bad("indices", "non-negative positions", int(self.indices.min()))
        if self.indices.unique().shape[0] != N:
            raise bad("indices", "unique values", f"{N - self.indices.unique().shape[0]} duplicates")
        limit = torch.tensor([H - self.glimpse_size, W - self.glimpse_size])
        outside = ((self.corners < 0) | (self.corners > limit)).any(-1)  # [N, T]
        if outside.any():
            n, t = (int(v) for v in outside.nonzero()[0])
            raise bad("corners", f"top-left pixels in [0, {H - self.glimpse_size}] x [0, {W - self.glimpse_size}] "
                      f"(the glimpse inside the image)",
                      f"{self.corners[n, t].tolist()} at image {int(self.indices[n])} glimpse {t}")
        if self.grid is not None:
            if self.grid.image_size != self.image_size or self.grid.glimpse_size != self.glimpse_size:
                raise bad("grid", f"image_size {self.image_size}, glimpse_size {self.glimpse_size}",
                          f"{self.grid.image_size}, {self.grid.glimpse_size}")
            try:
                self.grid.corner_to_index(self.corners)
            except ValueError as err:
                raise bad("corners", "top-left pixels on the grid", str(err)) from None
        if self.ids is not None:
            self.ids = [str(i) for i in self.ids]
            if len(self.ids) != N:
                raise bad("ids", f"{N} ids (one per sequence)", len(self.ids))
        if self.epe_maps is not None:
            if self.grid is None:
                raise bad("epe_maps", "a grid (the maps are over its cells)", "grid=None")
            shape = [N, self.corners.shape[1], *self.grid.shape]
            if list(self.epe_maps.shape) != shape:
                raise bad("epe_maps", f"shape {shape}", list(self.epe_maps.shape))
            self.epe_maps = self.epe_maps.detach().cpu().float()

    # ------------------------------------------------------------------------------------------ derived
    @property
    def num_glimpses(self) -> int:
        return self.corners.shape[1]

    def __len__(self) -> int:
        return self.indices.shape[0]

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, GlimpseSequences):
            return NotImplemented
        same_maps = (self.epe_maps is None and other.epe_maps is None) or (
            self.epe_maps is not None and other.epe_maps is not None and self.epe_maps.shape == other.epe_maps.shape
            and torch.allclose(self.epe_maps, other.epe_maps, rtol=0, atol=0, equal_nan=True))
        return (same_maps and torch.equal(self.indices, other.indices) and self.corners.shape == other.corners.shape
                and torch.equal(self.corners, other.corners)
                and all(getattr(self, k) == getattr(other, k) for k in _COMPARED))

    def locations(self) -> Tensor:
        """float32 ``[N, T, 2]`` glimpse centres in [-1, 1] (row, col) whose ``top_left`` is ``corners``."""
        hw = torch.tensor(self.image_size, dtype=torch.float64)
        return ((self.corners.double() + self.glimpse_size / 2) / hw * 2 - 1).float()

    def spread(self) -> list[tuple[int, float]]:
        """How spread each step's glimpses are over the file's images: ``[(distinct places, entropy)]``
        per step, the entropy (nats) of the empirical distribution of that step's top-left corners.

        It bounds how well a policy can fit the sequences before it sees the image: the first location
        is chosen before any glimpse, so its negative log-likelihood averaged over these images is at
        least step 1's entropy (a policy fitting them all pays it; on a grid of G cells, uniform = ln G).
        """
        out = []
        for t in range(self.num_glimpses):
            _, counts = torch.unique(self.corners[:, t], dim=0, return_counts=True)
            p = counts.double() / counts.sum()
            out.append((int(counts.numel()), float(-(p * p.log()).sum()) + 0.0))
        return out

    def lookup(self, indices: Tensor) -> tuple[Tensor, Tensor]:
        """A batch's dataset indices ``[B]`` -> ``(locations [B, T, 2], has_sequence [B] bool)``.

        Rows of images without a sequence are NaN (RAM's ``forced_locations``: not forced). On the
        device of ``indices``.
        """
        query = indices.detach().long().cpu().flatten()
        out = torch.full((query.shape[0], self.num_glimpses, 2), float("nan"))
        has = torch.zeros(query.shape[0], dtype=torch.bool)
        if len(self):
            order = torch.argsort(self.indices)
            ordered = self.indices[order]
            pos = torch.searchsorted(ordered, query).clamp(max=len(self) - 1)  # [B]
            has = ordered[pos] == query
            out[has] = self.locations()[order[pos[has]]]
        return out.to(indices.device), has.to(indices.device)

    def subset(self, n_or_mask: Union[int, Tensor]) -> "GlimpseSequences":
        """The first ``n`` sequences, or the rows where a bool ``[N]`` mask is True (or int64 row positions)."""
        if isinstance(n_or_mask, int):
            rows = torch.arange(min(max(n_or_mask, 0), len(self)))
        elif n_or_mask.dtype == torch.bool:
            if n_or_mask.shape != (len(self),):
                raise ValueError(f"subset: expected a bool mask of shape ({len(self)},), "
                                 f"found {tuple(n_or_mask.shape)}")
            rows = n_or_mask.cpu().nonzero().flatten()
        else:
            rows = n_or_mask.cpu().long()
        return GlimpseSequences(
            self.dataset, self.split, self.image_size, self.glimpse_size, self.indices[rows], self.corners[rows],
            grid=self.grid, ids=None if self.ids is None else [self.ids[i] for i in rows.tolist()], task=self.task,
            method=self.method, epe_maps=None if self.epe_maps is None else self.epe_maps[rows],
            provenance=dict(self.provenance), source=self.source)

    # ---------------------------------------------------------------------------------------- datasets
    def validate(self, dataset: Any) -> None:
        """Check these sequences against the built split: name, split, size, length, ids and task.

        The split matches when it is the dataset's, or one the dataset holds inside itself at a known
        offset (``dataset.contains_splits``, e.g. CelebA-HQ's ``annotate+train`` holds ``annotate`` at 0);
        :meth:`aligned_to` then gives the indices in the dataset's split. The task matches when either
        side does not record one (``dataset.task``, e.g. the CelebA attribute; :meth:`made_for`).

        Raises:
            DataError: naming this file, the field, what the dataset has and what was found.
        """
        where = self.source or "GlimpseSequences"
        have = getattr(dataset, "name", None)
        if have is not None and have != self.dataset:
            raise DataError(f"{where}: field 'dataset': expected {have!r} (the dataset's), found {self.dataset!r}")
        offset = self._offset_in(dataset)
        if tuple(dataset.image_shape[1:]) != self.image_size:
            raise DataError(f"{where}: field 'image_size': expected {tuple(dataset.image_shape[1:])} (the dataset's "
                            f"images), found {self.image_size}")
        if len(self) and int(self.indices.max()) + offset >= len(dataset):
            raise DataError(f"{where}: field 'indices': expected positions < {len(dataset) - offset} (the split's size"
                            f"{f' past offset {offset}' if offset else ''}), found {int(self.indices.max())}")
        if self.ids is not None and hasattr(dataset, "image_id"):
            for i, got in zip(self.indices.tolist(), self.ids):
                if dataset.image_id(i + offset) != got:
                    raise DataError(f"{where}: field 'ids': expected {dataset.image_id(i + offset)!r} for index {i} "
                                    f"(the dataset's image_id), found {got!r}")
        want, made = getattr(dataset, "task", None), self.made_for(dataset)
        if want is not None and made is not None and made != want:
            raise DataError(f"{where}: field 'task': the sequences were made for {made!r}, the dataset "
                            f"{self.dataset}/{getattr(dataset, 'split', self.split)} is labelled by {want!r}; use "
                            f"sequences made for {want!r}, or label the data by {made!r}")

    def made_for(self, dataset: Any = None) -> Optional[str]:
        """The task the sequences were made for: ``task``, else the ``attribute`` data option of the
        annotator's config (``provenance.config.data_options``); None if neither is recorded. An
        attribute given by column index is named by ``dataset.attribute_names`` when there is one."""
        task = self.task
        if task is None:
            config = self.provenance.get("config") if isinstance(self.provenance, dict) else None
            options = config.get("data_options") if isinstance(config, dict) else None
            task = options.get("attribute") if isinstance(options, dict) else None
        if task is None:
            return None
        names = getattr(dataset, "attribute_names", None)
        if names is not None and str(task).isdigit() and int(task) < len(names):
            return names[int(task)]
        return str(task)

    def _offset_in(self, dataset: Any) -> int:
        """Where position 0 of this file's split lies in ``dataset``'s split (0 for the same split)."""
        have = getattr(dataset, "split", None)
        if have is None or have == self.split:
            return 0
        contained = getattr(dataset, "contains_splits", None) or {}
        if self.split in contained:
            return int(contained[self.split])
        hint = ""
        if self.dataset == "celeba-hq" and self.split == "annotate":
            hint = ("; to train on the annotated rows with their sequences (as the paper did), set the data option "
                    "include_annotate: true (train = annotate+train, rows 0 .. 26,999)")
        held = f" or a split it holds ({', '.join(map(repr, contained))})" if contained else ""
        raise DataError(f"{self.source or 'GlimpseSequences'}: field 'split': expected {have!r} (the dataset's)"
                        f"{held}, found {self.split!r}{hint}")

    def aligned_to(self, dataset: Any) -> "GlimpseSequences":
        """These sequences, validated, with ``split`` and ``indices`` those of ``dataset``'s split.

        Itself when the splits are the same; for a split the dataset holds at offset ``o``
        (``dataset.contains_splits``) a copy with indices ``+ o`` and the file's split recorded in
        ``provenance["aligned_from_split"]``. ``lookup`` on the result takes the dataset's indices.
        """
        self.validate(dataset)
        if getattr(dataset, "split", None) in (None, self.split):
            return self
        offset = self._offset_in(dataset)
        return GlimpseSequences(
            self.dataset, dataset.split, self.image_size, self.glimpse_size, self.indices + offset, self.corners,
            grid=self.grid, ids=None if self.ids is None else list(self.ids), task=self.task, method=self.method,
            epe_maps=self.epe_maps, provenance={**self.provenance, "aligned_from_split": self.split},
            source=self.source)

    # -------------------------------------------------------------------------------------------- files
    def save(self, path: PathLike) -> None:
        """Write ``<path>.safetensors`` then ``<path>.json``, each atomically (module docstring)."""
        json_path, st_path = sequence_paths(path)
        tensors = {"indices": self.indices.contiguous(), "corners": self.corners.contiguous()}
        if self.epe_maps is not None:
            tensors["epe_maps"] = self.epe_maps.contiguous()
        blob = save_tensors(tensors)
        header = {"format": FORMAT, "version": VERSION, "dataset": self.dataset, "split": self.split,
                  "image_size": list(self.image_size), "glimpse_size": self.glimpse_size,
                  "num_sequences": len(self), "num_glimpses": self.num_glimpses, "grid": _grid_to_json(self.grid),
                  "ids": self.ids, "task": self.task, "method": self.method, "provenance": self.provenance,
                  "tensors_file": st_path.name, "tensors_sha256": hashlib.sha256(blob).hexdigest()}
        try:
            text = json.dumps(header, indent=1)
        except TypeError as err:
            raise TypeError(f"{json_path}: provenance must be JSON-able: {err}") from None
        atomic_write(st_path, blob)
        atomic_write(json_path, text.encode())

    @classmethod
    def load(cls, path: PathLike, dataset: Any = None) -> "GlimpseSequences":
        """Read a file written by :meth:`save` (``path`` with or without suffix); check it (and against ``dataset``).

        Raises:
            FileNotFoundError: a file is missing.
            DataError: wrong format or version, a missing field, tensors that do not match the header.
        """
        json_path, st_path = sequence_paths(path)
        for p in (json_path, st_path):
            if not p.exists():
                raise FileNotFoundError(f"{p}: glimpse-sequence file not found (a file is <name>.json + "
                                        "<name>.safetensors)")
        try:
            header = json.loads(json_path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise DataError(f"{json_path}: not valid JSON ({err})") from None
        if not isinstance(header, dict) or header.get("format") != FORMAT:
            found = header.get("format") if isinstance(header, dict) else type(header).__name__
            raise DataError(f"{json_path}: field 'format': expected {FORMAT!r}, found {found!r}")
        if header.get("version") != VERSION:
            raise DataError(f"{json_path}: field 'version': expected {VERSION} (what this foveal reads), "
                            f"found {header.get('version')!r}")
        required = ("dataset", "split", "image_size", "glimpse_size", "num_sequences", "num_glimpses", "tensors_sha256")
        missing = [k for k in required if k not in header]
        if missing:
            raise DataError(f"{json_path}: field {missing[0]!r}: expected it in the header, found it missing")
        blob = st_path.read_bytes()
        if hashlib.sha256(blob).hexdigest() != header["tensors_sha256"]:
            raise DataError(f"{st_path}: field 'tensors_sha256': expected {header['tensors_sha256']} (from "
                            f"{json_path.name}), found another hash: the file is corrupt or was replaced")
        tensors = load_tensors(blob)
        for name in ("indices", "corners"):
            if name not in tensors:
                raise DataError(f"{st_path}: tensor {name!r}: expected it in the file, found only {sorted(tensors)}")
        shape = [header["num_sequences"], header["num_glimpses"], 2]
        if list(tensors["corners"].shape) != shape:
            raise DataError(f"{st_path}: tensor 'corners': expected shape {shape} (from {json_path.name}), found "
                            f"{list(tensors['corners'].shape)}")
        seqs = cls(header["dataset"], header["split"], tuple(header["image_size"]), header["glimpse_size"],
                   tensors["indices"], tensors["corners"], grid=_grid_from_json(header.get("grid"), str(json_path)),
                   ids=header.get("ids"), task=header.get("task"), method=header.get("method", "unknown"),
                   epe_maps=tensors.get("epe_maps"), provenance=header.get("provenance") or {}, source=str(json_path))
        if dataset is not None:
            seqs.validate(dataset)
        return seqs

    @staticmethod
    def merge(parts: list["GlimpseSequences"]) -> "GlimpseSequences":
        """Shards of one task -> one set, sorted by index. Everything but the rows must agree.

        Provenance: the parts' if they are all equal, else ``{"parts": [each part's provenance]}``.
        """
        if not parts:
            raise ValueError("merge: expected at least one GlimpseSequences, found none")
        first = parts[0]
        for p in parts[1:]:
            for name in ("dataset", "split", "image_size", "glimpse_size", "num_glimpses", "grid", "task", "method"):
                if getattr(p, name) != getattr(first, name):
                    raise DataError(f"{p.source or 'part'}: field {name!r}: expected {getattr(first, name)!r} (as in "
                                    f"{first.source or 'the first part'}), found {getattr(p, name)!r}")
            for name in ("ids", "epe_maps"):
                if (getattr(p, name) is None) != (getattr(first, name) is None):
                    raise DataError(f"{p.source or 'part'}: field {name!r}: expected every part to have it or none, "
                                    f"found a mix")
        indices = torch.cat([p.indices for p in parts])
        order = torch.argsort(indices)
        dup = indices[order][1:] == indices[order][:-1]
        if dup.any():
            raise DataError(f"merge: field 'indices': expected disjoint parts, found index "
                            f"{int(indices[order][1:][dup][0])} in two parts")
        ids = None if first.ids is None else [i for p in parts for i in p.ids]
        provenances = [p.provenance for p in parts]
        provenance = first.provenance if all(p == provenances[0] for p in provenances) else {"parts": provenances}
        return GlimpseSequences(
            first.dataset, first.split, first.image_size, first.glimpse_size, indices[order],
            torch.cat([p.corners for p in parts])[order], grid=first.grid,
            ids=None if ids is None else [ids[i] for i in order.tolist()], task=first.task, method=first.method,
            epe_maps=None if first.epe_maps is None else torch.cat([p.epe_maps for p in parts])[order],
            provenance=provenance)

