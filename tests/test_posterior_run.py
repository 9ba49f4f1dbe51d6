"""A posterior run through the one engine: `foveal train-posterior`, its evaluation (curves after t random
glimpses in results.json and a PNG), `foveal evaluate` on its checkpoint, and the figures of the annotator."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from foveal.cli import main
from foveal.evaluation.boed_plots import plot_epe_sequence, plot_posterior_curves, read_curves
from foveal.retina import LocationGrid
from foveal.sequences import GlimpseSequences

PNG = b"\x89PNG\r\n\x1a\n"
TINY = """
data: {name: mnist5k}
model: {name: posterior-cnn, widths: [4, 8], strides: [2, 2]}
algorithm: {name: posterior, num_glimpses: 2, glimpse_size: 8, grid_stride: 10}
train: {iterations: 4, val_every: 2, val_batches: 1, batch_size: 16, lr: 1.0e-3, tensorboard: false,
        monitor: val/ce, monitor_mode: min}
evaluate: {split: test, batch_size: 250}
"""


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def test_train_posterior_writes_curves_and_evaluate_reproduces_them(tmp_path, capsys):
    run = tmp_path / "post"
    config = tmp_path / "tiny.yaml"
    config.write_text(TINY)
    assert main(["train-posterior", "--config", str(config), "--run-dir", str(run), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "test accuracy:" in out and "entropy after t = 0..T random glimpses:" in out
    results = json.loads((run / "results.json").read_text())
    curve = results["curves"]["random"]
    assert len(curve["accuracy"]) == len(curve["entropy"]) == 3 and results["num_images"] == 500
    assert results["accuracy_per_glimpse"] == curve["accuracy"][1:] and results["test_accuracy"] == curve["accuracy"][2]
    assert 0 < curve["entropy"][0] <= np.log(10) + 1e-5 and results["grid"]["glimpse_size"] == 8
    assert set(results["random_t_metrics"]) >= {"ce", "accuracy"}
    record = json.loads((run / "records" / "posterior_curves_test.json").read_text())
    assert record["curves"] == results["curves"]
    for fig in results["figures"]:
        assert Path(fig).read_bytes()[:8] == PNG
    # the curves are those of posterior_curves with the run's seed, on the test split
    from foveal.data import build_dataset
    from foveal.evaluation.posterior_curves import posterior_curves
    from foveal.recipes.run import load_model

    model, _ = load_model(run / "checkpoints" / "best")
    grid = LocationGrid.from_stride((28, 28), 8, 10)
    direct = posterior_curves(model, build_dataset("mnist5k", "test"), grid, 2, batch_size=250, seed=0)
    assert direct["accuracy"].tolist() == pytest.approx(curve["accuracy"], abs=1e-6)
    # `foveal evaluate` on a posterior checkpoint takes the same path (another split here)
    assert main(["evaluate", str(run / "checkpoints" / "best"), "--split", "val", "--out", str(tmp_path / "ev")]) == 0
    ev = json.loads((tmp_path / "ev" / "results.json").read_text())
    assert ev["split"] == "val" and ev["model"] == "posterior-cnn" and len(ev["curves"]["random"]["entropy"]) == 3


def test_train_posterior_refuses_a_glimpse_model(tmp_path, capsys):
    assert main(["train-posterior", "--config", "demo", "--run-dir", str(tmp_path / "r"), "--quiet"]) == 2
    assert "model.name: expected a posterior network" in capsys.readouterr().err


def test_posterior_curves_figure_and_errors(tmp_path):
    curves = {"dataset": "x", "split": "val", "num_images": 3,
              "curves": {"nogs": {"accuracy": [0.1, 0.5, 0.7], "entropy": [2.3, 1.2, 0.8]},
                         "random": {"accuracy": [0.1, 0.3, 0.4]}}}
    path = tmp_path / "c.json"
    path.write_text(json.dumps(curves))
    assert plot_posterior_curves(path, tmp_path / "c.png").read_bytes()[:8] == PNG
    with pytest.raises(ValueError, match=r"curves\['nogs'\].entropy: expected 3 values \(as accuracy\), found 2"):
        read_curves({"curves": {"nogs": {"accuracy": [1, 2, 3], "entropy": [1, 2]}}})
    with pytest.raises(ValueError, match="field 'curves'"):
        read_curves({"curves": {}})


def test_epe_sequence_figure_from_a_sequence_file(tmp_path):
    grid = LocationGrid.from_stride((16, 16), 4, 4)
    cells = torch.tensor([[5, 10, 0]])
    maps = torch.rand(1, 3, 4, 4)
    maps[0, 0] = float("nan")  # first map not kept
    seqs = GlimpseSequences("mnist5k", "val", (16, 16), 4, torch.tensor([7]), grid.corners()[cells], grid=grid,
                            method="nogs", epe_maps=maps)
    seqs.save(tmp_path / "nogs")
    image = np.random.default_rng(0).random((1, 16, 16))
    out = plot_epe_sequence(tmp_path / "nogs", image, tmp_path / "fig2.png")
    assert out.read_bytes()[:8] == PNG
    with pytest.raises(ValueError, match=r"image: expected \[C, 16, 16\], found \[1, 8, 8\]"):
        plot_epe_sequence(seqs, image[:, :8, :8], tmp_path / "x.png")
    no_maps = GlimpseSequences("mnist5k", "val", (16, 16), 4, torch.tensor([7]), grid.corners()[cells], grid=grid)
    with pytest.raises(ValueError, match="expected sequences made on a grid with epe_maps kept"):
        plot_epe_sequence(no_maps, image, tmp_path / "x.png")


def test_plot_epe_command_reads_the_image_from_the_split(tmp_path, capsys):
    grid = LocationGrid.from_stride((28, 28), 8, 10)
    seqs = GlimpseSequences("mnist5k", "val", (28, 28), 8, torch.tensor([3, 9]), grid.corners()[torch.tensor([[4, 0]] * 2)],
                            grid=grid, method="nogs", epe_maps=torch.rand(2, 2, 3, 3))
    seqs.save(tmp_path / "nogs")
    assert main(["plot-epe", str(tmp_path / "nogs.json"), "--row", "1"]) == 0
    assert (tmp_path / "nogs-epe-1.png").read_bytes()[:8] == PNG
    assert main(["plot-epe", str(tmp_path / "nogs"), "--row", "2"]) == 2
    assert "--row: expected in [0, 2), found 2" in capsys.readouterr().err
