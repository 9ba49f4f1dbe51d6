"""RAM+ pretraining: salience maps (exact on a toy posterior, linear = the exact map's derivative),
sampling probabilities, the maps file, and the pretraining loss's gradients."""

import math

import pytest
import torch
from torch import nn

from foveal.boed.epe import cell_masks
from foveal.logits import posterior_entropy
from foveal.models import create_model
from foveal.retina import LocationGrid, masked_input
from foveal.training.algorithms import build_algorithm
from foveal.training.salience_pretraining import (SalienceMaps, SaliencePolicy, compute_salience, salience,
                                                  salience_probabilities)

SIZE = (8, 8)
GRID = LocationGrid.from_stride(SIZE, 4, 4)  # 2 x 2 cells


class SumPosterior(nn.Module):
    """Two classes, logits (a * sum of seen pixels + b, 0): entropies known in closed form."""

    multilabel = False

    def __init__(self, a=0.5, b=0.0):
        super().__init__()
        self.a, self.b = nn.Parameter(torch.tensor(a)), b

    def forward(self, x):
        z = self.a * x[:, :1].flatten(1).sum(1) + self.b
        return torch.stack([z, torch.zeros_like(z)], 1)


def binary_entropy(z):
    p = torch.sigmoid(torch.as_tensor(z, dtype=torch.float64))
    return float(-(p * p.log() + (1 - p) * (1 - p).log()))


def test_exact_salience_is_the_entropy_drop_of_each_cell_alone():
    images = torch.zeros(1, 1, *SIZE)
    images[0, 0, :4, :4] = 0.25  # cell 0: sum 4
    images[0, 0, 4:, 4:] = 1.0  # cell 3: sum 16
    s = salience(SumPosterior(), images, GRID, mode="exact", batch_size=3)
    expected = [math.log(2) - binary_entropy(0.5 * v) for v in (4.0, 0.0, 0.0, 16.0)]
    assert s.shape == (1, 4) and torch.allclose(s[0].double(), torch.tensor(expected, dtype=torch.float64), atol=1e-5)


def test_linear_salience_is_the_derivative_of_the_exact_one():
    torch.manual_seed(0)
    net = create_model("posterior-cnn", in_channels=1, num_classes=3, image_size=SIZE, widths=(4, 8), strides=(1, 2))
    with torch.no_grad():  # a trained-looking network: the mask channel matters, BatchNorm has statistics
        net.first_conv.weight[:, 1].normal_()
        for bn in (m for m in net.modules() if isinstance(m, nn.BatchNorm2d)):
            bn.running_mean.normal_()
            bn.bias.normal_()
    net = net.double()
    images = torch.rand(2, 1, *SIZE, dtype=torch.float64)
    lin = salience(net, images, GRID, mode="linear")
    assert lin.abs().min() > 0
    net.eval()
    eps = 1e-5
    cells = cell_masks(GRID).double()
    with torch.no_grad():
        h0 = posterior_entropy(net(masked_input(images, torch.zeros(2, 1, *SIZE, dtype=torch.float64))))
        for g in range(len(GRID)):
            m = eps * cells[g].expand(2, 1, *SIZE)
            fd = (posterior_entropy(net(masked_input(images, m))) - h0) / eps
            assert torch.allclose(lin[:, g], -fd, rtol=1e-3, atol=1e-7)
    assert net.training is False and all(p.grad is None for p in net.parameters())


def test_probabilities_and_policy():
    p = salience_probabilities(torch.tensor([[1.0, 3.0, -2.0, 0.0], [-1.0, -1.0, 0.0, 0.0]]), uniform_mix=0.2)
    assert torch.allclose(p, torch.tensor([[0.25, 0.65, 0.05, 0.05], [0.25] * 4]))
    model = create_model("ram-grid", in_channels=1, num_classes=2, image_size=SIZE, glimpse_size=4, grid_stride=4,
                         hidden_size=8)
    probs = torch.tensor([[0.0, 0.0, 1.0, 0.0], [0.0, 1.0, 0.0, 0.0]])
    ro = model.rollout(torch.rand(2, 1, *SIZE), 5, policy=SaliencePolicy(probs, GRID))
    assert (ro.indices == torch.tensor([[2], [1]])).all()


def test_maps_file_round_trip_and_validation(tmp_path):
    class Split:
        name, split, image_shape = "toy", "train", (1, *SIZE)

        def __len__(self):
            return 5

        def __getitem__(self, i):
            return {"image": torch.full((1, *SIZE), float(i)), "label": torch.tensor(i % 2), "index": i}

    maps = compute_salience(SumPosterior(b=1.0), Split(), GRID, mode="exact", batch_size=2,
                            provenance={"posterior": "toy"})
    assert maps.maps.shape == (5, 4) and (maps.dataset, maps.split) == ("toy", "train")
    path = maps.save(tmp_path / "sal.npz")
    again = SalienceMaps.load(path)
    assert torch.equal(again.maps, maps.maps) and again.grid == GRID and again.provenance == {"posterior": "toy"}
    again.validate(Split())
    other = Split()
    other.split = "val"
    with pytest.raises(ValueError, match="'split'"):
        again.validate(other)
    with pytest.raises(FileNotFoundError):
        SalienceMaps.load(tmp_path / "none.npz")


def test_pretraining_trains_classifier_core_and_glimpse_net_only(tmp_path):
    maps = SalienceMaps(torch.rand(6, 4), GRID, "toy", "train", "linear")
    path = maps.save(tmp_path / "s.npz")
    alg = build_algorithm("salience-pretraining", num_glimpses=3, salience=str(path))
    torch.manual_seed(0)
    model = create_model("ram-grid", in_channels=1, num_classes=2, image_size=SIZE, glimpse_size=4, grid_stride=4,
                         hidden_size=8)
    batch = {"image": torch.rand(6, 1, *SIZE), "label": torch.arange(6) % 2, "index": torch.arange(6)}
    out = alg.loss(model, batch)
    out.loss.backward()
    learned = {n.split(".")[0] for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    assert learned == {"classifier", "core", "glimpse"}
    assert set(alg.metrics(model, batch)) == {"accuracy", "ce"}
    other = create_model("ram-grid", in_channels=1, num_classes=2, image_size=SIZE, glimpse_size=4, grid_stride=2,
                         hidden_size=8)
    with pytest.raises(ValueError, match="another grid"):
        alg.loss(other, batch)
    with pytest.raises(ValueError, match="salience"):
        build_algorithm("salience-pretraining", num_glimpses=3)
