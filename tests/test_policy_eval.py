"""Policy evaluation: areas and occlusion masks against loops, per-glimpse accuracies against the
predictions, records -> summary -> reports, and the whole ``evaluate-policies`` job on MNIST digits."""

import csv
import json

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import Dataset

from foveal.checkpoint import save_checkpoint
from foveal.cli import main
from foveal.cli.saccader import split_stage_overrides
from foveal.config import slug
from foveal.evaluation.policy_eval import (Method, cumulative_area, evaluate_methods, markdown_table, summarise,
                                           write_reports)
from foveal.models import create_model, model_spec
from foveal.policies import make_policy

TINY = {"in_channels": 1, "num_classes": 3, "image_size": (28, 28), "width": 2, "what_dim": 4}


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


class Noise(Dataset):
    class_names = ["a", "b", "c"]

    def __init__(self, n=10):
        g = torch.Generator().manual_seed(0)
        self.x, self.y = torch.rand(n, 1, 28, 28, generator=g) + 0.1, torch.arange(n) % 3

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return {"image": self.x[i], "label": self.y[i], "index": i}


class Recorder(nn.Module):
    """An occluder that remembers its inputs and predicts class 0."""

    def __init__(self):
        super().__init__()
        self.seen = []

    def forward(self, x):
        self.seen.append(x.clone())
        return torch.tensor([1.0, 0.0, 0.0]).expand(x.shape[0], 3)


def test_cumulative_area_is_the_union_of_the_first_t_patches():
    locations = torch.tensor([[[-1.0, -1.0], [-1.0, -1.0], [1.0, 1.0]]])  # corner, same corner, other corner
    union = cumulative_area(locations, (8, 8), 4)
    assert union.shape == (1, 3, 8, 8)
    assert union[0, :, :, :].sum((1, 2)).tolist() == [4.0, 4.0, 8.0]  # 2x2 of the patch is inside the image each time
    assert union[0, 2, 0, 0] == 1 and union[0, 2, 7, 7] == 1 and union[0, 0, 7, 7] == 0


def test_records_give_per_glimpse_accuracy_area_and_occlusion(tmp_path):
    torch.manual_seed(0)
    bagnet = create_model("bagnet", **TINY).eval()
    occluder = Recorder()
    data = Noise(10)
    methods = [Method("Sobel mean", bagnet, make_policy("sobel-mean")),
               Method("random", bagnet, make_policy("random"))]
    paths = evaluate_methods(methods, data, tmp_path, max_glimpses=3, batch_size=4, occluder=occluder, examples=3)
    assert [p.name for p in paths] == ["sobel-mean.npz", "random.npz"]
    summary = summarise(paths, train_glimpses=2)
    first = summary["methods"][0]
    assert first["label"] == "Sobel mean" and first["num_images"] == 10
    # recompute from the model directly
    ro = bagnet.rollout(data.x, 3, policy=make_policy("sobel-mean"))
    expected = (ro.logits.argmax(-1) == data.y[:, None]).float().mean(0)
    assert np.allclose(first["accuracy"], expected.numpy())
    area = cumulative_area(ro.locations, (28, 28), bagnet.config.glimpse_size).mean((2, 3)).mean(0)
    assert np.allclose(first["area"], area.numpy(), atol=1e-6) and first["area"] == sorted(first["area"])
    assert np.allclose(first["occluded_accuracy"], (data.y == 0).float().mean().item())
    # the occluder saw the images with exactly the patches of glimpses 1..t set to zero
    occluded = torch.cat(occluder.seen[:3]).view(10, 3, 1, 28, 28)
    union = cumulative_area(ro.locations, (28, 28), bagnet.config.glimpse_size)
    assert torch.equal(occluded[:, :, 0] == 0, union.bool())
    files = write_reports(summary, tmp_path)
    assert {p.name for p in files} >= {"policy_eval.json", "policy_eval.csv", "policy_eval.md",
                                       "accuracy_vs_glimpses.png", "accuracy_vs_area.png", "occlusion.png"}
    rows = list(csv.DictReader(open(tmp_path / "policy_eval.csv")))
    assert len(rows) == 6 and rows[0]["method"] == "Sobel mean" and rows[2]["glimpses"] == "3"
    table = markdown_table(summary)
    assert table.splitlines()[0].startswith("| method | 1 | 2 | 3 | area @2 |")
    with pytest.raises(ValueError, match="unique labels"):
        evaluate_methods([methods[0], Method("sobel mean", bagnet)], data, tmp_path, max_glimpses=1)
    assert slug("Saccader (ours)") == "saccader-ours"


def _checkpoint(tmp_path, name, model, num_glimpses=2):
    path = tmp_path / name
    save_checkpoint(path, model=model, rng=False, info={"model": model_spec(model), "config": {
        "data": {"name": "mnist5k"}, "algorithm": {"name": "x", "num_glimpses": num_glimpses}}})
    return str(path)


@pytest.mark.slow
def test_evaluate_policies_end_to_end_on_mnist_digits(tmp_path, capsys):
    torch.manual_seed(0)
    kw = {**TINY, "num_classes": 10}
    classifier = _checkpoint(tmp_path, "bagnet", create_model("bagnet", **kw))
    saccader = _checkpoint(tmp_path, "saccader", create_model("saccader", **kw))
    dram = _checkpoint(tmp_path, "dram", create_model("dram", in_channels=1, num_classes=10, image_size=(28, 28),
                                                      glimpse_size=6, hidden_size=8, glimpse_hidden=8,
                                                      location_hidden=8, feature_size=8, context_size=8))
    out = tmp_path / "eval"
    code = main(["evaluate-policies", "--classifier", classifier, "--policies", "random", "ordered-logits",
                 "--learned", f"Saccader={saccader}", "--learned", f"DRAM={dram}", "--policy-of",
                 f"its policy={saccader}", "--out", str(out), "--limit", "12", "--max-glimpses", "4",
                 "--occlusion-iterations", "2", "--batch-size", "6", "--quiet", "--thresholds", "0.5", "1.01"])
    assert code == 0
    budget = json.loads((out / "budget.json").read_text())  # early exit, every method, up to --max-glimpses
    assert [m["label"] for m in budget["methods"]] == ["random", "ordered-logits", "its policy", "Saccader", "DRAM"]
    for m in budget["methods"]:
        never = m["exit"][1]
        assert never["mean_glimpses"] == 4 and never["accuracy"] == m["fixed"][-1]["accuracy"]
        assert sum(m["exit"][0]["glimpse_histogram"]) == 12
    summary = json.loads((out / "policy_eval.json").read_text())
    assert [m["label"] for m in summary["methods"]] == ["random", "ordered-logits", "its policy", "Saccader", "DRAM"]
    assert summary["train_glimpses"] == 2 and all(len(m["accuracy"]) == 4 for m in summary["methods"])
    # the Saccader's policy on its own network and on the shared classifier looks at the same cells
    sac = np.load(out / "records" / "saccader.npz")
    its = np.load(out / "records" / "its-policy.npz")
    assert np.array_equal(sac["locations"], its["locations"])
    assert (out / "examples" / "dram.png").exists() and (out / "occlusion-cnn" / "checkpoints" / "best.json").exists()
    assert "| Saccader |" in capsys.readouterr().out
    assert main(["evaluate-policies", "--out", str(out), "--policies", "random"]) == 2  # no classifier


def test_stage_overrides_go_to_one_stage_or_all():
    split = split_stage_overrides(["train.seed=1", "location.train.iterations=9"], ("representation", "location"))
    assert split == {"representation": ["train.seed=1"], "location": ["train.seed=1", "train.iterations=9"]}
