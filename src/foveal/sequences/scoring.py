"""How good sets of glimpse sequences are, judged fairly: by a network that did not choose them, image by image,
with paired confidence intervals.

A sequence set chosen with one posterior looks best to that same posterior; the score that counts is another
network's (trained separately, e.g. another seed or architecture). :func:`compare_sequences` scores several
files on the images they all hold and pairs every file with the first: per-image differences of accuracy
after T glimpses, and of accuracy and entropy averaged over t = 1..T, with 95 % percentile-bootstrap
intervals over images (:func:`paired_bootstrap`). ``foveal sequences score`` prints it.

The network comes in as a :data:`Scorer`, ``scorer(items, grid, cells) -> curves``: the accuracy, entropy and
cross-entropy after t = 0..T glimpses at ``cells [K, T]`` of each item. The scorers are evaluation code
(they run networks), :mod:`foveal.evaluation.sequence_quality`: a posterior network reading the glimpsed
pixels (:func:`~foveal.evaluation.sequence_quality.per_image_curves`) or a glimpse network forced to look at
the cells (:func:`~foveal.evaluation.sequence_quality.glimpse_model_curves`);
:func:`~foveal.evaluation.sequence_quality.network_scorer` picks one for a model.
"""

from __future__ import annotations

from typing import Callable, Optional, Sequence

import torch
from torch import Tensor
from torch.utils.data import Dataset, Subset

from foveal.retina import LocationGrid
from foveal.sequences.format import GlimpseSequences

__all__ = ["Scorer", "paired_bootstrap", "compare_sequences"]

# (items [K], grid, cells [K, T] int64) -> {"accuracy", "entropy", "ce"}, each [K, T + 1] float64
Scorer = Callable[[Dataset, LocationGrid, Tensor], dict[str, Tensor]]


def paired_bootstrap(diff: Tensor, *, resamples: int = 10_000, seed: int = 0) -> dict:
    """Mean of per-image differences ``diff [K]`` and its 95 % percentile-bootstrap interval over images."""
    if diff.dim() != 1 or diff.numel() < 2:
        raise ValueError(f"diff: expected [K] differences of K >= 2 images, found {list(diff.shape)}")
    g = torch.Generator().manual_seed(seed)
    means = diff.double()[torch.randint(diff.numel(), (resamples, diff.numel()), generator=g)].mean(1)
    lo, hi = torch.quantile(means, torch.tensor([0.025, 0.975], dtype=torch.float64)).tolist()
    return {"mean": float(diff.double().mean()), "ci95": [lo, hi], "contains_0": lo <= 0 <= hi}


def _shared_images(files: Sequence[GlimpseSequences], num_glimpses: Optional[int]) -> tuple[list[int], int]:
    """The positions every file holds (ascending) and T, after checking that the files compare."""
    if not files:
        raise ValueError("files: expected at least one sequence file")
    first = files[0]
    for f in files[1:]:
        if (f.dataset, f.split, f.grid) != (first.dataset, first.split, first.grid):
            raise ValueError(f"{f.source}: made for {f.dataset}/{f.split} on another grid than {first.source} "
                             f"({first.dataset}/{first.split}); only sequences of the same images and cells compare")
    if first.grid is None:
        raise ValueError(f"{first.source}: expected a file with a grid (cells to score), found none")
    T = min(f.num_glimpses for f in files) if num_glimpses is None else num_glimpses
    if T < 1 or any(f.num_glimpses < T for f in files):
        raise ValueError(f"num_glimpses: expected 1..{min(f.num_glimpses for f in files)}, found {T}")
    common = set(first.indices.tolist())
    for f in files[1:]:
        common &= set(f.indices.tolist())
    images = sorted(common)
    if len(images) < 2:
        raise ValueError(f"the files share {len(images)} image(s); at least 2 are needed to pair them")
    return images, T


def _cells(seqs: GlimpseSequences, images: list[int], T: int) -> Tensor:
    """``[K, T]`` cell indices of ``seqs``' first T glimpses on ``images`` (positions it holds)."""
    row = {int(i): r for r, i in enumerate(seqs.indices.tolist())}
    corners = seqs.corners[[row[i] for i in images], :T]  # [K, T, 2]
    return seqs.grid.corner_to_index(corners.reshape(-1, 2)).view(len(images), T)


def compare_sequences(scorer: Scorer, dataset: Dataset, files: Sequence[GlimpseSequences], *,
                      num_glimpses: Optional[int] = None, resamples: int = 10_000) -> dict:
    """Score sequence files with ``scorer`` on the images all of them hold; pair each with the first.

    Args:
        scorer: a network's curves along given cells (module docstring).
        dataset: the split the files belong to (items ``{"image", "label", ...}``).
        files: sequences of the same split and grid.
        num_glimpses: score the first T glimpses (default: the shortest file's).

    Returns:
        The curves averaged over the K images (``*_mean`` also over t = 1..T), as::

            {"images": K, "num_glimpses": T,
             "files": [{"source", "method", "accuracy" [T + 1], "entropy", "ce", "accuracy_after_T",
                        "accuracy_mean", "entropy_mean",
                        "vs_first": {"accuracy_after_T", "accuracy_mean", "entropy_mean"} or None}]}
    """
    images, T = _shared_images(files, num_glimpses)
    subset, grid = Subset(dataset, images), files[0].grid
    scored = [scorer(subset, grid, _cells(f, images, T)) for f in files]
    out = []
    q0 = scored[0]
    for k, (f, q) in enumerate(zip(files, scored)):
        entry = {"source": str(f.source), "method": f.method,
                 **{k: v.mean(0).tolist() for k, v in q.items()},
                 "accuracy_after_T": float(q["accuracy"][:, -1].mean()),
                 "accuracy_mean": float(q["accuracy"][:, 1:].mean()),
                 "entropy_mean": float(q["entropy"][:, 1:].mean()), "vs_first": None}
        if k > 0:
            entry["vs_first"] = {
                "accuracy_after_T": paired_bootstrap(q["accuracy"][:, -1] - q0["accuracy"][:, -1], resamples=resamples),
                "accuracy_mean": paired_bootstrap(q["accuracy"][:, 1:].mean(1) - q0["accuracy"][:, 1:].mean(1),
                                                  resamples=resamples),
                "entropy_mean": paired_bootstrap(q["entropy"][:, 1:].mean(1) - q0["entropy"][:, 1:].mean(1),
                                                 resamples=resamples)}
        out.append(entry)
    return {"images": len(images), "num_glimpses": T, "files": out}
