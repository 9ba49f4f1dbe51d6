"""``foveal train``, ``evaluate``, ``demo`` and ``list``: a run from a config, a checkpoint tested, the registries.

No torch at module level (see :mod:`foveal.cli`).
"""

from __future__ import annotations

from pathlib import Path

from foveal.cli.common import (add_device_argument, add_exit_arguments, add_training_arguments, checked_device,
                               config_and_run_dir, policy_help, report, run_training)


def add_parsers(sub) -> None:
    t = sub.add_parser("train", help="train a model from a config (resumes an interrupted run)")
    add_training_arguments(t, default_config="ram-fashion-mnist")
    t.set_defaults(handler=_train)

    e = sub.add_parser("evaluate", help="test a checkpoint: accuracy, accuracy per glimpse, glimpse figures")
    e.add_argument("checkpoint", help="checkpoint prefix, e.g. runs/x/checkpoints/best, or a run folder (its best "
                                      "checkpoint)")
    e.add_argument("--split", choices=["train", "val", "test"], help="default: the run's evaluate.split")
    e.add_argument("--out", type=Path, help="output folder (default: <run>/eval-<split>)")
    e.add_argument("--test-samples", type=int, help="Monte-Carlo rollouts averaged per image")
    add_device_argument(e, "the run's train.device")
    e.add_argument("--repeats", type=int, default=1,
                   help="rollouts per image, each scored on its own (with --policy sample and 5: the official "
                        "near-optimal-sequences evaluation) (default: %(default)s)")
    e.add_argument("--policy", help=policy_help("evaluation policy, one of: "))
    add_exit_arguments(e)
    e.set_defaults(handler=_evaluate)

    d = sub.add_parser("demo", help="train and evaluate RAM on built-in data (the README's main job)")
    d.add_argument("--run-dir", type=Path, default=Path("runs/demo"))
    add_device_argument(d, "auto, the demo config's train.device; sets it")
    d.add_argument("--quiet", action="store_true")
    d.add_argument("overrides", nargs="*", metavar="section.key=value")
    d.set_defaults(handler=_demo)

    lst = sub.add_parser("list", help="list built-in configs, datasets, models, algorithms and policies")
    lst.set_defaults(handler=_list)


def _train(args) -> int:
    cfg, run_dir = config_and_run_dir(args)
    results = run_training(cfg, run_dir, args.quiet)
    if results:
        report(results, run_dir)
    return 0


def _demo(args) -> int:
    from foveal.config import apply_overrides, load_config

    extra = list(args.overrides)
    if checked_device(args.device) is not None:
        extra.append(f"train.device={args.device}")
    cfg = apply_overrides(load_config("demo"), extra)
    args.used_run_dir = args.run_dir  # for the message after Ctrl-C (foveal.cli.main)
    results = run_training(cfg, args.run_dir, args.quiet)
    if results:
        report(results, args.run_dir)
    return 0


def _evaluate(args) -> int:
    from foveal.recipes.run import evaluate_run

    from foveal.checkpoint import checkpoint_paths, read_checkpoint_info

    device = checked_device(args.device)
    checkpoint = Path(args.checkpoint)
    if checkpoint.is_dir() and not checkpoint_paths(checkpoint)[1].exists():  # a run folder: its best checkpoint
        checkpoint = checkpoint / "checkpoints" / "best"
        if not checkpoint_paths(checkpoint)[1].exists():
            raise FileNotFoundError(f"{args.checkpoint}: a folder without checkpoints/best.json; expected a run folder "
                                    "that has validated once, or a checkpoint prefix such as RUN/checkpoints/last")
    overrides = {}
    if args.test_samples is not None:
        overrides["test_samples"] = args.test_samples
    if args.policy:
        overrides["eval_policy"] = args.policy
    run_dir = checkpoint.parent.parent if checkpoint.parent.name == "checkpoints" else checkpoint.parent
    split = args.split
    if split is None and args.out is None:  # the folder is named after the split the run's config chooses
        config = read_checkpoint_info(checkpoint).get("config") or {}
        split = (config.get("evaluate") or {}).get("split", "test")
    out = args.out or run_dir / f"eval-{split}"
    results = evaluate_run(checkpoint, out, split=args.split, overrides=overrides, repeats=args.repeats,
                           device=device, exit_rule=args.exit_rule, thresholds=args.thresholds or ())
    report(results, out)
    return 0


def _list(args) -> int:
    from foveal.config import builtin_configs
    from foveal.data import DATASET_PATTERNS, DATASETS, dataset_options
    from foveal.models import MODELS
    from foveal.policies import POLICIES
    from foveal.training.algorithms import ALGORITHMS

    for title, names in (("configs", builtin_configs()), ("models", MODELS.names()),
                         ("algorithms", ALGORITHMS.names())):
        print(f"{title}: {', '.join(names)}")
    print("datasets (data.name), with their options (data.<option>=...; see help(foveal.data)):")
    for name in DATASETS.names():
        print(f"  {name:<18} {', '.join(dataset_options(name)) or '-'}")
    for pattern in DATASET_PATTERNS:
        placed = dataset_options(pattern.replace("<base>", "mnist5k"))  # mnist5k has no options of its own
        print(f"  {pattern:<18} {', '.join(placed)} (and the base's)")
    print("policies:")
    for name, summary in POLICIES.describe():
        print(f"  {name:<15} {summary}")
    return 0
