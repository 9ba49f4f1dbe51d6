"""A tiny comparison on a tiny image folder (the built-in ``imagefolder`` dataset), so that Ray workers,
which import nothing from the tests, read it too; and the numbers two runs of it must share."""

import json
from pathlib import Path

import numpy as np
import yaml
from PIL import Image

SIZE = 16
METHODS = [{"name": "RAM", "kind": "ram"}, {"name": "RAM+", "kind": "ram+"},
           {"name": "PS-RAM", "kind": "ps", "sequences": "ps-ram"}, {"name": "PS-NOGS", "kind": "ps", "sequences": "nogs"}]


FOLDERS = (("ram", ""), ("ram-plus", "/pretrain"), ("ram-plus", ""), ("ps-ram", ""), ("ps-nogs", ""))


def runs(seeds=(0,), folders=FOLDERS) -> list[str]:
    """The run folders of :data:`METHODS` (or ``(method folder, stage)`` pairs) under ``runs/``."""
    return [f"{m}/seed-{s}{stage}" for s in seeds for m, stage in folders]


def make_images(root: Path) -> Path:
    """4 classes x 20 grey 16x16 images: a bright 4x4 square in the quadrant of the class."""
    rng = np.random.default_rng(0)
    for label in range(4):
        (root / f"q{label}").mkdir(parents=True)
        for i in range(20):
            image = rng.integers(0, 25, (SIZE, SIZE), dtype=np.uint8)
            r, c = divmod(label, 2)
            dr, dc = rng.integers(0, 4, 2)
            image[8 * r + dr:8 * r + dr + 4, 8 * c + dc:8 * c + dc + 4] = 255
            Image.fromarray(image, mode="L").save(root / f"q{label}" / f"{i:02d}.png")
    return root


def write_config(path: Path, images: Path, methods=METHODS, seeds=(0,), iterations: int = 6) -> Path:
    run = {"data": {"name": "imagefolder", "root": str(images), "grayscale": True},
           "model": {"name": "ram-grid", "glimpse_size": 4, "grid_stride": 4, "hidden_size": 16, "glimpse_hidden": 8,
                     "location_hidden": 8, "feature_size": 16},
           "algorithm": {"name": "reinforce", "num_glimpses": 2},
           "train": {"iterations": iterations, "batch_size": 8, "lr": 0.01, "val_every": 3, "tensorboard": False},
           "evaluate": {"examples": 4, "figures": False, "batch_size": 16}}
    config = {"run": run, "seeds": list(seeds), "methods": methods,
              "inputs": {"stand_ins": True, "num_sequences": 8, "pretrain_iterations": 3}}
    path.write_text(yaml.safe_dump(config))
    return path


def numbers(out: Path, run: str) -> dict:
    """A run's test numbers and its training curves (metrics.csv holds no timings)."""
    results = json.loads((out / "runs" / run / "results.json").read_text())
    return {k: results[k] for k in ("test_accuracy", "test_ce", "accuracy_per_glimpse", "num_images")} | {
        "best_validation": results["training"]["best_validation"],
        "metrics.csv": (out / "runs" / run / "metrics.csv").read_text()}


def sampled(out: Path, run: str) -> dict:
    """A run's sampled test numbers (``sampled/results.json``)."""
    results = json.loads((out / "runs" / run / "sampled" / "results.json").read_text())
    return {k: results[k] for k in ("test_accuracy", "test_ce", "accuracy_per_glimpse", "repeats", "eval_policy")}


def same_as(out: Path, reference: Path, seeds=(0,), folders=FOLDERS) -> None:
    """Every run of ``out`` finished with ``reference``'s numbers, its sampled evaluation too."""
    for run in runs(seeds, folders):
        assert numbers(out, run) == numbers(reference, run), run
        if not run.endswith("pretrain"):
            assert sampled(out, run) == sampled(reference, run), run
