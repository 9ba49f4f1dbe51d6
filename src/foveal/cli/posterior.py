"""``foveal train-posterior`` and ``foveal plot-epe``: the annotator's posterior network and its figures.

Registered in :data:`foveal.cli.COMMAND_MODULES`; light to import (torch is imported in the handlers).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from foveal.cli.common import add_training_arguments, config_and_run_dir, report, run_training

EXAMPLES = """examples:
  foveal train-posterior                                   60x60 cluttered Fashion-MNIST, 12 px glimpses, T = 6
  foveal train-posterior --run-dir runs/post train.iterations=500   (run again to resume after a kill)
  foveal evaluate runs/post/checkpoints/best               accuracy / entropy after t random glimpses
  foveal plot-epe seqs/nogs --row 0 --out fig2.png         Fig. 2 from a sequence file kept with EPE maps
"""


def add_parsers(sub) -> None:
    t = sub.add_parser("train-posterior", help="train the annotator's posterior CNN on randomly glimpsed images",
                       epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_training_arguments(t, default_config="posterior-cluttered-fashion-mnist")
    t.set_defaults(handler=train_posterior)

    p = sub.add_parser("plot-epe", help="Fig. 2: EPE maps and observed image along one annotated sequence",
                       epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("sequences", help="glimpse-sequence file (with or without .json), made with EPE maps kept")
    p.add_argument("--row", type=int, default=0, help="which sequence of the file (default: %(default)s)")
    p.add_argument("--data-dir", help="dataset root, to read the image")
    p.add_argument("--data-seed", type=int, default=0, help="seed of a generated dataset (cluttered-*) (default: 0)")
    p.add_argument("--out", type=Path, help="PNG path (default: <sequences>-epe-<row>.png)")
    p.set_defaults(handler=plot_epe)


def train_posterior(args) -> int:
    from foveal.models import MODELS

    cfg, run_dir = config_and_run_dir(args)
    if cfg["model"]["name"] not in MODELS.names(kind="posterior"):
        raise ValueError(f"model.name: expected a posterior network, one of {MODELS.names(kind='posterior')}, "
                         f"found {cfg['model']['name']!r}")
    results = run_training(cfg, run_dir, args.quiet)
    if results:
        report(results, run_dir)
        curve = results["curves"]["random"]
        print("entropy after t = 0..T random glimpses: " + " ".join(f"{e:.3f}" for e in curve["entropy"]))
    return 0


def plot_epe(args) -> int:
    from foveal.data import build_dataset
    from foveal.evaluation.boed_plots import plot_epe_sequence
    from foveal.sequences import GlimpseSequences

    seqs = GlimpseSequences.load(args.sequences)
    if not 0 <= args.row < len(seqs):
        raise ValueError(f"--row: expected in [0, {len(seqs)}), found {args.row}")
    options = {"canvas": seqs.image_size[0]} if seqs.dataset.startswith(("translated-", "cluttered-")) else {}
    dataset = build_dataset(seqs.dataset, seqs.split, root=args.data_dir, seed=args.data_seed, **options)
    image = dataset[int(seqs.indices[args.row])]["image"].numpy()
    stem = str(args.sequences).removesuffix(".json").removesuffix(".safetensors")
    out = args.out or Path(f"{stem}-epe-{args.row}.png")
    print(f"figure: {plot_epe_sequence(seqs, image, out, row=args.row)}", file=sys.stderr)
    return 0
