"""What the command modules share: the progress bar, the run report, a training command's config and folder.

No torch at module level (see :mod:`foveal.cli`).
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any, Callable, Optional

from foveal.config import apply_overrides, load_config
from foveal.policies import describe_policies
from foveal.runtime import launcher_world_size

__all__ = ["progress_bar", "report", "add_exit_arguments", "add_training_arguments", "config_and_run_dir", "run_training", "policy_help",
           "add_device_argument", "checked_device", "add_data_arguments", "build_split",
           "key_values"]


def progress_bar(quiet: bool, unit: str = "it", show: tuple[str, ...] = ("loss", "ce", "accuracy", "val/accuracy")
                 ) -> tuple[Optional[Callable], Callable[[], None]]:
    """``(update(done, total, logs=None, label=None), close)`` of a tqdm bar on stderr; ``(None, no-op)`` when
    quiet or stderr is not a terminal (unless ``FOVEAL_PROGRESS=1``). ``show``: the ``logs`` keys put beside
    the bar; ``label`` goes before it."""
    if quiet or not sys.stderr.isatty() and os.environ.get("FOVEAL_PROGRESS") != "1":
        return None, lambda: None
    from tqdm import tqdm

    bars = []  # made at the first update, so that what is printed before it stays above it

    def update(done: int, total: int, logs: Optional[dict] = None, label: Optional[str] = None) -> None:
        if not bars:
            bars.append(tqdm(total=total, unit=unit, dynamic_ncols=True, file=sys.stderr))
        bar = bars[0]
        bar.total, bar.n = total, done
        if label is not None:
            bar.set_description(label, refresh=False)
        shown = {k: f"{v:.3g}" for k, v in (logs or {}).items() if k in show}
        if shown:
            bar.set_postfix(shown, refresh=False)
        bar.refresh()

    return update, lambda: bars[0].close() if bars else None


def policy_help(prefix: str) -> str:
    """``prefix`` followed by every registered policy and its summary (:mod:`foveal.policies`, no torch)."""
    return prefix + "; ".join(f"{name}: {summary}" for name, summary in describe_policies())


def run_training(cfg: dict, run_dir: Path, quiet: bool) -> dict | None:
    """Train (and test) one run; its folder is named on stderr once training has started, so that a
    config refused at the start answers with its one error line alone."""
    from foveal.recipes.run import train_run

    bar, close = progress_bar(quiet)
    started = []

    def progress(done: int, total: int, logs: Optional[dict] = None) -> None:
        if not started:
            started.append(True)
            print(f"run folder: {run_dir}", file=sys.stderr)
        if bar is not None:
            bar(done, total, logs)

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
    if "budget" in results:
        report_budget(results["budget"])
    print(f"results: {out_dir / 'results.json'}")
    for fig in results.get("figures", []):
        print(f"figure: {fig}")


def add_exit_arguments(parser) -> None:
    """``--exit-rule`` and ``--thresholds``: evaluate under early exit too (:mod:`foveal.evaluation.budget`)."""
    parser.add_argument("--exit-rule", default="confidence", choices=["confidence", "entropy", "learned"],
                        help="early exit: stop an image when its top class probability reaches the threshold "
                             "(confidence), its entropy in nats falls to it (entropy), or its stop head's "
                             "probability reaches it (learned, models trained with algorithm.stop_cost) "
                             "(default: %(default)s)")
    parser.add_argument("--thresholds", type=float, nargs="+", metavar="X",
                        help="thresholds of --exit-rule, one evaluation each: accuracy, glimpses used, area seen "
                             "and multiply-adds per image (e.g. 0.5 0.8 0.9 0.95 0.99)")


def report_budget(budget: dict) -> None:
    """One line per threshold of an early-exit evaluation (``results["budget"]``)."""
    cost = budget["cost"]
    print(f"cost: {cost['fixed_macs'] / 1e6:.3f} M multiply-adds per image + {cost['macs_per_glimpse'] / 1e6:.3f} M "
          "per glimpse")
    for e in budget["exit"]:
        hist = " ".join(map(str, e["glimpse_histogram"]))
        print(f"{budget['rule']} {e['threshold']:g}: accuracy {e['accuracy']:.4f}, {e['mean_glimpses']:.2f} glimpses "
              f"on average (images per count 1..T: {hist}), {100 * e['area']:.1f} % of the image seen, "
              f"{e['macs_per_image'] / 1e6:.3f} M multiply-adds per image")


def add_device_argument(parser, default: str) -> None:
    """``--device`` as every command that runs a model or a search takes it; ``default`` says what its absence
    means (the option's value stays None then). Read it with :func:`checked_device`."""
    parser.add_argument("--device", metavar="DEVICE",
                        help=f"cpu, cuda, cuda:N or auto (CUDA when available) (default: {default})")


def checked_device(name: Optional[str], field: str = "--device") -> Optional[str]:
    """``name`` as given, once :func:`foveal.runtime.resolve_device` has accepted it (None stays None).

    Called first in a handler, so that a device this machine lacks (``--device cuda`` without CUDA) or a
    misspelt one is refused at once, naming the option, before any data or model is built. The name itself
    is passed on (not the resolved device), so that under torchrun ``cuda`` still means each process's GPU.
    """
    if name is None:
        return None
    import torch

    from foveal.runtime import resolve_device

    device = resolve_device(name, field)
    count = torch.cuda.device_count() if device.type == "cuda" else 0
    if device.type == "cuda" and device.index is not None and device.index >= count:
        raise ValueError(f"{field}: {name!r}: this machine has {count} CUDA device(s), cuda:0 to cuda:{count - 1}")
    return name


def add_training_arguments(parser, *, default_config: str) -> None:
    """The arguments of a command that trains one run from a config (read by :func:`config_and_run_dir`)."""
    parser.add_argument("--config", default=default_config,
                        help="YAML file or built-in config name (default: %(default)s)")
    parser.add_argument("--run-dir", type=Path, help="output folder (default: runs/<config>-<time>)")
    parser.add_argument("--data-dir", help="dataset root (sets data.root)")
    add_device_argument(parser, "the config's train.device; sets it")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument("overrides", nargs="*", metavar="section.key=value",
                        help="config overrides, e.g. train.iterations=500")


def config_and_run_dir(args) -> tuple[dict, Path]:
    """The config of a training command (``--config`` + ``--data-dir`` / ``--device`` + overrides) and
    its run folder (``--run-dir``, default ``runs/<config>-<time>``)."""
    extra = list(args.overrides)
    if args.data_dir:
        extra.append(f"data.root={args.data_dir}")
    if checked_device(args.device) is not None:
        extra.append(f"train.device={args.device}")
    cfg = apply_overrides(load_config(args.config), extra)
    run_dir = args.run_dir or Path("runs") / f"{Path(str(args.config)).stem}-{time.strftime('%Y%m%d-%H%M%S')}"
    if args.run_dir is None and launcher_world_size() > 1:
        from foveal.training.distributed import all_gather_objects

        run_dir = all_gather_objects(run_dir)[0]  # torchrun: rank 0's clock names the one folder of every rank
    return cfg, run_dir


def _yaml_value(text: str) -> Any:
    import yaml

    return yaml.safe_load(text) if text != "" else None


def key_values(items: list[str], what: str) -> dict[str, Any]:
    """``["k=v", ...]`` -> ``{k: YAML value of v}``; ``what`` names the option in errors."""
    out = {}
    for item in items or []:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ValueError(f"{what} {item!r}: expected key=value")
        out[key] = _yaml_value(raw)
    return out


def add_data_arguments(p, dataset: bool = True) -> None:
    """``--dataset``/``--split`` (unless ``dataset`` is False), ``--data-root``, ``--data-seed`` and ``--option``
    (read by :func:`build_split`)."""
    if dataset:
        p.add_argument("--dataset", help="dataset name (foveal list)")
        p.add_argument("--split", help="split (train, val, test, annotate)")
    p.add_argument("--data-root", help="dataset root folder or file")
    p.add_argument("--data-seed", type=int, help="dataset seed (translated / cluttered placement)")
    p.add_argument("--option", action="append", metavar="KEY=VALUE", help="dataset option, e.g. canvas=60 (repeatable)")


def build_split(name: str, split: str, args, defaults: Optional[dict] = None):
    """The split ``name``/``split`` built from :func:`add_data_arguments`' options, over ``defaults``
    (``data_root``, ``data_seed``, ``data_options``: e.g. an annotation's config)."""
    from foveal.data import build_dataset

    defaults = defaults or {}
    root = args.data_root if args.data_root is not None else defaults.get("data_root")
    seed = args.data_seed if args.data_seed is not None else defaults.get("data_seed", 0)
    options = {**(defaults.get("data_options") or {}), **key_values(args.option, "--option")}
    return build_dataset(name, split, root=root, seed=seed, **options)
