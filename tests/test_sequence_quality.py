"""Sequence quality judged by another network: per-image curves equal the averaged ones (foveal.evaluation), the
paired bootstrap and comparisons of files of the same images (foveal.sequences.scoring), ``foveal sequences score``."""

import json

import pytest
import torch
from torch import nn

from foveal.checkpoint import save_checkpoint
from foveal.cli import main
from foveal.data import build_dataset
from foveal.evaluation.posterior_curves import posterior_curves
from foveal.evaluation.sequence_quality import glimpse_model_curves, network_scorer, per_image_curves
from foveal.models import create_model, model_spec
from foveal.retina import LocationGrid
from foveal.sequences import MAKERS, GlimpseSequences, Target, compare_sequences, paired_bootstrap

GRID = LocationGrid.from_stride((28, 28), 8, 4)  # 6 x 6 cells


@pytest.fixture(scope="module")
def scorer():
    torch.manual_seed(0)
    return create_model("posterior-cnn", in_channels=1, num_classes=10, image_size=(28, 28), widths=(4, 8),
                        strides=(2, 2))


class Seen(nn.Module):
    """A 'posterior' that is sure of class 0 exactly when the top-left pixel has been seen."""

    multilabel = False

    def forward(self, x):  # x: [B, 2, H, W] = image * mask, mask
        seen = x[:, 1, 0, 0]
        return torch.stack([20 * seen] + [torch.zeros_like(seen)] * 9, 1)


def test_per_image_curves_are_exact_on_a_tiny_problem_and_average_to_the_curves(scorer):
    val = torch.utils.data.Subset(build_dataset("mnist5k", "val"), [0, 1, 2, 3])
    labels = torch.tensor([int(val[i]["label"]) for i in range(4)])
    cells = torch.tensor([[0, 5], [5, 0], [5, 5], [0, 0]])  # cell 0 holds pixel (0, 0)
    q = per_image_curves(Seen(), val, GRID, cells, device=torch.device("cpu"))
    seen = torch.tensor([[0, 1, 1], [0, 0, 1], [0, 0, 0], [0, 1, 1]], dtype=torch.bool)  # [image, t = 0..2]
    # seen: sure of class 0; unseen: uniform, whose argmax is class 0 too (the first of the ties)
    assert torch.equal(q["accuracy"], (labels[:, None] == 0).double().expand(4, 3))
    assert bool((q["entropy"][seen] < 1e-6).all())
    assert torch.allclose(q["entropy"][~seen], torch.tensor(10.0, dtype=torch.float64).log(), atol=1e-6)
    assert torch.allclose(q["ce"][~seen], torch.tensor(10.0, dtype=torch.float64).log(), atol=1e-6)
    full = build_dataset("mnist5k", "val")
    table = torch.zeros(len(full), 2, dtype=torch.long)
    table[:4] = cells
    mean = posterior_curves(scorer, val, GRID, 2, sequences=table)
    rows = per_image_curves(scorer, val, GRID, cells, batch_size=3)
    for k in ("accuracy", "entropy", "ce"):
        assert torch.allclose(rows[k].mean(0).float(), mean[k], atol=1e-5), k
    with pytest.raises(ValueError, match=r"cells: expected indices in \[0, 36\), found 0..36"):
        per_image_curves(scorer, val, GRID, torch.tensor([[0, 36]] * 4))


def test_paired_bootstrap():
    same = paired_bootstrap(torch.zeros(10))
    assert same == {"mean": 0.0, "ci95": [0.0, 0.0], "contains_0": True}
    up = paired_bootstrap(torch.tensor([1.0, 2.0, 1.5, 1.0, 2.5]), resamples=2000)
    assert up["mean"] == pytest.approx(1.6) and 1.0 <= up["ci95"][0] < 1.6 < up["ci95"][1] <= 2.5
    assert not up["contains_0"]
    with pytest.raises(ValueError, match="K >= 2"):
        paired_bootstrap(torch.tensor([1.0]))


