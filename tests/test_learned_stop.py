"""The learned stop (DT-RAM style, ``algorithm.stop_cost``): shapes, gradients reach the stop head, the expected
number of glimpses is exact, and a larger per-glimpse cost makes a model stop earlier."""

import pytest
import torch

from foveal.models import create_model
from foveal.models.early_exit import LearnedExit
from foveal.policies.basic import greedy_policy
from foveal.training.reinforce import Reinforce, ReinforceConfig, expected_glimpses

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py

SMALL = {"in_channels": 1, "num_classes": 2, "image_size": (8, 8), "glimpse_size": 4, "hidden_size": 16,
         "glimpse_hidden": 8, "location_hidden": 8, "feature_size": 16, "stop_head": True}


def toy_batch(n=64, seed=0):
    """Class = which half of the image is bright: one 4 px glimpse at the right place tells."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 2, (n,), generator=g)
    images = torch.rand(n, 1, 8, 8, generator=g) * 0.1
    for i, y in enumerate(labels.tolist()):
        images[i, 0, :, 4 * y:4 * y + 4] += 0.9
    return {"image": images, "label": labels, "index": torch.arange(n)}


@pytest.mark.parametrize("name", ["ram", "ram-grid"])
def test_shapes_and_gradients_reach_the_stop_head(name):
    torch.manual_seed(0)
    model = create_model(name, **SMALL, **({"grid": 2} if name == "ram-grid" else {}))
    batch = toy_batch(8)
    ro = model.rollout(batch["image"], 4)
    assert ro.stop_logits.shape == (8, 4)
    out = Reinforce(ReinforceConfig(num_glimpses=4, stop_cost=0.1, ce_steps="all")).loss(model, batch)
    out.loss.backward()
    assert 1 <= float(out.logs["glimpses"]) <= 4
    for pname, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, pname
    # the stop head reads h_t.detach(): with the policy-gradient terms alone, the core and glimpse net get nothing
    model.zero_grad()
    Reinforce(ReinforceConfig(num_glimpses=4, stop_cost=0.1, ce_weight=0.0, baseline_weight=0.0)).loss(
        model, batch).loss.backward()
    assert model.stop_net.weight.grad.abs().sum() > 0
    for pname, p in [*model.core.named_parameters(), *model.glimpse.named_parameters()]:
        assert p.grad is None or not p.grad.any(), pname


def test_expected_glimpses_is_exact():
    # P(stop) 0.5 after each of glimpses 1..3, forced after 4: E[n] = 1 + 0.5 + 0.25 + 0.125
    assert expected_glimpses(torch.zeros(1, 4)).item() == pytest.approx(1.875)
    assert expected_glimpses(torch.full((1, 4), 50.0)).item() == pytest.approx(1.0)
    assert expected_glimpses(torch.full((1, 4), -50.0)).item() == pytest.approx(4.0)


def _train(cost, steps=60):
    torch.manual_seed(0)
    model = create_model("ram", **SMALL, location_std=0.2)
    algorithm = Reinforce(ReinforceConfig(num_glimpses=4, stop_cost=cost, ce_steps="all"))
    optimiser = torch.optim.Adam(model.parameters(), lr=0.02)
    for step in range(steps):
        optimiser.zero_grad()
        algorithm.loss(model, toy_batch(64, seed=step)).loss.backward()
        optimiser.step()
    model.eval()
    with torch.no_grad():
        ro = model.rollout(toy_batch(256, seed=999)["image"], 4, policy=greedy_policy)
    return float(expected_glimpses(ro.stop_logits).mean()), model


def test_a_larger_cost_per_glimpse_stops_earlier():
    free, _ = _train(0.0)
    costly, model = _train(0.3)
    assert costly < free - 0.5 and costly < 1.5, (free, costly)  # measured: free 2.3, costly 1.1
    with torch.no_grad():  # at evaluation the learned rule really stops
        ro = model.rollout(toy_batch(64, seed=5)["image"], 4, policy=greedy_policy, exit_rule=LearnedExit(0.5))
    assert ro.glimpses.float().mean() < 1.5


def test_settings_are_checked():
    with pytest.raises(ValueError, match="ReinforceConfig.stop_cost: expected null or a number >= 0"):
        ReinforceConfig(stop_cost=-1.0)
    with pytest.raises(ValueError, match="ReinforceConfig.ce_steps"):
        ReinforceConfig(ce_steps="first")
    model = create_model("ram", **{**SMALL, "stop_head": False})
    with pytest.raises(ValueError, match="model.stop_head"):
        Reinforce(ReinforceConfig(num_glimpses=3, stop_cost=0.1)).loss(model, toy_batch(4))
