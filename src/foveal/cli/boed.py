"""Commands of the near-optimal glimpse-sequence annotator: ``foveal build-bank``, ``foveal annotate``,
``foveal sequences info|validate|export|import|merge``. No torch at module level (see foveal.cli)."""

from __future__ import annotations

import argparse
import math
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any, Optional

from foveal.cli.common import add_device_argument, checked_device, progress_bar

ANNOTATE_EPILOG = """examples:
  foveal build-bank fashion-mnist --split train --out banks/fmnist.npy
  foveal annotate --dataset fashion-mnist --split val --count 1000 --posterior runs/post/checkpoints/best \\
      --bank banks/fmnist.npy --glimpse-size 8 --grid-stride 4 --num-glimpses 5 --out runs/nogs-fmnist
  foveal annotate --config annotate.yaml --shard 0/4 num_glimpses=3   (a YAML of AnnotateConfig fields + overrides)
  foveal sequences merge runs/nogs-fmnist            (after copying every shard's result there)
Run the same command again to resume a killed run: finished chunks are kept.

several workers on one output folder (a shared file system), each claiming chunks until none is left:
  sbatch --array=0-31 --wrap "foveal annotate --config annotate.yaml --out runs/nogs --shard auto --threads 8"
  torchrun --nnodes 4 --nproc-per-node 8 --rdzv-backend c10d --rdzv-endpoint $HEAD:29500 -m foveal annotate \\
      --config annotate.yaml --out runs/nogs --shard auto --device cuda --threads 4
--shard auto reads torchrun's RANK/WORLD_SIZE/LOCAL_RANK or Slurm's SLURM_ARRAY_TASK_* / SLURM_PROCID and
SLURM_NTASKS, and claims chunks (shard_mode claim): a worker that dies or joins late changes nothing; the
last one writes runs/nogs/sequences (else: foveal sequences merge runs/nogs). torchrun sets
OMP_NUM_THREADS=1: give --threads for the work on the CPU (reading the bank; all of the bank search with
--device cpu; with a GPU its distances are computed there)."""

IMPORT_EPILOG = """examples (the sequences released with Harvey et al. 2021):
  CelebA-HQ, one attribute (files 0.txt .. 599.txt = rows of annotations.txt, the annotate split):
    foveal sequences import optimal-sequences/<Male's folder> runs/released/celeba-hq-Male \\
        --dataset celeba-hq --split annotate --data-root data/celebhq --option attribute=Male \\
        --option image_size=224 --glimpse-size 16 --grid linspace:0:207:50
  CUB (each file ends with the release's image path; a map pairs those with CUB_200_2011 images):
    foveal sequences import optimal-sequences/birds runs/released/cub --dataset cub --split train \\
        --data-root data/CUB_200_2011 --glimpse-size 32 --image-map release-to-cub.txt
  back to the released layout, byte for byte:   foveal sequences export runs/released/cub out/birds
--grid: N or RxC (spread evenly), stride:S, linspace:START:STOP:NUM (int(numpy.linspace), the CelebA-HQ
release's rule), r0,r1,... or rows=r0,r1,...;cols=c0,c1,... (explicit top-left pixels).
--image-map FILE: one line per released image, '<released path, file name or number> <dataset image>';
for CUB the dataset image is an images.txt id or path."""


def _yaml_value(text: str) -> Any:
    import yaml

    return yaml.safe_load(text) if text != "" else None


def _key_values(items: list[str], what: str) -> dict[str, Any]:
    out = {}
    for item in items or []:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ValueError(f"{what} {item!r}: expected key=value")
        out[key] = _yaml_value(raw)
    return out


