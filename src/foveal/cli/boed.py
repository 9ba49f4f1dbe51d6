"""Commands of the near-optimal glimpse-sequence annotator: ``foveal build-bank`` and ``foveal annotate``
(the files they write: :mod:`foveal.cli.sequences`). No torch at module level (see foveal.cli)."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from foveal.cli.common import (add_data_arguments, add_device_argument, build_split, checked_device, key_values,
                               progress_bar)

ANNOTATE_EPILOG = """examples:
  foveal build-bank fashion-mnist --split train --out banks/fmnist.npy
  foveal annotate --dataset fashion-mnist --split val --count 1000 --posterior runs/post/checkpoints/best \\
      --bank banks/fmnist.npy --glimpse-size 8 --grid-stride 4 --num-glimpses 5 --out runs/nogs-fmnist
  foveal annotate --config annotate.yaml num_glimpses=3     (a YAML of AnnotateConfig fields + overrides)
  foveal annotate --config annotate.yaml completions=hindsight objective=label screen_completions=null
      (the hindsight-label reference: each cell scored by the TRUE label's cross-entropy; not a method)
Run the same command again to resume a killed run: finished chunks are kept.

many processes, one task per chunk of images, through Ray (the driver prepares the folder and writes the result):
  foveal annotate --config annotate.yaml --out runs/nogs --ray --workers 8 --threads 2     (a local Ray instance)
  foveal annotate --config annotate.yaml --out /shared/runs/nogs --ray auto --device cuda --threads 4
--ray with no address starts a local instance with --workers chunks at once (--threads CPUs each); --ray auto
(or HOST:PORT) uses a running cluster (ray start; on Slurm: examples/slurm/annotate-ray.sbatch), whose nodes
must see the output folder. Each chunk's task asks for --threads CPUs (default 1) and, with --device cuda,
one GPU. A task whose node dies is run again elsewhere; a chunk that fails is named at the end (exit status
1), the others are kept: run the same command again. The result is the one a single process writes.

by hand, on machines that share nothing: a fixed share of the images per machine, then one merge:
  foveal annotate --config annotate.yaml --out runs/nogs --shard 0/4      (... --shard 3/4 on the others)
  foveal sequences merge runs/nogs            (after copying every shard's sequences-shard-* file there)"""

def add_parsers(sub) -> None:
    b = sub.add_parser("build-bank", help="write a dataset split's images to an image bank (.npy + .json)")
    b.add_argument("dataset", help="dataset name")
    b.add_argument("--out", type=Path, required=True, help="bank file, e.g. banks/fmnist.npy")
    b.add_argument("--split", default="train", help="default: %(default)s")
    b.add_argument("--no-flips", action="store_true", help="do not add the horizontally mirrored images")
    b.add_argument("--dtype", choices=["uint8", "float16"], default="uint8", help="storage (default: %(default)s)")
    b.add_argument("--limit", type=int, help="only the first LIMIT images")
    b.add_argument("--start", type=int, default=0,
                   help="from this position of the split on (default: %(default)s), e.g. past the images to annotate, "
                        "so that no completion is the annotated image itself")
    b.add_argument("--quiet", action="store_true")
    add_data_arguments(b, dataset=False)
    b.set_defaults(handler=_build_bank)

    a = sub.add_parser("annotate", help="near-optimal glimpse sequences for a split (resumable; Ray or shards)",
                       epilog=ANNOTATE_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    a.add_argument("--config", type=Path, help="YAML file of AnnotateConfig fields")
    a.add_argument("--out", type=Path, help="output folder (default: runs/annotate-<dataset>-<split>)")
    add_data_arguments(a)
    a.add_argument("--posterior", help="posterior checkpoint prefix (foveal train-posterior)")
    a.add_argument("--bank", help="image bank .npy (foveal build-bank)")
    a.add_argument("--start", type=int, help="first position of the split")
    a.add_argument("--count", type=int, help="number of images (default: to the end)")
    a.add_argument("--ray", nargs="?", const="local", metavar="ADDRESS",
                   help="one Ray task per chunk: alone, a local Ray instance (--workers); with an address (auto, "
                        "HOST:PORT, ray://HOST:10001) a running cluster (see below)")
    a.add_argument("--workers", type=int, help="with --ray and no address: chunks at once on the local instance "
                                               "(default: as many as this machine's CPUs allow at --threads each)")
    a.add_argument("--tasks-per-gpu", type=int, default=1,
                   help="with --ray and --device cuda: chunks that share one GPU at once (each task asks for "
                        "1/N of a GPU; default 1)")
    a.add_argument("--shard", help="I/N: this machine's fixed share of the images, I counted from 0 (e.g. 0/4); "
                                   "merge the shards' files with foveal sequences merge")
    a.add_argument("--shard-mode", choices=["round-robin", "contiguous"],
                   help="how --shard splits: every N-th image (round-robin, default) or N consecutive blocks")
    a.add_argument("--threads", type=int, help="torch CPU threads (default: as set, e.g. by OMP_NUM_THREADS); "
                                               "with --ray the CPUs of each chunk's task (default 1)")
    a.add_argument("--prepare-only", action="store_true",
                   help="only prepare the files every shard reads (first glimpse, its cell's PCA), then exit")
    a.add_argument("--glimpse-size", type=int, help="default: the posterior's (another value is refused)")
    a.add_argument("--grid", type=int, help="cells per axis, spread evenly (default: the posterior's grid; another "
                                            "grid is refused)")
    a.add_argument("--grid-stride", type=int, help="cells every GRID_STRIDE pixels (default: the posterior's grid)")
    a.add_argument("--num-glimpses", type=int, help="T (default: the posterior's T; more is refused)")
    a.add_argument("--completions", type=int, dest="n_completions", help="completions per step")
    a.add_argument("--pca-components", type=int)
    a.add_argument("--proposals", type=int, dest="n_proposals")
    a.add_argument("--sigma2", help="sigma^2 schedule, comma-separated (after 1, 2, ... glimpses)")
    a.add_argument("--target-ess", type=float, help="instead of --sigma2: ESS fraction in (0, 1]")
    a.add_argument("--keep-maps", action="store_true", default=None, help="store every EPE map")
    a.add_argument("--seed", type=int)
    a.add_argument("--chunk-size", type=int, help="images per part file")
    a.add_argument("--batch-size", type=int, help="masked images per posterior call")
    add_device_argument(a, "the config's device, else cpu; the posterior's and the bank search's")
    a.add_argument("--precision", choices=["fp32", "bf16"], help="the posterior's forward: fp32 or bf16 autocast "
                                                                 "(default: the config's, else fp32)")
    a.add_argument("--channels-last", action="store_true", default=None,
                   help="the posterior's convolutions in the channels-last memory format (GPUs)")
    a.add_argument("--compile", action="store_true", default=None,
                   help="the posterior's forward through torch.compile (off by default; pays off on GPUs; a rerun "
                        "must keep it, as --precision and --channels-last)")
    a.add_argument("--quiet", action="store_true", help="no progress bar (with --ray: no line per chunk)")
    a.add_argument("overrides", nargs="*", metavar="key=value", help="AnnotateConfig fields, e.g. n_completions=50")
    a.set_defaults(handler=_annotate)



# ------------------------------------------------------------------------------------------ commands
def _build_bank(args) -> int:
    from foveal.boed.bank import ImageBank

    from foveal.data.base import Rows

    dataset = build_split(args.dataset, args.split, args)
    if args.start:
        dataset = Rows(dataset, args.start)
    count = len(dataset) if args.limit is None else min(args.limit, len(dataset))
    update, close = progress_bar(args.quiet, "img", show=("images_per_min",))

    class Counted:  # ticks the bar as ImageBank.build reads the images
        name, split = dataset.name, dataset.split

        def __len__(self):
            return len(dataset)

        def __getitem__(self, i):
            if update is not None and ((i + 1) % 256 == 0 or i + 1 == count):
                update(i + 1, count)
            return dataset[i]

    try:
        source = f"{dataset.name}/{dataset.split}" + (f"[{args.start}:]" if args.start else "")
        bank = ImageBank.build(Counted(), args.out, flips=not args.no_flips, dtype=args.dtype, limit=args.limit,
                               source=source)
    finally:
        close()
    print(f"bank: {args.out} (+ {args.out.with_suffix('.json').name}): {bank.stored} images of {bank.image_shape}"
          f"{' + flips' if bank.flips else ''}, {args.dtype}, from {bank.source}")
    return 0


def _annotate_config(args):
    import yaml

    from foveal.boed.annotate import AnnotateConfig

    checked_device(args.device)
    values: dict[str, Any] = {}
    if args.config is not None:
        if not args.config.is_file():
            raise FileNotFoundError(f"{args.config}: annotate config file not found")
        values = yaml.safe_load(args.config.read_text()) or {}
        if not isinstance(values, dict):
            raise ValueError(f"{args.config}: expected a mapping of AnnotateConfig fields, "
                             f"found {type(values).__name__}")
    flags = {k: getattr(args, k) for k in ("dataset", "split", "data_root", "data_seed", "posterior", "bank", "start",
                                           "count", "shard_mode", "glimpse_size", "grid", "grid_stride", "num_glimpses",
                                           "n_completions", "pca_components", "n_proposals", "target_ess", "keep_maps",
                                           "seed", "chunk_size", "batch_size", "device", "threads", "precision",
                                           "channels_last", "compile")}
    values.update({k: v for k, v in flags.items() if v is not None})
    if args.option:
        values["data_options"] = {**(values.get("data_options") or {}), **key_values(args.option, "--option")}
    if args.sigma2:
        try:
            values["sigma2_schedule"] = [float(s) for s in args.sigma2.split(",")]
        except ValueError:
            raise ValueError(f"--sigma2: expected comma-separated numbers, found {args.sigma2!r}") from None
    if args.shard:
        i, sep, n = args.shard.partition("/")
        if not (sep and i.strip().isdigit() and n.strip().isdigit()):
            retired = " (--shard auto, claiming chunks, was replaced by --ray)" if args.shard.strip() == "auto" else ""
            raise ValueError(f"--shard: expected I/N with 0 <= I < N (e.g. 0/4), found {args.shard!r}{retired}")
        values["shard_index"], values["num_shards"] = int(i), int(n)
    values.update(key_values(args.overrides, "override"))
    values = _with_posterior_settings(values)
    return AnnotateConfig.from_dict(values)


def _with_posterior_settings(values: dict[str, Any]) -> dict[str, Any]:
    """The glimpse size, grid and T the posterior was trained with, where the user set none (an explicit
    value that differs is refused: :func:`foveal.boed.annotate_config.with_posterior_settings`); says which."""
    from foveal.boed.annotate_config import grid_words, posterior_glimpse_settings, with_posterior_settings
    from foveal.checkpoint import checkpoint_paths, read_checkpoint_info

    if values.get("posterior") is None or not checkpoint_paths(values["posterior"])[1].exists():
        return values  # missing: AnnotateConfig and the annotator say so
    settings = posterior_glimpse_settings(read_checkpoint_info(values["posterior"]))
    out = with_posterior_settings(values, settings, values["posterior"])
    if settings is None:
        print(f"note: {values['posterior']} records no posterior training settings; glimpse_size, grid and "
              "num_glimpses are as given (or the defaults)", file=sys.stderr)
        return out
    taken = [f"glimpse_size {out['glimpse_size']}"] if values.get("glimpse_size") is None else []
    if values.get("grid") is None and values.get("grid_stride") is None:
        taken.append(grid_words(out))
    if values.get("num_glimpses") is None:
        taken.append(f"num_glimpses {out['num_glimpses']}")
    if taken:
        print(f"from the posterior {values['posterior']}: {', '.join(taken)}", file=sys.stderr)
    return out


def _exit_on_term(signum, frame) -> None:
    raise SystemExit(128 + signum)


def _annotate(args) -> int:
    import json

    from foveal.boed.annotate import annotate

    if args.workers is not None and args.ray is None:
        raise ValueError(f"--workers {args.workers}: sizes the local Ray instance of --ray; add --ray, or leave "
                         "--workers out for one process")
    if args.ray is not None and args.prepare_only:
        raise ValueError("--prepare-only: with --ray the driver prepares the folder itself; leave one of them out")
    cfg = _annotate_config(args)
    out = args.out or Path("runs") / f"annotate-{cfg.dataset}-{cfg.split}"
    print(f"output folder: {out}", file=sys.stderr)
    if args.ray is not None:
        path = _annotate_on_ray(cfg, out, args)
        if path is None:
            return 1
    else:
        update, close = progress_bar(args.quiet, "img", show=("images_per_min",))
        try:
            path = annotate(cfg, out, progress=update, prepare_only=args.prepare_only)
        finally:
            close()
        if path is None:
            made = "config.json" if cfg.objective == "label" else "config.json, first-glimpse.*, pca/"
            print(f"prepared: {out} ({made}); now start the shards on it")
            return 0
    timing = json.loads(path.with_name(path.name + ".json").read_text())["provenance"]["timing"]
    print(f"sequences: {path}.json (+ .safetensors): {timing['images']} images, {timing['seconds']:.1f} s of "
          f"compute, {timing['sequences_per_min'] or 0:.3g} sequences/min")
    if cfg.num_shards > 1:
        print(f"shard {cfg.shard_index} of {cfg.num_shards}: when every shard is done, collect the "
              f"sequences-shard-*-of-{cfg.num_shards} files in one folder and run: foveal sequences merge FOLDER")
    return 0


def _annotate_on_ray(cfg, out: Path, args):
    """The annotation as Ray tasks; the result's path, or None (after saying which chunks failed and how to
    go on) when a chunk failed."""
    from foveal.boed.annotate_ray import ChunksFailed, annotate_on_ray
    from foveal.cluster import ray_address

    log = (lambda line: None) if args.quiet else (lambda line: print(line, file=sys.stderr, flush=True))
    # Slurm (time limit, preemption) stops jobs with SIGTERM: unwind, so that the tasks are cancelled and a
    # local Ray instance is shut down instead of left running.
    on_term = signal.signal(signal.SIGTERM, _exit_on_term) if threading.current_thread() is threading.main_thread() \
        else None
    try:
        return annotate_on_ray(cfg, out, address=ray_address(args.ray), workers=args.workers,
                               tasks_per_gpu=args.tasks_per_gpu, log=log)
    except ChunksFailed as failed:
        for n, (what, result) in enumerate(failed.failures):
            detail = (result.traceback or result.error) if n < 3 else result.error
            print(f"FAILED {what}:\n{detail.rstrip()}", file=sys.stderr)
        print(f"foveal annotate: error: {failed}", file=sys.stderr)
        return None
    finally:
        if on_term is not None:
            signal.signal(signal.SIGTERM, on_term)
