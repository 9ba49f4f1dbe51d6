r"""The annotator: near-optimal glimpse sequences for many images, resumable, shardable, and spread over a
Ray cluster.

For every selected image of a split, :func:`annotate` runs :func:`foveal.boed.epe.greedy_sequence`
(at step t, the cell minimising the expected posterior entropy given the true pixels seen so far)
with a posterior network loaded from a checkpoint (:class:`~foveal.boed.posterior.NetworkPosterior`)
and an image bank (:class:`~foveal.boed.completion.BankSampler`, searched on the posterior's device), and
writes the sequences as a :class:`~foveal.sequences.GlimpseSequences` file. Its cost is ``T - 1``
steps per image, each ``len(grid) x n_completions`` posterior evaluations plus one bank search; the first
glimpse sees nothing, so it is the same for every image of a task and computed once. The hindsight-label
reference (``completions="hindsight"``, ``objective="label"``) scores each cell by the cross-entropy of the
image's true label on the true image instead, all T steps per image (its first cell too), with no bank
search and no task-wide first glimpse; it reads the answer, so it is a reference, not a method.

Selection: positions ``start .. start + count - 1`` of the split; shard ``i`` of ``n`` (``i`` counts
from 0) takes every n-th of them from the i-th (``round-robin``, balanced even if cost drifts along
the split) or the i-th of n near-equal consecutive blocks (``contiguous``): a fixed share, for splitting
an annotation by hand over machines that share nothing, then ``foveal sequences merge``.

The work has three steps: :func:`prepare` (the record ``config.json``, the first glimpse and its cell's
PCA), one :func:`compute_chunk` per chunk of ``chunk_size`` images (each saves its part), and
:func:`finish` (the result from the parts). :func:`annotate` does them in this process;
:func:`foveal.boed.annotate_ray.annotate_on_ray` prepares and finishes in the driver and runs the chunks
as Ray tasks (:mod:`foveal.cluster`) on a local instance or a cluster. The folder is the same either way,
so a run of one kind resumes a run of the other.

Reproducibility: image ``k`` draws its completions from a generator seeded by
``SeedSequence([seed, k])`` (numpy; the first glimpse from ``SeedSequence([seed])``), so its sequence
does not depend on sharding, chunking, resumption or which process computed it: a killed run continued,
shards merged and chunks computed on a cluster give the same tensors as one uninterrupted run (as long as
the processes compute alike: same software, same thread count; floating-point results can differ between
CPU or GPU models).

``out_dir`` holds::

    config.json                         the resolved config and the posterior's SHA-256; a rerun must match
                                        (paths, device, batch_size, threads, shard_index may differ)
    first-glimpse.{json,safetensors}    the task's first cell and its EPE map [grid_h, grid_w] (not with
                                        objective "label", whose first cell is each image's own)
    pca/cell-<g>.safetensors            cell PCAs that chunks read (the first cell's; all if share_pca_cells)
    parts/shard-<i>-of-<n>/part-<k>.*   chunk k of the shard's images, one GlimpseSequences each
    sequences.{json,safetensors}        the result; a fixed shard writes sequences-shard-<i>-of-<n>.*

Each file is written atomically (:mod:`foveal.files`) and a part only once its chunk is done, so a killed
run restarts at the first missing chunk and a chunk whose part exists is never computed again.
:func:`merge_shards` combines fixed shards' results (copied into one folder), :func:`merge_chunks` the
chunks of a folder made by the claiming workers of earlier versions (``parts/all/part-<k>/part.*``; both:
``foveal sequences merge <out_dir>``).
"""

from __future__ import annotations

import hashlib
import json
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import torch
from torch import Tensor

from foveal.boed.annotate_config import AnnotateConfig, check_posterior_settings, select_indices
from foveal.boed.annotate_folder import (PCAFileStore, assemble, check_run_dir, merge_chunks, merge_folder,
                                         merge_shards, part_done, part_prefix, read_first_glimpse, run_record,
                                         save_sequences, write_first_glimpse)
from foveal.boed.bank import ImageBank
from foveal.boed.completion import BankSampler, TrueImage, effective_sample_size
from foveal.boed.epe import FirstGlimpse, first_glimpse, greedy_sequence
from foveal.boed.posterior import NetworkPosterior
from foveal.checkpoint import checkpoint_paths, read_checkpoint_info
from foveal.data import build_dataset
from foveal.models import load_model
from foveal.retina import LocationGrid
from foveal.runtime import resolve_device
from foveal.sequences import GlimpseSequences

__all__ = ["AnnotateConfig", "annotate", "open_annotation", "load_tools", "prepare", "prepared_first_glimpse",
           "compute_chunk", "finish", "Annotation", "Tools", "merge_shards",
           "merge_chunks", "merge_folder", "select_indices", "image_generator", "load_posterior", "result_path"]


