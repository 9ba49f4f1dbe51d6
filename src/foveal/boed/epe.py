r"""Expected posterior entropy (EPE) and the greedy near-optimal glimpse sequence.

Sequential Bayesian optimal experimental design (Harvey et al., "Near-optimal glimpse sequences for
improved hard attention neural network training", 2021, sections 3-4) picks, at step ``t``, the glimpse
location :math:`l_t` that minimises the entropy of the label posterior we *expect* to have after looking
there. With a glimpse a deterministic function of the image, the expectation can be taken over images
consistent with what was seen so far (Eq. 5):

.. math::

    \mathrm{EPE}(l_t) = \mathbb{E}_{p(I \mid y_{1:t-1}, l_{1:t-1})}
        H\big[p(\theta \mid f(I, l_{1:t}))\big].

Two approximations make it computable (Eq. 6):

* a **posterior** :math:`q(\theta \mid \text{glimpses})` (the attentional variational posterior CNN,
  :mod:`foveal.models.posterior_cnn`; any :class:`Posterior`), and
* a **completion sampler** :math:`r(I \mid y_{1:t-1}, l_{1:t-1})` giving weighted images consistent with
  the observation (the image bank, :mod:`foveal.boed.bank`; any :class:`CompletionSampler`).

.. math::

    \mathrm{EPE}(l) \approx \sum_{n=1}^{N} w_n\,
        H\big[q(\theta \mid I^{(n)} \text{ seen through } m_{t-1} \cup m(l))\big],
    \qquad \sum_n w_n = 1,

where :math:`m_{t-1}` is the union of the glimpses taken so far and :math:`m(l)` the pixels of the
glimpse at grid cell ``l``. The posterior sees the *completion's* pixels under the whole mask, as in
Eq. 6 (a completion that matches the observation only approximately is not patched with the true
pixels). :func:`greedy_sequence` repeats: sample completions given the true image's pixels under
:math:`m_{t-1}`, score every cell, take the arg-min, for ``t = 1..T``. At ``t = 1`` nothing is seen, so
the first choice is the same for every image of a task: compute it once with :func:`first_glimpse`.

Saving work (:class:`SearchConfig`; the defaults are the plain method, every cell scored with every
completion, ``N x |grid|`` posterior calls per step):

* ``screen_completions`` / ``screen_top_k`` (pruning): score every cell with the ``screen_completions``
  completions of largest weight (renormalised), then re-score only the ``screen_top_k`` lowest cells with
  all N and take the arg-min among them. Cost per step ``n_s |grid| + k N`` instead of ``N |grid|``;
  with ``k = |grid|`` the choice is the plain one exactly.
* ``skip_seen``: a cell whose glimpse holds no unseen pixel gives the posterior nothing new; it is not
  scored (``+inf``). Changes the choice only when such a cell would have been the arg-min.
* ``local_updates``: the posterior computes each pair by updating only the window of every feature
  map that the glimpse changes (:mod:`foveal.boed.local`); the same numbers up to float rounding.
  Needs a posterior with ``cell_logits`` (:class:`~foveal.boed.posterior.NetworkPosterior` around a
  :class:`~foveal.models.posterior_cnn.PosteriorCNN`).

Entropy (nats): categorical :math:`-\sum_k p_k \log p_k`; multi-attribute Bernoulli outputs (one logit
per binary attribute, assumed independent given the glimpses) use the sum of the per-attribute binary
entropies.

**The label objective** (a reference, not a method): given the image's true label :math:`\theta^*`,
:func:`expected_label_cross_entropy` scores a cell by the expected cross-entropy of that label instead,
:math:`\sum_n w_n\,[-\log q(\theta^* \mid I^{(n)} \text{ seen through } m_{t-1} \cup m(l))]` (a
multilabel posterior: the binary cross-entropies of its attributes, summed). With the true image as the
only completion (:class:`~foveal.boed.completion.TrueImage`) this is the cell after which the posterior is
most *right* about this image, where the entropy objective finds where it is most *sure*. It reads the
answer, which no glimpse policy has. :func:`search_step` and :func:`greedy_sequence` take it as ``label``.

References: Chaloner & Verdinelli (1995), Bayesian experimental design: a review; Foster et al. (2019),
Variational Bayesian optimal experimental design; Harvey et al. (2021), arXiv:1906.05462.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple, Optional, Protocol, runtime_checkable

import torch
from torch import Tensor

from foveal.logits import posterior_entropy, posterior_log_prob
from foveal.retina import LocationGrid, cell_masks

__all__ = ["Posterior", "CompletionSampler", "cell_masks",
           "expected_posterior_entropy", "expected_label_cross_entropy", "label_cross_entropy", "SearchConfig",
           "FirstGlimpse", "GlimpseSequence", "first_glimpse",
           "greedy_sequence", "search_step"]


@runtime_checkable
class Posterior(Protocol):
    """Seam 4, first half: :math:`q(\\theta \\mid \\text{glimpses})` as logits.

    Attributes:
        multilabel: False: ``logits`` are categorical (softmax over K classes); True: K independent
            Bernoulli attributes (sigmoid each).
    """

    multilabel: bool

    def logits(self, images: Tensor, masks: Tensor) -> Tensor:
        """Logits of the label posterior given the pixels of ``images`` under ``masks``.

        Args:
            images: ``[B, C, H, W]``; pixels outside the mask must not influence the result.
            masks: ``[B, 1, H, W]`` in {0, 1}, 1 = observed.

        Returns:
            ``[B, K]`` logits; a categorical posterior may return ``log p`` with ``-inf`` for impossible
            classes (at least one finite per row).
        """
        ...


@runtime_checkable
class CompletionSampler(Protocol):
    """Seam 4, second half: images consistent with an observation, :math:`r(I \\mid y_{1:t}, l_{1:t})`."""

    def sample(self, image: Tensor, mask: Tensor, n: int, *,
               generator: Optional[torch.Generator] = None) -> tuple[Tensor, Tensor]:
        """Weighted completions of ``image`` seen through ``mask``.

        Args:
            image: ``[C, H, W]``; only the pixels under ``mask`` may be used.
            mask: ``[1, H, W]`` in {0, 1}; all zero = nothing seen (sample the prior).
            n: number of completions wanted (an exact sampler may return its whole support instead).
            generator: source of randomness, for reproducible sequences.

        Returns:
            ``(completions [N, C, H, W], weights [N])`` with the weights summing to one.
        """
        ...


def _check_mask(mask: Tensor, grid: LocationGrid, name: str) -> None:
    if mask.shape != (1, *grid.image_size):
        raise ValueError(f"{name}: expected shape (1, {grid.image_size[0]}, {grid.image_size[1]}) "
                         f"(the grid's image size), found {tuple(mask.shape)}")


def label_cross_entropy(logits: Tensor, label: Tensor, multilabel: bool) -> Tensor:
    """``-log q(label | glimpses)`` of every row of ``[B, K]`` logits, for one image's label: ``[B]`` (nats).

    Args:
        label: a class index (0-dim integer tensor, as ``dataset[i]["label"]``) for a categorical posterior;
            ``[K]`` 0/1 attributes for a multilabel one (the binary cross-entropies summed over the K).

    Raises:
        ValueError: a label that does not fit the logits, naming what was expected and found.
    """
    K = logits.shape[-1]
    if multilabel:
        if tuple(label.shape) != (K,):
            raise ValueError(f"label: expected [{K}] 0/1 attributes for a multilabel posterior (one per logit), "
                             f"found shape {tuple(label.shape)}")
        if not ((label == 0) | (label == 1)).all():
            raise ValueError(f"label: expected 0/1 attributes for a multilabel posterior, found values "
                             f"{sorted(set(label.flatten().tolist()))[:8]}")
        labels = label.to(logits.device)[None].expand(logits.shape[0], K)
    else:
        if label.dim() != 0 or label.dtype.is_floating_point or label.dtype == torch.bool:
            raise ValueError(f"label: expected a class index (a 0-dim integer tensor) for a categorical posterior, "
                             f"found {label.dtype} of shape {tuple(label.shape)}")
        if not 0 <= int(label) < K:
            raise ValueError(f"label: expected a class index in [0, {K}) (the posterior's classes), found {int(label)}")
        labels = label.to(logits.device).expand(logits.shape[0])
    return -posterior_log_prob(logits.float(), labels, multilabel)


@torch.no_grad()
def expected_posterior_entropy(posterior: Posterior, completions: Tensor, weights: Tensor, observed_mask: Tensor,
                               grid: LocationGrid, *, batch_size: int = 256,
                               allowed: Optional[Tensor] = None, local_updates: bool = False) -> Tensor:
    """Eq. 6 for every cell of ``grid``: the weighted mean entropy of ``posterior`` over completions.

    All (cell, completion) pairs are flattened and sent to the posterior ``batch_size`` at a time, so
    one call scores up to ``batch_size`` masked images.

    Args:
        posterior: the label posterior.
        completions: ``[N, C, H, W]`` images from the completion sampler.
        weights: ``[N]`` their normalised weights.
        observed_mask: ``[1, H, W]`` union of the glimpses taken so far.
        grid: the candidate locations (cells).
        batch_size: masked images per posterior call.
        allowed: optional ``[G]`` bool; cells that are not allowed are not scored and get ``+inf``.
        local_updates: score the pairs with ``posterior.cell_logits`` (module docstring).

    Returns:
        ``[G]`` EPE per cell (nats), ``+inf`` where not allowed.
    """
    return _expected_score(posterior, completions, weights, observed_mask, grid, None, batch_size=batch_size,
                           allowed=allowed, local_updates=local_updates)


@torch.no_grad()
def expected_label_cross_entropy(posterior: Posterior, completions: Tensor, weights: Tensor, label: Tensor,
                                 observed_mask: Tensor, grid: LocationGrid, *, batch_size: int = 256,
                                 allowed: Optional[Tensor] = None, local_updates: bool = False) -> Tensor:
    """For every cell of ``grid``: the weighted mean over completions of the cross-entropy of the true ``label``
    (:func:`label_cross_entropy`) given the completion seen through ``observed_mask`` and the cell.

    The label objective of the module docstring: it uses the image's answer, so what it picks is a reference
    (with the true image as the only completion: the cell after which the posterior is most right about this
    image), not a method. Arguments and batching as :func:`expected_posterior_entropy`; ``label`` as
    :func:`label_cross_entropy`.

    Returns:
        ``[G]`` cross-entropy per cell (nats), ``+inf`` where not allowed.
    """
    return _expected_score(posterior, completions, weights, observed_mask, grid, label, batch_size=batch_size,
                           allowed=allowed, local_updates=local_updates)


def _expected_score(posterior: Posterior, completions: Tensor, weights: Tensor, observed_mask: Tensor,
                    grid: LocationGrid, label: Optional[Tensor], *, batch_size: int, allowed: Optional[Tensor],
                    local_updates: bool) -> Tensor:
    """The weighted mean over completions of every cell's score: the posterior's entropy (``label`` None) or
    the cross-entropy of ``label``."""
    N = completions.shape[0]
    if completions.dim() != 4 or completions.shape[2:] != grid.image_size:
        raise ValueError(f"completions: expected [N, C, {grid.image_size[0]}, {grid.image_size[1]}], "
                         f"found {list(completions.shape)}")
    if weights.shape != (N,):
        raise ValueError(f"weights: expected shape ({N},) (one per completion), found {tuple(weights.shape)}")
    if not torch.isclose(weights.sum(), weights.new_tensor(1.0), atol=1e-4):
        raise ValueError(f"weights: expected to sum to 1, found a sum of {weights.sum().item():.6f}")
    _check_mask(observed_mask, grid, "observed_mask")
    if batch_size < 1:
        raise ValueError(f"batch_size: expected >= 1, found {batch_size}")
    if label is None:
        def score(logits: Tensor) -> Tensor:
            return posterior_entropy(logits.float(), posterior.multilabel)
    else:
        label = torch.as_tensor(label).cpu()  # checked on the host (no device sync), moved per batch

        def score(logits: Tensor) -> Tensor:
            return label_cross_entropy(logits, label, posterior.multilabel)
    device = completions.device
    G = len(grid)
    candidates = torch.arange(G, device=device)
    if allowed is not None:
        if allowed.shape != (G,):
            raise ValueError(f"allowed: expected shape ({G},) (one per grid cell), found {tuple(allowed.shape)}")
        candidates = candidates[allowed.to(device)]
    pair_cell = candidates.repeat_interleave(N)  # [P], P = len(candidates) * N, cell-major
    pair_image = torch.arange(N, device=device).repeat(len(candidates))  # [P]
    if local_updates:
        if not hasattr(posterior, "cell_logits"):
            raise ValueError(f"local_updates: expected a posterior with cell_logits (a NetworkPosterior around a "
                             f"PosteriorCNN), found {type(posterior).__name__}")
        logits = posterior.cell_logits(completions, observed_mask.to(device), grid, pair_cell, pair_image,
                                       batch_size=batch_size)
        scores = score(logits)  # [P]
    else:
        masks = torch.maximum(cell_masks(grid, device), observed_mask.to(device)[None])  # [G, 1, H, W]
        scores = completions.new_empty(pair_cell.shape[0])  # [P]
        for start in range(0, pair_cell.shape[0], batch_size):
            cell, image = pair_cell[start:start + batch_size], pair_image[start:start + batch_size]
            m = masks[cell]  # [b, 1, H, W]
            logits = posterior.logits(completions[image] * m, m)  # unobserved pixels zeroed before the call
            scores[start:start + batch_size] = score(logits)
    out = completions.new_full((G,), float("inf"))
    w = weights.to(device)
    # a completion of weight 0 counts for nothing, even where its score is +inf (the true label impossible)
    out[candidates] = torch.where(w > 0, scores.view(len(candidates), N) * w, 0.0).sum(1)
    return out


@dataclass(frozen=True)
class SearchConfig:
    """How each greedy step searches for the arg-min cell (see the module docstring); defaults = the plain method.

    Attributes:
        screen_completions: pruning: first score every cell with only this many completions (the ones of
            largest weight, renormalised); None = no pruning.
        screen_top_k: with pruning, how many of the lowest-scoring cells are re-scored with all completions.
        skip_seen: do not score cells whose glimpse adds no unseen pixel.
        local_updates: compute each pair by local updates of the posterior's feature maps.
    """

    screen_completions: Optional[int] = None
    screen_top_k: int = 8
    skip_seen: bool = False
    local_updates: bool = False

    def __post_init__(self) -> None:
        if self.screen_completions is not None and self.screen_completions < 1:
            raise ValueError(f"SearchConfig.screen_completions: expected None or >= 1, found {self.screen_completions}")
        if self.screen_top_k < 1:
            raise ValueError(f"SearchConfig.screen_top_k: expected >= 1, found {self.screen_top_k}")

    @property
    def plain(self) -> bool:
        return self.screen_completions is None and not self.skip_seen and not self.local_updates


def _unseen_cells(cells: Tensor, observed: Tensor) -> Tensor:
    """``[G]`` bool: the cells whose glimpse holds at least one pixel outside ``observed [1, H, W]``."""
    return (cells * (1 - observed.to(cells))[None]).flatten(1).amax(1) > 0


def search_step(posterior: Posterior, completions: Tensor, weights: Tensor, observed: Tensor, grid: LocationGrid,
                search: SearchConfig = SearchConfig(), *, batch_size: int = 256,
                cells: Optional[Tensor] = None, label: Optional[Tensor] = None) -> tuple[int, Tensor]:
    """One greedy step: the chosen cell and the ``[G]`` EPE map, searched as ``search`` says.

    With pruning the map holds the full estimate for the re-scored cells and the screening estimate
    (fewer completions) elsewhere; the chosen cell is the arg-min of the full estimates (lowest index on
    ties). Cells not scored are ``+inf``.

    Args:
        completions, weights, observed: as for :func:`expected_posterior_entropy`.
        cells: ``[G, 1, H, W]`` :func:`cell_masks` of ``grid`` if already made (saves making them per step).
        label: None: the cells are scored by the expected posterior entropy; the image's true label: by the
            expected cross-entropy of that label (:func:`expected_label_cross_entropy`; a reference that
            uses the answer, not a method), and the map holds those.
    """
    allowed = None
    if search.skip_seen:
        allowed = _unseen_cells(cell_masks(grid, completions.device) if cells is None else cells, observed)
        if not allowed.any():
            allowed = None  # everything seen: any cell is as good, score them all
    N = completions.shape[0]
    if search.screen_completions is None or search.screen_completions >= N:
        epe = _expected_score(posterior, completions, weights, observed, grid, label, batch_size=batch_size,
                              allowed=allowed, local_updates=search.local_updates)
        return int(epe.argmin()), epe
    # Screening set: the largest weights (stable order on ties), renormalised. No random draw, so the
    # caller's generator is consumed exactly as by the plain method.
    keep = torch.sort(weights, descending=True, stable=True).indices[:search.screen_completions]
    screen = _expected_score(posterior, completions[keep], weights[keep] / weights[keep].sum(), observed, grid,
                             label, batch_size=batch_size, allowed=allowed, local_updates=search.local_updates)
    finite = int(torch.isfinite(screen).sum())
    top = torch.topk(screen, min(search.screen_top_k, finite), largest=False).indices  # [k]
    rescore = torch.zeros(len(grid), dtype=torch.bool, device=screen.device)
    rescore[top] = True
    full = _expected_score(posterior, completions, weights, observed, grid, label, batch_size=batch_size,
                           allowed=rescore, local_updates=search.local_updates)
    return int(full.argmin()), torch.where(rescore, full, screen)


class FirstGlimpse(NamedTuple):
    """The image-independent first choice of a task: ``cell`` (int) and its ``epe_map [G]``."""

    cell: int
    epe_map: Tensor


class GlimpseSequence(NamedTuple):
    """A greedy sequence: ``cells [T]`` int64 grid indices, and ``epe_maps [T, G]`` if kept, else None."""

    cells: Tensor
    epe_maps: Optional[Tensor]


def first_glimpse(posterior: Posterior, sampler: CompletionSampler, grid: LocationGrid, channels: int, *,
                  n_completions: int, batch_size: int = 256, generator: Optional[torch.Generator] = None,
                  device: Optional[torch.device] = None) -> FirstGlimpse:
    """The first glimpse of every image of a task: nothing is observed, so completions are prior samples.

    Always the plain search (it is made once per task; a larger ``n_completions`` than per image is cheap here).

    Args:
        channels: C of the images (the sampler is called with an all-zero ``[C, H, W]`` image and mask).
    """
    H, W = grid.image_size
    empty = torch.zeros(1, H, W, device=device)
    completions, weights = sampler.sample(torch.zeros(channels, H, W, device=device), empty, n_completions,
                                          generator=generator)
    epe = expected_posterior_entropy(posterior, completions, weights, empty.to(completions.device), grid,
                                     batch_size=batch_size)
    return FirstGlimpse(int(epe.argmin()), epe)


def greedy_sequence(image: Tensor, posterior: Posterior, sampler: CompletionSampler, grid: LocationGrid,
                    num_glimpses: int, *, n_completions: int, first_location: Optional[int | FirstGlimpse] = None,
                    keep_maps: bool = False, batch_size: int = 256, search: SearchConfig = SearchConfig(),
                    generator: Optional[torch.Generator] = None, label: Optional[Tensor] = None) -> GlimpseSequence:
    """Greedy sequential BOED for one image (section 4's pipeline, steps 1-3 repeated T times).

    At step t the observed mask is the union of the cells chosen so far, applied to the TRUE image;
    the sampler completes the image from those pixels; every cell is scored by
    :func:`expected_posterior_entropy`; the arg-min (lowest index on ties) is taken. The same cell may
    be chosen twice (it then adds no information, so its EPE is rarely the lowest).

    Args:
        image: ``[C, H, W]``, the image to annotate.
        num_glimpses: T.
        n_completions: completions asked of the sampler per step.
        first_location: the task's first cell (an int, or :func:`first_glimpse`'s result, whose map is
            then kept as row 0); None computes it here.
        keep_maps: also return every step's EPE map (row 0 is NaN if ``first_location`` is a bare int).
        search: the savings to use at each step (:class:`SearchConfig`); the default is the plain method.
        label: the objective. None (the method): least expected posterior entropy. The image's true label
            (``dataset[i]["label"]``; :func:`label_cross_entropy`): least expected cross-entropy of that label,
            which with :class:`~foveal.boed.completion.TrueImage` as the sampler is the hindsight-label
            reference, the cell after which the posterior is most right about this very image. It uses the
            answer, which no policy has: a reference, not a method. With ``first_location`` None its first
            cell is chosen the same way, per image (nothing observed but the cell).

    Returns:
        :class:`GlimpseSequence` (unpacks as ``cells, epe_maps``).
    """
    if image.dim() != 3 or image.shape[1:] != grid.image_size:
        raise ValueError(f"image: expected [C, {grid.image_size[0]}, {grid.image_size[1]}], found {list(image.shape)}")
    if num_glimpses < 1:
        raise ValueError(f"num_glimpses: expected >= 1, found {num_glimpses}")
    G = len(grid)
    masks = cell_masks(grid, image.device)  # [G, 1, H, W]
    observed = torch.zeros(1, *grid.image_size, device=image.device)
    cells: list[int] = []
    maps = image.new_full((num_glimpses, G), float("nan")) if keep_maps else None
    for t in range(num_glimpses):
        if t == 0 and first_location is not None:
            cell = int(first_location.cell if isinstance(first_location, FirstGlimpse) else first_location)
            if not 0 <= cell < G:
                raise ValueError(f"first_location: expected a cell index in [0, {G}), found {cell}")
            if maps is not None and isinstance(first_location, FirstGlimpse):
                maps[0] = first_location.epe_map.to(maps)
        else:
            completions, weights = sampler.sample(image * observed, observed, n_completions, generator=generator)
            cell, epe = search_step(posterior, completions, weights, observed.to(completions.device), grid, search,
                                    batch_size=batch_size, cells=masks.to(completions.device), label=label)
            if maps is not None:
                maps[t] = epe.to(maps)
        cells.append(cell)
        observed = torch.maximum(observed, masks[cell])
    return GlimpseSequence(torch.tensor(cells, dtype=torch.long), maps)