def _data_arguments(p: argparse.ArgumentParser, dataset: bool = True) -> None:
    if dataset:
        p.add_argument("--dataset", help="dataset name (foveal list)")
        p.add_argument("--split", help="split (train, val, test, annotate)")
    p.add_argument("--data-root", help="dataset root folder or file")
    p.add_argument("--data-seed", type=int, help="dataset seed (translated / cluttered placement)")
    p.add_argument("--option", action="append", metavar="KEY=VALUE", help="dataset option, e.g. canvas=60 (repeatable)")


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
    _data_arguments(b, dataset=False)
    b.set_defaults(handler=_build_bank)

    a = sub.add_parser("annotate", help="near-optimal glimpse sequences for a split (resumable, shardable)",
                       epilog=ANNOTATE_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    a.add_argument("--config", type=Path, help="YAML file of AnnotateConfig fields")
    a.add_argument("--out", type=Path, help="output folder (default: runs/annotate-<dataset>-<split>)")
    _data_arguments(a)
    a.add_argument("--posterior", help="posterior checkpoint prefix (foveal train-posterior)")
    a.add_argument("--bank", help="image bank .npy (foveal build-bank)")
    a.add_argument("--start", type=int, help="first position of the split")
    a.add_argument("--count", type=int, help="number of images (default: to the end)")
    a.add_argument("--shard", help="I/N: this worker's share, I counted from 0 (e.g. 0/4); auto: from torchrun's or "
                                   "Slurm's environment, claiming chunks (see below)")
    a.add_argument("--shard-mode", choices=["round-robin", "contiguous", "claim"],
                   help="a fixed share of the images (round-robin, contiguous; default) or claim chunks in turn "
                        "(default with --shard auto)")
    a.add_argument("--threads", type=int, help="torch CPU threads (default: as set, e.g. by OMP_NUM_THREADS)")
    a.add_argument("--claim-timeout", type=float, help="seconds before an untouched claim counts as a dead worker's "
                                                       "(default 300)")
    a.add_argument("--prepare-only", action="store_true",
                   help="only prepare the files every worker reads (first glimpse, its cell's PCA), then exit; give "
                        "the workers' settings (for --shard auto workers: --shard-mode claim)")
    a.add_argument("--glimpse-size", type=int)
    a.add_argument("--grid", type=int, help="cells per axis, spread evenly")
    a.add_argument("--grid-stride", type=int, help="cells every GRID_STRIDE pixels (default: 1)")
    a.add_argument("--num-glimpses", type=int, help="T")
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
    a.add_argument("--quiet", action="store_true", help="no progress bar")
    a.add_argument("overrides", nargs="*", metavar="key=value", help="AnnotateConfig fields, e.g. n_completions=50")
    a.set_defaults(handler=_annotate)

    s = sub.add_parser("sequences", help="glimpse-sequence files: info, validate, export, import, merge")
    ss = s.add_subparsers(dest="action", metavar="ACTION", required=True)
    i = ss.add_parser("info", help="summary of a file")
    i.add_argument("path")
    i.set_defaults(handler=_info)
    v = ss.add_parser("validate", help="check a file against its dataset split")
    v.add_argument("path")
    _data_arguments(v, dataset=False)
    v.set_defaults(handler=_validate)
    e = ss.add_parser("export", help="write the released text format: one .txt per image, lines 'r, c'")
    e.add_argument("path")
    e.add_argument("folder", type=Path)
    e.add_argument("--layout", choices=["auto", "foveal", "released", "celeba-hq"], default="auto",
                   help="released: the folder an imported file came from, byte for byte; celeba-hq: <row>.txt; "
                        "foveal: <image id>.txt; auto (default): released for imported files, else foveal")
    e.add_argument("--force", action="store_true", help="replace files that exist in FOLDER")
    e.set_defaults(handler=_export)
    m = ss.add_parser("import", help="read the released text format into a sequence file", epilog=IMPORT_EPILOG,
                      formatter_class=argparse.RawDescriptionHelpFormatter)
    m.add_argument("folder", type=Path)
    m.add_argument("out", help="sequence file to write (prefix)")
    _data_arguments(m)
    m.add_argument("--image-size", help="H,W (default: the dataset's)")
    m.add_argument("--glimpse-size", type=int, required=True)
    m.add_argument("--grid", help="check corners on this grid: N, RxC, stride:S, linspace:START:STOP:NUM, "
                                  "r0,r1,... or rows=...;cols=... (see below)")
    m.add_argument("--grid-stride", type=int, help="check corners on this grid (stride)")
    m.add_argument("--match", choices=["auto", "id", "row"], default="auto",
                   help="how a file names its image: id (path line or name = image id), row (<row>.txt of the "
                        "annotation file), auto (default)")
    m.add_argument("--image-map", type=Path, help="file pairing released image paths with dataset images")
    m.add_argument("--task", help="what the sequences were made for (default: the dataset's, e.g. its attribute)")
    m.add_argument("--skip-unmatched", action="store_true",
                   help="leave out files whose image is not in the split (recorded in the file's provenance)")
    m.add_argument("--force", action="store_true", help="replace OUT if it exists")
    m.add_argument("--no-dataset", action="store_true", help="do not build the dataset (files named <index>.txt)")
    m.set_defaults(handler=_import)
    k = ss.add_parser("make", help="baseline sequences (salient or random) of the images and grid of a file")
    k.add_argument("method", choices=["salient", "random"])
    k.add_argument("--like", required=True, help="a sequence file (e.g. foveal annotate's): the same dataset split, "
                                                 "images, grid and number of glimpses")
    k.add_argument("--out", required=True, help="sequence file to write (prefix)")
    k.add_argument("--seed", type=int, default=0, help="random: the generator's seed (default: %(default)s)")
    k.add_argument("--kind", choices=["edge", "variance"], default="edge",
                   help="salient: the saliency map (default: %(default)s)")
    k.add_argument("--force", action="store_true", help="replace OUT if it exists")
    _data_arguments(k, dataset=False)
    k.set_defaults(handler=_make)
    q = ss.add_parser("score", help="score files by a posterior network that did not choose them, image for image, "
                                    "paired with the first file")
    q.add_argument("paths", nargs="+", help="sequence files of the same split and grid (scored on the images all hold)")
    q.add_argument("--scorer", required=True, help="checkpoint of a posterior network (foveal train-posterior), "
                                                   "ideally not the one that chose the sequences")
    q.add_argument("--num-glimpses", type=int, help="score the first T glimpses (default: the shortest file's)")
    q.add_argument("--resamples", type=int, default=10_000, help="bootstrap resamples (default: %(default)s)")
    q.add_argument("--json", type=Path, help="also write the numbers here")
    add_device_argument(q, "cpu")
    _data_arguments(q, dataset=False)
    q.set_defaults(handler=_score)
    g = ss.add_parser("merge", help="combine results: an annotation folder (its chunks or shard results) or files "
                                    "with --out")
    g.add_argument("paths", nargs="+")
    g.add_argument("--out", help="merged file (when merging files)")
    g.set_defaults(handler=_merge)


def _build(name: str, split: str, args, defaults: Optional[dict] = None):
    from foveal.data import build_dataset

    defaults = defaults or {}
    root = args.data_root if args.data_root is not None else defaults.get("data_root")
    seed = args.data_seed if args.data_seed is not None else defaults.get("data_seed", 0)
    options = {**(defaults.get("data_options") or {}), **_key_values(args.option, "--option")}
    return build_dataset(name, split, root=root, seed=seed, **options)


# ------------------------------------------------------------------------------------------ commands
def _build_bank(args) -> int:
    from foveal.boed.bank import ImageBank

    from foveal.data.base import Rows

    dataset = _build(args.dataset, args.split, args)
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
                                           "seed", "chunk_size", "batch_size", "device", "threads", "claim_timeout",
                                           "precision", "channels_last", "compile")}
    values.update({k: v for k, v in flags.items() if v is not None})
    if args.option:
        values["data_options"] = {**(values.get("data_options") or {}), **_key_values(args.option, "--option")}
    if args.sigma2:
        try:
            values["sigma2_schedule"] = [float(s) for s in args.sigma2.split(",")]
        except ValueError:
            raise ValueError(f"--sigma2: expected comma-separated numbers, found {args.sigma2!r}") from None
    worker = None
    if args.shard == "auto":
        from foveal.boed.workers import worker_from_environment

        worker = worker_from_environment(os.environ)
        values["shard_index"], values["num_shards"] = worker.rank, worker.world_size
    elif args.shard:
        i, sep, n = args.shard.partition("/")
        if not (sep and i.strip().isdigit() and n.strip().isdigit()):
            raise ValueError(f"--shard: expected I/N with 0 <= I < N (e.g. 0/4), or auto, found {args.shard!r}")
        values["shard_index"], values["num_shards"] = int(i), int(n)
    values.update(_key_values(args.overrides, "override"))
    if worker is not None:
        values.setdefault("shard_mode", "claim")
        if worker.local_rank is not None:
            from foveal.boed.workers import worker_device

            values["device"] = worker_device(values.get("device", "cpu"), worker.local_rank)
    return AnnotateConfig.from_dict(values), worker


