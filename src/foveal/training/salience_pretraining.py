r"""RAM+: pretraining with glimpses drawn from a salience map made by the posterior network.

Harvey et al. (2021, section 6, CUB) pretrain the classifier, RNN and glimpse network "with glimpse
locations sampled independently at each time step from ... a heuristic which assigns higher
probability to more salient locations, as estimated using the AVP-CNN", then train as usual
(RAM+ is that pretraining followed by RAM's REINFORCE training). The heuristic itself is in the
paper's appendix, which we do not have; this module makes the following choice.

**Salience of a cell** = how much the posterior's entropy drops when that cell alone is seen, on
this image. With :math:`q` the attentional variational posterior (:mod:`foveal.models.posterior_cnn`),
:math:`m_g` the mask of grid cell ``g`` and :math:`H(m) = H[q(\theta \mid x \odot m, m)]`,

.. math::

    s_g = H(0) - H(m_g)                                              \quad (\texttt{mode="exact"}: G+1 \text{ forwards per image})

    s_g \approx -\sum_{p \in g} \frac{\partial H}{\partial m_p}\Big|_{m=0}  \quad (\texttt{mode="linear"}: \text{one forward and backward})

The linear mode is the first-order Taylor expansion of the exact one around "nothing seen"
(:math:`m_g` is a sum of pixel indicators), so it costs one backward pass per image instead of
G + 1 forwards: on a 13 x 13 grid, ~60x less. (It needs a trained posterior: in an untrained
network with bias-free convolutions the all-zero input sits on ReLU kinks, where PyTorch's
derivative is 0.) Either is label-free (an expected-information
heuristic, like the annotator's expected posterior entropy) and depends on the image only.

**Sampling distribution**: scale-free, with a floor so every cell stays possible,

.. math::

    p(g \mid x) = (1 - \epsilon)\,\frac{\max(s_g, 0)}{\sum_k \max(s_k, 0)} + \frac{\epsilon}{G},

uniform when no cell has a positive salience; ``epsilon = uniform_mix``. At every step of the
rollout a cell is drawn from :math:`p(\cdot \mid x)` independently of the previous steps (with the
global torch RNG, which the engine checkpoints: the stage resumes exactly).

Maps are computed once for a whole split (:func:`compute_salience`) and saved as an ``.npz``
(:class:`SalienceMaps`, loaded with ``allow_pickle=False``); the ``salience-pretraining``
algorithm reads them by the batch's ``index``. Only the classifier, core and glimpse network learn
in this stage (cross-entropy after the last glimpse); the location network and the baseline get no
gradient. Validation uses ``eval_policy`` (``"random"`` by default: the location network is untrained).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from foveal.files import unique_token
from foveal.logits import posterior_entropy
from foveal.models.base import PolicyState
from foveal.retina import LocationGrid, cell_masks, masked_input
from foveal.training.base import ALGORITHMS, EvaluationSettings, LossOutput, PolicyEvaluation

__all__ = ["SalienceMaps", "salience", "compute_salience", "salience_probabilities", "SaliencePolicy",
           "SaliencePretrainingConfig", "SaliencePretraining"]

FORMAT = "foveal-salience-maps"
MODES = ("exact", "linear")


@dataclass(eq=False)
class SalienceMaps:
    """Salience of every grid cell for every image of a split.

    Attributes:
        maps: float32 ``[N, G]``, row = dataset index, cells row-major as in ``grid``.
        grid: the cells.
        dataset, split: what the rows index.
        mode: ``"exact"`` or ``"linear"`` (module docstring).
        provenance: how they were made (posterior checkpoint, ...), JSON-able.
    """

    maps: Tensor
    grid: LocationGrid
    dataset: str
    split: str
    mode: str
    provenance: dict = field(default_factory=dict)
    source: Optional[str] = field(default=None, repr=False)

    def __post_init__(self) -> None:
        where = self.source or "SalienceMaps"
        if self.maps.dim() != 2 or self.maps.shape[1] != len(self.grid):
            raise ValueError(f"{where}: field 'maps': expected shape [N, {len(self.grid)}] (one value per grid "
                             f"cell), found {list(self.maps.shape)}")
        if self.mode not in MODES:
            raise ValueError(f"{where}: field 'mode': expected one of {MODES}, found {self.mode!r}")
        self.maps = self.maps.detach().cpu().float()

    def save(self, path: Union[str, Path]) -> Path:
        path = Path(path)
        header = {"format": FORMAT, "version": 1, "dataset": self.dataset, "split": self.split, "mode": self.mode,
                  "grid": {"image_size": list(self.grid.image_size), "glimpse_size": self.grid.glimpse_size,
                           "rows": list(self.grid.rows), "cols": list(self.grid.cols)},
                  "provenance": self.provenance}
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.stem}.tmp-{unique_token()}.npz")  # numpy adds .npz to other names
        np.savez_compressed(tmp, maps=self.maps.numpy(), header=np.array(json.dumps(header)))
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, path: Union[str, Path]) -> "SalienceMaps":
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: salience maps not found (made by foveal.training.salience_pretraining."
                                    "compute_salience, or by foveal compare for RAM+)")
        with np.load(path, allow_pickle=False) as f:
            header = json.loads(str(f["header"]))
            maps = torch.from_numpy(f["maps"])
        if header.get("format") != FORMAT:
            raise ValueError(f"{path}: field 'format': expected {FORMAT!r}, found {header.get('format')!r}")
        g = header["grid"]
        grid = LocationGrid(tuple(g["image_size"]), int(g["glimpse_size"]), tuple(g["rows"]), tuple(g["cols"]))
        return cls(maps, grid, header["dataset"], header["split"], header["mode"], header.get("provenance", {}),
                   source=str(path))

    def validate(self, dataset: Any) -> None:
        """The maps belong to ``dataset``: name, split, image size, one row per item."""
        where = self.source or "SalienceMaps"
        for name, have in (("dataset", getattr(dataset, "name", None)), ("split", getattr(dataset, "split", None))):
            if have is not None and have != getattr(self, name):
                raise ValueError(f"{where}: field {name!r}: expected {have!r} (the dataset's), found {getattr(self, name)!r}")
        if tuple(dataset.image_shape[1:]) != self.grid.image_size:
            raise ValueError(f"{where}: field 'grid': expected images of {tuple(dataset.image_shape[1:])}, found "
                             f"{self.grid.image_size}")
        if self.maps.shape[0] != len(dataset):
            raise ValueError(f"{where}: field 'maps': expected {len(dataset)} rows (one per item), found "
                             f"{self.maps.shape[0]}")


def salience(network: nn.Module, images: Tensor, grid: LocationGrid, *, mode: str = "linear",
             multilabel: Optional[bool] = None, batch_size: int = 256) -> Tensor:
    """Salience ``[B, G]`` of every cell for a batch of images ``[B, C, H, W]`` (module docstring).

    The network reads ``masked_input(images, masks)`` (any posterior of :mod:`foveal.boed`) and is run
    in eval mode; its parameters receive no gradient.
    """
    if mode not in MODES:
        raise ValueError(f"salience: mode: expected one of {MODES}, found {mode!r}")
    multilabel = bool(getattr(network, "multilabel", False) if multilabel is None else multilabel)
    was_training = network.training
    network.eval()
    try:
        cells = cell_masks(grid, images.device).to(images.dtype)  # [G, 1, H, W]
        B = images.shape[0]
        empty = images.new_zeros(B, 1, *images.shape[2:])
        if mode == "linear":
            mask = empty.requires_grad_(True)
            with torch.enable_grad():
                entropy = posterior_entropy(_wide(network(masked_input(images, mask))), multilabel).sum()
                (grad,) = torch.autograd.grad(entropy, mask)  # [B, 1, H, W]; the network's weights get nothing
            return -(grad.flatten(1) @ cells.flatten(1).T)  # [B, G]
        with torch.no_grad():
            h0 = posterior_entropy(_wide(network(masked_input(images, empty))), multilabel)  # [B]
            G = len(grid)
            pairs = torch.arange(B * G, device=images.device)  # image-major
            out = images.new_empty(B * G)
            for start in range(0, B * G, batch_size):
                p = pairs[start:start + batch_size]
                m = cells[p % G]
                out[start:start + batch_size] = posterior_entropy(_wide(network(masked_input(images[p // G], m))),
                                                                  multilabel)
            return h0[:, None] - out.view(B, G)
    finally:
        network.train(was_training)


def _wide(logits: Tensor) -> Tensor:
    """Half-precision logits to float32 before the entropy; float32 / float64 unchanged."""
    return logits if logits.dtype in (torch.float32, torch.float64) else logits.float()


def compute_salience(network: nn.Module, dataset: Dataset, grid: LocationGrid, *, mode: str = "linear",
                     batch_size: int = 64, device: Optional[torch.device] = None,
                     provenance: Optional[dict] = None,
                     progress: Optional[Callable[[int, int], None]] = None) -> SalienceMaps:
    """:func:`salience` of every item of ``dataset``, in index order (``progress(done, total)`` per batch)."""
    device = device or next(network.parameters()).device
    rows = []
    done = 0
    for batch in DataLoader(dataset, batch_size=batch_size, shuffle=False):
        rows.append(salience(network, batch["image"].to(device), grid, mode=mode).cpu())
        done += batch["image"].shape[0]
        if progress is not None:
            progress(done, len(dataset))
    maps = torch.cat(rows) if rows else torch.zeros(0, len(grid))
    return SalienceMaps(maps, grid, getattr(dataset, "name", "unknown"), getattr(dataset, "split", "unknown"), mode,
                        dict(provenance or {}))


def salience_probabilities(maps: Tensor, uniform_mix: float) -> Tensor:
    """``[B, G]`` salience -> ``[B, G]`` sampling probabilities (module docstring)."""
    positive = maps.clamp_min(0)
    total = positive.sum(1, keepdim=True)
    G = maps.shape[1]
    shaped = torch.where(total > 0, positive / total.clamp_min(1e-30), torch.full_like(maps, 1.0 / G))
    return (1 - uniform_mix) * shaped + uniform_mix / G


class SaliencePolicy:
    """Draws every step's cell independently from ``probs [B, G]`` over ``grid``; returns cell centres."""

    def __init__(self, probs: Tensor, grid: LocationGrid) -> None:
        self.probs = probs
        self.locations = grid.locations().to(probs.device)  # [G, 2]

    def __call__(self, state: PolicyState, images: Tensor) -> Tensor:
        cells = torch.multinomial(self.probs, 1).squeeze(1)  # [B], global RNG
        return self.locations[cells]


