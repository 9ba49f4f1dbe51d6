"""WSRAM: the inference-network model, where each term's gradient goes, and the importance weights
checked against an exactly enumerable posterior (one glimpse on a 4-cell grid)."""

import pytest
import torch

from foveal.models import MODELS, create_model, model_spec
from foveal.training.algorithms import build_algorithm
from foveal.training.wake_sleep import WakeSleep, WakeSleepConfig

SIZE = (8, 8)
SMALL = dict(glimpse_size=4, hidden_size=8, glimpse_hidden=8, location_hidden=8, feature_size=8, inference_hidden=8,
             inference_pool=2)


def model(name="ram-grid-ws", seed=0, **kw):
    torch.manual_seed(seed)
    extra = {"grid_stride": 4} if "grid" in name else {"location_std": 0.3}
    return create_model(name, in_channels=1, num_classes=3, image_size=SIZE, **{**SMALL, **extra, **kw})


def batch(n=4, seed=1):
    g = torch.Generator().manual_seed(seed)
    return {"image": torch.rand(n, 1, *SIZE, generator=g), "label": torch.arange(n) % 3, "index": torch.arange(n)}


def groups_with_gradient(m):
    return {n.split(".")[0] for n, p in m.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}


@pytest.mark.parametrize("name", ["ram-grid-ws", "ram-ws"])
def test_each_term_trains_only_its_network(name):
    assert {"ram-ws", "ram-grid-ws"} <= set(MODELS.names(kind="glimpse"))
    cases = {(1.0, 0.0, 0.0): {"classifier", "core", "glimpse"},
             (0.0, 1.0, 0.0): {"location_net"},
             (0.0, 0.0, 1.0): {"inference"}}
    for (ce, prior, inference), expected in cases.items():
        m = model(name)
        alg = WakeSleep(WakeSleepConfig(num_glimpses=2, samples=3, ce_weight=ce, prior_weight=prior,
                                        inference_weight=inference))
        out = alg.loss(m, batch())
        out.loss.backward()
        assert torch.isfinite(out.loss)
        assert groups_with_gradient(m) == expected, (ce, prior, inference)  # never the baseline
        assert set(out.logs) == {"ce", "accuracy", "log_likelihood", "ess"} and 0 < out.logs["ess"] <= 1 + 1e-6


def test_one_sample_with_the_control_variate_leaves_q_untrained():
    m = model()
    out = WakeSleep(WakeSleepConfig(num_glimpses=2, samples=1)).loss(m, batch())
    out.loss.backward()
    assert "inference" not in groups_with_gradient(m) and out.logs["ess"] == pytest.approx(1.0)


def test_importance_weighted_bound_matches_exact_marginal_likelihood():
    """T = 1 on a 2 x 2 grid: log p(y|x) = logsumexp_a [log pi(a) + log p(y|a, x)] by enumeration."""
    m = model()
    b = batch(n=3)
    exact = []
    for cell in range(4):
        forced = m.grid_locations[cell].expand(3, 1, 2)
        ro = m.rollout(b["image"], 1, forced_locations=forced)
        exact.append(ro.log_prob[:, 0] + torch.log_softmax(ro.logits[:, -1], -1).gather(1, b["label"][:, None])[:, 0])
    exact = torch.logsumexp(torch.stack(exact), 0).mean().item()
    torch.manual_seed(0)
    out = WakeSleep(WakeSleepConfig(num_glimpses=1, samples=4000)).loss(m, b)
    assert out.logs["log_likelihood"] == pytest.approx(exact, abs=0.01)


def test_training_reduces_the_loss_and_evaluation_uses_the_policy():
    m = model()
    alg = build_algorithm("wake-sleep", num_glimpses=2, samples=4)
    b = batch(n=6)
    opt = torch.optim.Adam(m.parameters(), lr=0.03)
    torch.manual_seed(0)
    first = alg.loss(m, b).logs["ce"]
    for _ in range(20):
        out = alg.loss(m, b)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
    assert out.logs["ce"] < first
    metrics = alg.metrics(m, b)
    assert set(metrics) == {"accuracy", "ce"}
    probs, locations = alg.predict(m, b["image"])
    assert probs.shape == (6, 2, 3) and locations.shape == (6, 2, 2)
    spec = model_spec(m)
    assert spec["name"] == "ram-grid-ws" and spec["config"]["inference_pool"] == 2
    assert create_model(spec["name"], **spec["config"]).state_dict().keys() == m.state_dict().keys()


def test_errors():
    plain = create_model("ram-grid", in_channels=1, num_classes=3, image_size=SIZE, glimpse_size=4, grid_stride=4,
                         hidden_size=8)
    with pytest.raises(ValueError, match="ram-grid-ws"):
        WakeSleep(WakeSleepConfig(num_glimpses=1)).loss(plain, batch())
    with pytest.raises(ValueError, match="samples"):
        WakeSleepConfig(samples=0)
    with pytest.raises(ValueError, match="inference_pool"):
        model(inference_pool=0)