def image_generator(seed: int, index: Optional[int]) -> torch.Generator:
    """The generator of image ``index`` (``SeedSequence([seed, index])``; None: the first glimpse's)."""
    entropy = [seed] if index is None else [seed, int(index)]
    state = np.random.SeedSequence(entropy).generate_state(1, np.uint64)[0]
    return torch.Generator().manual_seed(int(state))


def load_posterior(checkpoint: str | Path, device: torch.device, *, precision: str = "fp32",
                   channels_last: bool = False, compile: bool = False):
    """``(NetworkPosterior, checkpoint info)`` from a checkpoint of a posterior network."""
    model, info = load_model(checkpoint, kind="posterior")
    return NetworkPosterior(model.to(device).eval(), device=device, precision=precision,
                            channels_last=channels_last, compile=compile), info


def result_path(config: AnnotateConfig, out_dir: str | Path) -> Path:
    """Where :func:`annotate` writes the result (prefix, without suffix)."""
    name = "sequences" if config.num_shards == 1 else f"sequences-{config.shard_name}"
    return Path(out_dir) / name


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _identity(cfg: AnnotateConfig) -> tuple[str, dict[str, Any]]:
    """``(SHA-256 of the posterior's tensors, the bank's sidecar)``: what a resumed run must share."""
    posterior_file, bank_sidecar = checkpoint_paths(cfg.posterior)[0], Path(cfg.bank).with_suffix(".json")
    if not posterior_file.exists():
        raise FileNotFoundError(f"{posterior_file}: posterior checkpoint not found")
    if not bank_sidecar.exists():
        raise FileNotFoundError(f"{bank_sidecar}: image bank not found (a bank is <name>.npy + <name>.json; make one "
                                "with foveal build-bank)")
    return _sha256(posterior_file), json.loads(bank_sidecar.read_text())


@dataclass
class Annotation:
    """An output folder opened for a config: what :func:`prepare`, :func:`compute_chunk` and :func:`finish`
    share. ``chunks[k]``: int64 ``[<= chunk_size]`` positions of the split; ``prefixes[k]``: its part."""

    cfg: AnnotateConfig
    out_dir: Path
    dataset: Any
    grid: LocationGrid
    channels: int
    indices: Tensor
    chunks: list[Tensor]
    prefixes: list[Path]
    record: dict[str, Any]

    def todo(self) -> list[int]:
        """The chunks whose part is not there yet."""
        return [k for k, p in enumerate(self.prefixes) if not part_done(p)]

    def describe(self, k: int) -> str:
        rows = self.chunks[k]
        return f"chunk {k} (images {int(rows[0])}..{int(rows[-1])})"


def open_annotation(cfg: AnnotateConfig, out_dir: str | Path, dataset: Any = None) -> Annotation:
    """Check the settings against the posterior, the dataset and the folder (``config.json``: written if
    new, else compared) and plan the chunks."""
    out_dir = Path(out_dir)
    if dataset is None:
        dataset = build_dataset(cfg.dataset, cfg.split, root=cfg.data_root, seed=cfg.data_seed, **cfg.data_options)
    for name, attr in (("dataset", "name"), ("split", "split")):
        if getattr(dataset, attr, getattr(cfg, name)) != getattr(cfg, name):
            raise ValueError(f"AnnotateConfig.{name}: expected {getattr(dataset, attr)!r} (the dataset given), "
                             f"found {getattr(cfg, name)!r}")
    C, H, W = dataset.image_shape
    indices = select_indices(cfg, len(dataset))
    chunks = list(indices.split(cfg.chunk_size))
    posterior_sha, bank_meta = _identity(cfg)
    check_posterior_settings(cfg, read_checkpoint_info(cfg.posterior))  # its glimpse size, grid and T, or an error
    out_dir.mkdir(parents=True, exist_ok=True)
    record = run_record(cfg, posterior_sha, bank_meta)
    check_run_dir(out_dir, record)
    return Annotation(cfg, out_dir, dataset, cfg.make_grid((H, W)), C, indices, chunks,
                      [part_prefix(out_dir, cfg, k) for k in range(len(chunks))], record)


@dataclass
class Tools:
    """The posterior and the bank sampler on their device (loaded once per process and folder)."""

    device: torch.device
    posterior: Any
    sampler: BankSampler
    store: PCAFileStore


