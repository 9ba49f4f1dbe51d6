"""The Saccader paper's models and training stages: BagNet receptive fields, the Saccader cell (Eq. 1-3)
and its memory, the three stage losses (Eq. 4-6) against hand computations, stage chaining and resume,
DRAM, the patch classifier, and registry-wide shape / gradient checks for every model registered here."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from foveal.checkpoint import save_checkpoint
from foveal.models import MODELS, create_model, model_spec
from foveal.models.bagnet import LAYOUTS, BagNetConfig, GridMaps, auto_layout
from foveal.models.base import Rollout
from foveal.models.saccader import SaccaderCell
from foveal.policies.basic import greedy_policy
from foveal.training import TrainConfig, fit
from foveal.training.algorithms import ALGORITHMS, build_algorithm
from foveal.training.reinforce import Reinforce, ReinforceConfig
from foveal.training.saccader import (LocationConfig, LocationPretraining, RepresentationConfig,
                                      RepresentationPretraining, SaccaderReinforce, SaccaderReinforceConfig,
                                      sorted_logit_targets)


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


TINY = {"in_channels": 2, "num_classes": 3, "image_size": (28, 28), "width": 2, "what_dim": 4}
BUILD = {"bagnet": TINY, "saccader": TINY, "saccader-patch": {**TINY, "patch_widths": (4,), "patch_strides": (2,)},
         "small-cnn": {"in_channels": 2, "num_classes": 3, "image_size": (28, 28), "widths": (4, 4), "strides": (1, 2)},
         "dram": {"in_channels": 2, "num_classes": 3, "image_size": (28, 28), "glimpse_size": 6, "glimpse_hidden": 8,
                  "location_hidden": 8, "feature_size": 8, "hidden_size": 8, "context_size": 8}}
MINE = sorted(BUILD)


def test_every_model_of_this_module_is_registered_with_its_kind():
    assert set(MODELS.names(kind="grid")) >= {"bagnet", "saccader", "saccader-patch"}
    assert "small-cnn" in MODELS.names(kind="classifier") and "dram" in MODELS.names(kind="glimpse")
    assert {"saccader-representation", "saccader-location", "saccader-reinforce"} <= set(ALGORITHMS.names())


@pytest.mark.parametrize("name", MINE)
def test_shapes_every_parameter_learns_and_spec_rebuilds(name):
    torch.manual_seed(0)
    model = create_model(name, **BUILD[name])
    images, labels = torch.rand(5, 2, 28, 28), torch.tensor([0, 1, 2, 0, 1])
    if name == "small-cnn":
        logits = model(images)
        assert logits.shape == (5, 3)
        loss = F.cross_entropy(logits, labels)
    else:
        ro = model.rollout(images, 4)
        assert ro.locations.shape == (5, 4, 2) and ro.log_prob.shape == (5, 4) and ro.baseline.shape == (5, 4)
        assert ro.logits.shape == (5, 4, 3) and ro.entropy.shape == (5, 4) and ro.locations.abs().max() <= 1
        # classification + the policy's log-likelihood: every learnable parameter lies on one of these paths
        loss = F.cross_entropy(ro.logits[:, -1], labels) - ro.log_prob.sum() - ro.baseline.sum()
    loss.backward()
    learnable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    assert learnable
    for pname, p in learnable:
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, pname
    if name == "saccader-patch":  # the Saccader inside is frozen
        assert all(p.grad is None for p in model.saccader.parameters())
    spec = model_spec(model)
    clone = create_model(spec["name"], **spec["config"])
    clone.load_state_dict(model.state_dict())


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_receptive_field_is_exactly_the_cells_patch(layout):
    """Eval mode (BatchNorm as a fixed affine map): the logits of cell (i, j) have a zero gradient
    outside the R x R patch at (i S, j S), and a nonzero one on its first and last rows and columns."""
    probe = BagNetConfig(1, 3, (512, 512), layout=layout)
    R, S = probe.receptive_field, probe.stride
    size = R + 2 * S  # a 3 x 3 grid
    torch.manual_seed(0)
    model = create_model("bagnet", in_channels=1, num_classes=3, image_size=(size, size), layout=layout, width=4,
                         what_dim=16).eval()
    assert model.grid.shape == (3, 3)
    x = torch.rand(4, 1, size, size, requires_grad=True)
    logits = model.encode(x).logits
    assert logits.shape[2:] == (3, 3)
    for i, j in ((1, 1), (0, 2), (2, 0)):
        (grad,) = torch.autograd.grad(logits[:, :, i, j].abs().sum(), x, retain_graph=True)
        touched = grad.abs().sum((0, 1)) > 0  # [size, size]
        rows, cols = touched.any(1).nonzero()[:, 0], touched.any(0).nonzero()[:, 0]
        assert (rows.min().item(), rows.max().item()) == (i * S, i * S + R - 1), layout
        assert (cols.min().item(), cols.max().item()) == (j * S, j * S + R - 1), layout


def test_layouts_follow_the_image_size_and_bad_settings_are_named():
    assert [auto_layout((s, s)) for s in (224, 128, 60, 28)] == ["bagnet-77", "bagnet-49", "bagnet-19", "bagnet-9"]
    assert BagNetConfig(3, 10, (224, 224)).receptive_field == 77 and BagNetConfig(3, 10, (224, 224)).stride == 8
    assert BagNetConfig(3, 10, (224, 224)).make_grid().shape == (19, 19)  # the paper's 361 locations
    with pytest.raises(ValueError, match="BagNetConfig.layout"):
        BagNetConfig(1, 3, (28, 28), layout="bagnet-5")
    with pytest.raises(ValueError, match="BagNetConfig.kernel3"):
        BagNetConfig(1, 3, (28, 28), kernel3=(2, 1, 0, 0))
    with pytest.raises(ValueError, match="receptive field 77"):
        BagNetConfig(1, 3, (60, 60), layout="bagnet-77")


def test_saccader_cell_matches_eq_1_to_3_by_hand():
    cell = SaccaderCell(2)
    with torch.no_grad():
        cell.a.copy_(torch.tensor([1.0, -2.0]))
    Fm = torch.tensor([[[[0.5, -1.0, 2.0]], [[1.0, 0.0, -0.5]]]])  # [1, d=2, h=1, w=3]
    visited = torch.tensor([[0.0, 1.0, 0.0]])
    cols = [[0.5, 1.0], [-1.0, 0.0], [2.0, -0.5]]  # F_ij as vectors over the d channels
    g = [(f[0] * 1.0 + f[1] * -2.0) / math.sqrt(2) - 1e5 * v for f, v in zip(cols, [0, 1, 0])]
    gt = [math.exp(x - max(g)) for x in g]
    gt = [x / sum(gt) for x in gt]
    h = [sum(cols[g_][k] * gt[g_] for g_ in range(3)) for k in range(2)]
    ht = [math.exp(x) / sum(math.exp(y) for y in h) for x in h]
    r = [sum(cols[g_][k] * ht[k] for k in range(2)) - 1e5 * v for g_, v in zip(range(3), [0, 1, 0])]
    assert torch.allclose(cell(Fm, visited), torch.tensor([r]), atol=1e-4)


def _saccader(**over):
    return create_model("saccader", **{**TINY, **over})


def test_no_cell_is_visited_twice_greedy_or_sampled():
    torch.manual_seed(0)
    model = _saccader().eval()
    G = len(model.grid)
    images = torch.rand(3, 2, 28, 28)
    for policy in (greedy_policy, None):  # arg-max, and sampling from the cell's policy
        for _ in range(3):
            ro = model.rollout(images, G, policy=policy)
            assert all(sorted(row.tolist()) == list(range(G)) for row in ro.indices)
            assert torch.isfinite(ro.log_prob).all()
            assert torch.equal(ro.locations, model.grid.locations()[ro.indices])
    with pytest.raises(ValueError, match="at most the 100 cells"):
        model.rollout(images, G + 1)


def test_rollout_logits_are_the_running_mean_of_the_cells_logits():
    torch.manual_seed(0)
    model = _saccader().eval()
    images = torch.rand(2, 2, 28, 28)
    ro = model.rollout(images, 3, policy=greedy_policy)
    cells = model.encode(images).logits.flatten(2).transpose(1, 2)  # [B, G, K]
    picked = torch.stack([cells[b, ro.indices[b]] for b in range(2)])  # [B, T, K]
    for t in range(3):
        assert torch.allclose(ro.logits[:, t], picked[:, :t + 1].mean(1), atol=1e-6)
    forced = model.grid.locations()[torch.tensor([[5, 7, 9], [1, 2, 3]])]
    assert model.rollout(images, 3, forced_locations=forced).indices.tolist() == [[5, 7, 9], [1, 2, 3]]


class FixedMaps(nn.Module):
    """A stand-in grid model with given logits (and mixed features), for hand computations."""

    def __init__(self, logits, mixed=None, a=None):
        super().__init__()
        self.logits = logits
        self.mixed = mixed
        self.representation = nn.Linear(1, 1)
        self.attention, self.mix = nn.Identity(), nn.Identity()
        self.cell = SaccaderCell(mixed.shape[1] if mixed is not None else 1)
        if a is not None:
            with torch.no_grad():
                self.cell.a.copy_(a)

    def encode(self, images):
        return GridMaps(None, None, self.logits)

    def mixed_features(self, maps):
        return self.mixed


def test_eq4_representation_loss_by_hand():
    z = torch.tensor([[[[2.0, 0.0]], [[0.0, 1.0]]]])  # [B=1, K=2, h=1, w=2]
    model = FixedMaps(z)
    with torch.no_grad():
        model.representation.weight.fill_(3.0)
    alg = RepresentationPretraining(RepresentationConfig(l2=0.5))
    out = alg.loss(model, {"image": torch.zeros(1), "label": torch.tensor([1])})
    lp = lambda zs, k: zs[k] - math.log(sum(math.exp(v) for v in zs))  # noqa: E731
    cells = [[2.0, 0.0], [0.0, 1.0]]  # logits of cell 0 and cell 1 over the 2 classes
    avg = [(lp(cells[0], k) + lp(cells[1], k)) / 2 for k in range(2)]
    ce = -(avg[1] - math.log(math.exp(avg[0]) + math.exp(avg[1])))
    assert out.logs["ce"] == pytest.approx(ce, abs=1e-6)
    assert out.loss.item() == pytest.approx(ce + 0.5 / 2 * 9.0, abs=1e-5)  # the weight only, not the bias


def test_eq5_location_loss_by_hand():
    z = torch.tensor([[[[0.0, 3.0, 1.0]], [[2.0, -1.0, 0.5]]]])  # max logit per cell: 2, 3, 1 -> order 1, 0, 2
    assert sorted_logit_targets(z, 3).tolist() == [[1, 0, 2]]
    mixed = torch.tensor([[[[0.5, -1.0, 2.0]], [[1.0, 0.0, -0.5]]]])
    model = FixedMaps(z, mixed, a=torch.tensor([1.0, -2.0]))
    nll = LocationPretraining(LocationConfig(steps=2)).loss(model, {"image": torch.zeros(1), "label": torch.zeros(1)})
    cols = [[0.5, 1.0], [-1.0, 0.0], [2.0, -0.5]]

    def policy(visited):
        g = [(f[0] - 2 * f[1]) / math.sqrt(2) - 1e5 * v for f, v in zip(cols, visited)]
        gt = [math.exp(x - max(g)) for x in g]
        h = [sum(cols[i][k] * gt[i] / sum(gt) for i in range(3)) for k in range(2)]
        ht = [math.exp(x) / sum(math.exp(y) for y in h) for x in h]
        r = [sum(cols[i][k] * ht[k] for k in range(2)) - 1e5 * v for i, v in zip(range(3), visited)]
        return [x - max(r) - math.log(sum(math.exp(y - max(r)) for y in r)) for x in r]  # log-softmax

    expected = -(policy([0, 0, 0])[1] + policy([0, 1, 0])[0])  # targets 1 then 0, memory of cell 1
    assert nll.loss.item() == pytest.approx(expected, abs=1e-4)


class FixedRollout(nn.Module):
    def __init__(self, log_prob, logits):
        super().__init__()
        self.representation = nn.Linear(1, 1, bias=False)
        self.attention, self.mix, self.cell = nn.Identity(), nn.Identity(), nn.Identity()
        self.out = (log_prob, logits)

    def rollout(self, images, T, policy=None, forced_locations=None):
        log_prob, logits = self.out
        assert images.shape[0] == log_prob.shape[0] and policy is None  # S * B trajectories, sampled
        return Rollout(torch.zeros(*log_prob.shape, 2), log_prob, logits, torch.zeros_like(log_prob),
                       entropy=torch.zeros_like(log_prob))


def test_eq6_reinforce_loss_by_hand():
    # B = 2 images, S = 2 samples: trajectory rows are (s0 b0, s0 b1, s1 b0, s1 b1); T = 2
    log_prob = torch.tensor([[-1.0, -2.0], [-0.5, -0.5], [-3.0, -1.0], [-1.0, -1.0]])
    final = torch.tensor([[2.0, 0.0], [2.0, 0.0], [0.0, 1.0], [1.0, 0.0]])  # predictions 0, 0, 1, 0
    logits = torch.stack([torch.zeros(4, 2), final], 1)
    model = FixedRollout(log_prob, logits)
    alg = SaccaderReinforce(SaccaderReinforceConfig(num_glimpses=2, samples=2, reinforce_weight=0.5, l2=0.0))
    out = alg.loss(model, {"image": torch.zeros(2, 1, 1, 1), "label": torch.tensor([0, 1])})
    labels = [0, 1, 0, 1]
    rewards = [1.0, 0.0, 0.0, 0.0]  # 0 == 0, 0 != 1, 1 != 0, 0 != 1
    b = sum(rewards) / 4
    pg = -sum(sum(log_prob[i].tolist()) * (rewards[i] - b) for i in range(4)) / 2  # sum over S, mean over B
    ce = sum(-(final[i, labels[i]] - torch.logsumexp(final[i], 0)).item() for i in range(4)) / 4
    assert out.logs["accuracy"] == b and out.logs["reinforce"] == pytest.approx(pg)
    assert out.loss.item() == pytest.approx(ce + 0.5 * pg, abs=1e-6)


class Noise(Dataset):
    def __init__(self, n=16):
        g = torch.Generator().manual_seed(0)
        self.x, self.y = torch.rand(n, 2, 28, 28, generator=g), torch.arange(n) % 3

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return {"image": self.x[i], "label": self.y[i], "index": i}


def _fit(model, alg, run, iterations, stop_after=None):
    cfg = TrainConfig(iterations=iterations, batch_size=4, lr=1e-2, val_every=2, val_batches=1, tensorboard=False)
    return fit(model, alg, Noise(), Noise(8), cfg, run, stop_after=stop_after, info={"model": model_spec(model)})


def test_stages_chain_through_init_from_freeze_the_representation_and_resume_exactly(tmp_path):
    torch.manual_seed(0)
    stage1 = _saccader()
    _fit(stage1, build_algorithm("saccader-representation", num_glimpses=2), tmp_path / "s1", 2)
    best1 = str(tmp_path / "s1" / "checkpoints" / "best")
    torch.manual_seed(1)
    stage2 = create_model("saccader", init_from=best1, **TINY)
    before = {k: v.clone() for k, v in stage2.representation.state_dict().items()}
    assert all(torch.equal(before[k], v) for k, v in stage1.representation.state_dict().items())
    alg = LocationPretraining(LocationConfig(steps=3, num_glimpses=2))
    _fit(stage2, alg, tmp_path / "s2", 3)
    for k, v in stage2.representation.state_dict().items():  # weights and BN statistics untouched
        assert torch.equal(v, before[k]), k
    # a killed and resumed stage ends where an uninterrupted one does
    runs = {}
    for name, stop in (("straight", None), ("killed", 2)):
        torch.manual_seed(2)
        model = create_model("saccader", init_from=best1, **TINY)
        _fit(model, SaccaderReinforce(SaccaderReinforceConfig(num_glimpses=2)), tmp_path / name, 4, stop_after=stop)
        if stop:
            torch.manual_seed(99)
            model = create_model("saccader", init_from=best1, **TINY)
            _fit(model, SaccaderReinforce(SaccaderReinforceConfig(num_glimpses=2)), tmp_path / name, 4)
        runs[name] = model.state_dict()
    assert all(torch.equal(runs["straight"][k], runs["killed"][k]) for k in runs["straight"])
    dram = create_model("dram", **BUILD["dram"])
    save_checkpoint(tmp_path / "dram", model=dram, rng=False, info={"model": model_spec(dram)})
    with pytest.raises(ValueError, match="expected a checkpoint of a 'bagnet' or 'saccader'"):
        create_model("saccader", init_from=str(tmp_path / "dram"), **TINY)


def test_stage_settings_are_checked():
    with pytest.raises(ValueError, match="LocationConfig.steps"):
        LocationConfig(steps=0)
    with pytest.raises(ValueError, match="SaccaderReinforceConfig.eval_policy"):
        SaccaderReinforceConfig(eval_policy="psychic")
    with pytest.raises(ValueError, match="unknown setting"):
        build_algorithm("saccader-reinforce", num_samples=2)


def test_dram_first_glimpse_depends_on_the_image_and_trains_with_reinforce():
    torch.manual_seed(0)
    model = create_model("dram", **BUILD["dram"])
    images = torch.rand(4, 2, 28, 28)
    ro = model.rollout(images, 3, policy=greedy_policy)
    assert not torch.allclose(ro.locations[0, 0], ro.locations[1, 0])  # the context network sees the image
    out = Reinforce(ReinforceConfig(num_glimpses=3)).loss(model, {"image": images, "label": torch.tensor([0, 1, 2, 0])})
    out.loss.backward()
    assert all(p.grad is not None for p in model.parameters())
    # stop-gradient 2: a classification-only loss reaches neither the context network nor r2
    model.zero_grad()
    model.rollout(images, 3).logits[:, -1].sum().backward()
    location_path = [*model.context.parameters(), *model.r2.parameters(), *model.emission.parameters()]
    assert all(p.grad is None for p in location_path)
    assert model.r1.weight_hh.grad is not None


def test_patch_classifier_cuts_high_resolution_patches_where_the_policy_looks():
    torch.manual_seed(0)
    model = create_model("saccader-patch", **{**BUILD["saccader-patch"], "image_size": (56, 56),
                                              "policy_image_size": (28, 28)})
    assert model.config.glimpse_size == 2 * model.saccader.config.receptive_field
    images = torch.rand(2, 2, 56, 56)
    ro = model.rollout(images, 3, policy=greedy_policy)
    small = model.saccader.rollout(F.avg_pool2d(images, 2), 3, policy=greedy_policy)
    assert torch.equal(ro.indices, small.indices) and ro.logits.shape == (2, 3, 3)
    model.train()
    assert not model.saccader.training and model.patch_net.training
    with pytest.raises(ValueError, match="policy_image_size"):
        create_model("saccader-patch", **{**TINY, "image_size": (56, 56), "policy_image_size": (30, 30)})
