"""Settings of the annotator (:class:`AnnotateConfig`) and which images a shard takes (:func:`select_indices`).

:mod:`foveal.boed.annotate` runs them; its docstring describes the selection, sharding and the output folder.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any, Optional

import torch
from torch import Tensor

from foveal.boed.epe import SearchConfig
from foveal.boed.posterior import PRECISIONS
from foveal.retina import LocationGrid

__all__ = ["AnnotateConfig", "select_indices", "SHARD_MODES", "COMPLETIONS", "OBJECTIVES", "GLIMPSE_FIELDS",
           "posterior_glimpse_settings", "with_posterior_settings", "check_posterior_settings", "grid_words"]

SHARD_MODES = ("round-robin", "contiguous")
COMPLETIONS = ("bank", "hindsight")
OBJECTIVES = ("entropy", "label")


@dataclass(frozen=True)
class AnnotateConfig:
    """Settings of :func:`annotate`.

    Attributes:
        dataset, split, data_root, data_seed, data_options: the images (``foveal.data.build_dataset``).
        posterior: checkpoint prefix of a posterior network (registry kind "posterior").
        bank: image bank ``.npy`` (``foveal build-bank``).
        task: recorded in the file (e.g. a CelebA attribute); None = the dataset's labels.
        start, count: positions ``start .. start + count - 1`` of the split (count None: to the end).
        shard_index, num_shards, shard_mode: this process's fixed share of the images, "round-robin" or
            "contiguous" (to split an annotation by hand; ``foveal annotate --ray`` spreads chunks instead).
        threads: torch's CPU threads while annotating (the bank search runs on the CPU when ``device`` is the
            CPU); None leaves the setting as it is. With Ray, the CPUs each chunk task asks for.
        share_pca_cells: also write every cell's PCA to the output folder for the other workers (the
            first glimpse's cell always is); ``len(bank) * pca_components * 2`` bytes per cell.
        glimpse_size, grid, grid_stride: the candidate cells, as in ``PosteriorTrainingConfig``
            (``grid`` cells per axis, or every ``grid_stride`` pixels; neither: stride 1). They must be the
            posterior's (:func:`check_posterior_settings`; ``foveal annotate`` takes them from it when not given).
        num_glimpses: T, at most the posterior's.
        n_completions: completions per step (the paper: 200).
        first_completions: completions for the task's first glimpse (None: ``n_completions``). It is made
            once per task from prior samples, so many more cost little, and every image's sequence
            starts from it.
        pca_components, n_proposals, sigma2_schedule, target_ess, resampling, pca_fit_samples: the
            :class:`~foveal.boed.completion.BankSampler`'s settings.
        shifts: translations of up to this many pixels marginalised when re-weighting the candidates
            (:class:`~foveal.boed.completion.BankSampler`; 0: none, the official code: 4).
        cache_cells: cell PCAs the sampler keeps fitted (None: every cell of the grid, so none is
            refitted; lower it only when memory is short).
        local_updates, screen_completions, screen_top_k, skip_seen: how each step searches
            (:class:`~foveal.boed.epe.SearchConfig`; the defaults are the plain method). local_updates
            is exact; screening with few completions then re-scoring the top k is an approximation
            (benchmarks/annotator/annotate.py measures both).
        keep_maps: also store every step's EPE map (``[N, T, grid_h, grid_w]`` float32).
        seed: per-image randomness (module docstring).
        chunk_size: images per part file (the unit of resumption).
        batch_size: masked images per posterior call.
        device: "cpu", "cuda", "cuda:N" or "auto": the posterior's, and the bank search's distance
            arithmetic (:class:`~foveal.boed.completion.BankSampler`; the bank is read on the host).
        precision: the posterior's forward in "fp32" or "bf16" (autocast; GPUs with bf16 matrix units),
        channels_last: its convolutions in the channels-last memory format, and
        compile: its forward through ``torch.compile`` (:class:`NetworkPosterior`). All three change the
            EPE values slightly, so a rerun must keep them.
        completions: where each step's completions come from: ``"bank"`` (the paper's method: images of
            the bank consistent with what was seen) or ``"hindsight"`` (the true image as the only
            completion, :class:`~foveal.boed.completion.TrueImage`: the cell after which the posterior is
            surest on this very image; it uses information no policy has, so it is a reference, not a
            method). The first glimpse is the task's in both (made from the bank's prior samples), so the
            two differ only in the completions of steps 2..T (``objective`` "label" aside).
        objective: what each cell is scored by: ``"entropy"`` (the posterior's expected entropy, the method)
            or ``"label"`` (with ``completions="hindsight"`` only: the cross-entropy of the image's true label,
            ``dataset[i]["label"]``, on the true image seen through the cells so far and the candidate,
            :func:`~foveal.boed.epe.expected_label_cross_entropy`: the cell after which the posterior is most
            *right*, where the entropy finds where it is most *sure*). The label objective chooses the first
            cell per image the same way (no task-wide first glimpse is made), and takes no screening
            (``screen_completions`` None: one completion leaves nothing to screen). It reads the answer, so
            its sequences are a reference, not a method.
        method: recorded in the file (``"hindsight"`` where ``completions`` is, ``"hindsight-label"`` where
            ``objective`` is ``"label"`` too, unless set otherwise).
    """

    dataset: str
    posterior: str
    bank: str
    split: str = "train"
    data_root: Optional[str] = None
    data_seed: int = 0
    data_options: dict = field(default_factory=dict)
    task: Optional[str] = None
    start: int = 0
    count: Optional[int] = None
    shard_index: int = 0
    num_shards: int = 1
    shard_mode: str = "round-robin"
    threads: Optional[int] = None
    share_pca_cells: bool = False
    glimpse_size: int = 8
    grid: Optional[int | tuple[int, int]] = None
    grid_stride: Optional[int] = None
    num_glimpses: int = 5
    n_completions: int = 200
    first_completions: Optional[int] = None
    pca_components: int = 32
    n_proposals: int = 1000
    sigma2_schedule: tuple[float, ...] = (0.05,)
    target_ess: Optional[float] = None
    resampling: str = "residual"
    pca_fit_samples: int = 4096
    cache_cells: Optional[int] = None
    shifts: int = 0
    local_updates: bool = False
    screen_completions: Optional[int] = None
    screen_top_k: int = 8
    skip_seen: bool = False
    keep_maps: bool = False
    seed: int = 0
    chunk_size: int = 16
    batch_size: int = 256
    device: str = "cpu"
    precision: str = "fp32"
    channels_last: bool = False
    compile: bool = False
    completions: str = "bank"
    objective: str = "entropy"
    method: str = "nogs"

    def __post_init__(self) -> None:
        if isinstance(self.grid, list):
            object.__setattr__(self, "grid", tuple(self.grid))
        if isinstance(self.sigma2_schedule, (int, float)):
            object.__setattr__(self, "sigma2_schedule", (self.sigma2_schedule,))
        object.__setattr__(self, "sigma2_schedule", tuple(float(s) for s in self.sigma2_schedule))
        object.__setattr__(self, "data_options", dict(self.data_options or {}))
        for name in ("glimpse_size", "num_glimpses", "n_completions", "pca_components", "n_proposals",
                     "pca_fit_samples", "chunk_size", "batch_size", "num_shards"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"AnnotateConfig.{name}: expected an integer >= 1, found {getattr(self, name)!r}")
        for name in ("start", "seed", "data_seed", "shifts"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 0:
                raise ValueError(f"AnnotateConfig.{name}: expected an integer >= 0, found {getattr(self, name)!r}")
        for name in ("cache_cells", "first_completions"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
                raise ValueError(f"AnnotateConfig.{name}: expected None or an integer >= 1, found {value!r}")
        self.search()  # SearchConfig checks its own fields
        if self.count is not None and (not isinstance(self.count, int) or self.count < 1):
            raise ValueError(f"AnnotateConfig.count: expected None (to the end) or an integer >= 1, "
                             f"found {self.count!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"AnnotateConfig.precision: expected one of {PRECISIONS}, found {self.precision!r}")
        for name in ("channels_last", "compile"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"AnnotateConfig.{name}: expected true or false, found {getattr(self, name)!r}")
        if not 0 <= self.shard_index < self.num_shards:
            raise ValueError(f"AnnotateConfig.shard_index: expected 0 <= shard_index < num_shards = {self.num_shards} "
                             f"(shards count from 0), found {self.shard_index}")
        if self.shard_mode not in SHARD_MODES:
            retired = " (claiming chunks on a shared folder was replaced by foveal annotate --ray)" \
                if self.shard_mode == "claim" else ""
            raise ValueError(f"AnnotateConfig.shard_mode: expected one of {', '.join(map(repr, SHARD_MODES))}, "
                             f"found {self.shard_mode!r}{retired}")
        if self.threads is not None and (not isinstance(self.threads, int) or self.threads < 1):
            raise ValueError(f"AnnotateConfig.threads: expected None (leave as is) or an integer >= 1, "
                             f"found {self.threads!r}")
        if self.grid is not None and self.grid_stride is not None:
            raise ValueError(f"AnnotateConfig: expected at most one of grid, grid_stride; found grid={self.grid!r}, "
                             f"grid_stride={self.grid_stride!r}")
        if self.completions not in COMPLETIONS:
            raise ValueError(f"AnnotateConfig.completions: expected one of {', '.join(map(repr, COMPLETIONS))}, "
                             f"found {self.completions!r}")
        if self.objective not in OBJECTIVES:
            raise ValueError(f"AnnotateConfig.objective: expected one of {', '.join(map(repr, OBJECTIVES))}, "
                             f"found {self.objective!r}")
        if self.objective == "label" and self.completions != "hindsight":
            raise ValueError(f"AnnotateConfig.objective: 'label' scores a cell by the true label's cross-entropy on "
                             f"the true image, so it needs completions='hindsight', found completions="
                             f"{self.completions!r}")
        if self.objective == "label" and self.screen_completions is not None:
            raise ValueError(f"AnnotateConfig.screen_completions: expected None with objective='label' (the true "
                             f"image is the only completion: nothing to screen), found {self.screen_completions!r}")
        if self.completions == "hindsight" and self.method == "nogs":
            object.__setattr__(self, "method", "hindsight-label" if self.objective == "label" else "hindsight")
        if self.device not in ("cpu", "cuda", "auto") and not self.device.startswith("cuda:"):
            raise ValueError(f"AnnotateConfig.device: expected cpu, cuda, cuda:N or auto, found {self.device!r}")

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "AnnotateConfig":
        """From a mapping (a YAML file); an unknown key is an error naming the accepted ones."""
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(values) - set(names))
        if unknown:
            retired = " (claim_timeout belonged to the claiming workers, replaced by foveal annotate --ray)" \
                if "claim_timeout" in unknown else ""
            raise ValueError(f"annotate config: unknown field(s) {unknown}{retired}; expected some of {names}")
        missing = [k for k in ("dataset", "posterior", "bank") if values.get(k) is None]
        if missing:
            raise ValueError(f"annotate config: field {missing[0]!r}: expected a value, found none")
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able (tuples as lists)."""
        return json.loads(json.dumps(dataclasses.asdict(self)))

    def search(self) -> SearchConfig:
        return SearchConfig(screen_completions=self.screen_completions, screen_top_k=self.screen_top_k,
                            skip_seen=self.skip_seen, local_updates=self.local_updates)

    def make_grid(self, image_size: tuple[int, int]) -> LocationGrid:
        if self.grid is not None:
            return LocationGrid.from_count(image_size, self.glimpse_size, self.grid)
        return LocationGrid.from_stride(image_size, self.glimpse_size, self.grid_stride or 1)

    @property
    def shard_name(self) -> str:
        return f"shard-{self.shard_index}-of-{self.num_shards}"


GLIMPSE_FIELDS = ("glimpse_size", "grid", "grid_stride", "num_glimpses")  # what the posterior was trained for


def posterior_glimpse_settings(info: dict[str, Any]) -> Optional[dict[str, Any]]:
    """``{glimpse_size, grid, grid_stride, num_glimpses}`` a posterior checkpoint was trained with (its
    ``info["config"]``'s ``algorithm`` section, the defaults of ``PosteriorTrainingConfig`` filling the keys it
    leaves out); None for a checkpoint that records no posterior training (e.g. made in Python)."""
    from foveal.training.posterior import PosteriorTrainingConfig

    algorithm = ((info or {}).get("config") or {}).get("algorithm") or {}
    if algorithm.get("name") != "posterior":
        return None
    defaults = PosteriorTrainingConfig()
    return {k: algorithm.get(k, getattr(defaults, k)) for k in GLIMPSE_FIELDS}


def grid_words(settings: dict[str, Any]) -> str:
    grid, stride = settings.get("grid"), settings.get("grid_stride")
    if grid is not None:
        rows, cols = (grid, grid) if isinstance(grid, int) else tuple(grid)
        return f"grid {rows}x{cols} cells" if rows != cols else f"grid {rows} (cells per axis)"
    return f"grid_stride {stride or 1}"


def with_posterior_settings(given: dict[str, Any], posterior: Optional[dict[str, Any]],
                            where: str) -> dict[str, Any]:
    """``given`` (the fields a user set) completed with the posterior's glimpse settings.

    The glimpse size and the grid are the posterior's: a field left out is taken from it, one given with
    another value is refused. ``num_glimpses`` left out is the posterior's T; given, it may be smaller (the
    posterior was trained on every t up to T) but not larger. ``where`` names the checkpoint in messages.

    Raises:
        ValueError: one line naming the field, the value given and the posterior's.
    """
    if posterior is None:
        return dict(given)
    out = dict(given)
    size = posterior["glimpse_size"]
    if given.get("glimpse_size") is None:
        out["glimpse_size"] = size
    elif given["glimpse_size"] != size:
        raise ValueError(f"glimpse_size: {given['glimpse_size']} given, but the posterior {where} was trained on "
                         f"{size} px glimpses; leave it out to use the posterior's, or train a posterior for it")
    if given.get("grid") is None and given.get("grid_stride") is None:
        out["grid"], out["grid_stride"] = posterior["grid"], posterior["grid_stride"]
    elif grid_words(given) != grid_words(posterior):
        raise ValueError(f"grid: {grid_words(given)} given, but the posterior {where} was trained on "
                         f"{grid_words(posterior)}; leave grid and grid_stride out to use the posterior's")
    T = posterior["num_glimpses"]
    if given.get("num_glimpses") is None:
        out["num_glimpses"] = T
    elif given["num_glimpses"] > T:
        raise ValueError(f"num_glimpses: {given['num_glimpses']} given, but the posterior {where} was trained on at "
                         f"most T = {T} glimpses; give at most {T}, or leave it out to use {T}")
    return out


def check_posterior_settings(config: AnnotateConfig, info: dict[str, Any]) -> None:
    """Refuse a config whose glimpse settings are not those its posterior was trained with
    (:func:`with_posterior_settings`, every field counted as given)."""
    given = {k: getattr(config, k) for k in GLIMPSE_FIELDS}
    with_posterior_settings(given, posterior_glimpse_settings(info), config.posterior)


def select_indices(config: AnnotateConfig, split_size: int) -> Tensor:
    """int64 ``[n]``: this shard's positions of the split, in processing order (module docstring)."""
    stop = split_size if config.count is None else config.start + config.count
    if config.start >= split_size or stop > split_size:
        raise ValueError(f"AnnotateConfig.start/count: expected positions within the split's {split_size} images, "
                         f"found {config.start}..{stop - 1}")
    chosen = torch.arange(config.start, stop)
    if config.shard_mode == "round-robin":
        return chosen[config.shard_index::config.num_shards]
    return torch.tensor_split(chosen, config.num_shards)[config.shard_index]