def load_tools(run: Annotation) -> Tools:
    """The posterior and the bank sampler of ``run``'s settings, on their device."""
    cfg = run.cfg
    device = resolve_device(cfg.device, "AnnotateConfig.device")
    posterior, _ = load_posterior(cfg.posterior, device, precision=cfg.precision, channels_last=cfg.channels_last,
                                  compile=cfg.compile)
    store = PCAFileStore(run.out_dir / "pca", cells=None if cfg.share_pca_cells else set())
    sampler = BankSampler(ImageBank.open(cfg.bank), run.grid, pca_components=cfg.pca_components,
                          n_proposals=cfg.n_proposals, sigma2_schedule=cfg.sigma2_schedule,
                          target_ess=cfg.target_ess, resampling=cfg.resampling,
                          pca_fit_samples=cfg.pca_fit_samples, cache_cells=cfg.cache_cells or len(run.grid),
                          shifts=cfg.shifts, pca_store=store, device=device)
    return Tools(device, posterior, sampler, store)


def prepare(run: Annotation, tools: Optional[Tools] = None) -> Optional[FirstGlimpse]:
    """The task's first glimpse and its cell's PCA: made and saved if not in the folder yet, else read.

    Every chunk then reads them (:func:`compute_chunk`), so a chunk computed in this process or in any
    other gives the same part. None with ``objective="label"``, which chooses every image's first cell
    by its own label and so has no task-wide one (nothing is made)."""
    cfg = run.cfg
    if cfg.objective == "label":
        return None
    tools = tools or load_tools(run)
    if read_first_glimpse(run.out_dir) is None:
        tic = time.perf_counter()
        made = first_glimpse(tools.posterior, tools.sampler, run.grid, run.channels,
                             n_completions=cfg.first_completions or cfg.n_completions, batch_size=cfg.batch_size,
                             generator=image_generator(cfg.seed, None), device=tools.device)
        write_first_glimpse(run.out_dir, made, time.perf_counter() - tic, run.grid)
    return prepared_first_glimpse(run, tools, fit=True)


def prepared_first_glimpse(run: Annotation, tools: Tools, fit: bool = False) -> Optional[FirstGlimpse]:
    """The saved first glimpse (its cell's PCA then shared through ``pca/``; ``fit``: fitted and saved if
    not there yet); None with ``objective="label"`` (:func:`prepare`)."""
    if run.cfg.objective == "label":
        return None
    got = read_first_glimpse(run.out_dir)
    if got is None:
        raise FileNotFoundError(f"{run.out_dir / 'first-glimpse.json'}: expected the first glimpse (with its "
                                ".safetensors, matching), found it missing or not matching; prepare the folder "
                                "first (foveal annotate does)")
    first = got[0]
    tools.store.share(first.cell)
    if fit:
        tools.sampler.cell_pca(first.cell)  # fitted and saved, or read if there
    elif not tools.store.path(first.cell).exists():
        raise FileNotFoundError(f"{tools.store.path(first.cell)}: expected the first cell's PCA, saved when the "
                                "folder was prepared, found none; prepare the folder first (foveal annotate does)")
    return first


def compute_chunk(run: Annotation, k: int, tools: Tools, first: Optional[FirstGlimpse],
                  on_image: Callable[[], None] = lambda: None) -> Optional[GlimpseSequences]:
    """Chunk ``k``'s sequences, saved as its part (tensors, then JSON: a kill leaves the chunk to redo);
    None, computing nothing, if the part is there already (e.g. a retried task that had saved it).
    ``first``: :func:`prepare`'s (None: every image's first cell is searched for, as ``objective="label"``
    does)."""
    if part_done(run.prefixes[k]):
        return None
    part = _annotate_chunk(run.cfg, run.dataset, run.chunks[k], tools.posterior, tools.sampler, run.grid, first,
                           tools.device, on_image)
    save_sequences(part, run.prefixes[k])
    return part


def finish(run: Annotation) -> Path:
    """The result assembled from every chunk's part (all must be there), saved; its path prefix."""
    missing = run.todo()
    if missing:
        shown = ", ".join(run.describe(k) for k in missing[:8]) + (f" and {len(missing) - 8} more"
                                                                   if len(missing) > 8 else "")
        raise FileNotFoundError(f"{run.out_dir}: expected all {len(run.chunks)} chunks' parts, found "
                                f"{len(missing)} missing: {shown}; run the annotation again to compute them")
    path = result_path(run.cfg, run.out_dir)
    first_meta = None if run.cfg.objective == "label" else read_first_glimpse(run.out_dir)[1]
    result = assemble([GlimpseSequences.load(p) for p in run.prefixes], run.chunks, run.cfg.to_dict(), run.record,
                      first_meta)
    save_sequences(result, path)
    return path


