"""``foveal compare``'s runs: train every planned run of a comparison (:mod:`foveal.recipes.compare.config`)
that is not finished, after its inputs (:mod:`foveal.recipes.compare.inputs`) are made; resumable. Here
one after the other, or as Ray tasks on a local instance or a cluster (:mod:`foveal.recipes.compare.graph`)."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional

import torch
import yaml

from foveal.cluster import ray_address
from foveal.config import config_differences
from foveal.files import atomic_write
from foveal.recipes.compare.config import CompareConfig, plan_runs, restrict
from foveal.recipes.compare.graph import Placement, run_steps
from foveal.recipes.compare.inputs import ComparisonInputs
from foveal.recipes.compare.steps import RunsFailed, clear_status, plan_steps, train_task
from foveal.recipes.run import longer_constant_run
from foveal.runtime import resolve_device

__all__ = ["train_task", "run_comparison", "check_compare_config", "save_compare_config", "RunsFailed"]


def run_comparison(cfg: CompareConfig, out: Path, *, log: Callable[[str], None] = lambda message: None,
                   progress: Optional[Callable[[], tuple[Optional[Callable], Callable[[], None]]]] = None,
                   methods: Optional[tuple[str, ...]] = None, seeds: Optional[tuple[int, ...]] = None,
                   stop_after: Optional[int] = None, workers: Optional[int] = None, devices: tuple[str, ...] = (),
                   ray: Optional[str] = None) -> dict[str, str]:
    """Train every planned run that is not finished yet (module docstring); returns the skipped methods
    with the reason (e.g. PS-HGS without part annotations).

    Args:
        log: receives one line per event (inputs made, run started / skipped / finished / failed).
        progress: makes ``(callback, close)`` for each run's training (the CLI's progress bar); used
            when the runs train in this process.
        methods, seeds: train only these (the report still covers every finished run); one the config
            lacks is an error.
        stop_after: stop each run after this iteration (timing, smoke tests).
        workers: how many runs train at once on a local Ray instance (its CPUs; each run one torch thread);
            None or 1 without ``ray`` or several ``devices``: here, one after the other.
        devices: the runs' ``train.device``: one (here), or several, one task each at a time on a local
            Ray instance (``cuda:0,cuda:1``: each task gets one GPU from Ray; a device may repeat, then
            tasks share it); ``workers`` is their number.
        ray: ``"local"`` (or ``""``) for a local Ray instance, else the address of a Ray cluster (``auto``,
            ``host:6379``, ``ray://host:10001``); None: Ray only for several workers or devices.

    Raises:
        RunsFailed: some runs failed; every run that did not need them has trained.
    """
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
        raise ValueError(f"--workers: expected a positive number of runs at once, found {workers!r}")
    address = ray_address(ray)
    _check_devices(devices, here=address is None)
    if devices and workers is not None and workers != len(devices):
        raise ValueError(f"--workers {workers} with --devices {','.join(devices)}: one run at a time per listed device; "
                         "give as many devices as workers (a device may repeat), or leave --workers out")
    if address is not None and workers is not None:
        raise ValueError(f"--workers {workers}: sizes a local Ray instance; the cluster at --ray {address} runs as many "
                         "tasks at once as its nodes have CPUs (or GPUs); leave --workers out")
    if ray is None and (workers or 1) == 1 and len(devices) <= 1:
        where = Placement(device=devices[0] if devices else None)
    else:
        device, gpus = _task_device(cfg, devices, here=address is None)
        where = Placement(ray="local" if ray is None else ray, workers=workers or len(devices) or None,
                          device=device, gpus=gpus)
    wanted = restrict(cfg, methods, seeds)
    train_methods, train_seeds = {m.name for m in wanted.methods}, set(wanted.seeds)
    out = Path(out)
    tasks = [t for t in plan_runs(cfg, out) if t.method in train_methods and t.seed in train_seeds]
    steps = plan_steps(cfg, tasks)
    # the checks, the stand-in NOGS file and fresh status files, once, before any run; compare.yaml is
    # written only once the checks pass: a start refused for a missing input leaves the folder as it was,
    # so the corrected command is not refused as "another config"
    resolved = check_compare_config(cfg, out)
    ComparisonInputs(cfg, out, log).preflight(train_methods)
    save_compare_config(resolved, out)
    for step in steps:
        clear_status(out, step.name)
    return run_steps(cfg, out, steps, where, stop_after=stop_after, log=log, progress=progress)


def _task_device(cfg: CompareConfig, devices: tuple[str, ...], here: bool) -> tuple[Optional[str], float]:
    """``(train.device, GPUs)`` of each Ray task: ``cuda`` and one GPU (a share of one where ``devices``
    repeats it) for GPU runs, which Ray hands out (it sets ``CUDA_VISIBLE_DEVICES``); CPU runs ask for none.
    ``here``: a local instance (else a cluster, whose nodes have the GPUs, not necessarily this one)."""
    if devices:
        kinds = {_device_type(d, here) for d in devices}
        if kinds == {"cpu"}:
            return "cpu", 0.0
        if kinds == {"cuda"}:
            return "cuda", len(set(devices)) / len(devices)
        raise ValueError(f"--devices {','.join(devices)}: expected GPUs only or CPUs only, found both")
    if resolve_device(cfg.run["train"].get("device", "auto")).type == "cuda":
        return "cuda", 1.0
    return None, 0.0


def _device_type(name: str, here: bool) -> str:
    """``cpu`` or ``cuda``: of a device of this machine (``here``), or of any (a Ray cluster's nodes)."""
    if here:
        return resolve_device(name, "--devices").type
    try:
        return torch.device(name).type
    except (RuntimeError, TypeError):
        raise ValueError(f"--devices: expected 'cpu', 'cuda' or 'cuda:N', found {name!r}") from None


def _check_devices(devices: tuple[str, ...], here: bool) -> None:
    """Each of ``--devices`` names a device of this machine (before any task starts); for a Ray cluster
    (not ``here``), of some machine: the driver may have no GPU."""
    for name in devices:
        if not here:
            _device_type(name, here)
            continue
        device = resolve_device(name, "--devices")
        count = torch.cuda.device_count() if device.type == "cuda" else 0
        if device.type == "cuda" and device.index is not None and device.index >= count:
            raise ValueError(f"--devices: {name!r}: this machine has {count} CUDA device(s), cuda:0 to cuda:{count - 1}")


def check_compare_config(cfg: CompareConfig, out: Path) -> dict:
    """The resolved comparison that ``compare.yaml`` holds; a folder made with another one is an error,
    except more ``train.iterations`` at a constant learning rate (its runs are continued). Writes nothing."""
    resolved = {"run": cfg.run, "seeds": list(cfg.seeds), "inputs": dict(cfg.inputs),
                "methods": [{"name": m.name, "kind": m.kind, "sequences": m.sequences, "algorithm": dict(m.algorithm),
                             "overrides": list(m.overrides)} for m in cfg.methods],
                "convergence": {"ce_tolerance": cfg.ce_tolerance, "accuracy_tolerance": cfg.accuracy_tolerance,
                                "target_accuracy": cfg.target_accuracy},
                "evaluate_repeats": cfg.evaluate_repeats}
    path = out / "compare.yaml"
    if path.exists():
        old = yaml.safe_load(path.read_text()) or {}
        shared = {k: old.get(k) for k in ("run", "inputs")}
        diff = config_differences(shared, {k: resolved[k] for k in ("run", "inputs")})
        if diff and not (shared["inputs"] == resolved["inputs"] and isinstance(shared["run"], dict)
                         and longer_constant_run(shared["run"], resolved["run"])):  # continued runs
            raise ValueError(f"{path}: this comparison folder was made with another config; differing fields: "
                             + "; ".join(diff[:6]) + ". Use a new --out, or the same config to resume.")
    return resolved


def save_compare_config(resolved: dict, out: Path) -> None:
    """Write ``compare.yaml``: what :func:`check_compare_config` returned."""
    # never half a file for another process of the same comparison, on this host or another
    atomic_write(out / "compare.yaml", yaml.safe_dump(resolved, sort_keys=False).encode())
