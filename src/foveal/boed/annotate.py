r"""The annotator: near-optimal glimpse sequences for many images, resumable and shardable.

For every selected image of a split, :func:`annotate` runs :func:`foveal.boed.epe.greedy_sequence`
(at step t, the cell minimising the expected posterior entropy given the true pixels seen so far)
with a posterior network loaded from a checkpoint (:class:`~foveal.boed.posterior.NetworkPosterior`)
and an image bank (:class:`~foveal.boed.completion.BankSampler`), and writes the sequences as a
:class:`~foveal.data.sequences.GlimpseSequences` file. Its cost is ``T - 1`` steps per image, each
``len(grid) x n_completions`` posterior evaluations plus one bank search; the first glimpse sees
nothing, so it is the same for every image of a task and computed once.

Selection: positions ``start .. start + count - 1`` of the split; shard ``i`` of ``n`` (``i`` counts
from 0) takes every n-th of them from the i-th (``round-robin``, balanced even if cost drifts along
the split) or the i-th of n near-equal consecutive blocks (``contiguous``).

Reproducibility: image ``k`` draws its completions from a generator seeded by
``SeedSequence([seed, k])`` (numpy; the first glimpse from ``SeedSequence([seed])``), so its sequence
does not depend on sharding, chunking or resumption: a killed run continued, and shards merged,
give the same tensors as one uninterrupted run.

``out_dir`` holds::

    config.json                         the resolved config and the posterior's SHA-256; a rerun must match
                                        (paths, device, batch_size and shard_index may differ)
    first-glimpse.{json,safetensors}    the task's first cell and its EPE map [grid_h, grid_w]
    parts/shard-<i>-of-<n>/part-<k>.*   chunk k of the shard's images, one GlimpseSequences each
    sequences.{json,safetensors}        the result; a shard writes sequences-shard-<i>-of-<n>.*

Each file is written atomically and a part only once its chunk is done, so a killed run restarts at the
first missing chunk. :func:`merge_shards` combines the shards' results (copied into one folder).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import time
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import torch
from safetensors.torch import load as load_tensors
from safetensors.torch import save as save_tensors
from torch import Tensor

from foveal import __version__
from foveal.boed.annotate_config import AnnotateConfig, select_indices
from foveal.boed.bank import ImageBank
from foveal.boed.completion import BankSampler
from foveal.boed.epe import FirstGlimpse, first_glimpse, greedy_sequence
from foveal.boed.posterior import NetworkPosterior
from foveal.checkpoint import checkpoint_paths
from foveal.data import build_dataset
from foveal.data.sequences import GlimpseSequences, atomic_write, sequence_paths
from foveal.models import load_model
from foveal.retina import LocationGrid
from foveal.runtime import resolve_device

__all__ = ["AnnotateConfig", "annotate", "merge_shards", "select_indices", "image_generator", "load_posterior",
           "result_path"]

# Settings that do not change the result: a rerun or another shard may differ in them.
_FREE_FIELDS = ("shard_index", "posterior", "bank", "data_root", "device", "batch_size")
_SHARD_FILE = re.compile(r"^sequences-shard-(\d+)-of-(\d+)\.json$")


def image_generator(seed: int, index: Optional[int]) -> torch.Generator:
    """The generator of image ``index`` (``SeedSequence([seed, index])``; None: the first glimpse's)."""
    entropy = [seed] if index is None else [seed, int(index)]
    state = np.random.SeedSequence(entropy).generate_state(1, np.uint64)[0]
    return torch.Generator().manual_seed(int(state))


def load_posterior(checkpoint: str | Path, device: torch.device):
    """``(NetworkPosterior, checkpoint info)`` from a checkpoint of a posterior network."""
    model, info = load_model(checkpoint, kind="posterior")
    return NetworkPosterior(model.to(device).eval(), device=device), info


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


def _check_run_dir(out_dir: Path, record: dict[str, Any]) -> None:
    """Save the run's identity in ``config.json``, or check that a rerun / another shard matches it."""
    path = out_dir / "config.json"
    if not path.exists():
        atomic_write(path, json.dumps(record, indent=1).encode())
        return
    old = json.loads(path.read_text())
    # a field added to AnnotateConfig after the folder was made had its default value there
    defaults = {f.name: f.default for f in dataclasses.fields(AnnotateConfig)
                if f.default is not dataclasses.MISSING}
    missing = {k: v for k, v in json.loads(json.dumps(defaults)).items()
               if k in record["config"] and k not in old["config"]}
    saved = {**missing, **old["config"]}
    keys = sorted(set(saved) | set(record["config"]))
    diff = [f"config.{k}: {saved.get(k)!r} vs {record['config'].get(k)!r}" for k in keys
            if saved.get(k) != record["config"].get(k)]
    diff += [f"{k}: {old.get(k)!r} vs {record.get(k)!r}" for k in ("posterior_sha256", "bank_meta")
             if old.get(k) != record.get(k)]
    if diff:
        raise ValueError(f"{path}: this folder holds an annotation made with other settings; differing: "
                         + "; ".join(diff[:6]) + ". Use another output folder, or the same settings to resume.")


def _first_glimpse(out_dir: Path, posterior, sampler, grid: LocationGrid, channels: int, cfg: AnnotateConfig,
                   device: torch.device):
    """The cached first glimpse of the task (computed and written on the first call)."""
    json_path, st_path = out_dir / "first-glimpse.json", out_dir / "first-glimpse.safetensors"
    if json_path.exists() and st_path.exists():
        meta, blob = json.loads(json_path.read_text()), st_path.read_bytes()
        if meta.get("sha256") == hashlib.sha256(blob).hexdigest():
            return FirstGlimpse(meta["cell"], load_tensors(blob)["epe_map"].flatten()), meta["seconds"]
    tic = time.perf_counter()
    first = first_glimpse(posterior, sampler, grid, channels, n_completions=cfg.n_completions,
                          batch_size=cfg.batch_size, generator=image_generator(cfg.seed, None), device=device)
    seconds = time.perf_counter() - tic
    blob = save_tensors({"epe_map": first.epe_map.detach().cpu().float().view(grid.shape).contiguous()})
    atomic_write(st_path, blob)
    meta = {"cell": first.cell, "corner": grid.corners()[first.cell].tolist(), "grid_shape": list(grid.shape),
            "seconds": seconds, "sha256": hashlib.sha256(blob).hexdigest()}
    atomic_write(json_path, json.dumps(meta, indent=1).encode())
    return first, seconds


def _identity(cfg: AnnotateConfig) -> tuple[str, dict[str, Any]]:
    """``(SHA-256 of the posterior's tensors, the bank's sidecar)``: what a resumed run must share."""
    posterior_file, bank_sidecar = checkpoint_paths(cfg.posterior)[0], Path(cfg.bank).with_suffix(".json")
    if not posterior_file.exists():
        raise FileNotFoundError(f"{posterior_file}: posterior checkpoint not found")
    if not bank_sidecar.exists():
        raise FileNotFoundError(f"{bank_sidecar}: image bank not found (a bank is <name>.npy + <name>.json; make one "
                                "with foveal build-bank)")
    return _sha256(posterior_file), json.loads(bank_sidecar.read_text())


def _annotate_chunk(cfg: AnnotateConfig, dataset: Any, rows: Tensor, posterior, sampler, grid: LocationGrid, first,
                    device: torch.device, on_image: Callable[[], None]) -> GlimpseSequences:
    """Greedy sequences of the images ``rows`` as one part (``on_image()`` after each image)."""
    tic = time.perf_counter()
    cells, maps = [], []
    for i in rows.tolist():
        seq = greedy_sequence(dataset[i]["image"].to(device), posterior, sampler, grid, cfg.num_glimpses,
                              n_completions=cfg.n_completions, first_location=first, keep_maps=cfg.keep_maps,
                              batch_size=cfg.batch_size, search=cfg.search(), generator=image_generator(cfg.seed, i))
        cells.append(seq.cells)
        if cfg.keep_maps:
            maps.append(seq.epe_maps.cpu().float().view(cfg.num_glimpses, *grid.shape))
        on_image()
    ids = [dataset.image_id(i) for i in rows.tolist()] if hasattr(dataset, "image_id") else None
    return GlimpseSequences(cfg.dataset, cfg.split, grid.image_size, cfg.glimpse_size, rows,
                            grid.corners()[torch.stack(cells)], grid=grid, ids=ids, task=cfg.task, method=cfg.method,
                            epe_maps=torch.stack(maps) if cfg.keep_maps else None,
                            provenance={"seconds": time.perf_counter() - tic})


def annotate(config: AnnotateConfig, out_dir: str | Path, *, dataset: Any = None,
             progress: Optional[Callable[[int, int, dict], None]] = None,
             stop_after: Optional[int] = None) -> Optional[Path]:
    """Annotate the selected images (resuming from ``out_dir``) and write the result file.

    Args:
        config: the settings.
        out_dir: the output folder (module docstring); run again with the same settings to resume.
        dataset: the split, if already built (else built from the config).
        progress: called as ``progress(images_done, images_total, {"images_per_min": ...})``.
        stop_after: return after computing this many chunks (tests; a kill between chunks).

    Returns:
        The result's path prefix (``.json`` + ``.safetensors``), or None if ``stop_after`` stopped early.
    """

    cfg, out_dir = config, Path(out_dir)
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
    shared = {k: v for k, v in cfg.to_dict().items() if k not in _FREE_FIELDS}
    out_dir.mkdir(parents=True, exist_ok=True)
    _check_run_dir(out_dir, {"config": shared, "posterior_sha256": posterior_sha, "bank_meta": bank_meta})
    part_paths = [out_dir / "parts" / cfg.shard_name / f"part-{k:05d}" for k in range(len(chunks))]
    todo = [k for k, p in enumerate(part_paths) if not sequence_paths(p)[0].exists()]

    if todo:
        device = resolve_device(cfg.device, "AnnotateConfig.device")
        posterior, _ = load_posterior(cfg.posterior, device)
        sampler = BankSampler(ImageBank.open(cfg.bank), grid, pca_components=cfg.pca_components,
                              n_proposals=cfg.n_proposals, sigma2_schedule=cfg.sigma2_schedule,
                              target_ess=cfg.target_ess, resampling=cfg.resampling,
                              pca_fit_samples=cfg.pca_fit_samples, cache_cells=cfg.cache_cells or len(grid),
                              shifts=cfg.shifts)
        first, _ = _first_glimpse(out_dir, posterior, sampler, grid, C, cfg, device)
        count = {"done": len(indices) - sum(len(chunks[k]) for k in todo), "computed": 0}
        tic = time.perf_counter()

        def on_image() -> None:
            count["done"] += 1
            count["computed"] += 1
            if progress is not None:
                rate = 60 * count["computed"] / (time.perf_counter() - tic)
                progress(count["done"], len(indices), {"images_per_min": rate})

        for n_chunks, k in enumerate(todo):
            if stop_after is not None and n_chunks >= stop_after:
                return None
            part = _annotate_chunk(cfg, dataset, chunks[k], posterior, sampler, grid, first, device, on_image)
            part.save(part_paths[k])  # atomic, JSON last: a kill leaves this chunk to redo, nothing half-written

    parts = [GlimpseSequences.load(p) for p in part_paths]
    for k, (part, expected) in enumerate(zip(parts, chunks)):
        if not torch.equal(part.indices, expected.sort().values):
            raise ValueError(f"{part.source}: field 'indices': expected chunk {k}'s images {expected.tolist()[:5]}..., "
                             f"found {part.indices.tolist()[:5]}...")
    first_meta = json.loads((out_dir / "first-glimpse.json").read_text())
    seconds = first_meta["seconds"] + sum(p.provenance["seconds"] for p in parts)
    result = GlimpseSequences.merge(parts)
    result.provenance = {
        "config": cfg.to_dict(), "foveal_version": __version__, "torch_version": torch.__version__,
        "posterior": {"checkpoint": str(cfg.posterior), "sha256": posterior_sha},
        "bank": {"path": str(cfg.bank), **bank_meta},
        "first_glimpse": {"cell": first_meta["cell"], "corner": first_meta["corner"]},
        "timing": {"seconds": seconds, "first_glimpse_seconds": first_meta["seconds"], "images": len(result),
                   "sequences_per_min": 60 * len(result) / seconds if seconds > 0 else None},
    }
    path = result_path(cfg, out_dir)
    result.save(path)
    return path


def merge_shards(out_dir: str | Path) -> Path:
    """Combine ``sequences-shard-<i>-of-<n>`` files in ``out_dir`` (all n of them) into ``sequences``.

    The shards' settings must agree except for the shard index (and paths, device, batch size);
    their timings add up (``seconds`` is compute time summed over workers).
    """
    out_dir = Path(out_dir)
    found = {}
    for path in sorted(out_dir.glob("sequences-shard-*-of-*.json")):
        match = _SHARD_FILE.match(path.name)
        if match:
            found[(int(match.group(1)), int(match.group(2)))] = path
    if not found:
        raise FileNotFoundError(f"{out_dir}: expected shard results sequences-shard-<i>-of-<n>.json, found none")
    counts = sorted({n for _, n in found})
    if len(counts) != 1:
        raise ValueError(f"{out_dir}: expected shards of one split into n, found n = {counts}")
    n = counts[0]
    missing = [i for i in range(n) if (i, n) not in found]
    if missing:
        raise FileNotFoundError(f"{out_dir}: expected all {n} shards, found none for shard(s) {missing} "
                                f"(sequences-shard-{missing[0]}-of-{n}.json)")
    shards = [GlimpseSequences.load(found[(i, n)]) for i in range(n)]
    configs = [{k: v for k, v in s.provenance.get("config", {}).items() if k not in _FREE_FIELDS} for s in shards]
    for s, c in zip(shards[1:], configs[1:]):
        if c != configs[0]:
            diff = sorted(k for k in set(c) | set(configs[0]) if c.get(k) != configs[0].get(k))
            raise ValueError(f"{s.source}: provenance.config: expected the settings of {shards[0].source}, found "
                             f"differences in {diff}")
    provenances = [s.provenance for s in shards]
    for s in shards:
        s.provenance = {}  # rebuilt below from the shards' own
    result = GlimpseSequences.merge(shards)
    seconds = sum(p.get("timing", {}).get("seconds", 0.0) for p in provenances)
    first = provenances[0]
    result.provenance = {**first, "config": {**first.get("config", {}), "shard_index": None},
                         "shards": [Path(s.source).name for s in shards],
                         "timing": {"seconds": seconds, "images": len(result),
                                    "sequences_per_min": 60 * len(result) / seconds if seconds > 0 else None}}
    path = out_dir / "sequences"
    result.save(path)
    return path