def _exit_on_term(signum, frame) -> None:
    raise SystemExit(128 + signum)


def _annotate(args) -> int:
    import json

    from foveal.boed.annotate import annotate

    cfg, worker = _annotate_config(args)
    out = args.out or Path("runs") / f"annotate-{cfg.dataset}-{cfg.split}"
    print(f"output folder: {out}" + (f"; worker {worker.rank} of {worker.world_size} ({worker.source}"
                                     f"{'' if worker.local_rank is None else f', local rank {worker.local_rank}'}), "
                                     f"{cfg.shard_mode}, device {cfg.device}" if worker else ""), file=sys.stderr)
    update, close = progress_bar(args.quiet, "img", show=("images_per_min",))
    # Slurm (time limit, preemption) and torchrun (a failed peer) stop workers with SIGTERM: unwind, so
    # that the claims this worker holds are released at once instead of going stale.
    on_term = signal.signal(signal.SIGTERM, _exit_on_term) if threading.current_thread() is threading.main_thread() \
        else None
    try:
        path = annotate(cfg, out, progress=update, prepare_only=args.prepare_only)
    finally:
        close()
        if on_term is not None:
            signal.signal(signal.SIGTERM, on_term)
    if path is None:
        print(f"prepared: {out} (config.json, first-glimpse.*, pca/); now start the workers on it")
        return 0
    timing = json.loads(path.with_name(path.name + ".json").read_text())["provenance"]["timing"]
    print(f"sequences: {path}.json (+ .safetensors): {timing['images']} images, {timing['seconds']:.1f} s of "
          f"compute, {timing['sequences_per_min'] or 0:.3g} sequences/min")
    if cfg.num_shards > 1 and not cfg.claims:
        print(f"shard {cfg.shard_index} of {cfg.num_shards}: when every shard is done, collect the "
              f"sequences-shard-*-of-{cfg.num_shards} files in one folder and run: foveal sequences merge FOLDER")
    return 0