@dataclass(frozen=True)
class SaliencePretrainingConfig(EvaluationSettings):
    """Settings of :class:`SaliencePretraining`, after the evaluation settings (validation: random places by
    default, the location network is untrained in this stage).

    Attributes:
        salience: path of the :class:`SalienceMaps` ``.npz`` of the training split.
        uniform_mix: epsilon, the uniform share of the sampling distribution.
    """

    eval_policy: str = "random"
    salience: Optional[str] = None
    uniform_mix: float = 0.1

    def __post_init__(self) -> None:
        super().__post_init__()
        if not isinstance(self.salience, str) or not self.salience:
            raise ValueError(f"SaliencePretrainingConfig.salience: expected the path of salience maps (.npz), "
                             f"found {self.salience!r}")
        if not 0 <= self.uniform_mix <= 1:
            raise ValueError(f"SaliencePretrainingConfig.uniform_mix: expected in [0, 1], found {self.uniform_mix!r}")


@ALGORITHMS.register("salience-pretraining", config=SaliencePretrainingConfig)
class SaliencePretraining(PolicyEvaluation):
    """RAM+ pretraining: cross-entropy with glimpses drawn from a posterior's salience maps.

    See the module docstring."""

    def __init__(self, config: SaliencePretrainingConfig) -> None:
        self.config = config
        self._maps: Optional[SalienceMaps] = None

    @property
    def maps(self) -> SalienceMaps:
        if self._maps is None:
            self._maps = SalienceMaps.load(self.config.salience)
        return self._maps

    def prepare(self, train_set: Dataset) -> Dataset:
        """Check that the maps belong to ``train_set``; return it unchanged."""
        self.maps.validate(train_set)
        return train_set

    def loss(self, model: nn.Module, batch: dict[str, Tensor]) -> LossOutput:
        maps = self.maps
        grid = getattr(model, "grid", None)
        if grid is not None and (grid.rows, grid.cols, grid.glimpse_size) != (maps.grid.rows, maps.grid.cols,
                                                                               maps.grid.glimpse_size):
            raise ValueError(f"{maps.source}: the salience maps are over another grid than the model's "
                             f"(rows {maps.grid.rows[:3]}... vs {grid.rows[:3]}..., {maps.grid.glimpse_size} vs "
                             f"{grid.glimpse_size} px); compute them on the model's grid")
        index = batch["index"].long().cpu()
        if int(index.max()) >= maps.maps.shape[0]:
            raise ValueError(f"{maps.source}: batch index {int(index.max())} has no salience row "
                             f"({maps.maps.shape[0]} rows)")
        probs = salience_probabilities(maps.maps[index], self.config.uniform_mix).to(batch["image"].device)
        ro = model.rollout(batch["image"], self.config.num_glimpses, policy=SaliencePolicy(probs, maps.grid))
        final = ro.logits[:, -1]
        ce = F.cross_entropy(final, batch["label"])
        accuracy = (final.argmax(-1) == batch["label"]).float().mean()
        return LossOutput(ce, {"ce": ce.detach(), "accuracy": accuracy.detach()})