def _annotate_chunk(cfg: AnnotateConfig, dataset: Any, rows: Tensor, posterior, sampler, grid: LocationGrid, first,
                    device: torch.device, on_image: Callable[[], None]) -> GlimpseSequences:
    """Greedy sequences of the images ``rows`` as one part (``on_image()`` after each image). With
    ``objective="label"`` every cell, the first too, is scored by the cross-entropy of ``dataset[i]["label"]``
    (``first`` is None)."""
    tic = time.perf_counter()
    cells, maps, stats = [], [], {"completion_ess": [], "distinct": [], "proposal_ess": []}
    for i in rows.tolist():
        item = dataset[i]
        image = item["image"].to(device)
        label = item["label"] if cfg.objective == "label" else None
        recording = _Recording(TrueImage(image) if cfg.completions == "hindsight" else sampler)
        seq = greedy_sequence(image, posterior, recording, grid, cfg.num_glimpses,
                              n_completions=cfg.n_completions, first_location=first, keep_maps=cfg.keep_maps,
                              batch_size=cfg.batch_size, search=cfg.search(), generator=image_generator(cfg.seed, i),
                              label=label)
        cells.append(seq.cells)
        for name in stats:
            stats[name].append(recording.stats[name])
        if cfg.keep_maps:
            maps.append(seq.epe_maps.cpu().float().view(cfg.num_glimpses, *grid.shape))
        on_image()
    ids = [dataset.image_id(i) for i in rows.tolist()] if hasattr(dataset, "image_id") else None
    provenance = {"seconds": time.perf_counter() - tic, "completion_stats": stats, "host": socket.gethostname()}
    return GlimpseSequences(cfg.dataset, cfg.split, grid.image_size, cfg.glimpse_size, rows,
                            grid.corners()[torch.stack(cells)], grid=grid, ids=ids, task=cfg.task, method=cfg.method,
                            epe_maps=torch.stack(maps) if cfg.keep_maps else None, provenance=provenance)


class _Recording:
    """A completion sampler passed through, noting for every step it samples for (2..T of one image; 1..T
    with ``objective="label"``, whose first cell is the image's own) how many completions
    came back (``distinct`` images), their effective sample size (``completion_ess``: ``1 / sum w^2``, the
    number of equally weighted distinct images they are worth) and the sampler's ``proposal_ess`` (the
    importance weights' over its candidates, before resampling)."""

    def __init__(self, sampler: Any) -> None:
        self.sampler = sampler
        self.stats: dict[str, list[float]] = {"completion_ess": [], "distinct": [], "proposal_ess": []}

    def sample(self, image: Tensor, mask: Tensor, n: int, *,
               generator: Optional[torch.Generator] = None) -> tuple[Tensor, Tensor]:
        completions, weights = self.sampler.sample(image, mask, n, generator=generator)
        self.stats["completion_ess"].append(float(effective_sample_size(weights.log())))
        self.stats["distinct"].append(len(weights))
        self.stats["proposal_ess"].append(getattr(self.sampler, "last_stats", {}).get("proposal_ess"))
        return completions, weights


def annotate(config: AnnotateConfig, out_dir: str | Path, *, dataset: Any = None,
             progress: Optional[Callable[[int, int, dict], None]] = None,
             stop_after: Optional[int] = None, prepare_only: bool = False) -> Optional[Path]:
    """Annotate the selected images in this process (resuming from ``out_dir``) and write the result file.

    Args:
        config: the settings.
        out_dir: the output folder (module docstring); run again with the same settings to resume.
        dataset: the split, if already built (else built from the config).
        progress: called as ``progress(images_done, images_total, {"images_per_min": ...})`` after each image.
        stop_after: return after computing this many chunks (tests; a kill between chunks).
        prepare_only: return once the shared files (config, first glimpse, its cell's PCA) are there.

    Returns:
        The result's path prefix (``.json`` + ``.safetensors``), or None if ``stop_after`` or
        ``prepare_only`` stopped early.
    """
    threads = torch.get_num_threads()
    if config.threads is not None:
        torch.set_num_threads(config.threads)
    try:
        return _annotate(config, Path(out_dir), dataset, progress, stop_after, prepare_only)
    finally:
        torch.set_num_threads(threads)


def _annotate(cfg: AnnotateConfig, out_dir: Path, dataset: Any, progress, stop_after: Optional[int],
              prepare_only: bool) -> Optional[Path]:
    run = open_annotation(cfg, out_dir, dataset)
    todo = run.todo()
    if todo or prepare_only:
        tools = load_tools(run)
        first = prepare(run, tools)
        if prepare_only:
            return None
        count = {"done": len(run.indices) - sum(len(run.chunks[k]) for k in todo), "computed": 0}
        tic = time.perf_counter()

        def on_image() -> None:
            count["done"] += 1
            count["computed"] += 1
            if progress is not None:
                rate = 60 * count["computed"] / (time.perf_counter() - tic)
                progress(count["done"], len(run.indices), {"images_per_min": rate})

        for n_chunks, k in enumerate(todo):
            if stop_after is not None and n_chunks >= stop_after:
                return None
            compute_chunk(run, k, tools, first, on_image)
    return finish(run)