def _info(args) -> int:
    from foveal.data.sequences import GlimpseSequences

    s = GlimpseSequences.load(args.path)
    print(f"{s.source}: {len(s)} sequences of {s.num_glimpses} glimpses ({s.glimpse_size} px) on {s.dataset}/{s.split} "
          f"{s.image_size[0]}x{s.image_size[1]}, method {s.method}" + (f", task {s.task}" if s.task else ""))
    if len(s):
        print(f"indices: {int(s.indices.min())}..{int(s.indices.max())}")
    print(f"grid: {'none' if s.grid is None else f'{s.grid.shape[0]}x{s.grid.shape[1]} cells'}; EPE maps: "
          f"{'yes' if s.epe_maps is not None else 'no'}; ids: {'yes' if s.ids is not None else 'no'}")
    if len(s):
        cells = None if s.grid is None else s.grid.shape[0] * s.grid.shape[1]
        spread = s.spread()
        print("places per step (distinct; entropy in nats" + (f", uniform over the grid = {math.log(cells):.2f}"
                                                            if cells else "") + "): "
              + "  ".join(f"t{t + 1} {n} ({h:.2f})" for t, (n, h) in enumerate(spread)))
    p = s.provenance
    if "posterior" in p:
        print(f"posterior: {p['posterior'].get('checkpoint')} (sha256 {str(p['posterior'].get('sha256'))[:12]})")
    if "timing" in p and p["timing"].get("sequences_per_min"):
        print(f"timing: {p['timing']['seconds']:.1f} s, {p['timing']['sequences_per_min']:.3g} sequences/min")
    return 0


