"""Sampled evaluation as the official near-optimal-sequences trainer: every test image rolled out M times
under the sampled policy, every rollout scored; M = 1 is one sampled rollout."""

import numpy as np
import pytest
import torch

from foveal.config import apply_overrides, load_config
from foveal.data import build_dataset
from foveal.models import load_model
from foveal.recipes.run import evaluate_run, train_run
from foveal.training.algorithms import build_algorithm

TINY = ["train.iterations=6", "train.val_every=6", "train.batch_size=16", "train.val_batches=1",
        "model.hidden_size=16", "model.glimpse_hidden=8", "model.location_hidden=8", "model.feature_size=16",
        "algorithm.num_glimpses=3", "evaluate.batch_size=100", "evaluate.examples=4", "train.tensorboard=false",
        "evaluate.figures=false", "model.location_std=0.5"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("run")
    train_run(apply_overrides(load_config("demo"), TINY), folder)
    return folder


def sampled_rollouts(run, repeats):
    """What evaluate_run must compute: the same seed, the same batches of 100, each repeated M times."""
    model, info = load_model(run / "checkpoints" / "best")
    model.eval()
    data = dict(info["config"]["data"])  # the demo's (translated digits since it must show attention)
    test = build_dataset(data.pop("name"), "test", **data)
    torch.manual_seed(info["config"]["train"]["seed"])
    correct, first = [], []
    with torch.no_grad():
        for start in range(0, len(test), 100):
            batch = torch.stack([test[i]["image"] for i in range(start, min(start + 100, len(test)))])
            labels = torch.tensor(test.labels[start:start + len(batch)])
            ro = model.rollout(batch.repeat(repeats, 1, 1, 1), 3)  # policy None: sampled
            correct.append((ro.logits[:, -1].argmax(-1) == labels.repeat(repeats)))
            first.append(ro.locations[:len(batch)])
    correct = torch.cat(correct)
    return correct.sum().item() / len(correct), torch.cat(first).numpy()


@pytest.mark.parametrize("repeats", [1, 3])
def test_sampled_evaluation_scores_every_rollout(run, tmp_path, repeats):
    results = evaluate_run(run / "checkpoints" / "best", tmp_path, overrides={"eval_policy": "sample"},
                           repeats=repeats)
    assert results["repeats"] == repeats and results["eval_policy"] == "sample" and results["num_images"] == 500
    accuracy, first = sampled_rollouts(run, repeats)
    assert results["test_accuracy"] == pytest.approx(accuracy, abs=1e-12)
    assert results["test_accuracy"] == pytest.approx(results["accuracy_per_glimpse"][-1], abs=1e-12)
    record = np.load(tmp_path / "records" / "glimpses_test.npz")
    assert record["locations"].shape == (500, 3, 2)  # the record keeps each image's first rollout...
    assert np.allclose(np.sort(record["locations"], 0), np.sort(first, 0))  # ...the sampled ones (rows reordered)


def test_greedy_evaluation_is_one_rollout_whatever_the_repeats(run, tmp_path):
    once = evaluate_run(run / "checkpoints" / "best", tmp_path / "a")
    thrice = evaluate_run(run / "checkpoints" / "best", tmp_path / "b", repeats=3)
    assert once["test_accuracy"] == thrice["test_accuracy"] and once["eval_policy"] == "greedy"
    with pytest.raises(ValueError, match="repeats: expected a positive integer"):
        evaluate_run(run / "checkpoints" / "best", tmp_path / "c", repeats=0)
    assert build_algorithm("reinforce").config.eval_policy == "greedy"
