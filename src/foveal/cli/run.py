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

    lst = sub.add_parser("list", help="list the built-in configs and every registered model, algorithm, dataset (with "
                                      "its options), policy and sequence maker, each with its summary")
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

    def options(name: str) -> list[str]:
        return [f"options: {', '.join(dataset_options(name)) or 'none'}"]

    placed = [(pattern, summary, [f"options: {', '.join(dataset_options(pattern.replace('<base>', 'mnist5k')))}, "
                                  "and the base's"])  # mnist5k has no options of its own
              for pattern, summary in DATASET_PATTERNS.items()]
    print(f"configs (--config): {', '.join(builtin_configs())}")
    print_registry("models", MODELS)
    print_registry("algorithms", ALGORITHMS)
    print_registry("datasets", DATASETS, details=options, more=placed, note="options are data.<option>=VALUE; "
                   "see help(foveal.data)")
    print_registry("policies", POLICIES, note="algorithm.eval_policy, --policy")
    print_registry("sequence makers", _sequence_makers())
    return 0


def print_registry(title: str, registry, *, details=None, more=(), note: str = "") -> None:
    """A listing of a :class:`foveal.registry.Registry`: a heading, then a row per name with its summary.

    Args:
        title: the heading ("models"); the registry's config field (``model.name``) and ``note`` follow it.
        details: ``details(name) -> lines`` printed under a name's row (a dataset's options).
        more: further ``(name, summary, lines)`` rows after the registered ones (the dataset patterns).
    """
    said = ", ".join(x for x in ((registry.field if "." in registry.field else ""), note) if x)
    print(f"{title}{f' ({said})' if said else ''}:")
    rows = [(name, summary, details(name) if details else []) for name, summary in registry.describe()]
    for name, summary, lines in [*rows, *more]:
        print(f"  {name:<{_NAME_WIDTH}} {summary}")
        for line in lines:
            print(f"  {'':<{_NAME_WIDTH}} {line}")


_NAME_WIDTH = 24  # the longest built-in name, saccader-representation, and a space


def _sequence_makers():
    """The sequence-maker registry, :data:`foveal.sequences.MAKERS`, with the annotator's makers in it."""
    import foveal.boed  # noqa: F401  (registers nogs and hindsight, which foveal.sequences may not name)
    from foveal.sequences import MAKERS

    return MAKERS
