"""Registry-wide checks: every registered model rolls out with the right shapes, and every
parameter that should learn gets a gradient; plus RAM's stop-gradients."""

import pytest
import torch

from foveal.models import MODELS, create_model, model_spec
from foveal.policies import make_policy
from foveal.policies.basic import ReplayPolicy
from foveal.training.reinforce import Reinforce, ReinforceConfig

SMALL = {"in_channels": 2, "num_classes": 3, "image_size": (20, 24), "glimpse_size": 6, "hidden_size": 16,
         "glimpse_hidden": 8, "location_hidden": 8, "feature_size": 16}
EXTRA = {"ram-grid": {"grid": (3, 4)}, "ram-grid-ws": {"grid": (3, 4)}}


def build(name, **over):
    return create_model(name, **{**SMALL, **EXTRA.get(name, {}), **over})


@pytest.mark.parametrize("name", MODELS.names(kind="glimpse"))
def test_rollout_shapes_and_every_parameter_learns(name):
    torch.manual_seed(0)
    model = build(name)
    images, labels = torch.rand(5, 2, 20, 24), torch.tensor([0, 1, 2, 0, 1])
    ro = model.rollout(images, 4)
    assert ro.locations.shape == (5, 4, 2) and ro.log_prob.shape == (5, 4)
    assert ro.logits.shape == (5, 4, 3) and ro.baseline.shape == (5, 4)
    assert ro.locations.abs().max() <= 1
    out = Reinforce(ReinforceConfig(num_glimpses=4)).loss(model, {"image": images, "label": labels})
    assert torch.isfinite(out.loss)
    loss = out.loss
    if hasattr(model, "inference_distribution"):  # WSRAM's inference network learns by wake-sleep only
        from foveal.training.wake_sleep import WakeSleep, WakeSleepConfig

        loss = loss + WakeSleep(WakeSleepConfig(num_glimpses=4, samples=2)).loss(model, {"image": images,
                                                                                    "label": labels}).loss
    loss.backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), pname
        assert p.grad.abs().sum() > 0, f"{pname} got a zero gradient"


@pytest.mark.parametrize("core", ["rnn", "gru", "lstm"])
@pytest.mark.parametrize("glimpse_net", ["mlp", "conv"])
def test_cores_and_glimpse_nets(core, glimpse_net):
    model = build("ram", core=core, glimpse_net=glimpse_net, num_scales=2)
    assert model.rollout(torch.rand(2, 2, 20, 24), 3).logits.shape == (2, 3, 3)


def test_spec_rebuilds_identical_model():
    model = build("ram-grid")
    spec = model_spec(model)
    clone = create_model(spec["name"], **spec["config"])
    clone.load_state_dict(model.state_dict())
    torch.manual_seed(1)
    a = model.rollout(torch.ones(1, 2, 20, 24), 2)
    torch.manual_seed(1)
    b = clone.rollout(torch.ones(1, 2, 20, 24), 2)
    assert torch.equal(a.logits, b.logits) and torch.equal(a.indices, b.indices)


@pytest.mark.parametrize("name", MODELS.names(kind="posterior"))
def test_posterior_shapes_every_parameter_learns_and_spec_rebuilds(name):
    """Posterior networks read ``[B, C + 1, H, W]`` (image * mask, mask); 32 px is DenseNet-121's minimum."""
    from foveal.retina import masked_input

    torch.manual_seed(0)
    model = create_model(name, in_channels=2, num_classes=3, image_size=(32, 40))
    x = masked_input(torch.rand(4, 2, 32, 40), (torch.rand(4, 1, 32, 40) > 0.5).float())
    logits = model(x)
    assert logits.shape == (4, 3)
    torch.nn.functional.cross_entropy(logits, torch.tensor([0, 1, 2, 0])).backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, pname
    spec = model_spec(model)
    clone = create_model(spec["name"], **spec["config"])
    clone.load_state_dict(model.state_dict())
    model.eval(), clone.eval()
    assert torch.equal(model(x), clone(x))


def test_registry_rejects_duplicates_and_unknown_names():
    with pytest.raises(ValueError, match=r"model.widths: unknown setting of model 'ram'"):
        create_model("ram", in_channels=1, num_classes=10, image_size=(28, 28), widths=[8])
    with pytest.raises(ValueError, match=r"the name 'ram' is registered twice: first at .*models/ram.py:\d+"):
        MODELS.register("ram", kind="glimpse")(lambda **kw: None)
    with pytest.raises(ValueError, match="kind expected one of"):
        MODELS.register("ram-3d", kind="volume", summary="a model of no known kind")(lambda **kw: None)
    with pytest.raises(ValueError, match=r"^model\.name: expected one of .*found 'ram-gird'; did you mean 'ram-grid'"):
        create_model("ram-gird")
    with pytest.raises(ValueError, match="RAMConfig.core"):
        build("ram", core="transformer")
    with pytest.raises(ValueError, match="grid"):
        build("ram", location="categorical")


def test_every_model_has_a_kind_and_a_summary_and_build_is_create_model():
    assert MODELS.names() == sorted(n for kind in ("glimpse", "posterior", "grid", "classifier")
                                    for n in MODELS.names(kind=kind))
    assert all(summary.endswith(".") and "``" not in summary for _, summary in MODELS.describe())
    model = MODELS.build("ram", **SMALL)
    assert model_spec(model)["name"] == "ram"  # named for its checkpoint, as create_model does


