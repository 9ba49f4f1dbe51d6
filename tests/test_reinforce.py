import math

import pytest
import torch
from torch import nn

from foveal.models.base import Rollout
from foveal.training.reinforce import Reinforce, ReinforceConfig


class FixedRollout(nn.Module):
    """A 'model' whose rollout is given: lets the loss be checked by hand."""

    def __init__(self, rollout):
        super().__init__()
        self.p = nn.Parameter(torch.zeros(()))
        self.ro = rollout

    def rollout(self, images, num_glimpses, *, policy=None, forced_locations=None):
        r = self.ro
        return Rollout(r.locations, r.log_prob + self.p, r.logits + self.p, r.baseline + self.p, None, r.entropy)


def test_hybrid_loss_matches_hand_computation():
    logits = torch.tensor([[[0.0, 0.0], [2.0, 0.0]], [[0.0, 0.0], [0.0, 1.0]]])  # B=2, T=2, C=2
    log_prob = torch.tensor([[-1.0, -2.0], [-0.5, -0.5]])
    baseline = torch.tensor([[0.5, 0.25], [0.0, 1.0]])
    ro = Rollout(torch.zeros(2, 2, 2), log_prob, logits, baseline, None, torch.zeros(2, 2))
    labels = torch.tensor([0, 0])  # sample 0 right (reward 1), sample 1 wrong (reward 0)
    cfg = ReinforceConfig(num_glimpses=2, ce_weight=1.0, baseline_weight=0.5, reinforce_weight=2.0)
    out = Reinforce(cfg).loss(FixedRollout(ro), {"image": torch.zeros(2, 1, 1, 1), "label": labels})
    ce = (-math.log(math.exp(2) / (math.exp(2) + 1)) - math.log(1 / (1 + math.e))) / 2
    # advantages: sample 0: 1 - [0.5, 0.25]; sample 1: 0 - [0, 1]
    pg = -((-1.0 * 0.5 + -2.0 * 0.75) + (-0.5 * 0 + -0.5 * -1.0)) / 2
    mse = ((0.5 - 1) ** 2 + (0.25 - 1) ** 2 + 0 ** 2 + 1 ** 2) / 4
    assert out.logs["ce"] == pytest.approx(ce, rel=1e-6)
    assert out.logs["reinforce"] == pytest.approx(pg, rel=1e-6)
    assert out.logs["baseline_mse"] == pytest.approx(mse, rel=1e-6)
    assert out.loss.item() == pytest.approx(ce + 2.0 * pg + 0.5 * mse, rel=1e-6)


def test_random_training_policy_drops_policy_terms():
    ro = Rollout(torch.zeros(1, 1, 2), torch.tensor([[-3.0]]), torch.tensor([[[1.0, 0.0]]]), torch.tensor([[0.2]]),
                 None, torch.zeros(1, 1))
    out = Reinforce(ReinforceConfig(num_glimpses=1, train_policy="random")).loss(
        FixedRollout(ro), {"image": torch.zeros(1, 1, 1, 1), "label": torch.tensor([0])})
    assert "reinforce" not in out.logs
    assert out.loss.item() == pytest.approx(-math.log(math.e / (math.e + 1)), rel=1e-6)


def test_config_errors():
    with pytest.raises(ValueError, match="num_glimpses"):
        ReinforceConfig(num_glimpses=0)
    with pytest.raises(ValueError, match="eval_policy"):
        ReinforceConfig(eval_policy="oracle")


def test_mc_averaging_shapes():
    from foveal.models import create_model
    model = create_model("ram", in_channels=1, num_classes=4, image_size=(12, 12), glimpse_size=4, hidden_size=8)
    alg = Reinforce(ReinforceConfig(num_glimpses=3, eval_policy="sample", test_samples=5))
    probs, locs = alg.predict(model, torch.rand(2, 1, 12, 12))
    assert probs.shape == (2, 3, 4) and locs.shape == (2, 3, 2)
    assert torch.allclose(probs.sum(-1), torch.ones(2, 3))
    m = alg.metrics(model, {"image": torch.rand(2, 1, 12, 12), "label": torch.tensor([0, 1])})
    assert set(m) == {"accuracy", "ce"}


def test_a_training_step_of_ram_reads_nothing_back_to_the_host(monkeypatch):
    """The loss logs tensors, so one iteration has no ``.item()`` (a GPU host synchronisation)."""
    from foveal.models import create_model
    from foveal.training.loop import LogWindow

    model = create_model("ram", in_channels=1, num_classes=10, image_size=(28, 28), glimpse_size=8)
    alg = Reinforce(ReinforceConfig(num_glimpses=3))
    batch = {"image": torch.rand(4, 1, 28, 28), "label": torch.tensor([0, 1, 2, 3])}

    def no_item(self):
        raise AssertionError("Tensor.item() called during a training step")

    monkeypatch.setattr(torch.Tensor, "item", no_item)
    window = LogWindow(torch.device("cpu"))
    for _ in range(2):
        out = alg.loss(model, batch)
        out.loss.backward()
        window.add(out)
    monkeypatch.undo()
    assert all(isinstance(v, torch.Tensor) and v.dim() == 0 for v in out.logs.values())
    logs, _ = window.averages()
    assert set(logs) == {"loss", "ce", "accuracy", "reinforce", "baseline_mse", "entropy"}
    assert all(isinstance(v, float) for v in logs.values())


def test_log_window_sums_tensors_and_floats_and_round_trips():
    from foveal.training.base import LossOutput
    from foveal.training.loop import LogWindow

    window = LogWindow(torch.device("cpu"))
    window.add(LossOutput(torch.tensor(1.0), {"a": torch.tensor(0.25), "b": 2.0}))
    state = window.state_dict()
    resumed = LogWindow(torch.device("cpu"))
    resumed.load_state_dict(state)
    for w in (window, resumed):
        w.add(LossOutput(torch.tensor(3.0), {"a": torch.tensor(0.5), "b": 4.0}))
        assert w.averages()[0] == {"loss": 2.0, "a": 0.375, "b": 3.0}
