"""The ``foveal`` command. Heavy modules (torch) are imported inside the commands, so that
``foveal --help`` and argument errors answer at once."""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

EPILOG = """examples:
  foveal demo                                      RAM on built-in MNIST digits, ~4 min on 2 cores
  foveal train --config ram-cluttered-fashion-mnist train.iterations=2000 model.location_std=0.1
  foveal train --config my.yaml --run-dir runs/mine   (run again to resume after a kill)
  foveal evaluate runs/mine/checkpoints/best --test-samples 10
  foveal list                                      configs, datasets, models, algorithms, policies
"""


def _speed_up_allocator() -> None:
    # glibc returns freed blocks to the OS eagerly; small CNNs then spend most of their time in
    # system calls (REFERENCE.md measured 2.4x). Must be set before the allocations start.
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 1 << 30)  # M_MMAP_THRESHOLD
        libc.mallopt(-1, 1 << 30)  # M_TRIM_THRESHOLD
    except (OSError, AttributeError):
        pass


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="foveal", description="Hard visual attention: train, evaluate and inspect glimpse models.",
                                epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="store_true", help="print the version and exit")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    t = sub.add_parser("train", help="train a model from a config (resumes an interrupted run)")
    t.add_argument("--config", default="ram-fashion-mnist", help="YAML file or built-in config name (default: %(default)s)")
    t.add_argument("--run-dir", type=Path, help="output folder (default: runs/<config>-<time>)")
    t.add_argument("--data-dir", help="dataset root (sets data.root)")
    t.add_argument("--device", help="cpu, cuda or auto (sets train.device)")
    t.add_argument("--quiet", action="store_true", help="no progress bar")
    t.add_argument("overrides", nargs="*", metavar="section.key=value", help="config overrides, e.g. train.iterations=500")

    e = sub.add_parser("evaluate", help="test a checkpoint: accuracy, accuracy per glimpse, glimpse figures")
    e.add_argument("checkpoint", help="checkpoint prefix, e.g. runs/x/checkpoints/best")
    e.add_argument("--split", choices=["train", "val", "test"], help="default: the run's evaluate.split")
    e.add_argument("--out", type=Path, help="output folder (default: <run>/eval-<split>)")
    e.add_argument("--test-samples", type=int, help="Monte-Carlo rollouts averaged per image")
    e.add_argument("--policy", help="evaluation policy: sample, greedy, random, center")

    d = sub.add_parser("demo", help="train and evaluate RAM on built-in data (the README's main job)")
    d.add_argument("--run-dir", type=Path, default=Path("runs/demo"))
    d.add_argument("--quiet", action="store_true")
    d.add_argument("overrides", nargs="*", metavar="section.key=value")

    sub.add_parser("list", help="list built-in configs, datasets, models, algorithms and policies")
    for module in _command_modules():
        module.add_parsers(sub)
    return p


# Further commands live beside the code they drive. Each module is light to import (no torch at
# module level) and has ``add_parsers(sub)``, whose parsers ``set_defaults(handler=fn)`` with
# ``fn(args) -> int`` (exit status).
COMMAND_MODULES: tuple[str, ...] = ("foveal.cli_posterior", "foveal.cli_boed", "foveal.cli_saccader", "foveal.cli_compare")


def _command_modules():
    import importlib

    return [importlib.import_module(name) for name in COMMAND_MODULES]


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.version:
        from foveal import __version__

        print(__version__)
        return 0
    if args.command is None:
        _parser().print_help()
        return 2
    _speed_up_allocator()
    try:
        handlers = {"train": _train, "evaluate": _evaluate, "demo": _demo, "list": _list}
        return (handlers.get(args.command) or args.handler)(args)
    except (ValueError, FileNotFoundError) as err:
        print(f"foveal {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted: the last checkpoint is intact; run the same command again to resume", file=sys.stderr)
        return 130