def _validate(args) -> int:
    from foveal.data.sequences import GlimpseSequences

    s = GlimpseSequences.load(args.path)
    dataset = _build(s.dataset, s.split, args, s.provenance.get("config"))
    s.validate(dataset)
    print(f"{s.source}: valid for {s.dataset}/{s.split} ({len(s)} of {len(dataset)} images)")
    return 0


def _make(args) -> int:
    import dataclasses

    from foveal.boed.salient import SalientConfig, baseline_sequences
    from foveal.data.sequences import GlimpseSequences, sequence_paths

    like = GlimpseSequences.load(args.like)
    if like.grid is None:
        raise ValueError(f"{like.source}: --like: expected a file with a grid (foveal annotate's), found none")
    if not args.force and any(p.exists() for p in sequence_paths(args.out)):
        raise ValueError(f"--out {args.out}: exists; use --force to replace it")
    dataset = _build(like.dataset, like.split, args, like.provenance.get("config"))
    made = baseline_sequences(args.method, dataset, like.indices, like.grid, like.num_glimpses,
                              dataset_name=like.dataset, seed=args.seed, config=SalientConfig(args.kind))
    provenance = {**made.provenance, "like": str(like.source), "config": like.provenance.get("config")}
    made = dataclasses.replace(made, task=like.task, provenance=provenance)
    made.validate(dataset)
    made.save(args.out)
    print(f"{args.out}: {len(made)} {args.method} sequences of {made.num_glimpses} glimpses, the images and grid of "
          f"{like.source}")
    return 0


def _score(args) -> int:
    import json

    from foveal.data.sequences import GlimpseSequences
    from foveal.evaluation.sequence_quality import compare_sequences
    from foveal.models import load_model
    from foveal.runtime import resolve_device

    device = resolve_device(checked_device(args.device) or "cpu", "--device")
    files = [GlimpseSequences.load(p) for p in args.paths]
    dataset = _build(files[0].dataset, files[0].split, args, files[0].provenance.get("config"))
    for f in files:
        f.validate(dataset)
    model, _ = load_model(args.scorer, kind="posterior")
    result = compare_sequences(model, dataset, files, num_glimpses=args.num_glimpses, resamples=args.resamples,
                               device=device)
    T = result["num_glimpses"]
    print(f"scorer {args.scorer}; {result['images']} images all files hold; after t = 1..{T} glimpses:")
    for f in result["files"]:
        acc = " ".join(f"{v:.3f}" for v in f["accuracy"][1:])
        ent = " ".join(f"{v:.3f}" for v in f["entropy"][1:])
        print(f"  {f['source']} ({f['method']}): accuracy {acc}; entropy {ent}")
        d = f["vs_first"]
        if d is not None:
            a, h = d["accuracy_after_T"], d["entropy_mean"]
            print(f"    vs the first: accuracy after T {a['mean']:+.3f} [{a['ci95'][0]:+.3f}, {a['ci95'][1]:+.3f}], "
                  f"mean entropy {h['mean']:+.3f} [{h['ci95'][0]:+.3f}, {h['ci95'][1]:+.3f}] (95 % bootstrap over "
                  "images)")
    if args.json is not None:
        args.json.write_text(json.dumps({"scorer": str(args.scorer), **result}, indent=2))
    return 0


