"""The annotator's output folder (layout in :mod:`foveal.boed.annotate`): its record, the files every chunk
reads (the first glimpse, cell PCAs), the chunk parts, and the result assembled from them.

Every write is atomic (:mod:`foveal.files`: a temporary file of this host and process, then ``os.replace``),
so a process killed mid-write leaves the old file or none, never half of one. Nothing here coordinates
writers: the shared files are written by one process (the driver of ``foveal annotate``, or the first run on
a folder) before the chunks start, and two processes that do write the same file write the same bytes (a
retried chunk, two fixed shards preparing one folder), so the last writer changes nothing.

Folders made before ``foveal annotate --ray`` by workers that claimed chunks (``config.json`` with
``images`` and ``worker_config``, parts in ``parts/all/part-<k>/part.*``) are still read by
:func:`merge_chunks` (``foveal sequences merge``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import re
import shutil
from pathlib import Path
from typing import Any, Optional

import torch
from safetensors.torch import load as load_tensors
from safetensors.torch import save as save_tensors

from foveal import __version__
from foveal.boed.annotate_config import AnnotateConfig
from foveal.boed.completion import CellPCA
from foveal.boed.epe import FirstGlimpse
from foveal.files import atomic_write, atomic_write_json, unique_token
from foveal.retina import LocationGrid
from foveal.sequences import GlimpseSequences, sequence_paths

__all__ = ["FREE_FIELDS", "run_record", "check_run_dir", "read_first_glimpse", "write_first_glimpse",
           "PCAFileStore", "part_prefix", "part_done", "save_sequences", "assemble", "merge_shards",
           "merge_chunks", "merge_folder"]

# Settings that do not change the result: a rerun or another worker may differ in them (claim_timeout: a
# field of the retired claiming workers, still in the provenance of files they made).
FREE_FIELDS = ("shard_index", "posterior", "bank", "data_root", "device", "batch_size", "threads", "claim_timeout",
               "share_pca_cells")
_SHARD_FILE = re.compile(r"^sequences-shard-(\d+)-of-(\d+)\.json$")


# ------------------------------------------------------------------------------------------ record
def run_record(cfg: AnnotateConfig, posterior_sha: str, bank_meta: dict) -> dict[str, Any]:
    """What ``config.json`` holds: the settings that fix the result, the posterior's hash, the bank's sidecar."""
    return {"config": {k: v for k, v in cfg.to_dict().items() if k not in FREE_FIELDS},
            "posterior_sha256": posterior_sha, "bank_meta": bank_meta}


def check_run_dir(out_dir: Path, record: dict[str, Any]) -> None:
    """Save the run's record in ``config.json`` (the first run's), or check that this one matches it."""
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
    diff += [f"{k}: {old.get(k)!r} vs {record.get(k)!r}" for k in ("posterior_sha256", "bank_meta", "images")
             if old.get(k) != record.get(k)]
    if diff:
        raise ValueError(f"{path}: this folder holds an annotation made with other settings; differing: "
                         + "; ".join(diff[:6]) + ". Use another output folder, or the same settings to resume.")


# ----------------------------------------------------------------------------------- first glimpse
def read_first_glimpse(out_dir: Path) -> Optional[tuple[FirstGlimpse, dict[str, Any]]]:
    """``(first glimpse, its metadata)`` if ``first-glimpse.{json,safetensors}`` are there and match, else None."""
    json_path, st_path = out_dir / "first-glimpse.json", out_dir / "first-glimpse.safetensors"
    try:
        meta, blob = json.loads(json_path.read_text()), st_path.read_bytes()
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    if meta.get("sha256") != hashlib.sha256(blob).hexdigest():
        return None
    return FirstGlimpse(meta["cell"], load_tensors(blob)["epe_map"].flatten()), meta


def write_first_glimpse(out_dir: Path, first: FirstGlimpse, seconds: float, grid: LocationGrid) -> None:
    """Write the first glimpse: its map, then the JSON that holds the map's SHA-256 (so a kill between the
    two leaves a pair :func:`read_first_glimpse` refuses, and the next run makes it again)."""
    blob = save_tensors({"epe_map": first.epe_map.detach().cpu().float().view(grid.shape).contiguous()})
    atomic_write(out_dir / "first-glimpse.safetensors", blob)
    meta = {"cell": first.cell, "corner": grid.corners()[first.cell].tolist(), "grid_shape": list(grid.shape),
            "seconds": seconds, "sha256": hashlib.sha256(blob).hexdigest()}
    atomic_write_json(out_dir / "first-glimpse.json", meta, indent=1)


class PCAFileStore:
    """Cell PCAs shared through ``<folder>/cell-<g>.safetensors`` (a :class:`~foveal.boed.completion.PCAStore`).

    Only the cells in ``cells`` are shared (None: all); a cell's PCA found there is read, not refitted (a fit
    depends only on the bank, the cell and the settings, so two processes that fit one write the same). The
    folder's ``config.json`` pins the bank, grid and PCA settings the files belong to.
    """

    def __init__(self, folder: Path, *, cells: Optional[set[int]] = None) -> None:
        self.folder, self.cells = Path(folder), cells

    def path(self, cell: int) -> Path:
        return self.folder / f"cell-{cell:05d}.safetensors"

    def shares(self, cell: int) -> bool:
        return self.cells is None or cell in self.cells

    def share(self, cell: int) -> None:
        if self.cells is not None:
            self.cells.add(cell)

    def load(self, cell: int) -> Optional[CellPCA]:
        if not self.shares(cell) or not self.path(cell).exists():
            return None
        tensors = load_tensors(self.path(cell).read_bytes())
        try:
            return CellPCA(tensors["mean"], tensors["basis"], tensors["coefficients"])
        except KeyError as err:
            raise ValueError(f"{self.path(cell)}: expected tensors mean, basis, coefficients, found "
                             f"{sorted(tensors)}; delete the file to refit") from err

    def save(self, cell: int, pca: CellPCA) -> CellPCA:
        if not self.shares(cell):
            return pca
        blob = save_tensors({"mean": pca.mean.contiguous(), "basis": pca.basis.contiguous(),
                             "coefficients": pca.coefficients.contiguous()})
        self.folder.mkdir(parents=True, exist_ok=True)
        atomic_write(self.path(cell), blob)
        return pca


# ------------------------------------------------------------------------------------------- parts
def part_prefix(out_dir: Path, cfg: AnnotateConfig, k: int) -> Path:
    """Chunk ``k``'s part: ``parts/shard-<i>-of-<n>/part-<k>``."""
    return out_dir / "parts" / cfg.shard_name / f"part-{k:05d}"


