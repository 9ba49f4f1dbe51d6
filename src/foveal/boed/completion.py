r"""Stochastic image completion from an image bank: PCA retrieval + importance resampling.

:class:`BankSampler` is a :class:`foveal.boed.epe.CompletionSampler`. Relax the glimpse likelihood from a
Dirac delta to a Gaussian with variance :math:`\sigma^2/2` per pixel; then a bank image :math:`I'` seen
through the observed mask :math:`m` has importance log-weight

.. math::  \log w(I') = -\,\|m \odot (x - I')\|^2 / \sigma^2

(the bank is the proposal, uniform). Scoring every bank image exactly is too slow for a large bank, so:

1. **Approximate distances** (approximation 1: PCA). Each grid cell's region gets its own PCA basis
   :math:`U_g` (``pca_components`` columns), fitted once on up to ``pca_fit_samples`` bank images and
   cached with every bank image's coefficients :math:`z_{m,g}` (float16, approximation 2). The observation
   is compared with each bank image's PCA reconstruction, summed over the observed cells:
   :math:`\sum_g \|x_g - \mu_g - U_g z_{m,g}\|^2 = \sum_g \|z_{x,g} - z_{m,g}\|^2 + \|r_{x,g}\|^2`
   (:math:`r_x` the part of the observation outside the basis). Overlapping observed cells count their
   shared pixels once per cell here (as the official code's sum over glimpses does). With
   ``pca_components`` equal to the region size this is the exact distance.
2. **Exact re-weighting** of the ``n_proposals`` nearest candidates (approximation 3: every other bank
   image gets weight zero) with the exact masked distance over all observed pixels.
3. **Resampling** ``n`` completions from the normalised weights (residual or multinomial, with the
   caller's generator). Copies of one bank image are merged: the returned weights are multiplicity / n,
   the same estimator with fewer posterior evaluations.

With nothing observed, ``n`` bank images are drawn uniformly without replacement (weights 1 / n).

:math:`\sigma^2` comes from ``sigma2_schedule`` (entry ``k - 1`` when the mask covers ``k`` grid cells
completely, the last entry repeating) or, with ``target_ess``, is set per call by bisection so that the effective sample size of the
proposal weights is ``target_ess * n_proposals`` (the paper's CUB setting).

**Small shifts** (``shifts = s > 0``, the official code's +-4 px at this stage). A bank image that matches
the observation up to a small translation should still count, so the exact stage marginalises the
translation :math:`\delta = (dy, dx)`, :math:`|dy|, |dx| \le s`, under a uniform prior:

.. math::  \log w(I') = \operatorname{logsumexp}_\delta \bigl(-\|m \odot (x - S_\delta I')\|^2 / \sigma^2\bigr)
           - \log (2s + 1)^2

where :math:`(S_\delta I')[r, c] = I'[r - dy, c - dx]`, and **zero** where :math:`(r - dy, c - dx)` falls
outside the image (zero fill: a pixel the bank image does not have counts as black, a mismatch unless the
observation is dark there, so a shift that pushes the image off an observed border is penalised, never
rewarded). The completion returned for a bank image is :math:`S_{\hat\delta} I'` with
:math:`\hat\delta = \arg\min_\delta \|m \odot (x - S_\delta I')\|^2`, the shift of highest posterior weight
for that image (for any :math:`\sigma^2`, the prior being uniform; ties, up to float32 rounding, go to the
smallest shift, 0 first). It is deterministic and draws nothing from the generator, and it makes the
completion agree with what was observed as well as the bank image can; the strip the shift uncovers along
the border (:math:`|\hat\delta|` px wide) is zero. With ``target_ess`` the bisection recomputes the
marginalised log-weights at every trial :math:`\sigma^2`: the effective distance
:math:`d(I') = -\sigma^2 \log w(I')` is a soft minimum over shifts that depends on :math:`\sigma^2` (about
the shifts' mean distance for large :math:`\sigma^2`, their minimum as :math:`\sigma^2 \to 0`), so no
single distance vector can be bisected on. Cost: the exact
stage does :math:`(2s + 1)^2` times the work, on the observed pixels' bounding box only (60x60 images,
1000 candidates, 1-6 observed 12 px cells: a ``sample`` call takes about 1-1.6x as long with s = 2, 1-4x
with s = 4).

The PCA stage compares without shifts (the official code shifts +-2 px there too): the coefficients exist
only at the grid's corners, and a shifted comparison needs them at corners offset by up to ``s`` px, i.e.
:math:`(2s + 1)^2` times the cell PCAs in memory (available only on stride-1 grids away from the borders)
and the work of the stage's scan of the whole bank. So an image that matches only after a shift must be
near enough unshifted to be among the ``n_proposals`` candidates. An observation mask that covers no grid
cell completely falls back to exact distances to the whole bank.

**Device.** The bank stays on the host (a memory map); with ``device`` a GPU (the annotator passes the
posterior's), each block of bank images or coefficients read is moved there and the distance arithmetic
(PCA fits and projections, the PCA distances and the nearest ``n_proposals``, the exact and shifted
distances) runs there; the cached cell PCAs live there too (``cache_cells`` of them). The distances come
back to the host, where the weights, :math:`\sigma^2` and the resampling (with the caller's CPU generator)
are computed as before. On the CPU (the default) nothing changes.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass
from typing import Optional, Protocol, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from foveal.boed.bank import ImageBank
from foveal.retina import LocationGrid, cell_masks
from foveal.runtime import resolve_device

__all__ = ["CellPCA", "PCAStore", "BankSampler", "TrueImage", "residual_resample", "effective_sample_size",
           "distance_log_weights", "ess_sigma2", "shift_offsets", "shift_images"]


@dataclass
class CellPCA:
    """PCA of one grid cell's region over the bank.

    Attributes:
        mean: ``[D]`` with ``D = C * g * g``.
        basis: ``[D, k]`` orthonormal columns.
        coefficients: ``[M, k]`` float16 projections of every bank image's region (M = len(bank)).
    """

    mean: Tensor
    basis: Tensor
    coefficients: Tensor

    def to(self, device: torch.device) -> "CellPCA":
        """The same PCA with its tensors on ``device`` (itself if they are there already)."""
        if self.coefficients.device == device:
            return self
        return CellPCA(self.mean.to(device), self.basis.to(device), self.coefficients.to(device))


class PCAStore(Protocol):
    """Where a :class:`BankSampler` finds cell PCAs fitted elsewhere (e.g. by another worker) and offers its own.

    ``load(cell)``: a stored PCA or None. ``save(cell, pca)``: store it; returns the PCA to use, which is
    the one stored first if another process stored one meanwhile (so that every user of the store uses the
    same bases).
    """

    def load(self, cell: int) -> Optional[CellPCA]: ...

    def save(self, cell: int, pca: CellPCA) -> CellPCA: ...


def effective_sample_size(log_weights: Tensor) -> Tensor:
    """``(sum w)^2 / sum w^2`` of unnormalised log-weights ``[P]``."""
    w = torch.softmax(log_weights, 0)
    return 1.0 / w.square().sum()


def distance_log_weights(distances: Tensor, sigma2: float) -> Tensor:
    """``[n]`` log-weights: ``-distances / sigma2`` for ``[n]``, the shift-marginalised logsumexp for ``[n, J]``."""
    if distances.dim() == 1:
        return -distances / sigma2
    return torch.logsumexp(-distances / sigma2, 1) - math.log(distances.shape[1])


def ess_sigma2(distances: Tensor, target_ess: float) -> float:
    """sigma^2 at which the weights of ``distances`` (``[P]``, or ``[P, J]`` with shifts) have effective sample
    size ``target_ess * P``: bisection on log sigma^2 (ESS grows with sigma^2), to the upper end of the bracket."""
    target = target_ess * distances.shape[0]
    lo, hi = math.log(1e-8), math.log(1e8)
    for _ in range(60):
        mid = (lo + hi) / 2
        if effective_sample_size(distance_log_weights(distances, math.exp(mid))) < target:
            lo = mid
        else:
            hi = mid
    return math.exp(hi)


def residual_resample(weights: Tensor, n: int, generator: Optional[torch.Generator] = None) -> Tensor:
    """Residual resampling: ``floor(n w_i)`` copies of each i, the rest drawn multinomially -> ``[n]`` indices."""
    copies = torch.floor(weights * n).long()
    rest = n - int(copies.sum())
    chosen = torch.repeat_interleave(torch.arange(weights.shape[0]), copies)
    if rest > 0:
        residual = (weights * n - copies).clamp_min(0)
        chosen = torch.cat([chosen, torch.multinomial(residual, rest, replacement=True, generator=generator)])
    return chosen


def shift_offsets(shifts: int) -> Tensor:
    """``[(2s + 1)^2, 2]`` every ``(dy, dx)`` with ``|dy|, |dx| <= s``, smallest first (``(0, 0)`` is row 0)."""
    r = torch.arange(-shifts, shifts + 1)
    offsets = torch.cartesian_prod(r, r)  # [J, 2]
    size = offsets.abs().amax(1) * (2 * shifts + 1) ** 2 + offsets.abs().sum(1)  # by max |.|, then by |dy| + |dx|
    return offsets[torch.sort(size, stable=True).indices]


def shift_images(images: Tensor, offsets: Tensor) -> Tensor:
    """``images [N, C, H, W]`` translated by ``offsets [N, 2]`` (dy, dx) with zero fill.

    ``out[n, :, r, c] = images[n, :, r - dy, c - dx]``, 0 where that falls outside the image.
    """
    s = int(offsets.abs().max()) if offsets.numel() else 0
    if s == 0:
        return images
    H, W = images.shape[-2:]
    padded = F.pad(images, (s, s, s, s))  # zero fill
    return torch.stack([padded[i, :, s - dy:s - dy + H, s - dx:s - dx + W]
                        for i, (dy, dx) in enumerate(offsets.tolist())])


class TrueImage:
    """Hindsight: the true image as the only completion, with weight one (:class:`CompletionSampler`).

    The greedy search with it picks, at every step, the cell after which the posterior's entropy *on this
    image* is lowest: what an annotator that knew the whole image would choose. It uses information no
    glimpse policy has, so its sequences are a reference (a ceiling for sequence quality), not a method.

    Args:
        image: ``[C, H, W]``, the image being annotated.
    """

    def __init__(self, image: Tensor) -> None:
        self.image = image
        self.last_stats: dict[str, float] = {}

    def sample(self, image: Tensor, mask: Tensor, n: int, *,
               generator: Optional[torch.Generator] = None) -> tuple[Tensor, Tensor]:
        if image.shape != self.image.shape:
            raise ValueError(f"TrueImage.sample: expected an image of shape {tuple(self.image.shape)}, "
                             f"found {tuple(image.shape)}")
        self.last_stats = {"proposal_ess": 1.0}
        return self.image[None], torch.ones(1, device=self.image.device)


class BankSampler:
    """Completions of a partly observed image from an :class:`ImageBank`; see the module docstring.

    Args:
        bank: the images.
        grid: the glimpse cells (observations are unions of them; one PCA per cell).
        pca_components: k per cell (clipped to the region size and to ``pca_fit_samples``).
        n_proposals: candidates kept after the approximate distances, re-weighted exactly.
        sigma2_schedule: sigma^2 after 1, 2, ... observed cells (the last repeats).
        target_ess: instead, a fraction in (0, 1]: sigma^2 chosen so that ESS = target_ess * n_proposals.
        resampling: "residual" or "multinomial".
        shifts: s, the largest translation (pixels, per axis) marginalised in the exact stage (0: none; see
            the module docstring). Completions come back translated by their best shift.
        pca_fit_samples: bank images the PCA bases are fitted on (a fixed random subset).
        cache_cells: how many cells' PCAs to keep in memory (least recently used dropped); each takes
            ``len(bank) * k * 2`` bytes (e.g. 120 k images, k = 32: 7.7 MB), on ``device``.
        chunk: bank images read per block when computing coefficients and exact distances.
        pca_store: where fitted cell PCAs are looked up before fitting, and offered after (:class:`PCAStore`;
            None: fitted in this process only). A stored PCA is the same tensors a fit gives on this machine
            and device.
        device: where the distances are computed (module docstring): ``"cpu"`` (None, the default),
            ``"cuda"``, ``"cuda:N"``, ``"auto"`` or a ``torch.device``; results come back on the CPU.
    """

    def __init__(self, bank: ImageBank, grid: LocationGrid, *, pca_components: int = 32, n_proposals: int = 1000,
                 sigma2_schedule: Sequence[float] = (0.05,), target_ess: Optional[float] = None,
                 resampling: str = "residual", pca_fit_samples: int = 4096, cache_cells: int = 64,
                 chunk: int = 4096, shifts: int = 0, pca_store: Optional[PCAStore] = None,
                 device: Optional[str | torch.device] = None) -> None:
        if bank.image_shape[1:] != grid.image_size:
            raise ValueError(f"BankSampler: bank images are {bank.image_shape[1:]}, expected the grid's image size "
                             f"{grid.image_size}")
        if resampling not in ("residual", "multinomial"):
            raise ValueError(f"BankSampler.resampling: expected 'residual' or 'multinomial', found {resampling!r}")
        if target_ess is not None and not 0 < target_ess <= 1:
            raise ValueError(f"BankSampler.target_ess: expected a fraction in (0, 1], found {target_ess}")
        if not sigma2_schedule or min(sigma2_schedule) <= 0:
            raise ValueError(f"BankSampler.sigma2_schedule: expected positive values, found {tuple(sigma2_schedule)}")
        for name, value in (("pca_components", pca_components), ("n_proposals", n_proposals)):
            if value < 1:
                raise ValueError(f"BankSampler.{name}: expected >= 1, found {value}")
        if not isinstance(shifts, int) or not 0 <= shifts < min(grid.image_size):
            raise ValueError(f"BankSampler.shifts: expected an integer in [0, {min(grid.image_size)}) (pixels; "
                             f"the image is {grid.image_size}), found {shifts!r}")
        self.bank, self.grid = bank, grid
        self.shifts, self._offsets = shifts, shift_offsets(shifts)
        self.pca_components, self.n_proposals = pca_components, n_proposals
        self.sigma2_schedule, self.target_ess = tuple(float(s) for s in sigma2_schedule), target_ess
        self.resampling, self.pca_fit_samples = resampling, pca_fit_samples
        self.cache_cells, self.chunk = cache_cells, chunk
        self._cells = cell_masks(grid)  # [G, 1, H, W]
        self._pca: OrderedDict[int, CellPCA] = OrderedDict()  # on self.device
        self.pca_store = pca_store
        self.device = torch.device("cpu") if device is None else resolve_device(device, "BankSampler.device")
        # after each sample() with something observed: the importance weights' effective sample size over
        # the candidates, before resampling (``target_ess * n_proposals`` when target_ess is set)
        self.last_stats: dict[str, float] = {}

    # ------------------------------------------------------------------------------------------- PCA
    def cell_pca(self, cell: int) -> CellPCA:
        """The cell's PCA (from the store, or fitted and projected on first use; then cached)."""
        if cell in self._pca:
            self._pca.move_to_end(cell)
            return self._pca[cell]
        pca = None if self.pca_store is None else self.pca_store.load(cell)
        if pca is None:
            pca = self.fit_cell_pca(cell)
            if self.pca_store is not None:
                pca = self.pca_store.save(cell, pca.to(torch.device("cpu")))  # stores keep host tensors
        pca = pca.to(self.device)
        k = min(self.pca_components, self.grid.glimpse_size ** 2 * self.bank.image_shape[0], self.pca_fit_samples,
                len(self.bank))
        if tuple(pca.coefficients.shape) != (len(self.bank), k):
            raise ValueError(f"BankSampler: the stored PCA of cell {cell} has coefficients of shape "
                             f"{tuple(pca.coefficients.shape)}, expected {(len(self.bank), k)} (bank size, "
                             "components): it was made for another bank or pca_components")
        self._pca[cell] = pca
        while len(self._pca) > self.cache_cells:
            self._pca.popitem(last=False)
        return pca

    def fit_cell_pca(self, cell: int) -> CellPCA:
        """Fit the cell's PCA on a fixed subset of the bank and project every bank image (on ``device``; not
        cached)."""
        corner = tuple(int(v) for v in self.grid.corners()[cell])
        g, device = self.grid.glimpse_size, self.device
        fit_gen = torch.Generator().manual_seed(cell)  # fixed subset per cell: the same bases on every run
        fit_idx = torch.randperm(len(self.bank), generator=fit_gen)[: self.pca_fit_samples].sort().values
        regions = self.bank.regions(fit_idx, corner, g).to(device)  # [S, D]
        mean = regions.mean(0)
        k = min(self.pca_components, regions.shape[1], regions.shape[0])
        _, _, vh = torch.linalg.svd(regions - mean, full_matrices=False)
        basis = vh[:k].T.contiguous()  # [D, k]
        coefficients = torch.empty(len(self.bank), k, dtype=torch.float16, device=device)
        for start, block in self.bank.region_chunks(corner, g, self.chunk):
            coefficients[start:start + block.shape[0]] = ((block.to(device) - mean) @ basis).half()
        return CellPCA(mean, basis, coefficients)

    # ------------------------------------------------------------------------------------- distances
    def observed_cells(self, mask: Tensor) -> Tensor:
        """``[1, H, W]`` mask -> indices of the cells it covers completely."""
        covered = (self._cells * mask.cpu()).sum((1, 2, 3))
        return torch.nonzero(covered == self._cells.sum((1, 2, 3))).flatten()

    def approximate_distances(self, image: Tensor, cells: Tensor) -> Tensor:
        """``[M]`` sum over ``cells`` of the squared distance of the observation to each bank image's PCA
        reconstruction (on ``device``)."""
        g = self.grid.glimpse_size
        corners = self.grid.corners()
        total = torch.zeros(len(self.bank), device=self.device)
        x_all = image.to(self.device, torch.float32)
        for cell in cells.tolist():
            pca = self.cell_pca(cell)
            r, c = corners[cell].tolist()
            x = x_all[:, r:r + g, c:c + g].flatten() - pca.mean  # [D]
            z = x @ pca.basis  # [k]
            residual = (x - pca.basis @ z).square().sum()
            for s in range(0, len(self.bank), self.chunk):
                zm = pca.coefficients[s:s + self.chunk].float()  # [b, k]
                total[s:s + zm.shape[0]] += (zm - z).square().sum(1) + residual
        return total

    def exact_distances(self, image: Tensor, mask: Tensor, indices: Tensor) -> Tensor:
        """``[n]`` squared distance over the observed pixels between ``image`` and bank images ``indices``
        (computed on ``device``, returned on the CPU)."""
        out = torch.empty(indices.shape[0], device=self.device)
        x, m = image.to(self.device, torch.float32), mask.to(self.device, torch.float32)
        for s in range(0, indices.shape[0], self.chunk):
            block = self.bank.images(indices[s:s + self.chunk]).to(self.device)  # [b, C, H, W]
            out[s:s + block.shape[0]] = ((block - x).square() * m).flatten(1).sum(1)
        return out.cpu()

    def shifted_distances(self, image: Tensor, mask: Tensor, indices: Tensor) -> Tensor:
        """``[n, J]`` squared distance over the observed pixels between ``image`` and bank images ``indices``
        translated by each of the ``J = (2s + 1)^2`` offsets of :func:`shift_offsets` (zero fill).

        Computed as one correlation over the observed pixels' bounding box,
        ``sum m (x - y)^2 = sum m x^2 + sum (-2 m x) y + sum m y^2``, with ``y`` every translated window: 2-3x
        faster than a loop over shifts, exact up to float32 rounding (about 1e-7 of ``sum m x^2 + sum m y^2``).
        Computed on ``device``, returned on the CPU.
        """
        s = self.shifts
        x, m = image.to(self.device, torch.float32), mask.to(self.device, torch.float32)
        rows, cols = torch.nonzero(m.amax((0, 2))).flatten(), torch.nonzero(m.amax((0, 1))).flatten()
        r0, r1, c0, c1 = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1  # observed bounding box
        x, m = x[:, r0:r1, c0:c1], m[:, r0:r1, c0:c1]
        weight = torch.cat([-2 * m * x, m.expand_as(x)])[None]  # [1, 2C, h, w]: against (y, y^2)
        constant = (m * x.square()).sum()
        # The correlation's output (a, b) is the window at padded (r0 + a, c0 + b), i.e. offset (s - a, s - b).
        column = ((s - self._offsets[:, 0]) * (2 * s + 1) + (s - self._offsets[:, 1])).to(self.device)  # [J]
        out = torch.empty(indices.shape[0], self._offsets.shape[0], device=self.device)
        for start in range(0, indices.shape[0], self.chunk):
            block = self.bank.images(indices[start:start + self.chunk]).to(self.device)  # [b, C, H, W]
            padded = F.pad(block, (s, s, s, s))  # zero fill
            y = padded[:, :, r0:r1 + 2 * s, c0:c1 + 2 * s]  # [b, C, h + 2s, w + 2s]
            scores = F.conv2d(torch.cat([y, y.square()], 1), weight).flatten(1)  # [b, (2s + 1)^2]
            out[start:start + y.shape[0]] = scores[:, column] + constant
        return out.cpu()

    def sigma2(self, num_cells: int, distances: Tensor) -> float:
        """sigma^2 for an observation of ``num_cells`` cells (schedule, or ESS bisection on ``distances``).

        ``distances`` is ``[P]`` or, with shifts, ``[P, J]``: the bisection then scores the marginalised
        log-weights at each trial sigma^2 (module docstring).
        """
        if self.target_ess is None:
            return self.sigma2_schedule[min(max(num_cells, 1), len(self.sigma2_schedule)) - 1]
        return ess_sigma2(distances, self.target_ess)

    # ---------------------------------------------------------------------------------------- sample
    def proposals(self, image: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """``(indices [P], normalised weights [P])``: the kept candidates and their importance weights."""
        indices, weights, _ = self.weighted_candidates(image, mask)
        return indices, weights

    def weighted_candidates(self, image: Tensor, mask: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``(indices [P] ascending, normalised weights [P], best offsets [P, 2])`` (offsets 0 without shifts)."""
        cells = self.observed_cells(mask)
        if len(cells) > 0:
            approx = self.approximate_distances(image, cells)  # [M] on device
            P = min(self.n_proposals, len(self.bank))
            indices = torch.topk(approx, P, largest=False).indices.sort().values.cpu()
        else:
            indices = torch.arange(len(self.bank))
        if self.shifts == 0:
            distances = self.exact_distances(image, mask, indices)
            offsets = torch.zeros(indices.shape[0], 2, dtype=torch.long)
        else:
            distances = self.shifted_distances(image, mask, indices)  # [P, J]
            # The smallest shift among those tied with the best (up to float32 rounding: 1e-6 per observed pixel).
            tied = distances <= distances.amin(1, keepdim=True) + 1e-6 * float(mask.sum()) * image.shape[0]
            offsets = self._offsets[tied.float().argmax(1)]  # argmax: the first True
        log_w = distance_log_weights(distances, self.sigma2(len(cells), distances))
        return indices, torch.softmax(log_w, 0), offsets

    def sample(self, image: Tensor, mask: Tensor, n: int, *,
               generator: Optional[torch.Generator] = None) -> tuple[Tensor, Tensor]:
        """Completions of ``image [C, H, W]`` seen through ``mask [1, H, W]``: ``([N, C, H, W], [N])``, N <= n."""
        if image.shape != self.bank.image_shape:
            raise ValueError(f"BankSampler.sample: expected an image of shape {self.bank.image_shape} (the bank's), "
                             f"found {tuple(image.shape)}")
        if mask.shape != (1, *self.grid.image_size):
            raise ValueError(f"BankSampler.sample: expected a mask of shape {(1, *self.grid.image_size)}, "
                             f"found {tuple(mask.shape)}")
        if n < 1:
            raise ValueError(f"BankSampler.sample: expected n >= 1, found {n}")
        if mask.sum() == 0:
            if n <= len(self.bank):
                chosen = torch.randperm(len(self.bank), generator=generator)[:n]
            else:
                chosen = torch.randint(len(self.bank), (n,), generator=generator)
        else:
            indices, weights, offsets = self.weighted_candidates(image, mask)
            self.last_stats = {"proposal_ess": float(effective_sample_size(weights.log()))}
            if self.resampling == "residual":
                picks = residual_resample(weights, n, generator)
            else:
                picks = torch.multinomial(weights, n, replacement=True, generator=generator)
            chosen = indices[picks]
        unique, counts = torch.unique(chosen, return_counts=True)
        images = self.bank.images(unique)
        if self.shifts and mask.sum() > 0:
            images = shift_images(images, offsets[torch.searchsorted(indices, unique)])  # indices ascend
        return images.to(image.device), (counts.float() / n).to(image.device)
