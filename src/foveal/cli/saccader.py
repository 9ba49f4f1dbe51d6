"""``foveal train-saccader`` (the three stages, chained) and ``foveal evaluate-policies`` (Fig. 3a, 5a, 5b).

Light to import: torch and the models are imported inside the handlers.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from foveal.cli.common import add_device_argument, add_exit_arguments, checked_device, policy_help, progress_bar

STAGE_CONFIGS = {"representation": "saccader-representation-cluttered-fashion-mnist",
                 "location": "saccader-location-cluttered-fashion-mnist",
                 "reinforce": "saccader-reinforce-cluttered-fashion-mnist"}

TRAIN_EPILOG = """examples:
  foveal train-saccader --run-dir runs/saccader            three stages, ~25 min on one core
  foveal train-saccader --run-dir runs/saccader representation.train.iterations=200 train.seed=1
  foveal train-saccader --run-dir runs/saccader --stages reinforce   (the earlier stages already trained)
overrides: section.key=value for every stage, <stage>.section.key=value for one stage."""

EVAL_EPILOG = """examples:
  foveal evaluate-policies --classifier runs/saccader/representation/checkpoints/best \\
      --policies random center ordered-logits sobel-mean sobel-variance \\
      --learned Saccader=runs/saccader/reinforce/checkpoints/best --learned DRAM=runs/dram/checkpoints/best \\
      --out runs/policy-eval --limit 1000
  foveal evaluate-policies --learned RAM=runs/ram/checkpoints/best --learned DRAM=runs/dram/checkpoints/best \
      --no-occlusion --max-glimpses 6 --thresholds 0.5 0.8 0.9 0.99 --out runs/budget   (early exit, budget.md)"""


def add_parsers(sub) -> None:
    t = sub.add_parser("train-saccader", help="train the Saccader's three stages, each from the previous one",
                       epilog=TRAIN_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    t.add_argument("--run-dir", type=Path, default=Path("runs/saccader"), help="one folder per stage inside")
    t.add_argument("--stages", nargs="+", default=list(STAGE_CONFIGS), choices=list(STAGE_CONFIGS))
    for stage, default in STAGE_CONFIGS.items():
        t.add_argument(f"--{stage}-config", default=default, help=f"YAML or built-in config (default: {default})")
    t.add_argument("--no-test", action="store_true", help="train only; skip each stage's test-split evaluation")
    add_device_argument(t, "each stage config's train.device; sets it for every stage")
    t.add_argument("--quiet", action="store_true")
    t.add_argument("overrides", nargs="*", metavar="[stage.]section.key=value")
    t.set_defaults(handler=_train_saccader)

    e = sub.add_parser("evaluate-policies", help="accuracy vs glimpses, vs area, and occlusion, for several policies",
                       epilog=EVAL_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    e.add_argument("--classifier", help="checkpoint of the grid model the named policies drive (e.g. stage 1)")
    e.add_argument("--policies", nargs="*", default=[],
                   help=policy_help("policies that drive --classifier, any of: "))
    e.add_argument("--learned", action="append", default=[], metavar="LABEL=CHECKPOINT",
                   help="a glimpse model with its own policy and classifier (repeatable)")
    e.add_argument("--policy-of", action="append", default=[], metavar="LABEL=CHECKPOINT",
                   help="a model whose learned policy drives --classifier (repeatable)")
    e.add_argument("--out", type=Path, required=True, help="output folder")
    e.add_argument("--max-glimpses", type=int, default=12)
    e.add_argument("--train-glimpses", type=int, help="T trained with (default: from the first checkpoint)")
    e.add_argument("--split", default="test", choices=["train", "val", "test"])
    e.add_argument("--limit", type=int, help="evaluate on the first N images only")
    e.add_argument("--batch-size", type=int, default=250)
    e.add_argument("--no-occlusion", action="store_true", help="skip the occlusion analysis")
    e.add_argument("--occlusion-cnn", help="checkpoint of the full-image CNN (default: train one in <out>)")
    e.add_argument("--occlusion-iterations", type=int, default=1500)
    e.add_argument("--seed", type=int, default=0)
    add_exit_arguments(e)
    add_device_argument(e, "auto")
    e.add_argument("--quiet", action="store_true")
    e.set_defaults(handler=_evaluate_policies)


def split_stage_overrides(overrides: list[str], stages) -> dict[str, list[str]]:
    """``["train.seed=1", "location.train.iterations=9"]`` -> per-stage override lists."""
    out = {stage: [] for stage in stages}
    for item in overrides:
        head = item.split(".", 1)[0]
        if head in out:
            out[head].append(item.split(".", 1)[1])
        else:
            for stage in out:
                out[stage].append(item)
    return out


def _labelled(items: list[str], flag: str) -> list[tuple[str, str]]:
    pairs = []
    for item in items:
        label, sep, path = item.partition("=")
        if not sep or not label or not path:
            raise ValueError(f"{flag} {item!r}: expected LABEL=CHECKPOINT")
        pairs.append((label, path))
    return pairs


def _train_saccader(args) -> int:
    from foveal.config import apply_overrides, load_config
    from foveal.recipes.saccader import STAGES, run_stages

    device = checked_device(args.device)
    extra = [] if device is None else [f"train.device={device}"]  # last: the option wins over an override
    per_stage = split_stage_overrides([*args.overrides, *extra], STAGES)
    configs = {s: apply_overrides(load_config(getattr(args, f"{s}_config")), per_stage[s]) for s in STAGES}
    progress, close = progress_bar(args.quiet)
    try:
        results = run_stages(configs, args.run_dir, stages=tuple(s for s in STAGES if s in args.stages),
                             progress=progress,
                             on_stage=lambda stage, folder: print(f"stage {stage}: {folder}", file=sys.stderr),
                             test=not args.no_test)
    finally:
        close()
    for stage, res in results.items():
        if res:
            print(f"{stage}: test accuracy {res['test_accuracy']:.4f} ({res['num_glimpses']} glimpses, "
                  f"policy {res['eval_policy']}); results: {args.run_dir / stage / 'results.json'}")
    return 0


def _evaluate_policies(args) -> int:
    from foveal.recipes.policy_eval import run_policy_evaluation
    from foveal.runtime import resolve_device

    device = str(resolve_device(checked_device(args.device) or "auto", "--device"))  # "auto" -> "cuda" or "cpu"

    update, close = progress_bar(args.quiet, "img")
    bar = None if update is None else lambda label, done, total: update(done, total, label=label)

    summary = run_policy_evaluation(
        args.out, classifier=args.classifier, policies=args.policies, learned=_labelled(args.learned, "--learned"),
        policy_of=_labelled(args.policy_of, "--policy-of"), max_glimpses=args.max_glimpses,
        train_glimpses=args.train_glimpses, split=args.split, limit=args.limit, batch_size=args.batch_size,
        occlusion=not args.no_occlusion, occluder_checkpoint=args.occlusion_cnn,
        occluder_iterations=args.occlusion_iterations, seed=args.seed, device=device, progress=bar,
        exit_rule=args.exit_rule, thresholds=args.thresholds or ())
    close()
    print((args.out / "policy_eval.md").read_text(), end="")
    if args.thresholds:
        print((args.out / "budget.md").read_text(), end="")
    for path in summary["files"]:
        print(f"file: {path}")
    return 0
