r"""The annotator: near-optimal glimpse sequences for many images, resumable and shardable.

For every selected image of a split, :func:`annotate` runs :func:`foveal.boed.epe.greedy_sequence`
(at step t, the cell minimising the expected posterior entropy given the true pixels seen so far)
with a posterior network loaded from a checkpoint (:class:`~foveal.boed.posterior.NetworkPosterior`)
and an image bank (:class:`~foveal.boed.completion.BankSampler`, searched on the posterior's device), and
writes the sequences as a :class:`~foveal.sequences.GlimpseSequences` file. Its cost is ``T - 1``
steps per image, each ``len(grid) x n_completions`` posterior evaluations plus one bank search; the first
glimpse sees nothing, so it is the same for every image of a task and computed once.

Selection: positions ``start .. start + count - 1`` of the split; shard ``i`` of ``n`` (``i`` counts
from 0) takes every n-th of them from the i-th (``round-robin``, balanced even if cost drifts along
the split) or the i-th of n near-equal consecutive blocks (``contiguous``).

Claiming (``shard_mode="claim"``, what ``foveal annotate --shard auto`` does under torchrun or Slurm):
the selection is cut into chunks and every worker started on the same output folder (on a shared file
system) claims the next free chunk, computes it and publishes it, until none is left
(:mod:`foveal.boed.workers`: claims are files made with ``O_EXCL``; a dead worker's claim goes stale
and is taken over; a worker added late just claims what is left). A worker with nothing left to claim
waits for the chunks others hold, and the one that sees the last chunk done writes the result, so no
worker's death or arrival changes the file. ``shard_index`` / ``num_shards`` only spread where the
workers start. Before any chunk, one worker prepares what all need (the first glimpse and its cell's
PCA) while the others wait and then read it.

Reproducibility: image ``k`` draws its completions from a generator seeded by
``SeedSequence([seed, k])`` (numpy; the first glimpse from ``SeedSequence([seed])``), so its sequence
does not depend on sharding, chunking or resumption: a killed run continued, and shards merged,
give the same tensors as one uninterrupted run.

``out_dir`` holds::

    config.json                         the resolved config and the posterior's SHA-256; a rerun must match
                                        (paths, device, batch_size, threads, shard_index may differ; with
                                        claims num_shards too); with claims also the selected positions
    first-glimpse.{json,safetensors}    the task's first cell and its EPE map [grid_h, grid_w]
    pca/cell-<g>.safetensors            cell PCAs shared by the workers (the first cell's; all if share_pca_cells)
    parts/shard-<i>-of-<n>/part-<k>.*   chunk k of the shard's images, one GlimpseSequences each
    parts/all/part-<k>/part.*           with claims: chunk k of all the images (published as a folder)
    claims/<name>.<g>                   with claims: who computes what (host, pid, time)
    sequences.{json,safetensors}        the result; a fixed shard writes sequences-shard-<i>-of-<n>.*

Each file is written atomically and a part only once its chunk is done, so a killed run restarts at the
first missing chunk. :func:`merge_shards` combines fixed shards' results (copied into one folder),
:func:`merge_chunks` a claiming folder's chunks (both: ``foveal sequences merge <out_dir>``). The
result's tensors do not depend on who computed which chunk, as long as the workers compute alike
(same software; floating-point results can differ between CPU or GPU models).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import torch
from torch import Tensor

from foveal.boed.annotate_config import AnnotateConfig, check_posterior_settings, select_indices
from foveal.boed.annotate_folder import (PCAFileStore, assemble, check_run_dir, merge_chunks, merge_folder,
                                         merge_shards, part_done, part_prefix, publish_first_glimpse, publish_part,
                                         read_first_glimpse, run_record, save_sequences)
from foveal.boed.bank import ImageBank
from foveal.boed.completion import BankSampler, TrueImage, effective_sample_size
from foveal.boed.epe import FirstGlimpse, first_glimpse, greedy_sequence
from foveal.boed.posterior import NetworkPosterior
from foveal.boed.workers import HOST, ClaimBoard, run_once
from foveal.checkpoint import checkpoint_paths, read_checkpoint_info
from foveal.data import build_dataset
from foveal.models import load_model
from foveal.retina import LocationGrid
from foveal.runtime import resolve_device
from foveal.sequences import GlimpseSequences

__all__ = ["AnnotateConfig", "annotate", "merge_shards", "merge_chunks", "merge_folder", "select_indices",
           "image_generator", "load_posterior", "result_path"]


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
    name = "sequences" if config.num_shards == 1 or config.claims else f"sequences-{config.shard_name}"
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


def _prepare(out_dir: Path, board: ClaimBoard, poll: float, posterior, sampler: BankSampler, store: PCAFileStore,
             grid: LocationGrid, channels: int, cfg: AnnotateConfig, device: torch.device) -> FirstGlimpse:
    """The task's first glimpse and its cell's PCA, made by one worker and read by the others."""

    def ready() -> bool:
        got = read_first_glimpse(out_dir)
        return got is not None and store.path(got[0].cell).exists()

    def make() -> None:
        got = read_first_glimpse(out_dir)
        if got is None:
            tic = time.perf_counter()
            first = first_glimpse(posterior, sampler, grid, channels,
                                  n_completions=cfg.first_completions or cfg.n_completions,
                                  batch_size=cfg.batch_size, generator=image_generator(cfg.seed, None), device=device)
            first = publish_first_glimpse(out_dir, first, time.perf_counter() - tic, grid)
        else:
            first = got[0]
        store.share(first.cell)
        sampler.cell_pca(first.cell)  # fitted and published (or read, if there)

    run_once(board, "prepare", ready, make, poll=poll)
    first = read_first_glimpse(out_dir)[0]
    store.share(first.cell)
    return first


def _annotate_chunk(cfg: AnnotateConfig, dataset: Any, rows: Tensor, posterior, sampler, grid: LocationGrid, first,
                    device: torch.device, on_image: Callable[[], None]) -> GlimpseSequences:
    """Greedy sequences of the images ``rows`` as one part (``on_image()`` after each image)."""
    tic = time.perf_counter()
    cells, maps, stats = [], [], {"completion_ess": [], "distinct": [], "proposal_ess": []}
    for i in rows.tolist():
        image = dataset[i]["image"].to(device)
        recording = _Recording(TrueImage(image) if cfg.completions == "hindsight" else sampler)
        seq = greedy_sequence(image, posterior, recording, grid, cfg.num_glimpses,
                              n_completions=cfg.n_completions, first_location=first, keep_maps=cfg.keep_maps,
                              batch_size=cfg.batch_size, search=cfg.search(), generator=image_generator(cfg.seed, i))
        cells.append(seq.cells)
        for name in stats:
            stats[name].append(recording.stats[name])
        if cfg.keep_maps:
            maps.append(seq.epe_maps.cpu().float().view(cfg.num_glimpses, *grid.shape))
        on_image()
    ids = [dataset.image_id(i) for i in rows.tolist()] if hasattr(dataset, "image_id") else None
    provenance = {"seconds": time.perf_counter() - tic, "completion_stats": stats}
    if cfg.claims:
        provenance["host"] = HOST
    return GlimpseSequences(cfg.dataset, cfg.split, grid.image_size, cfg.glimpse_size, rows,
                            grid.corners()[torch.stack(cells)], grid=grid, ids=ids, task=cfg.task, method=cfg.method,
                            epe_maps=torch.stack(maps) if cfg.keep_maps else None, provenance=provenance)


class _Recording:
    """A completion sampler passed through, noting for every step (2..T) of one image how many completions
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


