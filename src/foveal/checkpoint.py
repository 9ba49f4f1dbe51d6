"""Checkpoints as safetensors + JSON: nothing in them can execute code when loaded.

A checkpoint ``<dir>/<name>`` is two files:

``<name>.safetensors``
    every tensor: the model's state under ``model.<key>``, the optimizer's tensors (Adam moments,
    ``step``) under ``optim.<...>``, RNG states as uint8 tensors under ``rng.<...>``, the caller's
    extra tensors under ``extra.<key>``.
``<name>.json``
    everything else: format and version, iteration, the caller's free-form ``info`` (e.g. the resolved
    run config and the model's registry name + config, enough to rebuild the model), ``metrics`` at
    that point, ``extra_state``, the optimizer's non-tensor state and ``param_groups``, Python's
    ``random`` state, the SHA-256 of the safetensors file (``tensors_sha256``) and the SHA-256 of
    everything else in the JSON itself (``json_sha256``, over its canonical form: sorted keys, no spaces).

The JSON is the commit point, and it records the hash of the tensors it belongs with. A save writes
the new tensors whole to ``.<name>.safetensors.pending`` first, then the JSON (each to a temporary name
moved into place with ``os.replace``), then moves the pending tensors onto ``<name>.safetensors``. A
process killed anywhere in a save (Ctrl-C, SIGKILL, a lost node) leaves a checkpoint that loads:
before the JSON's rename, the old JSON and old tensors; after it, the new JSON, whose tensors a load
finds in the pending file when the last rename did not happen, and the next save moves into place.
A checkpoint whose JSON is missing is not a checkpoint, and tensors that match neither the JSON nor a
pending file (a file replaced by hand, a disk error) are reported as such instead of being loaded
half-old, half-new. The JSON's own hash catches an edited
JSON (a changed ``scale_factor`` in the model spec still fits the tensors' shapes, and would otherwise
rebuild another model in silence). These are integrity checks against accidents, not signatures:
anyone who edits a file on purpose can recompute them. JSONs written before ``json_sha256`` existed
have none and are read unchecked.

Nested Python values are stored in JSON with three markers, so optimizer state round-trips exactly:
``{"__tensor__": name}`` (a tensor in the safetensors file), ``{"__tuple__": [...]}`` and
``{"__items__": [[key, value], ...]}`` (a dict with non-string keys, such as optimizer state keyed by
parameter index).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

import torch
from safetensors.torch import load as load_tensors
from safetensors.torch import save as save_tensors
from torch import Tensor, nn

from foveal.files import atomic_write

__all__ = ["Checkpoint", "save_checkpoint", "load_checkpoint", "read_checkpoint_info", "checkpoint_paths"]

FORMAT = "foveal-checkpoint"
VERSION = 1
PathLike = Union[str, os.PathLike]
_PICKLE_SUFFIXES = (".pth", ".pt", ".pkl", ".ckpt", ".bin")


@dataclass
class Checkpoint:
    """What :func:`load_checkpoint` read.

    Attributes:
        path: the JSON file.
        iteration: training iteration at which it was saved.
        info: the caller's free-form ``info`` dict.
        metrics: the caller's metrics at that point.
        extra_state: the caller's ``extra_state``.
        model_state: the model's state dict (keys without the ``model.`` prefix).
        extra_tensors: the caller's ``extra_tensors`` (keys without the ``extra.`` prefix).
    """

    path: Path
    iteration: int
    info: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    extra_state: dict[str, Any] = field(default_factory=dict)
    model_state: dict[str, Tensor] = field(default_factory=dict)
    extra_tensors: dict[str, Tensor] = field(default_factory=dict)


def checkpoint_paths(path_prefix: PathLike) -> tuple[Path, Path]:
    """``run/ckpt/best``, ``best.json`` or ``best.safetensors`` -> ``(best.safetensors, best.json)``."""
    path = Path(path_prefix)
    for suffix in (".json", ".safetensors"):
        if path.name.endswith(suffix):
            path = path.with_name(path.name[: -len(suffix)])
    return path.with_name(path.name + ".safetensors"), path.with_name(path.name + ".json")


def save_checkpoint(path_prefix: PathLike, *, model: Optional[nn.Module],
                    optimizer: Optional[torch.optim.Optimizer] = None, rng: bool = True, iteration: int = 0, info: Optional[dict[str, Any]] = None,
                    metrics: Optional[dict[str, Any]] = None, extra_tensors: Optional[dict[str, Tensor]] = None,
                    extra_state: Optional[dict[str, Any]] = None) -> None:
    """Write ``<path_prefix>.safetensors`` and ``<path_prefix>.json``: a kill at any point leaves one whole
    checkpoint, the old or the new (module docstring).

    Args:
        path_prefix: checkpoint path without suffix (a ``.json`` / ``.safetensors`` suffix is dropped).
        model: its ``state_dict()`` is saved (parameters and persistent buffers); None saves none.
        optimizer: its full state (moments, step counts, param_groups), if given.
        rng: save the torch CPU (and CUDA, if initialised) RNG states and Python's ``random`` state.
        iteration: the training iteration this checkpoint belongs to.
        info: free-form JSON-able dict, e.g. the run config and the model's registry spec.
        metrics: JSON-able metrics at this point.
        extra_tensors: more tensors to keep, stored under ``extra.<key>``.
        extra_state: more JSON-able state (tuples and tensors inside it are kept too).
    """
    st_path, json_path = checkpoint_paths(path_prefix)
    tensors: dict[str, Tensor] = {}
    header: dict[str, Any] = {"format": FORMAT, "version": VERSION, "iteration": int(iteration),
                              "tensors_file": st_path.name}
    if model is not None:
        tensors.update({f"model.{k}": v for k, v in model.state_dict().items()})
        header["model_keys"] = len(tensors)
    header["optimizer"] = None if optimizer is None else _encode(optimizer.state_dict(), "optim", tensors)
    header["rng"] = _capture_rng(tensors) if rng else None
    tensors.update({f"extra.{k}": v for k, v in (extra_tensors or {}).items()})
    header["extra_state"] = _encode(extra_state or {}, "state", tensors)
    header["info"] = info or {}
    header["metrics"] = metrics or {}

    blob = save_tensors(_plain_cpu_tensors(tensors), metadata={"format": "pt"})
    header["tensors_sha256"] = hashlib.sha256(blob).hexdigest()
    try:
        # hashed as it will be read back (tuples become lists, keys strings)
        header["json_sha256"] = _json_sha256(json.loads(json.dumps(header)))
        text = json.dumps(header, indent=1)
    except TypeError as err:
        raise TypeError(f"{json_path}: info, metrics and extra_state must be JSON-able: {err}") from None
    st_path.parent.mkdir(parents=True, exist_ok=True)
    _finish_pending(st_path, json_path)  # a save killed after its JSON's rename: complete it first
    pending = _pending_path(st_path)
    atomic_write(pending, blob)
    atomic_write(json_path, text.encode())  # the commit point
    os.replace(pending, st_path)


def read_checkpoint_info(path_prefix: PathLike) -> dict[str, Any]:
    """The ``info`` dict of a checkpoint, from its JSON alone (no tensors are read)."""
    return _read_header(checkpoint_paths(path_prefix)[1])["info"]


def load_checkpoint(path_prefix: PathLike, *, model: Optional[nn.Module] = None,
                    optimizer: Optional[torch.optim.Optimizer] = None, restore_rng: bool = False,
                    map_location: Union[str, torch.device] = "cpu") -> Checkpoint:
    """Read a checkpoint; optionally load it into ``model`` / ``optimizer`` and restore the RNG states.

    Loading into a model is strict: any missing, unexpected or shape-mismatched key raises a
    ``ValueError`` naming the file and the keys. Optimizer tensors are moved to the parameters' devices
    by ``optimizer.load_state_dict``; ``map_location`` places the returned ``model_state`` and
    ``extra_tensors``.

    Raises:
        FileNotFoundError: a file of the checkpoint is missing.
        ValueError: corrupt or mismatched files, or a checkpoint that does not fit ``model``/``optimizer``.
    """
    st_path, json_path = checkpoint_paths(path_prefix)
    header = _read_header(json_path)
    blob = _matching_tensors(st_path, json_path, header)
    try:
        tensors = load_tensors(blob)
    except Exception as err:  # safetensors raises its own error type
        raise ValueError(f"{st_path}: not a readable safetensors file: {err}") from None

    model_state = _strip(tensors, "model.")
    if model is not None:
        if header.get("model_keys") is None:
            raise ValueError(f"{json_path}: this checkpoint holds no model state")
        _load_model_strict(model, model_state, st_path)
    if optimizer is not None:
        if header.get("optimizer") is None:
            raise ValueError(f"{json_path}: this checkpoint holds no optimizer state")
        try:
            optimizer.load_state_dict(_decode(header["optimizer"], tensors))
        except (ValueError, KeyError) as err:
            raise ValueError(f"{json_path}: optimizer state does not fit this optimizer: {err}") from None
    if restore_rng:
        if header.get("rng") is None:
            raise ValueError(f"{json_path}: this checkpoint holds no RNG state (saved with rng=False)")
        _restore_rng(header["rng"], tensors)

    device = torch.device(map_location)
    return Checkpoint(
        path=json_path, iteration=int(header["iteration"]), info=header["info"], metrics=header["metrics"],
        extra_state=_decode(header["extra_state"], tensors),
        model_state={k: v.to(device) for k, v in model_state.items()},
        extra_tensors={k: v.to(device) for k, v in _strip(tensors, "extra.").items()},
    )


# ----------------------------------------------------------------------------- files


def _pending_path(st_path: Path) -> Path:
    """Where a save puts its tensors until its JSON is in place."""
    return st_path.with_name(f".{st_path.name}.pending")


def _matching_tensors(st_path: Path, json_path: Path, header: dict[str, Any]) -> bytes:
    """The bytes of the tensors ``header`` records: ``st_path``, or the pending file of a save that was
    killed after its JSON's rename. A save running beside this read may rename both files between our
    reads; reading the pair again once then finds them matching."""
    for attempt in range(2):
        if attempt:
            header = _read_header(json_path)
        for path in (st_path, _pending_path(st_path)):
            blob = _read_if_hash(path, header.get("tensors_sha256"))
            if blob is not None:
                return blob
    if not st_path.exists():
        raise FileNotFoundError(f"{st_path}: checkpoint tensors not found (its JSON {json_path.name} exists)")
    raise ValueError(f"{st_path}: does not match {json_path.name} (SHA-256 differs): the file is corrupt or "
                     "was replaced by another file")


def _finish_pending(st_path: Path, json_path: Path) -> None:
    """Complete or discard the pending tensors a killed save left: moved into place when its JSON (the
    commit point) was renamed, removed when it was not (they belong to no JSON)."""
    pending = _pending_path(st_path)
    if not pending.exists():
        return
    try:
        recorded = json.loads(json_path.read_text()).get("tensors_sha256")
    except (OSError, ValueError):
        recorded = None
    if _read_if_hash(pending, recorded) is not None:
        os.replace(pending, st_path)
    else:
        pending.unlink(missing_ok=True)


def _read_if_hash(path: Path, sha256: Optional[str]) -> Optional[bytes]:
    """The bytes of ``path`` if it exists and its SHA-256 is ``sha256``; else None."""
    try:
        blob = path.read_bytes()
    except FileNotFoundError:
        return None
    return blob if hashlib.sha256(blob).hexdigest() == sha256 else None


def _read_header(json_path: Path) -> dict[str, Any]:
    if not json_path.exists():
        given = json_path.with_name(json_path.name[: -len(".json")])
        if given.suffix.lower() in _PICKLE_SUFFIXES and given.is_file():
            raise ValueError(f"{given}: a PyTorch pickle, not a foveal checkpoint (safetensors + JSON, named by its "
                             "prefix, e.g. run/checkpoints/best); foveal never unpickles one")
        raise FileNotFoundError(f"{json_path}: checkpoint not found")
    try:
        header = json.loads(json_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{json_path}: corrupt checkpoint JSON: {err}") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise ValueError(f"{json_path}: not a foveal checkpoint (expected \"format\": {FORMAT!r})")
    if header.get("version") != VERSION:
        raise ValueError(f"{json_path}: checkpoint format version {header.get('version')!r}; "
                         f"this foveal reads version {VERSION}")
    recorded = header.pop("json_sha256", None)  # absent in checkpoints written before it existed
    if recorded is not None and recorded != _json_sha256(header):
        raise ValueError(f"{json_path}: modified after it was written (its SHA-256 differs from the json_sha256 "
                         "recorded in it); restore the original file, or retrain")
    return header


def _json_sha256(header: dict[str, Any]) -> str:
    """SHA-256 of a checkpoint JSON without its ``json_sha256``, in canonical form (sorted keys, no spaces)."""
    body = {k: v for k, v in header.items() if k != "json_sha256"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _plain_cpu_tensors(tensors: dict[str, Tensor]) -> dict[str, Tensor]:
    """Detached, contiguous CPU tensors; safetensors refuses tensors sharing memory, so copy repeats."""
    out, seen = {}, set()
    for name, t in tensors.items():
        if not isinstance(t, Tensor):
            raise TypeError(f"checkpoint tensor {name!r}: expected a torch.Tensor, found {type(t).__name__}")
        t = t.detach().cpu()
        ptr = t.untyped_storage().data_ptr()
        if ptr in seen and t.numel() > 0:
            t = t.clone()
        seen.add(ptr)
        out[name] = t.contiguous()
    return out


def _strip(tensors: dict[str, Tensor], prefix: str) -> dict[str, Tensor]:
    return {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}


# ----------------------------------------------------------------------------- model


def _load_model_strict(model: nn.Module, state: dict[str, Tensor], st_path: Path) -> None:
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    shapes = [f"{k}: expected {list(expected[k].shape)} (model), found {list(state[k].shape)} (checkpoint)"
              for k in sorted(set(expected) & set(state)) if expected[k].shape != state[k].shape]
    if missing or unexpected or shapes:
        parts = [f"{label} ({len(keys)}): {_head(keys)}" for label, keys in
                 (("missing keys, in the model but not the checkpoint", missing),
                  ("unexpected keys, in the checkpoint but not the model", unexpected),
                  ("shape mismatches", shapes)) if keys]
        raise ValueError(f"{st_path}: checkpoint does not fit {type(model).__name__}; " + "; ".join(parts))
    model.load_state_dict(state, strict=True)


def _head(items: list[str], n: int = 10) -> str:
    shown = ", ".join(items[:n])
    return shown + (f", ... and {len(items) - n} more" if len(items) > n else "")


# ----------------------------------------------------------------------------- RNG


def _capture_rng(tensors: dict[str, Tensor]) -> dict[str, Any]:
    tensors["rng.torch"] = torch.get_rng_state()
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else []
    for i, state in enumerate(cuda):
        tensors[f"rng.cuda.{i}"] = state
    version, internal, gauss_next = random.getstate()
    return {"cuda_devices": len(cuda), "python": [version, list(internal), gauss_next]}


def _restore_rng(rng: dict[str, Any], tensors: dict[str, Tensor]) -> None:
    torch.set_rng_state(tensors["rng.torch"])
    n = rng.get("cuda_devices", 0)
    if n and torch.cuda.is_available() and torch.cuda.device_count() == n:
        torch.cuda.set_rng_state_all([tensors[f"rng.cuda.{i}"] for i in range(n)])
    version, internal, gauss_next = rng["python"]
    random.setstate((version, tuple(internal), gauss_next))


# ----------------------------------------------------------------------------- nested values <-> JSON


def _encode(value: Any, name: str, tensors: dict[str, Tensor]) -> Any:
    """A nested value -> JSON, moving tensors into ``tensors`` under dotted names (module docstring)."""
    if isinstance(value, Tensor):
        tensors[name] = value
        return {"__tensor__": name}
    if isinstance(value, dict):
        if all(isinstance(k, str) for k in value):
            return {k: _encode(v, f"{name}.{k}", tensors) for k, v in value.items()}
        return {"__items__": [[k, _encode(v, f"{name}.{k}", tensors)] for k, v in value.items()]}
    if isinstance(value, tuple):
        return {"__tuple__": [_encode(v, f"{name}.{i}", tensors) for i, v in enumerate(value)]}
    if isinstance(value, list):
        return [_encode(v, f"{name}.{i}", tensors) for i, v in enumerate(value)]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"checkpoint value {name!r}: cannot store a {type(value).__name__} (not a tensor or JSON value)")


def _decode(value: Any, tensors: dict[str, Tensor]) -> Any:
    if isinstance(value, dict):
        if set(value) == {"__tensor__"}:
            return tensors[value["__tensor__"]]
        if set(value) == {"__tuple__"}:
            return tuple(_decode(v, tensors) for v in value["__tuple__"])
        if set(value) == {"__items__"}:
            return {k: _decode(v, tensors) for k, v in value["__items__"]}
        return {k: _decode(v, tensors) for k, v in value.items()}
    if isinstance(value, list):
        return [_decode(v, tensors) for v in value]
    return value
