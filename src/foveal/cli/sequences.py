"""``foveal sequences info|validate|export|import|merge|make|score``: glimpse-sequence files, the annotator's
output and the released ones (:mod:`foveal.sequences`).

No torch at module level (see :mod:`foveal.cli`): :mod:`foveal.sequences` and what scores or merges sequences
import torch, which ``foveal --help`` must not wait for, so each handler imports them itself.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
from pathlib import Path

from foveal.cli.common import add_data_arguments, add_device_argument, build_split, checked_device, key_values
from foveal.runtime import resolve_device

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


def add_parsers(sub) -> None:
    s = sub.add_parser("sequences", help="glimpse-sequence files: info, validate, export, import, merge")
    ss = s.add_subparsers(dest="action", metavar="ACTION", required=True)
    i = ss.add_parser("info", help="summary of a file")
    i.add_argument("path")
    i.set_defaults(handler=_info)
    v = ss.add_parser("validate", help="check a file against its dataset split")
    v.add_argument("path")
    add_data_arguments(v, dataset=False)
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
    add_data_arguments(m)
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
    add_data_arguments(k, dataset=False)
    k.set_defaults(handler=_make)
    q = ss.add_parser("score", help="score files by networks that did not choose them, image for image, paired "
                                    "with the first file")
    q.add_argument("paths", nargs="+", help="sequence files of the same split and grid (scored on the images all hold)")
    q.add_argument("--scorer", action="append", default=[],
                   help="checkpoint of a posterior network (foveal train-posterior), ideally not the one that chose "
                        "the sequences; repeatable")
    q.add_argument("--classifier", action="append", default=[],
                   help="checkpoint of a glimpse network on the files' grid (foveal train, e.g. ram-grid with "
                        "algorithm.train_policy=random: a classifier trained on random glimpses), forced to look "
                        "along the sequences; repeatable")
    q.add_argument("--num-glimpses", type=int, help="score the first T glimpses (default: the shortest file's)")
    q.add_argument("--resamples", type=int, default=10_000, help="bootstrap resamples (default: %(default)s)")
    q.add_argument("--json", type=Path, help="also write the numbers here")
    add_device_argument(q, "cpu")
    add_data_arguments(q, dataset=False)
    q.set_defaults(handler=_score)
    g = ss.add_parser("merge", help="combine results: an annotation folder (its chunks or shard results) or files "
                                    "with --out")
    g.add_argument("paths", nargs="+")
    g.add_argument("--out", help="merged file (when merging files)")
    g.set_defaults(handler=_merge)


def _info(args) -> int:
    from foveal.sequences import GlimpseSequences

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
    if "completions" in p:  # the annotator's completions per step, mean over the images
        c = p["completions"]
        print("completions per step (mean distinct images / their effective sample size / the candidates' ESS): "
              + "  ".join(f"t{t} {d:.0f}/{e:.1f}/{'-' if q is None else f'{q:.0f}'}"
                          for t, d, e, q in zip(c["steps"], c["distinct"], c["completion_ess"], c["proposal_ess"])))
    return 0


def _validate(args) -> int:
    from foveal.sequences import GlimpseSequences

    s = GlimpseSequences.load(args.path)
    dataset = build_split(s.dataset, s.split, args, s.provenance.get("config"))
    s.validate(dataset)
    print(f"{s.source}: valid for {s.dataset}/{s.split} ({len(s)} of {len(dataset)} images)")
    return 0


def _make(args) -> int:
    from foveal.sequences import MAKERS, GlimpseSequences, Target, sequence_paths

    like = GlimpseSequences.load(args.like)
    if like.grid is None:
        raise ValueError(f"{like.source}: --like: expected a file with a grid (foveal annotate's), found none")
    if not args.force and any(p.exists() for p in sequence_paths(args.out)):
        raise ValueError(f"--out {args.out}: exists; use --force to replace it")
    dataset = build_split(like.dataset, like.split, args, like.provenance.get("config"))
    settings = {"kind": args.kind} if args.method == "salient" else {"seed": args.seed}
    made = MAKERS.build(args.method, Target.like(like, dataset), **settings)
    provenance = {**made.provenance, "like": str(like.source), "config": like.provenance.get("config")}
    made = dataclasses.replace(made, task=like.task, provenance=provenance)
    made.validate(dataset)
    made.save(args.out)
    print(f"{args.out}: {len(made)} {args.method} sequences of {made.num_glimpses} glimpses, the images and grid of "
          f"{like.source}")
    return 0


def _score(args) -> int:
    from foveal.evaluation.sequence_quality import network_scorer
    from foveal.models import load_model
    from foveal.sequences import GlimpseSequences, compare_sequences

    if not args.scorer and not args.classifier:
        raise ValueError("sequences score: expected at least one --scorer or --classifier checkpoint, found none")
    device = resolve_device(checked_device(args.device) or "cpu", "--device")
    files = [GlimpseSequences.load(p) for p in args.paths]
    dataset = build_split(files[0].dataset, files[0].split, args, files[0].provenance.get("config"))
    for f in files:
        f.validate(dataset)
    results = []
    for kind, paths in (("posterior", args.scorer), ("glimpse network", args.classifier)):
        for path in paths:
            model, _ = load_model(path, kind="posterior" if kind == "posterior" else None)
            result = compare_sequences(network_scorer(model, device=device), dataset, files,
                                       num_glimpses=args.num_glimpses, resamples=args.resamples)
            results.append({"scorer": str(path), "kind": kind, **result})
            _print_scores(results[-1])
    if args.json is not None:
        args.json.write_text(json.dumps(results[0] if len(results) == 1 else results, indent=2))
    return 0


def _print_scores(result: dict) -> None:
    T = result["num_glimpses"]
    print(f"{result['kind']} {result['scorer']}; {result['images']} images all files hold; after t = 1..{T} glimpses:")
    for f in result["files"]:
        acc = " ".join(f"{v:.3f}" for v in f["accuracy"][1:])
        ent = " ".join(f"{v:.3f}" for v in f["entropy"][1:])
        print(f"  {f['source']} ({f['method']}): accuracy {acc}; entropy {ent}")
        d = f["vs_first"]
        if d is not None:
            a, m, h = d["accuracy_after_T"], d["accuracy_mean"], d["entropy_mean"]
            print(f"    vs the first: accuracy after T {a['mean']:+.3f} [{a['ci95'][0]:+.3f}, {a['ci95'][1]:+.3f}], "
                  f"mean accuracy {m['mean']:+.3f} [{m['ci95'][0]:+.3f}, {m['ci95'][1]:+.3f}], "
                  f"mean entropy {h['mean']:+.3f} [{h['ci95'][0]:+.3f}, {h['ci95'][1]:+.3f}] (95 % bootstrap over "
                  "images)")


def _export(args) -> int:
    from foveal.sequences import GlimpseSequences, export_official

    paths = export_official(GlimpseSequences.load(args.path), args.folder, layout=args.layout, overwrite=args.force)
    print(f"{len(paths)} files written to {args.folder}")
    return 0


def _import(args) -> int:
    from foveal.retina import LocationGrid
    from foveal.sequences import import_official, read_image_map, sequence_paths

    if not args.dataset or not args.split:
        raise ValueError("sequences import: expected --dataset and --split (the split the files belong to)")
    existing = [p for p in sequence_paths(args.out) if p.exists()]
    if existing and not args.force:
        raise ValueError(f"{existing[0]}: sequences import: expected a new output, found an existing file; pass "
                         "--force to replace it")
    options = key_values(args.option, "--option")
    dataset = None if args.no_dataset else build_split(args.dataset, args.split, args)
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
    from foveal.sequences import GlimpseSequences

    if len(args.paths) == 1 and Path(args.paths[0]).is_dir():
        path = merge_folder(args.paths[0])
    else:
        if not args.out:
            raise ValueError("sequences merge: expected --out when merging files (or one folder of shard results)")
        GlimpseSequences.merge([GlimpseSequences.load(p) for p in args.paths]).save(args.out)
        path = args.out
    print(f"merged: {path}")
    return 0