def _claim_order(cfg: AnnotateConfig, n_chunks: int) -> list[int]:
    """Every chunk, starting at this worker's stretch (worker i of n at chunk i * K / n), then on, cyclically."""
    start = cfg.shard_index * n_chunks // cfg.num_shards
    return [(start + j) % n_chunks for j in range(n_chunks)]


def annotate(config: AnnotateConfig, out_dir: str | Path, *, dataset: Any = None,
             progress: Optional[Callable[[int, int, dict], None]] = None,
             stop_after: Optional[int] = None, prepare_only: bool = False) -> Optional[Path]:
    """Annotate the selected images (resuming from ``out_dir``) and write the result file.

    Args:
        config: the settings.
        out_dir: the output folder (module docstring); run again with the same settings to resume. With
            ``shard_mode="claim"`` start any number of workers on it, at once or one after another.
        dataset: the split, if already built (else built from the config).
        progress: called as ``progress(images_done, images_total, {"images_per_min": ...})`` (with claims,
            images done by every worker).
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
    if dataset is None:
        dataset = build_dataset(cfg.dataset, cfg.split, root=cfg.data_root, seed=cfg.data_seed, **cfg.data_options)
    for name, attr in (("dataset", "name"), ("split", "split")):
        if getattr(dataset, attr, getattr(cfg, name)) != getattr(cfg, name):
            raise ValueError(f"AnnotateConfig.{name}: expected {getattr(dataset, attr)!r} (the dataset given), "
                             f"found {getattr(cfg, name)!r}")
    C, H, W = dataset.image_shape
    grid = cfg.make_grid((H, W))
    indices = select_indices(cfg, len(dataset))
    chunks = list(indices.split(cfg.chunk_size))
    posterior_sha, bank_meta = _identity(cfg)
    check_posterior_settings(cfg, read_checkpoint_info(cfg.posterior))  # its glimpse size, grid and T, or an error
    out_dir.mkdir(parents=True, exist_ok=True)
    images = (int(indices[0]), int(indices[-1]) + 1) if len(indices) else (cfg.start, cfg.start)  # claims: all
    record = run_record(cfg, posterior_sha, bank_meta, images)
    check_run_dir(out_dir, record)
    board, poll = ClaimBoard(out_dir / "claims", cfg.claim_timeout), min(cfg.claim_timeout / 8, 2.0)
    prefixes = [part_prefix(out_dir, cfg, k) for k in range(len(chunks))]
    todo = [k for k, p in enumerate(prefixes) if not part_done(p)]

    if todo or prepare_only:
        device = resolve_device(cfg.device, "AnnotateConfig.device")
        posterior, _ = load_posterior(cfg.posterior, device, precision=cfg.precision, channels_last=cfg.channels_last,
                                      compile=cfg.compile)
        store = PCAFileStore(out_dir / "pca", cells=None if cfg.share_pca_cells else set())
        sampler = BankSampler(ImageBank.open(cfg.bank), grid, pca_components=cfg.pca_components,
                              n_proposals=cfg.n_proposals, sigma2_schedule=cfg.sigma2_schedule,
                              target_ess=cfg.target_ess, resampling=cfg.resampling,
                              pca_fit_samples=cfg.pca_fit_samples, cache_cells=cfg.cache_cells or len(grid),
                              shifts=cfg.shifts, pca_store=store, device=device)
        first = _prepare(out_dir, board, poll, posterior, sampler, store, grid, C, cfg, device)
        if prepare_only:
            return None
        count = {"done": len(indices) - sum(len(chunks[k]) for k in todo), "computed": 0}
        tic = time.perf_counter()

        def on_image() -> None:
            count["done"] += 1
            count["computed"] += 1
            if progress is not None:
                rate = 60 * count["computed"] / (time.perf_counter() - tic)
                progress(count["done"], len(indices), {"images_per_min": rate})

        def compute(k: int) -> GlimpseSequences:
            return _annotate_chunk(cfg, dataset, chunks[k], posterior, sampler, grid, first, device, on_image)

        if cfg.claims:
            if not _claim_chunks(cfg, board, poll, chunks, prefixes, compute, count, stop_after):
                return None
        else:
            for n_chunks, k in enumerate(todo):
                if stop_after is not None and n_chunks >= stop_after:
                    return None
                save_sequences(compute(k), prefixes[k])  # tensors, then JSON: a kill leaves this chunk to redo

    path = result_path(cfg, out_dir)
    if cfg.claims:
        run_once(board, "result", lambda: part_done(path), lambda: merge_chunks(out_dir), poll=poll)
        return path
    first_meta = read_first_glimpse(out_dir)[1]
    result = assemble([GlimpseSequences.load(p) for p in prefixes], chunks, cfg.to_dict(), record, first_meta)
    save_sequences(result, path)
    return path


def _claim_chunks(cfg: AnnotateConfig, board: ClaimBoard, poll: float, chunks: list[Tensor], prefixes: list[Path],
                  compute: Callable[[int], GlimpseSequences], count: dict, stop_after: Optional[int]) -> bool:
    """Claim, compute and publish chunks until every one is done (waiting for those others hold).

    Returns False if ``stop_after`` chunks were computed first."""
    order, computed = _claim_order(cfg, len(chunks)), 0
    while True:
        done = _published(prefixes[0].parent.parent)  # one directory read per pass, not one per chunk
        count["done"] = sum(len(chunks[k]) for k in done)
        pending = [k for k in order if k not in done]
        if not pending:
            return True
        if stop_after is not None and computed >= stop_after:
            return False
        claims = board.listing()
        for k in pending:
            claim = board.try_claim(f"part-{k:05d}", claims.get(f"part-{k:05d}", []))
            if claim is None:
                continue
            with claim:
                if not part_done(prefixes[k]):  # published meanwhile by a worker whose claim had gone stale
                    publish_part(compute(k), prefixes[k])  # False: that worker published first, the same part
                    computed += 1
            break
        else:
            time.sleep(poll)  # every chunk left is held by a live worker: wait for it, or for its claim to go stale


def _published(folder: Path) -> set[int]:
    """Chunks whose part folder ``part-<k>`` is in ``folder`` (published whole, by a rename)."""
    try:
        names = os.listdir(folder)
    except FileNotFoundError:
        return set()
    return {int(n[5:]) for n in names if n.startswith("part-") and n[5:].isdigit()}
