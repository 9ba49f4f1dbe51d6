"""The attentional variational posterior CNN, its protocol adapter, training algorithm and accuracy curve."""

import pytest
import torch
from torch import nn

from foveal.boed import NetworkPosterior, Posterior
from foveal.evaluation.posterior_curves import posterior_accuracy_curve
from foveal.models import MODELS, create_model
from foveal.models.posterior_cnn import expand_first_conv
from foveal.retina import LocationGrid, masked_input
from foveal.training.algorithms import ALGORITHMS, build_algorithm
from foveal.training.posterior import PosteriorTraining, PosteriorTrainingConfig, random_glimpse_masks

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def small(**over):
    return create_model("posterior-cnn", **{"in_channels": 2, "num_classes": 3, "image_size": (20, 24), **over})


def test_registered_and_small():
    """Shapes, a gradient for every parameter and the rebuild from its spec: tests/test_models.py checks them for
    every registered posterior network, this one included."""
    assert "posterior-cnn" in MODELS.names(kind="posterior") and "posterior" in ALGORITHMS.names()
    big = create_model("posterior-cnn", in_channels=3, num_classes=40, image_size=(60, 60), multilabel=True)
    assert sum(p.numel() for p in big.parameters()) < 500_000


def test_mask_channel_starts_at_zero_so_a_plain_network_is_reproduced():
    torch.manual_seed(0)
    model = small().eval()
    assert model.first_conv.weight[:, 2].abs().sum() == 0
    x, m = torch.rand(3, 2, 20, 24), (torch.rand(3, 1, 20, 24) > 0.5).float()
    with_mask = model(masked_input(x, m))
    without = model(torch.cat([x * m, torch.zeros_like(m)], 1))
    assert torch.allclose(with_mask, without, atol=1e-6)
    plain = torch.randn(32, 2, 3, 3)
    expanded = expand_first_conv(plain)
    assert expanded.shape == (32, 3, 3, 3) and torch.equal(expanded[:, :2], plain) and expanded[:, 2].abs().sum() == 0


def test_config_errors_name_the_field():
    with pytest.raises(ValueError, match=r"PosteriorCNNConfig.strides: expected one stride per width \(2\), found 3"):
        small(widths=(8, 8), strides=(1, 1, 1))
    with pytest.raises(ValueError, match=r"expected input \[B, 3, H, W\].*found \[1, 2, 20, 24\]"):
        small()(torch.zeros(1, 2, 20, 24))
    with pytest.raises(ValueError, match="grid_stride"):
        PosteriorTrainingConfig(grid=3, grid_stride=2)
    with pytest.raises(ValueError, match="unknown setting"):
        build_algorithm("posterior", num_glimpse=3)


def test_network_posterior_adapter():
    model = small(multilabel=True).train()
    post = NetworkPosterior(model)
    assert isinstance(post, Posterior) and post.multilabel
    images, masks = torch.rand(4, 2, 20, 24), torch.ones(4, 1, 20, 24)
    out = post.logits(images, masks)
    assert out.shape == (4, 3) and not out.requires_grad and model.training  # eval inside, mode restored
    model.eval()
    assert torch.allclose(out, model(masked_input(images, masks)))
    # pixels outside the mask do not matter
    masks[:, :, :10] = 0
    assert torch.allclose(post.logits(images, masks), post.logits(images * masks, masks))


def test_random_glimpse_masks_follow_the_counts():
    grid = LocationGrid.from_stride((8, 8), 2, 2)  # 16 disjoint 2x2 cells
    g = torch.Generator().manual_seed(0)
    masks, counts = random_glimpse_masks(500, grid, 1, 3, generator=g)
    assert masks.shape == (500, 1, 8, 8) and set(counts.tolist()) == {1, 2, 3}
    cells_seen = masks.sum((1, 2, 3)) / 4
    assert (cells_seen >= 1).all() and (cells_seen <= counts).all()
    assert (cells_seen == counts).float().mean() > 0.8  # repeats are rare with 16 cells
    none, _ = random_glimpse_masks(3, grid, 0, 0)
    assert none.sum() == 0