def _export(args) -> int:
    from foveal.data.sequences import GlimpseSequences
    from foveal.data.sequences_official import export_official

    paths = export_official(GlimpseSequences.load(args.path), args.folder, layout=args.layout, overwrite=args.force)
    print(f"{len(paths)} files written to {args.folder}")
    return 0


def _import(args) -> int:
    from foveal.data.sequences import sequence_paths
    from foveal.data.sequences_official import import_official, read_image_map
    from foveal.retina import LocationGrid

    if not args.dataset or not args.split:
        raise ValueError("sequences import: expected --dataset and --split (the split the files belong to)")
    existing = [p for p in sequence_paths(args.out) if p.exists()]
    if existing and not args.force:
        raise ValueError(f"{existing[0]}: sequences import: expected a new output, found an existing file; pass "
                         "--force to replace it")
    options = _key_values(args.option, "--option")
    dataset = None if args.no_dataset else _build(args.dataset, args.split, args)
    if args.image_size:
        image_size = tuple(int(v) for v in args.image_size.replace("x", ",").split(","))
        image_size = image_size * 2 if len(image_size) == 1 else image_size
    elif dataset is not None:
        image_size = tuple(dataset.image_shape[1:])
    else:
        raise ValueError("sequences import: expected --image-size H,W when --no-dataset is given")
    task = args.task if args.task is not None else options.get("attribute") if dataset is None else None
    if task is None and dataset is None and args.dataset == "celeba-hq":
        raise ValueError("sequences import: expected --task ATTRIBUTE (or --option attribute=...) with --no-dataset: "
                         "which CelebA attribute the sequences were made for")
    if args.grid is not None and args.grid_stride is not None:
        raise ValueError("sequences import: expected one of --grid, --grid-stride, found both")
    grid = None
    if args.grid is not None:
        grid = LocationGrid.from_spec(args.grid, image_size, args.glimpse_size)
    elif args.grid_stride is not None:
        grid = LocationGrid.from_stride(image_size, args.glimpse_size, args.grid_stride)
    image_map = None
    if args.image_map is not None:
        image_map = read_image_map(args.image_map, getattr(dataset, "resolve_image", None))
    seqs = import_official(args.folder, dataset_name=args.dataset, split=args.split, image_size=image_size,
                           glimpse_size=args.glimpse_size, dataset=dataset, grid=grid, match=args.match,
                           image_map=image_map, task=None if task is None else str(task),
                           skip_unmatched=args.skip_unmatched)
    # What `foveal sequences validate` rebuilds the dataset from.
    seqs.provenance["config"] = {"data_root": args.data_root, "data_seed": args.data_seed or 0,
                                 "data_options": options}
    if args.image_map is not None:
        seqs.provenance["image_map"] = str(args.image_map)
    seqs.save(args.out)
    skipped = len(seqs.provenance.get("skipped", []))
    print(f"{len(seqs)} sequences of {seqs.num_glimpses} glimpses: {args.out}" + (f" ({skipped} files skipped)"
                                                                                   if skipped else ""))
    return 0


def _merge(args) -> int:
    from foveal.boed.annotate import merge_folder
    from foveal.data.sequences import GlimpseSequences

    if len(args.paths) == 1 and Path(args.paths[0]).is_dir():
        path = merge_folder(args.paths[0])
    else:
        if not args.out:
            raise ValueError("sequences merge: expected --out when merging files (or one folder of shard results)")
        GlimpseSequences.merge([GlimpseSequences.load(p) for p in args.paths]).save(args.out)
        path = args.out
    print(f"merged: {path}")
    return 0