def test_files_are_scored_on_the_images_they_share_and_paired_with_the_first(scorer, tmp_path, capsys):
    val = build_dataset("mnist5k", "val")
    salient = MAKERS.build("salient", Target(val, [4, 1, 2, 3], 3, GRID))
    random = MAKERS.build("random", Target(val, [1, 2, 3, 9], 3, GRID), seed=2)
    result = compare_sequences(network_scorer(scorer), val, [salient, salient, random], resamples=500)
    assert result["images"] == 3 and result["num_glimpses"] == 3  # images 1, 2, 3
    first, again, other = result["files"]
    assert first["vs_first"] is None and again["vs_first"]["accuracy_after_T"]["ci95"] == [0.0, 0.0]
    assert first["accuracy"] == again["accuracy"] and len(other["entropy"]) == 4
    sub = torch.utils.data.Subset(val, [1, 2, 3])
    cells = GRID.corner_to_index(salient.corners[1:, :3].reshape(-1, 2)).view(3, 3)
    direct = per_image_curves(scorer, sub, GRID, cells)["accuracy"][:, -1]
    assert first["accuracy_after_T"] == pytest.approx(float(direct.mean()))
    rows = {k: per_image_curves(scorer, sub, GRID, GRID.corner_to_index(f.corners[f_rows, :3].reshape(-1, 2)).view(3, 3))
            for k, f, f_rows in (("salient", salient, [1, 2, 3]), ("random", random, [0, 1, 2]))}
    paired = (rows["random"]["accuracy"][:, 1:].mean(1) - rows["salient"]["accuracy"][:, 1:].mean(1)).mean()
    assert other["vs_first"]["accuracy_mean"]["mean"] == pytest.approx(float(paired))
    assert other["accuracy_mean"] == pytest.approx(float(rows["random"]["accuracy"][:, 1:].mean()))
    # the command, on the files
    salient.save(tmp_path / "sal")
    random.save(tmp_path / "rnd")
    save_checkpoint(tmp_path / "scorer", model=scorer, info={"model": model_spec(scorer)}, rng=False)
    assert main(["sequences", "score", str(tmp_path / "sal"), str(tmp_path / "rnd"), "--scorer",
                 str(tmp_path / "scorer"), "--resamples", "500", "--json", str(tmp_path / "score.json")]) == 0
    out = capsys.readouterr().out
    assert "3 images all files hold" in out and "vs the first: accuracy after T" in out
    saved = json.loads((tmp_path / "score.json").read_text())
    assert saved["files"][1]["accuracy"] == pytest.approx(other["accuracy"])
    other_grid = GlimpseSequences(**{**random.__dict__, "grid": LocationGrid.from_stride((28, 28), 8, 10),
                                     "corners": LocationGrid.from_stride((28, 28), 8, 10).corners()[
                                         torch.zeros(4, 3, dtype=torch.long)]})
    with pytest.raises(ValueError, match="on another grid"):
        compare_sequences(network_scorer(scorer), val, [salient, other_grid])


def test_a_glimpse_network_scores_sequences_by_looking_along_them(scorer, tmp_path, capsys):
    torch.manual_seed(1)
    ram = create_model("ram-grid", in_channels=1, num_classes=10, image_size=(28, 28), glimpse_size=8, grid_stride=4,
                       num_scales=1, hidden_size=16, glimpse_hidden=8, location_hidden=8, feature_size=16)
    assert ram.grid == GRID
    val = torch.utils.data.Subset(build_dataset("mnist5k", "val"), [0, 1, 2, 3, 4])
    cells = torch.tensor([[0, 5, 35], [7, 7, 7], [35, 0, 1], [2, 3, 4], [10, 20, 30]])
    q = glimpse_model_curves(ram, val, GRID, cells, batch_size=2)
    images = torch.stack([val[i]["image"] for i in range(5)])
    labels = torch.tensor([int(val[i]["label"]) for i in range(5)])
    with torch.no_grad():
        rollout = ram.eval().rollout(images, 3, forced_locations=GRID.locations().float()[cells])
        prior = ram.classifier(torch.zeros(5, 16))  # the GRU's initial state
    assert torch.equal(rollout.indices, cells)  # it looked where it was told
    logits = torch.cat([prior[:, None], rollout.logits], 1)
    assert torch.equal(q["accuracy"], (logits.argmax(-1) == labels[:, None]).double())
    ce = torch.nn.functional.cross_entropy(logits.transpose(1, 2), labels[:, None].expand(5, 4), reduction="none")
    assert torch.allclose(q["ce"], ce.double(), atol=1e-6)
    other = create_model("ram-grid", in_channels=1, num_classes=10, image_size=(28, 28), glimpse_size=8, grid_stride=5,
                         num_scales=1, hidden_size=16, glimpse_hidden=8, location_hidden=8, feature_size=16)
    with pytest.raises(ValueError, match="is not the sequences'"):
        glimpse_model_curves(other, val, GRID, cells)
    with pytest.raises(ValueError, match="expected a glimpse network"):
        glimpse_model_curves(scorer, val, GRID, cells)
    # the command: a posterior and a glimpse network side by side
    full = build_dataset("mnist5k", "val")
    salient, random = (MAKERS.build(m, Target(full, [1, 2, 3], 3, GRID)) for m in ("salient", "random"))
    salient.save(tmp_path / "sal")
    random.save(tmp_path / "rnd")
    save_checkpoint(tmp_path / "scorer", model=scorer, info={"model": model_spec(scorer)}, rng=False)
    save_checkpoint(tmp_path / "ram", model=ram, info={"model": model_spec(ram)}, rng=False)
    assert main(["sequences", "score", str(tmp_path / "sal"), str(tmp_path / "rnd"), "--scorer", str(tmp_path / "scorer"),
                 "--classifier", str(tmp_path / "ram"), "--resamples", "200", "--json", str(tmp_path / "s.json")]) == 0
    out = capsys.readouterr().out
    assert out.count("3 images all files hold") == 2 and "glimpse network" in out
    saved = json.loads((tmp_path / "s.json").read_text())
    assert [r["kind"] for r in saved] == ["posterior", "glimpse network"]
    direct = compare_sequences(network_scorer(ram), full, [salient])["files"][0]["accuracy"]
    assert saved[1]["files"][0]["accuracy"] == pytest.approx(direct)
    assert main(["sequences", "score", str(tmp_path / "sal")]) == 2
    assert "expected at least one --scorer or --classifier" in capsys.readouterr().err