def _claimed_part_prefix(out_dir: Path, k: int) -> Path:
    """Chunk ``k``'s part in a folder of the retired claiming workers (each part a folder of its own)."""
    return out_dir / "parts" / "all" / f"part-{k:05d}" / "part"


def part_done(prefix: Path) -> bool:
    return sequence_paths(prefix)[0].exists()


def save_sequences(seqs: GlimpseSequences, prefix: Path) -> None:
    """``seqs.save(prefix)`` through a folder of this process's own (host-safe temporary names), the tensors
    moved into place first, the JSON last."""
    tmp = prefix.parent / f".tmp-{unique_token()}"
    tmp.mkdir(parents=True)
    try:
        seqs.save(tmp / prefix.name)
        for src, dst in zip(reversed(sequence_paths(tmp / prefix.name)), reversed(sequence_paths(prefix))):
            os.replace(src, dst)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# ---------------------------------------------------------------------------------------- assemble
def assemble(parts: list[GlimpseSequences], chunks: list[torch.Tensor], config: dict[str, Any],
             record: dict[str, Any], first_meta: Optional[dict[str, Any]]) -> GlimpseSequences:
    """The result from the parts of ``chunks`` (checked against them), with its provenance.

    ``first_meta``: the task's first glimpse (:func:`read_first_glimpse`); None where every image chose its
    own (``objective="label"``: the provenance then says that the sequences are a reference that read the
    true labels)."""
    for k, (part, expected) in enumerate(zip(parts, chunks)):
        if not torch.equal(part.indices, expected.sort().values):
            raise ValueError(f"{part.source}: field 'indices': expected chunk {k}'s images {expected.tolist()[:5]}..., "
                             f"found {part.indices.tolist()[:5]}...")
    first_seconds = 0.0 if first_meta is None else first_meta["seconds"]
    seconds = first_seconds + sum(p.provenance["seconds"] for p in parts)
    hosts = sorted({p.provenance["host"] for p in parts if "host" in p.provenance})
    result = GlimpseSequences.merge(parts)
    result.provenance = {
        "config": config, "foveal_version": __version__, "torch_version": torch.__version__,
        "posterior": {"checkpoint": str(config["posterior"]), "sha256": record["posterior_sha256"]},
        "bank": {"path": str(config["bank"]), **record["bank_meta"]},
        "first_glimpse": None if first_meta is None else {"cell": first_meta["cell"], "corner": first_meta["corner"]},
        "timing": {"seconds": seconds, "first_glimpse_seconds": first_seconds, "images": len(result),
                   "sequences_per_min": 60 * len(result) / seconds if seconds > 0 else None,
                   **({"hosts": hosts} if hosts else {})},
    }
    if config.get("objective") == "label":
        result.provenance["reference"] = (
            "hindsight-label: at every step, the first included, the cell after which the posterior's cross-"
            "entropy of the image's TRUE LABEL on the true image is lowest. It reads the answer, which no glimpse "
            "policy has: a reference, not a method.")
    summary = completion_summary(parts)
    if summary is not None:
        result.provenance["completions"] = summary
    return result