def test_posterior_training_loss_metrics_and_learning():
    torch.manual_seed(0)
    algorithm = build_algorithm("posterior", num_glimpses=2, glimpse_size=4, grid_stride=4)
    assert isinstance(algorithm, PosteriorTraining)
    # class = which half of an 8x8 image holds the bright 4x4 square: learnable from glimpses
    labels = torch.randint(2, (32,))
    images = torch.zeros(32, 1, 8, 8)
    for i, y in enumerate(labels.tolist()):
        images[i, 0, 2:6, 4 * y:4 * y + 4] = 1.0
    model = create_model("posterior-cnn", in_channels=1, num_classes=2, image_size=(8, 8), widths=(8, 8),
                         strides=(1, 2))
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    batch = {"image": images, "label": labels}
    first = algorithm.loss(model, batch)
    assert set(first.logs) == {"ce", "accuracy", "mean_glimpses"} and 1 <= first.logs["mean_glimpses"] <= 2
    for _ in range(25):
        opt.zero_grad()
        out = algorithm.loss(model, batch)
        out.loss.backward()
        opt.step()
    model.eval()
    metrics = algorithm.metrics(model, batch)
    assert metrics["ce"] < first.logs["ce"] and metrics["accuracy"] > 0.7


class HalfReader(nn.Module):
    """Logits = (seen brightness of the left half, of the right half): right iff the bright half was seen."""

    def __init__(self):
        super().__init__()
        self.p = nn.Parameter(torch.zeros(()))

    def forward(self, x):
        seen = x[:, :1]
        return torch.stack([seen[..., :4].sum((1, 2, 3)), seen[..., 4:].sum((1, 2, 3)) + 1e-3], 1) + self.p


def test_accuracy_curve_with_given_sequences_is_exact_and_random_is_reproducible():
    images = torch.zeros(4, 1, 4, 8)
    images[0, :, :, :4] = images[1, :, :, :4] = 1  # class 0: left half bright
    images[2, :, :, 4:] = images[3, :, :, 4:] = 1  # class 1
    data = [{"image": images[i], "label": torch.tensor(i // 2), "index": i} for i in range(4)]
    grid = LocationGrid.from_stride((4, 8), 4, 4)  # cell 0 = left half, cell 1 = right half
    # nothing seen: logits (0, 1e-3) -> class 1 for all: 2/4. Sequences: image 0 looks left (right),
    # image 1 right (sees nothing -> class 1, wrong), image 2 right (right), image 3 left (class 1, right)
    sequences = torch.tensor([[0, 1], [1, 0], [1, 1], [0, 0]])
    curve = posterior_accuracy_curve(HalfReader(), data, grid, 2, sequences=sequences, batch_size=3)
    assert curve.tolist() == pytest.approx([0.5, 0.75, 1.0])
    a = posterior_accuracy_curve(HalfReader(), data, grid, 3, seed=1)
    b = posterior_accuracy_curve(HalfReader(), data, grid, 3, seed=1)
    assert a.shape == (4,) and torch.equal(a, b) and a[0] == 0.5


def test_trains_through_the_engine(tmp_path):
    from foveal.training import TrainConfig, evaluate, fit

    torch.manual_seed(0)
    images, labels = torch.rand(24, 1, 8, 8), torch.randint(2, (24,))
    data = [{"image": images[i], "label": labels[i], "index": i} for i in range(24)]
    model = create_model("posterior-cnn", in_channels=1, num_classes=2, image_size=(8, 8), widths=(8,), strides=(1,))
    algorithm = build_algorithm("posterior", num_glimpses=3, glimpse_size=4, grid=2)
    cfg = TrainConfig(iterations=2, batch_size=8, lr=1e-3, val_every=2, tensorboard=False, device="cpu",
                      monitor="val/ce", monitor_mode="min")
    result = fit(model, algorithm, data, data, cfg, tmp_path)
    assert result.iterations == 2 and (tmp_path / "checkpoints" / "best.safetensors").exists()
    assert set(evaluate(model, algorithm, data, batch_size=16, device="cpu")) >= {"ce", "accuracy"}


def test_network_posterior_in_bf16_and_channels_last():
    torch.manual_seed(0)
    net = create_model("posterior-cnn", in_channels=1, num_classes=4, image_size=(16, 16))
    images, masks = torch.rand(5, 1, 16, 16), (torch.rand(5, 1, 16, 16) > 0.5).float()
    exact = NetworkPosterior(net).logits(images, masks)
    half = NetworkPosterior(net, precision="bf16").logits(images, masks)
    assert half.dtype == torch.float32 and torch.allclose(half, exact, atol=0.05) and not torch.equal(half, exact)
    last = NetworkPosterior(net, channels_last=True).logits(images, masks)
    assert torch.allclose(last, exact, atol=1e-5)
    with pytest.raises(ValueError, match=r"NetworkPosterior.precision: expected one of \('fp32', 'bf16'\), found 'fp16'"):
        NetworkPosterior(net, precision="fp16")
