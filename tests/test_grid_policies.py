"""Policies over a location grid: never a cell twice, the right order on hand-made inputs, and the
Saccader's and DRAM's learned policies driving other models."""

import pytest
import torch
from torch import nn

from foveal.models import create_model
from foveal.models.bagnet import GridMaps
from foveal.models.base import PolicyState
from foveal.policies import make_policy
from foveal.policies.basic import greedy_policy
from foveal.policies.grid import (CenterPolicy, ModelPolicy, OrderedLogitsPolicy, SaccaderPolicy, SobelPolicy,
                                  patch_statistics, visited_cells)
from foveal.retina import LocationGrid
from foveal.saliency import sobel_magnitude

TINY = {"in_channels": 1, "num_classes": 3, "image_size": (28, 28), "width": 2, "what_dim": 4}


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def saccader():
    torch.manual_seed(0)
    return create_model("saccader", **TINY).eval()


@pytest.mark.parametrize("name", ["random", "center", "ordered-logits", "sobel-mean", "sobel-variance", "learned"])
def test_every_policy_visits_every_cell_once(name, saccader):
    torch.manual_seed(0)
    images = torch.rand(3, 1, 28, 28)
    G = len(saccader.grid)
    bagnet = create_model("bagnet", **TINY).eval()
    ro = bagnet.rollout(images, G, policy=make_policy(name, model=saccader))
    assert all(sorted(row.tolist()) == list(range(G)) for row in ro.indices), name


def test_policies_return_cell_centres_and_snap_the_memory():
    grid = LocationGrid.from_stride((12, 12), 4, 4)  # 3 x 3 cells
    seen = grid.locations()[torch.tensor([[4, 0]])] + 0.01  # a little off the centres
    assert visited_cells(seen, grid).tolist() == [[1, 0, 0, 0, 1, 0, 0, 0, 0]]
    policy = CenterPolicy()
    images = torch.zeros(1, 1, 12, 12)
    first = policy(PolicyState(0, None, seen[:, :0], None, grid), images)
    assert grid.nearest_index(first).item() == 4  # the centre cell
    nxt = policy(PolicyState(1, None, seen[:, :1], None, grid), images)
    assert grid.nearest_index(nxt).item() in (1, 3, 5, 7)  # then one of its nearest neighbours
    # one meaning on every model: without a grid, the centre itself; random is uniform in [-1, 1]^2
    assert torch.equal(policy(PolicyState(0, None, seen[:, :0], None, None), images), torch.zeros(1, 2))
    torch.manual_seed(0)
    anywhere = make_policy("random")(PolicyState(0, None, seen[:, :0], None, None), torch.zeros(500, 1, 12, 12))
    assert anywhere.min() >= -1 and anywhere.max() <= 1 and anywhere.std() > 0.5
    with pytest.raises(ValueError, match="needs a location grid"):
        SobelPolicy("mean")(PolicyState(0, None, seen[:, :0], None, None), images)


def test_sobel_statistics_match_a_loop_and_rank_the_edge_first():
    grid = LocationGrid.from_stride((12, 12), 4, 4)
    images = torch.zeros(2, 1, 12, 12)
    images[0, 0, 4:8, 9:] = 1.0  # a bright bar in the middle-right cell (index 5): edges there
    images[1, 0] = torch.rand(12, 12)
    mag = sobel_magnitude(images)
    assert mag[0, 0, 0, 0] == 0  # flat border: no false edge from padding
    for stat in ("mean", "variance"):
        fast = patch_statistics(mag, grid, stat)
        for g, (r, c) in enumerate(grid.corners().tolist()):
            patch = mag[:, 0, r:r + 4, c:c + 4].flatten(1)
            ref = patch.mean(1) if stat == "mean" else patch.var(1, unbiased=False)
            assert torch.allclose(fast[:, g], ref, atol=1e-5)
        policy = make_policy(f"sobel-{stat}")
        loc = policy(PolicyState(0, None, torch.zeros(2, 0, 2), None, grid), images)
        assert grid.nearest_index(loc)[0].item() == 5


class Logits(nn.Module):
    def __init__(self, logits, grid):
        super().__init__()
        self.logits, self.grid = logits, grid

    def encode(self, images):
        return GridMaps(None, None, self.logits)


def test_ordered_logits_follow_the_largest_logit():
    grid = LocationGrid.from_stride((8, 8), 4, 4)  # 2 x 2 cells
    logits = torch.tensor([[[[0.0, 5.0], [1.0, -1.0]], [[3.0, 0.0], [0.0, 4.0]]]])  # max per cell: 3, 5, 1, 4
    policy = OrderedLogitsPolicy(Logits(logits, grid))
    seen = torch.zeros(1, 0, 2)
    order = []
    for t in range(4):
        loc = policy(PolicyState(t, None, seen, None, grid), torch.zeros(1, 1, 8, 8))
        order.append(grid.nearest_index(loc).item())
        seen = torch.cat([seen, loc[:, None]], 1)
    assert order == [1, 3, 0, 2]
    with pytest.raises(ValueError, match="grid model with encode"):
        OrderedLogitsPolicy(nn.Linear(1, 1))


def test_saccader_policy_drives_another_classifier_as_it_drives_itself(saccader):
    torch.manual_seed(1)
    images = torch.rand(4, 1, 28, 28)
    own = saccader.rollout(images, 6, policy=greedy_policy)
    bagnet = create_model("bagnet", **TINY).eval()
    driven = bagnet.rollout(images, 6, policy=SaccaderPolicy(saccader))
    assert torch.equal(own.indices, driven.indices)
    sampled = bagnet.rollout(images, 6, policy=SaccaderPolicy(saccader, sample=True))
    assert all(len(set(row.tolist())) == 6 for row in sampled.indices)


def test_model_policy_replays_a_recurrent_models_greedy_locations():
    torch.manual_seed(0)
    dram = create_model("dram", in_channels=1, num_classes=3, image_size=(28, 28), glimpse_size=6, hidden_size=8,
                        glimpse_hidden=8, location_hidden=8, feature_size=8, context_size=8)
    images = torch.rand(2, 1, 28, 28)
    own = dram.rollout(images, 5, policy=greedy_policy).locations
    replay = ModelPolicy(dram, horizon=2)  # shorter than asked: extended on the way
    assert torch.allclose(dram.rollout(images, 5, policy=replay).locations, own)
    assert isinstance(make_policy("learned", model=dram), ModelPolicy)


def test_unknown_names_and_missing_models_are_errors():
    with pytest.raises(ValueError, match="expected one of"):
        make_policy("psychic")
    with pytest.raises(ValueError, match="needs a model"):
        make_policy("ordered-logits")
    with pytest.raises(ValueError, match="SobelPolicy.statistic"):
        SobelPolicy("median")
