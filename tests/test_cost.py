"""The cost model (foveal.evaluation.cost): MACs per glimpse counted from the layers by forward hooks, checked
against torch's own FLOP counter (FlopCounterMode: FLOPs = 2 x MACs) and against hand counts on tiny layers."""

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from foveal.evaluation.cost import POOLING, count_macs, glimpse_cost
from foveal.models import MODELS, create_model
from foveal.policies.basic import greedy_policy

SMALL = {"in_channels": 2, "num_classes": 3, "image_size": (20, 24), "glimpse_size": 6, "hidden_size": 16,
         "glimpse_hidden": 8, "location_hidden": 8, "feature_size": 16}
TINY_GRID = {"in_channels": 2, "num_classes": 3, "image_size": (28, 28), "width": 2, "what_dim": 4}
BUILD = {"ram-grid": {**SMALL, "grid": (3, 4)}, "ram-grid-ws": {**SMALL, "grid": (3, 4)}, "bagnet": TINY_GRID,
         "saccader": TINY_GRID, "saccader-patch": {**TINY_GRID, "patch_widths": (4,), "patch_strides": (2,)}}


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def test_hand_counts_of_each_layer_kind():
    model = nn.ModuleDict({"fc": nn.Linear(4, 3), "conv": nn.Conv2d(2, 5, 3, padding=1, stride=2),
                           "gru": nn.GRUCell(6, 7), "lstm": nn.LSTMCell(6, 7), "rnn": nn.RNNCell(6, 7)})

    def run():
        model["fc"](torch.rand(10, 4))
        model["conv"](torch.rand(1, 2, 8, 8))  # 5 x 4 x 4 outputs, 2 * 9 MACs each
        for cell in ("gru", "lstm", "rnn"):
            model[cell](torch.rand(2, 6))
        torch.nn.functional.avg_pool2d(torch.rand(1, 1, 4, 4), 2)  # 16 elements read

    parts = count_macs(model, run)
    assert parts == {"fc": 10 * 12, "conv": 80 * 18, "gru": 2 * 3 * 13 * 7, "lstm": 2 * 4 * 13 * 7,
                     "rnn": 2 * 13 * 7, POOLING: 16}


@pytest.mark.parametrize("name, settings, shape", [
    ("ram", {"glimpse_size": 12, "num_scales": 3, "glimpse_net": "conv"}, (1, 60, 60)),
    ("dram", {"glimpse_size": 19, "num_scales": 2, "context_size": 16}, (1, 60, 60)),
    ("saccader", {}, (1, 60, 60))])
def test_hook_counts_match_the_profiler_within_5_percent(name, settings, shape):
    """FlopCounterMode counts 2 FLOPs per multiply-add of matrix products and convolutions (no pooling)."""
    model = create_model(name, in_channels=shape[0], num_classes=10, image_size=shape[1:], **settings).eval()
    images = torch.rand(3, *shape)
    with torch.no_grad():
        parts = count_macs(model, lambda: model.rollout(images, 6, policy=greedy_policy))
        with FlopCounterMode(display=False) as profiler:
            model.rollout(images, 6, policy=greedy_policy)
    layers = sum(v for k, v in parts.items() if k != POOLING)
    profiled = profiler.get_total_flops() / 2
    assert abs(layers / profiled - 1) < 0.05, (layers, profiled)
    cost = glimpse_cost(model, shape)
    assert cost.total(6) * 3 == sum(parts.values())  # fixed + 6 glimpses, per image, pooling included


def test_the_retina_coarse_scales_and_the_representation_network_are_counted():
    ram = create_model("ram", in_channels=1, num_classes=10, image_size=(60, 60), glimpse_size=12, num_scales=3)
    cost = glimpse_cost(ram, (1, 60, 60))
    assert cost.parts[POOLING] == (0, 24 ** 2 + 48 ** 2)  # scales 2 and 3 pooled back to 12 x 12
    assert cost.parts["glimpse"][1] > 3 * 144 * 128  # the what-layer reads all three scales
    saccader = create_model("saccader", in_channels=1, num_classes=10, image_size=(60, 60))
    cost = glimpse_cost(saccader, (1, 60, 60))
    assert cost.parts["representation"][0] > 0 and cost.parts["representation"][1] == 0  # once per image
    grid, d = len(saccader.grid), saccader.mix.out_channels
    assert cost.parts["cell"] == (0, 3 * grid * d)


@pytest.mark.parametrize("name", MODELS.names(kind="glimpse") + MODELS.names(kind="grid"))
def test_every_model_has_a_positive_linear_cost(name):
    model = create_model(name, **BUILD.get(name, SMALL))
    cost = glimpse_cost(model, (2, *model.config.image_size))
    assert cost.total(1) > 0 and cost.fixed >= 0
    # a BagNet computes every cell's logits in one pass before the first glimpse; reading one is free
    assert (cost.per_glimpse == 0) == (name == "bagnet")
