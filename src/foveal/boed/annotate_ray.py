"""An annotation as Ray tasks: the driver prepares the folder, one task per chunk computes and saves its part,
the driver assembles the result (:mod:`foveal.boed.annotate` describes the three steps and the folder).

::

    foveal annotate ... --ray --workers 8             # a local Ray instance: 8 chunks at once
    foveal annotate ... --ray auto --device cuda      # the cluster this node belongs to, one GPU per chunk

A chunk task (:func:`annotate_chunk`) receives the settings and the folder, not the posterior, bank or dataset
(they are large and not cheaply pickled): it opens them from the paths in the settings, once per worker
process and folder (:data:`_OPEN`), so a worker that runs many chunks loads them once. It asks Ray for
``threads`` CPUs (and one GPU when ``device`` is CUDA). Ray starts a task again whose worker or node died
(:func:`foveal.cluster.run_on_ray`); the task then finds the parts saved so far and computes only its own
chunk, or nothing if that part was saved before the death. A task that raises is that chunk's failure: the
other chunks still run, and :class:`ChunksFailed` names what failed once they are done; rerunning the
command computes only the chunks still missing.

Every chunk reads the first glimpse and its cell's PCA from the folder, and draws image ``k``'s completions
from ``image_generator(seed, k)``, so the result is the one :func:`foveal.boed.annotate.annotate` writes in
one process, byte for byte (given the same software and thread count on every node).
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any, Callable, Optional

import torch

from foveal.boed.annotate import (Annotation, Tools, compute_chunk, finish, load_tools, open_annotation, prepare,
                                  prepared_first_glimpse)
from foveal.boed.annotate_config import AnnotateConfig
from foveal.cluster import Task, TaskResult, run_on_ray

__all__ = ["annotate_on_ray", "annotate_chunk", "chunk_tasks", "ChunksFailed"]

LogFn = Callable[[str], None]

# What a worker process has open: {(folder, settings as JSON): (Annotation, tools, first glimpse)}. One entry:
# a worker serves one annotation at a time, and an entry holds a posterior and a bank.
_OPEN: dict[tuple[str, str], tuple[Annotation, Tools, Any]] = {}


class ChunksFailed(RuntimeError):
    """Chunks whose task raised (or whose worker died more often than Ray retries); the others are saved.

    ``failures``: ``[(chunk description, TaskResult)]``."""

    def __init__(self, out_dir: Path, failures: list[tuple[str, TaskResult]], total: int) -> None:
        self.failures = failures
        shown = "; ".join(f"{what}: {result.error}" for what, result in failures[:5])
        more = f"; and {len(failures) - 5} more" if len(failures) > 5 else ""
        super().__init__(f"{out_dir}: {len(failures)} of {total} chunk(s) failed: {shown}{more}. The other chunks "
                         "are saved; run the same command again to compute the failed ones")


def _opened(config: dict[str, Any], out_dir: str) -> tuple[Annotation, Tools, Any]:
    key = (out_dir, json.dumps(config, sort_keys=True))
    if key not in _OPEN:
        _OPEN.clear()
        run = open_annotation(AnnotateConfig.from_dict(config), out_dir)
        tools = load_tools(run)
        _OPEN[key] = (run, tools, prepared_first_glimpse(run, tools))
    return _OPEN[key]


def annotate_chunk(config: dict[str, Any], out_dir: str, k: int) -> dict[str, Any]:
    """One Ray task: chunk ``k`` of the annotation in ``out_dir`` (prepared by the driver), saved as its part.

    Returns ``{"chunk": k, "images": computed here, "seconds": ...}``; ``images`` is 0 when the part was
    already there (a retried task whose first try had saved it)."""
    run, tools, first = _opened(config, out_dir)
    tic = time.perf_counter()
    part = compute_chunk(run, k, tools, first)
    return {"chunk": k, "images": 0 if part is None else len(part), "seconds": time.perf_counter() - tic}


def chunk_tasks(run: Annotation, chunks: list[int], *, tasks_per_gpu: int = 1) -> list[Task]:
    """One :class:`~foveal.cluster.Task` per chunk: ``threads`` CPUs (default 1), and, if ``device`` is CUDA,
    ``1 / tasks_per_gpu`` of a GPU (the task's device is then ``cuda``: the GPU Ray gives it). A chunk's
    posterior batches rarely fill a large GPU, so several chunks on one GPU at once keep it busy (on one
    H200, 8 at once made the 1,000-image strong annotation; see benchmarks/gpu/README.md)."""
    cfg = run.cfg
    gpu = cfg.device.startswith("cuda")
    config = {**cfg.to_dict(), "device": "cuda" if gpu else cfg.device, "threads": cfg.threads or 1}
    out_dir = str(run.out_dir.resolve())
    return [Task(f"chunk-{k:05d}", annotate_chunk, args=(config, out_dir, k), cpus=cfg.threads or 1,
                 gpus=1.0 / tasks_per_gpu if gpu else 0.0, what=run.describe(k)) for k in chunks]


def annotate_on_ray(config: AnnotateConfig, out_dir: str | Path, *, address: Optional[str] = None,
                    workers: Optional[int] = None, tasks_per_gpu: int = 1, retries: int = 3,
                    log: LogFn = lambda m: None, env: Optional[dict[str, str]] = None) -> Path:
    """Annotate the selected images with one Ray task per chunk (module docstring) and write the result.

    Args:
        config: the settings (``threads``: CPUs per task; ``device`` CUDA: one GPU per task).
        out_dir: the output folder; on a cluster, a path every node sees (a shared file system).
        address: None for a local Ray instance; else an existing cluster (``auto``, ``host:port``).
        workers: chunks at once on the local instance (it gets ``workers * threads`` CPUs; default: as
            many as this machine's CPUs allow).
        tasks_per_gpu: chunks that share one GPU at once (``device`` CUDA): each task asks for
            ``1 / tasks_per_gpu`` of a GPU.
        retries: how often Ray restarts a chunk whose worker or node died.
        log: progress lines: the instance, then one per finished chunk with the images per minute so far.
        env: environment variables for the tasks' workers (e.g. ``PYTHONPATH``).

    Returns:
        The result's path prefix. Raises :class:`ChunksFailed` when a chunk failed (the rest are saved).
    """
    if workers is not None and address is not None:
        raise ValueError(f"--workers: sizes a local Ray instance, but --ray {address} names a cluster, whose "
                         "nodes decide its size; leave --workers out")
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
        raise ValueError(f"--workers: expected a positive number of chunks at once, found {workers!r}")
    if isinstance(tasks_per_gpu, bool) or not isinstance(tasks_per_gpu, int) or tasks_per_gpu < 1:
        raise ValueError(f"--tasks-per-gpu: expected a positive number of chunks that share a GPU, found {tasks_per_gpu!r}")
    if tasks_per_gpu > 1 and not config.device.startswith("cuda"):
        raise ValueError(f"--tasks-per-gpu {tasks_per_gpu}: chunks share a GPU only with --device cuda, found device "
                         f"{config.device!r}")
    run = open_annotation(config, out_dir)
    todo = run.todo()
    if todo:
        tic, threads = time.perf_counter(), torch.get_num_threads()
        torch.set_num_threads(config.threads or threads)  # as annotate() prepares: the same first-glimpse bytes
        try:
            first = prepare(run)
        finally:
            torch.set_num_threads(threads)
        made = "(first glimpse, its cell's PCA)" if first is not None else "(objective label: no first glimpse)"
        log(f"prepared {run.out_dir} {made} in {time.perf_counter() - tic:.1f} s; "
            f"{len(todo)} of {len(run.chunks)} chunk(s) to compute")
        tasks = chunk_tasks(run, todo, tasks_per_gpu=tasks_per_gpu)
        cpus = None if workers is None else workers * (config.threads or 1)  # the local instance's
        results = run_on_ray(tasks, address=address, workers=cpus, retries=retries, log=_progress(run, todo, log),
                             env=env)
        failed = [(t.name, results[t.key]) for t in tasks if not results[t.key].ok]
        if failed:
            raise ChunksFailed(run.out_dir, failed, len(tasks))
    return finish(run)


def _progress(run: Annotation, todo: list[int], log: LogFn) -> LogFn:
    """:func:`run_on_ray`'s lines, a finished chunk's with the images done and the images per minute so far."""
    names = {run.describe(k): k for k in todo}
    total = sum(len(run.chunks[k]) for k in todo)
    state = {"images": 0, "start": time.perf_counter()}

    def relay(line: str) -> None:
        match = re.match(r"finished (chunk \d+ \(images \d+\.\.\d+\)) ", line)
        if match and match.group(1) in names:
            state["images"] += len(run.chunks[names[match.group(1)]])
            minutes = (time.perf_counter() - state["start"]) / 60
            line += f"; {state['images']}/{total} images, {state['images'] / minutes:.1f} images/min so far"
        log(line)

    return relay
