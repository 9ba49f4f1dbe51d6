"""What the command modules share: the progress bar, the run report, a training command's config and folder.

No torch at module level (see :mod:`foveal.cli`).
"""

from __future__ import annotations

import json
import os
import shlex
import sys
import time
from pathlib import Path
from typing import Any, Callable, Optional

from foveal.config import apply_overrides, load_config
from foveal.policies import POLICIES
from foveal.runtime import launcher_world_size

__all__ = ["progress_bar", "report", "add_exit_arguments", "add_training_arguments", "config_and_run_dir", "run_training", "policy_help",
           "add_device_argument", "checked_device", "add_data_arguments", "build_split",
           "key_values", "last_iteration", "interrupted_message"]


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
    return prefix + "; ".join(f"{name}: {summary}" for name, summary in POLICIES.describe())


def run_training(cfg: dict, run_dir: Path, quiet: bool) -> dict | None:
    """Train (and test) one run; its folder is named on stderr once training has started, so that a
    config refused at the start answers with its one error line alone."""
    from foveal.recipes.run import train_run

    bar, close = progress_bar(quiet)
    started = []
    resumed = last_iteration(run_dir)

    notes: list[str] = []  # warnings about the built experiment, shown once it trains (a refused start: its error alone)

    def progress(done: int, total: int, logs: Optional[dict] = None) -> None:
        if not started:
            started.append(True)
            print(f"run folder: {run_dir}" + ("" if resumed is None else f"; resuming from iteration {resumed}"),
                  file=sys.stderr)
            for line in notes:
                print(line, file=sys.stderr)
        if bar is not None:
            bar(done, total, logs)

    try:
        results = train_run(cfg, run_dir, progress=progress, on_built=lambda exp: notes.extend(warnings_about(exp)))
    finally:
        close()
    return results


SMALL_GLIMPSE = 0.01  # share of the image area under which a glimpse (all its scales) is warned about


def warnings_about(exp) -> list[str]:
    """Warnings about a run that builds but may not be what the user meant: glimpses whose largest scale covers
    under 1 % of the image (8 px on 224 px images see almost nothing), classes a val or test split lacks, grey
    images read as RGB."""
    from foveal.recipes.experiment import glimpse_extent

    lines = []
    train = exp.data["train"]
    _, H, W = train.image_shape
    extent = glimpse_extent(exp.model)
    if extent is not None:
        side, size, scales = extent
        share = min(side, H) * min(side, W) / (H * W)
        if share < SMALL_GLIMPSE:
            lines.append(f"warning: a glimpse sees {side}x{side} px ({size} px, {scales} scale{'s' * (scales > 1)}) "
                         f"of the {H}x{W} images, {100 * share:.2g} % of their area; raise model.glimpse_size or "
                         "model.num_scales, or set data.image_size, if that is too little")
    for split in ("val", "test"):
        data = exp.data.get(split)
        labels, names = getattr(data, "labels", None), getattr(data, "class_names", None)
        if labels is None or names is None or len(labels) != len(data):
            continue
        missing = sorted(set(range(len(names))) - {int(v) for v in labels})
        if missing:
            listed = ", ".join(names[c] for c in missing[:5]) + (f" and {len(missing) - 5} more" * (len(missing) > 5))
            lines.append(f"note: the {split} split has no image of {len(missing)} of the {len(names)} classes "
                         f"({listed}): too few images for the dataset's split rule (foveal.data), so its accuracy "
                         "says nothing about them")
    folder = getattr(train, "base", train)  # Rows: the split inside
    reference = getattr(folder, "reference", None)
    if getattr(folder, "mode", None) == "RGB" and reference is not None and "grayscale" in _dataset_options(folder):
        from PIL import Image

        with Image.open(reference) as image:  # reads the header only
            grey = image.mode in ("1", "L", "LA", "I", "I;16", "F")
        if grey:
            lines.append(f"note: {reference} is a grey image, read as 3 equal channels like every image of "
                         f"{folder.name} (data.grayscale: false, the default, keeps colour images of a mixed "
                         "folder); set data.grayscale=true to read every image as 1 grey channel")
    return lines


def _dataset_options(dataset) -> list[str]:
    from foveal.data import dataset_options

    try:
        return dataset_options(dataset.name)
    except ValueError:
        return []


def last_iteration(run_dir: Path) -> Optional[int]:
    """The iteration of ``run_dir``'s last checkpoint, or None (none, or unreadable)."""
    from foveal.checkpoint import checkpoint_paths

    try:
        return int(json.loads(checkpoint_paths(Path(run_dir) / "checkpoints" / "last")[1].read_text())["iteration"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def interrupted_message(args, argv: list[str]) -> str:
    """What Ctrl-C leaves: for a training command, whether its run folder can resume, and the command that
    resumes it (``argv`` with ``--run-dir`` set to the folder it used: without it, a new folder is made)."""
    run_dir = getattr(args, "used_run_dir", None)
    if run_dir is None:
        # compare, annotate, train-saccader: their folders do not depend on the time; they resume by themselves
        return "interrupted: the last checkpoint is intact; run the same command again to resume"
    iteration = last_iteration(run_dir)
    if iteration is None:
        return (f"interrupted before the first checkpoint: {run_dir} holds nothing to resume "
                "(the same command starts the run from iteration 0)")
    command = list(argv)
    if not any(a == "--run-dir" or a.startswith("--run-dir=") for a in command):
        command[1:1] = ["--run-dir", str(run_dir)]  # after the command's name
    launcher = "torchrun <the same torchrun options> -m foveal" if launcher_world_size() > 1 else "foveal"
    return (f"interrupted: the last checkpoint ({run_dir}, iteration {iteration}) is intact; to resume, run: "
            f"{launcher} {shlex.join(command)}")


def report(results: dict, out_dir: Path) -> None:
    # results.json keeps the names test_accuracy / test_error whatever the split (its format); the line says which
    print(f"{results['split']} accuracy: {results['test_accuracy']:.4f}  (error {100 * results['test_error']:.2f} %, "
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
                        help="config overrides, e.g. train.iterations=500; section.key=null removes a key the "
                             "config sets (back to its default), e.g. data.train_rows=null")


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
    args.used_run_dir = run_dir  # for the message after Ctrl-C (foveal.cli.main)
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