def completion_summary(parts: list[GlimpseSequences]) -> Optional[dict[str, Any]]:
    """Per step t = 2..T (1..T where the first cell was searched for per image, ``objective="label"``), the
    mean over images of each ``completion_stats`` entry of the parts (None if a part predates them):
    ``{"steps": [2, ..., T], "completion_ess": [...], "distinct": [...], ...}``."""
    stats = [p.provenance.get("completion_stats") for p in parts]
    if not stats or any(s is None for s in stats):
        return None
    summary: dict[str, Any] = {}
    for name in stats[0]:
        rows = [row for s in stats for row in s[name]]  # one row per image, one value per step
        values = torch.tensor([[float("nan") if v is None else v for v in row] for row in rows], dtype=torch.float64)
        summary[name] = [None if math.isnan(m) else round(m, 3) for m in values.mean(0).tolist()]
        if name == "completion_ess":
            summary["completion_ess_min"] = [round(m, 3) for m in values.amin(0).tolist()]
    T, steps = parts[0].num_glimpses, len(summary["distinct"])
    summary["steps"] = list(range(T - steps + 1, T + 1))  # the last ``steps`` of 1..T
    return summary


def _describe(chunks: list[torch.Tensor], ks: list[int]) -> str:
    shown = [f"{k} (images {int(chunks[k][0])}..{int(chunks[k][-1])})" for k in ks[:8]]
    return ", ".join(shown) + (f" and {len(ks) - 8} more" if len(ks) > 8 else "")


def merge_chunks(out_dir: str | Path) -> Path:
    """Assemble ``sequences`` from the parts of a folder made by the retired claiming workers (``config.json``
    with ``images`` and ``worker_config``; every chunk must be there). Their settings are read as saved, not
    as an :class:`AnnotateConfig` (whose shard_mode "claim" and claim_timeout are gone)."""
    out_dir = Path(out_dir)
    record = json.loads((out_dir / "config.json").read_text())
    if "images" not in record:
        raise ValueError(f"{out_dir / 'config.json'}: expected an annotation made by claiming workers "
                         f"(field 'images'), found shard_mode {record['config'].get('shard_mode')!r}")
    config = {**record["worker_config"], "shard_index": None, "num_shards": None}
    chunks = list(torch.arange(*record["images"]).split(int(config["chunk_size"])))
    prefixes = [_claimed_part_prefix(out_dir, k) for k in range(len(chunks))]
    missing = [k for k, p in enumerate(prefixes) if not part_done(p)]
    if missing:
        raise FileNotFoundError(f"{out_dir}: expected all {len(chunks)} chunks, found {len(missing)} missing: chunk(s) "
                                f"{_describe(chunks, missing)} (parts/all/part-{missing[0]:05d}); this folder was "
                                "made by claiming workers, which foveal annotate no longer runs: annotate those "
                                "images into a new folder (--start/--count) and merge the files")
    first = read_first_glimpse(out_dir)
    if first is None:
        raise FileNotFoundError(f"{out_dir / 'first-glimpse.json'}: expected the first glimpse (with its "
                                ".safetensors, matching), found it missing or not matching")
    result = assemble([GlimpseSequences.load(p) for p in prefixes], chunks, config, record, first[1])
    save_sequences(result, out_dir / "sequences")
    return out_dir / "sequences"


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
    configs = [{k: v for k, v in s.provenance.get("config", {}).items() if k not in FREE_FIELDS} for s in shards]
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
    save_sequences(result, out_dir / "sequences")
    return out_dir / "sequences"


def merge_folder(out_dir: str | Path) -> Path:
    """``foveal sequences merge <out_dir>``: a claiming folder's chunks, or the fixed shares' shard results."""
    out_dir = Path(out_dir)
    record_path = out_dir / "config.json"
    if record_path.exists() and "images" in json.loads(record_path.read_text()):
        return merge_chunks(out_dir)
    return merge_shards(out_dir)
