r"""Partial supervision by glimpse sequences (Harvey et al. 2021, section 5, Eq. 8).

Some training images come with a *supervision sequence* :math:`l^i_{1:T}` (near-optimal, from a
trained policy, hand-crafted...: any file of :mod:`foveal.sequences`). The objective is the
joint log-likelihood of labels and sequences,

.. math::

    \mathcal{L} = \sum_{i \in \text{sup}} \log q_\phi(\theta^i, l^i_{1:T} \mid I^i)
                + \sum_{i \in \text{unsup}} \log q_\phi(\theta^i \mid I^i),

maximised as follows (the loss below is its negative, per image, averaged over the batch of B):

* **supervised image** (it has a sequence): the rollout is *forced* to the sequence's locations,
  and its loss is :math:`w_{ce}\,\mathrm{CE}(y_T, \theta) - w_{seq} \sum_t \log \pi(l_t \mid h_{t-1})`.
  The location network reads :math:`h_{t-1}` detached (stop-gradient 2 of :mod:`foveal.models.ram`)
  and the forced location is a constant (stop-gradient 1), so the sequence term reaches the location
  network only through the log-probability of the forced locations, and nothing else.
* **unsupervised image**: Mnih et al.'s hybrid loss, :class:`foveal.training.reinforce.Reinforce`
  (cross-entropy, REINFORCE with the learned baseline, baseline regression), on those images only.

So the classifier, core and glimpse network learn by cross-entropy on every image; the location
network by likelihood on supervised images and by REINFORCE on the others. The two groups are two
rollouts on the two halves of the batch (one forced, one sampled); a batch of only one kind runs one
rollout.

How a batch of B with n_sup supervised images weighs the terms (``weighting``):

* ``"official"`` (default), as the published trainer (``training-hard-attention/trainer.py``,
  docs/background.md): cross-entropy, baseline regression and REINFORCE are batch means over the B images
  (REINFORCE summed over the unsupervised images, divided by B; the baseline regressed on every image,
  the supervised ones under their forced rollout), and the sequence term is a SUM over the supervised
  images, :math:`w_{seq} \sum_{i \in sup} \sum_t -\log\pi(l^i_t)`: a supervised image weighs
  :math:`w_{seq}` whatever B is (B times a batch-mean term's weight).
* ``"per-example"``: the literal reading of Eq. 8 as a per-image average: every term is a batch mean,
  so a supervised image's sequence term weighs :math:`w_{seq} / B`, and the baseline is regressed on the
  unsupervised images only (foveal's weighting before the official one was read line by line).

Data-parallel training (:mod:`foveal.training.distributed`, R processes, each on B/R images of the
global batch): DDP averages the ranks' gradients, which keeps every batch-mean term (each rank's
terms are its images' sums divided by its B/R, and the mean over ranks of those is the global sum
divided by B). The official sequence term is a SUM: each rank's sum over its own supervised images,
averaged over the ranks, would be the global sum divided by R. So under R processes each rank's
sequence term is multiplied by R: the average over ranks is then
:math:`w_{seq} \sum_{i \in sup} \sum_t -\log\pi(l^i_t)` over the global batch, the one-process term,
and the logged ``sequence_term`` (a mean over ranks) is the one-process number too.

The logged ``sequence_nll`` is the mean sequence NLL over supervised images times their share
``n_sup / B`` under either weighting (so that curves compare across weightings); ``sequence_term`` is
that term's contribution to the loss. ``reinforce``, ``baseline_mse`` and ``entropy`` are each term's
contribution; ``ce`` and ``accuracy`` are over the whole batch.

Which images are supervised, and how many per batch. The batch's ``index`` field is looked up in the
file (:meth:`GlimpseSequences.lookup`); ``num_sequences`` keeps only the file's first n. By default
the engine's ordinary shuffle decides how many supervised images a batch holds (on average
``B * n_sup / N``; the paper's setting, e.g. 600 of 27,000 CelebA-HQ images). ``supervised_fraction
= f`` oversamples them instead. With ``oversampling="fixed"`` (default, the official trainer's
``--fixed_attention_prop``) :meth:`PartialSupervision.prepare` returns a :class:`FixedShareDataset`
whose batches hold exactly ``round(f * B)`` supervised images, drawn from an endless shuffle of them,
the rest from one of the others (:class:`~foveal.training.loop.FixedShareBatches`). With
``oversampling="repeat"`` it returns an :class:`OversampledDataset` in which every supervised image
appears ``k`` times per epoch (``k`` the integer making the share nearest ``f``), so a fraction
:math:`\approx f` of every batch is supervised *in expectation* (the count per batch is
hypergeometric). Both batchings are pure functions of seed and iteration, so runs resume exactly.

:meth:`PartialSupervision.prepare` also checks the sequences against the training set (dataset
name, split, image size, index range, ids, and the task: a file made for another CelebA attribute is
refused, naming both). The training entry point must call it: ``foveal train`` (``train_run``) and
``foveal compare`` do; a pipeline that does not gets only the per-batch checks (image size, grid), and
``supervised_fraction`` is then an error rather than silently ignored.

Released sequences. The released CelebA-HQ sequences cover rows 0-599, in foveal's ``annotate``
split; the official trainer trained on rows 0-26,999 (annotated rows included). Import them as a file
of the ``annotate`` split (``foveal sequences import ... --split annotate``) and train with the data
option ``include_annotate: true``: the training split is then ``annotate+train``, which holds
``annotate`` at offset 0 (``contains_splits``), so ``prepare`` accepts the file and looks its
sequences up at the same positions (:meth:`GlimpseSequences.aligned_to`). Built-in config:
``ps-nogs-celeba-hq-released``.

Grid models. On a model with a location grid (``ram-grid``) the forced locations must be cells of
that grid (RAM would otherwise snap them to the nearest cell silently): a file made on another grid
is an error, unless ``off_grid="snap"`` accepts the snapping.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import Dataset

from foveal.sequences import GlimpseSequences
from foveal.training import distributed
from foveal.training.base import ALGORITHMS, LossOutput, PolicyEvaluation
from foveal.training.loop import FixedShareBatches
from foveal.training.reinforce import Reinforce, ReinforceConfig

__all__ = ["PartialSupervisionConfig", "PartialSupervision", "FixedShareDataset", "OversampledDataset",
           "oversampling_repeats"]


WEIGHTINGS = ("official", "per-example")  # how the terms of Eq. 8 are weighed in a batch (module docstring)


def record_name(seqs: GlimpseSequences, n: int, t: int) -> str:
    """Where glimpse ``t`` of record ``n`` of a sequence file is, in words a user can find it by: the record
    and image, and for a file imported from the released text format, the text file and line it came from."""
    index = int(seqs.indices[n])
    image = f"image index {index}" + (f", id {seqs.ids[n]}" if seqs.ids else "")
    where = f"record {n} ({image}), glimpse {t} (both counted from 0)"
    released = seqs.provenance.get("released") if isinstance(seqs.provenance, dict) else None
    if isinstance(released, dict) and str(index) in (released.get("files") or {}):
        first_line = 2 if (released.get("layout") or {}).get("path_line") == "first" else 1
        folder = Path(str(seqs.provenance.get("imported_from", "")))
        where += f"; imported from {folder / released['files'][str(index)]}, line {first_line + t}"
    return where


@dataclass(frozen=True)
class PartialSupervisionConfig(ReinforceConfig):
    """Settings of :class:`PartialSupervision`: those of :class:`ReinforceConfig` (used for the
    unsupervised images and for evaluation) and the supervision's.

    Attributes:
        sequences: path of the glimpse-sequence file (``<name>`` or ``<name>.json``).
        sequence_weight: :math:`w_{seq}`, the weight of the sequences' negative log-likelihood.
        weighting: ``"official"`` (default): as the published trainer, the sequence term is a SUM over
            the supervised images (each weighs ``w_seq``, whatever the batch size) and the baseline is
            regressed on every image; ``"per-example"``: the literal per-example reading of Eq. 8, every
            term a batch mean (a supervised image's sequence term weighs ``w_seq / B``), the baseline
            regressed on unsupervised images only (module docstring).
        num_sequences: use only the file's first n sequences (None: all).
        supervised_fraction: oversample supervised images to this share of each batch (see the
            module docstring); None keeps the dataset's own share.
        oversampling: how ``supervised_fraction`` is reached: ``"fixed"`` (default), exactly
            ``round(f * B)`` supervised images in every batch, as the official trainer's
            ``--fixed_attention_prop``; ``"repeat"``: every supervised image repeated ``k`` times per epoch,
            a share ``f`` per batch in expectation (the README's 3k comparison was made so).
        off_grid: ``"error"`` or ``"snap"``: what to do when a grid model's grid does not hold the
            sequences' locations.
    """

    sequences: Optional[str] = None
    sequence_weight: float = 1.0
    weighting: str = "official"
    num_sequences: Optional[int] = None
    supervised_fraction: Optional[float] = None
    oversampling: str = "fixed"
    off_grid: str = "error"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.stop_cost is not None or self.ce_steps != "last":
            raise ValueError("PartialSupervisionConfig.stop_cost / ce_steps: the learned stop and the all-steps "
                             "cross-entropy are settings of the reinforce algorithm only; expected null / 'last', "
                             f"found {self.stop_cost!r} / {self.ce_steps!r}")
        if not isinstance(self.sequences, str) or not self.sequences:
            raise ValueError("PartialSupervisionConfig.sequences: expected the path of a glimpse-sequence file, "
                             f"found {self.sequences!r}")
        if not self.sequence_weight >= 0:
            raise ValueError(f"PartialSupervisionConfig.sequence_weight: expected >= 0, found {self.sequence_weight!r}")
        if self.num_sequences is not None and (isinstance(self.num_sequences, bool) or not isinstance(
                self.num_sequences, int) or self.num_sequences < 0):
            raise ValueError(f"PartialSupervisionConfig.num_sequences: expected None or an integer >= 0, "
                             f"found {self.num_sequences!r}")
        f = self.supervised_fraction
        if f is not None and not (isinstance(f, (int, float)) and 0 < f <= 1):
            raise ValueError(f"PartialSupervisionConfig.supervised_fraction: expected None or a number in (0, 1], "
                             f"found {f!r}")
        if self.weighting not in WEIGHTINGS:
            raise ValueError(f"PartialSupervisionConfig.weighting: expected one of {WEIGHTINGS}, found {self.weighting!r}")
        if self.oversampling not in ("fixed", "repeat"):
            raise ValueError(f"PartialSupervisionConfig.oversampling: expected 'fixed' or 'repeat', "
                             f"found {self.oversampling!r}")
        if self.off_grid not in ("error", "snap"):
            raise ValueError(f"PartialSupervisionConfig.off_grid: expected 'error' or 'snap', found {self.off_grid!r}")
        if self.train_policy != "sample":
            raise ValueError("PartialSupervisionConfig.train_policy: expected 'sample' (REINFORCE needs the model's "
                             f"own samples on unsupervised images), found {self.train_policy!r}")


def oversampling_repeats(num_supervised: int, num_unsupervised: int, fraction: float) -> int:
    """The ``k >= 1`` whose share ``k n_s / (n_u + k n_s)`` of supervised items is nearest ``fraction``
    (``n_u = 0`` or ``fraction = 1``: 1, only supervised images remain)."""
    if num_supervised < 1:
        raise ValueError("supervised_fraction: the sequence file covers no image of the training set")
    if num_unsupervised == 0 or fraction >= 1:
        return 1
    exact = fraction * num_unsupervised / ((1 - fraction) * num_supervised)
    candidates = {max(1, int(exact)), max(1, int(exact) + 1)}
    return min(candidates, key=lambda k: (abs(k * num_supervised / (num_unsupervised + k * num_supervised) - fraction), k))


class OversampledDataset(Dataset):
    """A training set in which the supervised images appear ``repeats`` times.

    Item ``v`` is ``base[items[v]]`` with ``items`` = the unsupervised positions in order, then the
    supervised positions repeated ``repeats`` times (``fraction = 1``: the supervised ones only). Items
    keep the base's ``index`` field, so sequence lookup is unchanged. Dataset attributes (``name``,
    ``split``, ``image_shape``, ...) are the base's; ``labels`` follows ``items``.
    """

    def __init__(self, base: Dataset, supervised: Tensor, repeats: int, *, keep_unsupervised: bool = True) -> None:
        self.base = base
        is_sup = torch.zeros(len(base), dtype=torch.bool)
        is_sup[supervised.long()] = True
        sup = is_sup.nonzero().flatten()
        unsup = (~is_sup).nonzero().flatten() if keep_unsupervised else sup[:0]
        self.items = torch.cat([unsup, sup.repeat(repeats)])  # [len]
        self.repeats = repeats

    def __len__(self) -> int:
        return self.items.shape[0]

    def __getitem__(self, v: int) -> dict[str, Any]:
        return self.base[int(self.items[v])]

    def __getitems__(self, vs: list[int]) -> list[dict[str, Any]]:
        """A whole batch (``DataLoader``); through the base's own ``__getitems__`` when it has one."""
        rows = [int(self.items[v]) for v in vs]
        many = getattr(self.base, "__getitems__", None)
        return many(rows) if many is not None else [self.base[r] for r in rows]

    @property
    def labels(self):
        return self.base.labels[self.items.numpy()]

    def __getattr__(self, name: str):  # name, split, num_classes, image_shape, class_names, image_id, ...
        if name in ("base", "items", "repeats") or name.startswith("__"):  # never the base's protocol methods
            raise AttributeError(name)
        return getattr(self.base, name)


class FixedShareDataset(Dataset):
    """The training set as it is, whose batches hold exactly ``round(fraction * B)`` supervised images
    (:class:`~foveal.training.loop.FixedShareBatches`, which the engine takes from :meth:`batch_sampler`).
    Dataset attributes are the base's."""

    def __init__(self, base: Dataset, supervised: Tensor, fraction: float) -> None:
        self.base, self.supervised, self.fraction = base, supervised.long(), fraction

    def per_batch(self, batch_size: int) -> int:
        """Supervised images in a batch of ``batch_size``: ``round(f * B)``, at least 1."""
        return min(batch_size, max(1, round(self.fraction * batch_size)))

    def batch_sampler(self, batch_size: int, seed: int, start: int, end: int, *, rank: int = 0,
                      world_size: int = 1) -> FixedShareBatches:
        return FixedShareBatches(len(self.base), self.supervised, batch_size, self.per_batch(batch_size), seed, start,
                                 end, rank=rank, world_size=world_size)

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return self.base[i]

    def __getitems__(self, rows: list[int]) -> list[dict[str, Any]]:
        many = getattr(self.base, "__getitems__", None)
        return many(rows) if many is not None else [self.base[r] for r in rows]

    def __getattr__(self, name: str):  # name, split, labels, num_classes, image_shape, ...
        if name in ("base", "supervised", "fraction") or name.startswith("__"):
            raise AttributeError(name)
        return getattr(self.base, name)


@ALGORITHMS.register("partial-supervision", config=PartialSupervisionConfig)
class PartialSupervision(PolicyEvaluation):
    """Partial supervision, Eq. 8: sequence likelihood on supervised images, REINFORCE elsewhere.

    See the module docstring."""

    def __init__(self, config: PartialSupervisionConfig) -> None:
        self.config = config
        self.reinforce = Reinforce(ReinforceConfig(**{f.name: getattr(config, f.name)
                                                      for f in dataclasses.fields(ReinforceConfig)}))
        self._sequences = None  # loaded on first use: evaluating a finished run does not need the file
        self._checked_models: set[int] = set()
        self._prepared = False

    @property
    def sequences(self):
        """The :class:`~foveal.sequences.GlimpseSequences` used (the file's first ``num_sequences``)."""
        if self._sequences is None:
            seqs = GlimpseSequences.load(self.config.sequences)
            if self.config.num_sequences is not None:
                seqs = seqs.subset(self.config.num_sequences)
            if seqs.num_glimpses < self.config.num_glimpses:
                raise ValueError(f"{seqs.source}: the sequences have {seqs.num_glimpses} glimpses, fewer than "
                                 f"algorithm.num_glimpses={self.config.num_glimpses}")
            self._sequences = seqs
        return self._sequences

    def prepare(self, train_set: Dataset) -> Dataset:
        """Check the sequences against the training set; return it, oversampled if ``supervised_fraction``.

        A file of a split that ``train_set`` holds inside itself (``contains_splits``: CelebA-HQ's
        ``annotate`` inside ``annotate+train``) is accepted, its indices moved into ``train_set``'s split.

        Raises:
            foveal.data.DataError: the file does not belong to this dataset split or was made for another
                task (see ``GlimpseSequences.validate``).
        """
        seqs = self._sequences = self.sequences.aligned_to(train_set)  # validates; indices in train_set's split
        self._prepared = True
        f = self.config.supervised_fraction
        if f is None:
            return train_set
        n_sup = len(seqs)
        if self.config.oversampling == "fixed":
            return FixedShareDataset(train_set, seqs.indices, f)
        repeats = oversampling_repeats(n_sup, len(train_set) - n_sup, f)
        return OversampledDataset(train_set, seqs.indices, repeats, keep_unsupervised=f < 1)

    def loss(self, model: nn.Module, batch: dict[str, Tensor]) -> LossOutput:
        cfg = self.config
        images, labels = batch["image"], batch["label"]
        B, T = images.shape[0], cfg.num_glimpses
        if cfg.supervised_fraction is not None and not self._prepared:
            raise ValueError("algorithm.supervised_fraction: oversampling happens in PartialSupervision.prepare("
                             "train_set), which this training entry point did not call (foveal compare does); "
                             "remove the setting or train through foveal compare")
        self._check(model, images)
        forced, has = self.sequences.lookup(batch["index"])  # [B, T_seq, 2] with NaN rows, [B]
        sup = has.to(images.device).nonzero().flatten()
        unsup = (~has).to(images.device).nonzero().flatten()
        n_sup, n_unsup = sup.numel(), unsup.numel()
        loss = images.new_zeros(())
        ce_sum = correct = 0.0
        logs = {"sequence_nll": 0.0, "sequence_term": 0.0, "reinforce": 0.0, "baseline_mse": 0.0, "entropy": 0.0}
        if n_unsup:
            out = self.reinforce.loss(model, {k: v[unsup] if isinstance(v, Tensor) else v for k, v in batch.items()})
            share = n_unsup / B
            loss = loss + share * out.loss
            ce_sum += out.logs["ce"] * n_unsup
            correct += out.logs["accuracy"] * n_unsup
            for name in ("reinforce", "baseline_mse", "entropy"):
                logs[name] = share * out.logs.get(name, 0.0)
        if n_sup:
            ro = model.rollout(images[sup], T, forced_locations=forced[sup, :T].to(images))
            final = ro.logits[:, -1]  # [n_sup, C]
            ce = F.cross_entropy(final, labels[sup])
            nll = -ro.log_prob.sum(1).mean()  # mean over supervised images of -sum_t log pi(l_t | h_{t-1})
            share = n_sup / B
            if cfg.weighting == "official":
                # a sum over supervised images, never / B; times R, which DDP's average over R ranks divides out
                sequence_term = cfg.sequence_weight * n_sup * nll * distributed.world().size
                reward = (final.argmax(-1) == labels[sup]).float()
                baseline_mse = F.mse_loss(ro.baseline, reward[:, None].expand_as(ro.baseline))  # forced rollouts too
                loss = loss + share * (cfg.ce_weight * ce + cfg.baseline_weight * baseline_mse) + sequence_term
                logs["baseline_mse"] += share * baseline_mse.detach()
            else:
                sequence_term = share * cfg.sequence_weight * nll
                loss = loss + share * cfg.ce_weight * ce + sequence_term
            ce_sum += ce.detach() * n_sup
            correct += (final.argmax(-1) == labels[sup]).float().sum().detach()
            logs["sequence_nll"] = share * nll.detach()
            logs["sequence_term"] = sequence_term.detach()
        logs.update(ce=ce_sum / B, accuracy=correct / B, supervised=n_sup / B)
        return LossOutput(loss, logs)

    def _check(self, model: nn.Module, images: Tensor) -> None:
        """Per-batch image size; once per model, that a grid model's grid holds the sequences' locations."""
        seqs = self.sequences
        if tuple(images.shape[2:]) != seqs.image_size:
            raise ValueError(f"{seqs.source}: the sequences are for {seqs.image_size[0]}x{seqs.image_size[1]} images, "
                             f"the batch has {images.shape[2]}x{images.shape[3]}")
        grid = getattr(model, "grid", None)
        if grid is None or id(model) in self._checked_models:
            return
        locations = seqs.locations()[:, :self.config.num_glimpses]  # [N, T, 2]
        snapped = grid.locations()[grid.nearest_index(locations)]
        off = (snapped - locations).abs().amax(-1) > 1e-4  # [N, T]
        if off.any() and self.config.off_grid == "error":
            n, t = (int(v) for v in off.nonzero()[0])
            raise ValueError(f"{seqs.source}: {record_name(seqs, n, t)}: top-left {seqs.corners[n, t].tolist()} is "
                             f"not a cell of the model's grid (rows {grid.rows[:4]}..., cols {grid.cols[:4]}..., "
                             f"{grid.glimpse_size} px); make the model's grid match the file's, or set "
                             "algorithm.off_grid=snap")
        self._checked_models.add(id(model))