def progress_bar(quiet: bool):
    if quiet or not sys.stderr.isatty() and os.environ.get("FOVEAL_PROGRESS") != "1":
        return None, lambda: None
    from tqdm import tqdm

    bar = tqdm(total=0, unit="it", dynamic_ncols=True, file=sys.stderr)

    def update(iteration: int, total: int, logs: dict) -> None:
        bar.total = total
        bar.n = iteration
        shown = {k: f"{v:.3g}" for k, v in logs.items() if k in ("loss", "ce", "accuracy", "val/accuracy")}
        bar.set_postfix(shown, refresh=False)
        bar.refresh()

    return update, bar.close


def run_training(cfg: dict, run_dir: Path, quiet: bool) -> dict | None:
    from foveal.experiment import train_run

    progress, close = progress_bar(quiet)
    print(f"run folder: {run_dir}", file=sys.stderr)
    try:
        results = train_run(cfg, run_dir, progress=progress)
    finally:
        close()
    return results


def report(results: dict, out_dir: Path) -> None:
    print(f"test accuracy: {results['test_accuracy']:.4f}  (error {100 * results['test_error']:.2f} %, "
          f"{results['num_images']} {results['split']} images of {results['dataset']}, "
          f"{results['num_glimpses']} glimpses)")
    per = " ".join(f"{a:.3f}" for a in results["accuracy_per_glimpse"])
    print(f"accuracy after each glimpse: {per}")
    if "training" in results:
        tr = results["training"]
        speed = (f" in {tr['wall_time_s']:.0f} s ({tr['iterations_per_s']:.1f} it/s)"
                 if tr.get("wall_time_s") is not None else "")
        print(f"training: {tr['iterations']} iterations{speed}, best validation at iteration {tr['best_iteration']}")
    print(f"results: {out_dir / 'results.json'}")
    for fig in results.get("figures", []):
        print(f"figure: {fig}")


def config_and_run_dir(args) -> tuple[dict, Path]:
    """The config of a training command (``--config`` + ``--data-dir`` / ``--device`` + overrides) and
    its run folder (``--run-dir``, default ``runs/<config>-<time>``)."""
    from foveal.config import apply_overrides, load_config

    extra = list(args.overrides)
    if args.data_dir:
        extra.append(f"data.root={args.data_dir}")
    if args.device:
        extra.append(f"train.device={args.device}")
    cfg = apply_overrides(load_config(args.config), extra)
    run_dir = args.run_dir or Path("runs") / f"{Path(str(args.config)).stem}-{time.strftime('%Y%m%d-%H%M%S')}"
    return cfg, run_dir


def _train(args) -> int:
    cfg, run_dir = config_and_run_dir(args)
    results = run_training(cfg, run_dir, args.quiet)
    if results:
        report(results, run_dir)
    return 0


def _demo(args) -> int:
    from foveal.config import apply_overrides, load_config

    cfg = apply_overrides(load_config("demo"), list(args.overrides))
    results = run_training(cfg, args.run_dir, args.quiet)
    if results:
        report(results, args.run_dir)
    return 0


def _evaluate(args) -> int:
    from foveal.experiment import evaluate_run

    checkpoint = Path(args.checkpoint)
    overrides = {}
    if args.test_samples:
        overrides["test_samples"] = args.test_samples
    if args.policy:
        overrides["eval_policy"] = args.policy
    run_dir = checkpoint.parent.parent if checkpoint.parent.name == "checkpoints" else checkpoint.parent
    out = args.out or run_dir / f"eval-{args.split or 'default'}"
    results = evaluate_run(checkpoint, out, split=args.split, overrides=overrides)
    report(results, out)
    return 0


def _list(args) -> int:
    from foveal.config import builtin_configs
    from foveal.data import dataset_names
    from foveal.models import list_models
    from foveal.policies import policy_names
    from foveal.training.algorithms import algorithm_names

    for title, names in (("configs", builtin_configs()), ("datasets", dataset_names()), ("models", list_models()),
                         ("algorithms", algorithm_names()), ("policies", policy_names())):
        print(f"{title}: {', '.join(names)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