def test_wrong_image_shape_names_expected_and_found():
    with pytest.raises(ValueError, match=r"expected images \[B, 2, 20, 24\], found \[1, 1, 20, 24\]"):
        build("ram").rollout(torch.rand(1, 1, 20, 24), 2)


def test_forced_locations_are_used_and_scored():
    model = build("ram")
    forced = torch.tensor([[[0.5, -0.5], [float("nan"), float("nan")]]]).repeat(3, 1, 1)
    ro = model.rollout(torch.rand(3, 2, 20, 24), 2, forced_locations=forced)
    assert torch.equal(ro.locations[:, 0], forced[:, 0])
    dist = model.location_distribution(torch.zeros(3, 16))
    assert torch.allclose(ro.log_prob[:, 0], dist.log_prob(forced[:, 0]))
    # the supervised log-likelihood reaches the location net, and only through log_prob
    (-ro.log_prob[:, 0].sum()).backward()
    assert model.location_net.weight.grad is not None
    assert all(p.grad is None for p in model.core.parameters())


def test_grid_model_snaps_forced_locations_to_cells():
    model = build("ram-grid")
    cell = model.grid.locations()[5]
    forced = (cell + 0.01).view(1, 1, 2)
    ro = model.rollout(torch.rand(1, 2, 20, 24), 1, forced_locations=forced)
    assert ro.indices.item() == 5 and torch.equal(ro.locations[0, 0], cell)


def pinned_after_a_noise_walk(location_head: str, steps: int = 100) -> tuple[float, float]:
    """Train only a 256-unit RAM's location head by a policy gradient that is pure noise (the reward does not
    depend on where it looked) and return (fraction of means past +-0.9, mean |mean|). Adam at lr 1e-2 for 100
    steps walks about as far as the demo's 3,000 steps at 1e-3 (the walk grows as lr * sqrt(steps))."""
    torch.manual_seed(0)
    model = create_model("ram", in_channels=1, num_classes=10, image_size=(28, 28), location_head=location_head)
    optimizer = torch.optim.Adam(model.location_net.parameters(), lr=1e-2)
    g = torch.Generator().manual_seed(0)
    states = torch.tanh(torch.randn(64, 256, generator=g) + 0.5)  # [B, H]: GRU-like, not centred
    for _ in range(steps):
        dist = model.location_distribution(states)
        reward = (torch.rand(64, generator=g) < 0.9).float()  # [B], whatever the location
        loss = -(dist.log_prob(dist.sample()) * (reward - 0.9)).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        mean = model.location_distribution(states).mean  # [B, 2]
    return float((mean.abs() > 0.9).float().mean()), float(mean.abs().mean())


def test_scaled_location_head_is_not_walked_to_the_border_by_noise():
    # The demo's old failure in miniature: Adam turns a noise-only policy gradient into steps of ~lr * sum|h|
    # on the mean's pre-activation, and tanh pins the walked-off means to the border.
    pinned, _ = pinned_after_a_noise_walk("linear")
    assert pinned > 0.5
    pinned, size = pinned_after_a_noise_walk("scaled")
    assert pinned == 0 and size < 0.5


def test_location_head_setting_keeps_saved_models_and_checks_its_policy():
    model = build("ram")
    spec = model_spec(model)
    assert spec["config"]["location_head"] == "linear"  # the default: what every earlier run used
    del spec["config"]["location_head"]  # a config saved before the field existed
    old = create_model(spec["name"], **spec["config"])
    old.load_state_dict(model.state_dict())
    h = torch.rand(3, SMALL["hidden_size"])
    assert torch.equal(old.location_distribution(h).mean, model.location_distribution(h).mean)
    scaled = build("ram", location_head="scaled")
    scaled.load_state_dict(model.state_dict())  # same weights, same shapes
    w, b = model.location_net.weight, model.location_net.bias
    expected = torch.tanh(h @ w.T / SMALL["hidden_size"] ** 0.5 + b)
    assert torch.allclose(scaled.location_distribution(h).mean, expected)
    with pytest.raises(ValueError, match="location_head: 'scaled' applies to a Gaussian policy"):
        build("ram-grid", location_head="scaled")


def test_no_gradient_flows_through_locations_into_the_policy_except_log_prob():
    torch.manual_seed(0)
    model = build("ram")
    ro = model.rollout(torch.rand(4, 2, 20, 24), 3)
    ro.logits[:, -1].sum().backward()  # a classification-only loss
    assert model.location_net.weight.grad is None  # stop-gradients 1 and 2
    assert model.baseline_net.weight.grad is None
    assert model.core.cell.weight_hh.grad is not None


def test_policies():
    torch.manual_seed(0)
    images = torch.rand(4, 2, 20, 24)
    model = build("ram")
    ro = model.rollout(images, 2, policy=make_policy("center"))
    assert torch.equal(ro.locations, torch.zeros(4, 2, 2))
    greedy = model.rollout(images, 2, policy=make_policy("greedy"))
    assert torch.equal(greedy.locations[:, 0], torch.tanh(model.location_net.bias).expand(4, 2))
    replay = torch.rand(4, 2, 2) * 2 - 1
    assert torch.equal(model.rollout(images, 2, policy=ReplayPolicy(replay)).locations, replay)
    grid_model = build("ram-grid")
    rnd = grid_model.rollout(images, 3, policy=make_policy("random"))
    assert torch.equal(rnd.locations, grid_model.grid.locations()[rnd.indices])
    with pytest.raises(ValueError, match="expected one of"):
        make_policy("psychic")
