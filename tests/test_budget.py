"""Budgeted evaluation (foveal.evaluation.budget): exact numbers on a toy, a rule that never fires reproduces
fixed T, a rule that always fires reproduces one glimpse, and ``foveal evaluate --thresholds`` end to end."""

import csv
import json
import math

import pytest
import torch
from torch import nn
from torch.utils.data import Dataset

from foveal.checkpoint import save_checkpoint
from foveal.cli import main
from foveal.config import apply_overrides, load_config
from foveal.evaluation.budget import budget_evaluation, write_budget
from foveal.models import create_model, model_spec
from foveal.models.bagnet import grid_rollout
from foveal.retina import LocationGrid

from test_errors import MNIST28

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


class Items(Dataset):
    def __init__(self, images, labels):
        self.images, self.labels = images, labels

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return {"image": self.images[i], "label": self.labels[i], "index": i}


class ToyGrid(nn.Module):
    """4 x 4 images, 2 x 2 cells of 2 px read in index order (greedy on uniform scores); image k (its pixel (0, 0)
    holds k) reads the cell logits of toy image k: p(class 0) = 0.9 after 1 glimpse for image 0, 0.5 then 0.9
    after 2 for image 1, 0.5 throughout for image 2."""

    class config:  # noqa: N801  (what the evaluation reads of a model's config)
        image_size, glimpse_size = (4, 4), 2

    def __init__(self):
        super().__init__()
        self.grid = LocationGrid.from_count((4, 4), 2, 2)
        self.encoder = nn.Linear(16, 1, bias=False)  # runs once per image: 16 MACs of fixed cost
        nine = math.log(9)
        cells = torch.zeros(3, 4, 2)
        cells[0, 0, 0], cells[1, 1, 0] = nine, 2 * nine
        self.register_buffer("cell_logits", cells.transpose(1, 2).reshape(3, 2, 2, 2))

    def rollout(self, images, num_glimpses, *, policy=None, forced_locations=None, exit_rule=None):
        self.encoder(images.flatten(1))
        logit_map = self.cell_logits[images[:, 0, 0, 0].long()]
        return grid_rollout(self.grid, self.grid.locations(), logit_map, lambda visited, rows: torch.zeros_like(visited),
                            num_glimpses, images, policy=policy, forced_locations=forced_locations, exit_rule=exit_rule)


def test_exact_numbers_on_a_toy(tmp_path):
    images = torch.zeros(3, 1, 4, 4)
    images[:, 0, 0, 0] = torch.arange(3.0)
    data = Items(images, torch.tensor([0, 0, 1]))
    out = budget_evaluation(ToyGrid(), data, rule="confidence", thresholds=[0.85, 0.95], max_glimpses=4)
    assert out["cost"]["fixed_macs"] == 16 and out["cost"]["macs_per_glimpse"] == 0
    stops, never = out["exit"]
    assert stops["glimpse_histogram"] == [1, 1, 0, 1] and stops["mean_glimpses"] == pytest.approx(7 / 3)
    assert stops["accuracy"] == pytest.approx(2 / 3)  # image 2 ties, argmax says class 0, its label is 1
    assert stops["area"] == pytest.approx((0.25 + 0.5 + 1.0) / 3)  # 1, 2 and 4 of the four 2 x 2 cells
    assert stops["subset_rollout"] and stops["macs_per_image"] == 16
    assert never["glimpse_histogram"] == [0, 0, 0, 3] and never["accuracy"] == out["fixed"][-1]["accuracy"]
    assert [f["area"] for f in out["fixed"]] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    files = write_budget({"methods": [out]}, tmp_path)
    assert all(p.exists() for p in files) and (tmp_path / "figures" / "budget_accuracy_vs_macs.png").exists()
    rows = list(csv.DictReader(open(tmp_path / "budget.csv")))
    assert rows[4]["rule"] == "confidence" and rows[4]["glimpse_histogram"] == "1 1 0 1"


def test_never_and_always_firing_rules_reproduce_fixed_t_and_one_glimpse():
    torch.manual_seed(0)
    model = create_model("ram", in_channels=1, num_classes=3, image_size=(20, 20), glimpse_size=6, num_scales=2,
                         hidden_size=16, glimpse_hidden=8, location_hidden=8, feature_size=16)
    data = Items(torch.rand(40, 1, 20, 20), torch.arange(40) % 3)
    out = budget_evaluation(model, data, rule="confidence", thresholds=[1.01, 0.0], max_glimpses=5, batch_size=16)
    never, always = out["exit"]
    for key in ("accuracy", "area", "macs_per_image"):
        assert never[key] == out["fixed"][-1][key] and always[key] == out["fixed"][0][key], key
    assert never["mean_glimpses"] == 5 and always["mean_glimpses"] == 1
    cost = out["cost"]
    assert out["fixed"][2]["macs_per_image"] == cost["fixed_macs"] + 3 * cost["macs_per_glimpse"]
    out = budget_evaluation(model, data, rule="entropy", thresholds=[-1.0], max_glimpses=5, batch_size=16)
    assert out["exit"][0]["accuracy"] == out["fixed"][-1]["accuracy"]


@pytest.mark.slow
def test_foveal_evaluate_takes_a_rule_and_thresholds(tmp_path, capsys):
    cfg = apply_overrides(load_config(str(MNIST28)), ["model.hidden_size=16", "model.glimpse_hidden=8",
                                                "model.location_hidden=8", "model.feature_size=16",
                                                "algorithm.num_glimpses=3", "evaluate.examples=2"])
    torch.manual_seed(0)
    model = create_model("ram", in_channels=1, num_classes=10, image_size=(28, 28), glimpse_size=8, num_scales=2,
                         hidden_size=16, glimpse_hidden=8, location_hidden=8, feature_size=16)
    save_checkpoint(tmp_path / "best", model=model, rng=False, info={"model": model_spec(model), "config": cfg})
    out = tmp_path / "ev"
    assert main(["evaluate", str(tmp_path / "best"), "--out", str(out), "--thresholds", "0.3", "2",
                 "--exit-rule", "confidence"]) == 0
    printed = capsys.readouterr().out
    assert "confidence 0.3: accuracy" in printed and "multiply-adds per image" in printed
    results = json.loads((out / "results.json").read_text())
    never = results["budget"]["exit"][1]
    assert never["accuracy"] == results["test_accuracy"] and never["mean_glimpses"] == 3
    assert (out / "budget.md").exists() and (out / "figures" / "budget_accuracy_vs_glimpses.png").exists()
    assert main(["evaluate", str(tmp_path / "best"), "--out", str(out), "--thresholds", "0.5",
                 "--test-samples", "2"]) == 2
    assert "algorithm.test_samples" in capsys.readouterr().err
