"""Early exit (foveal.models.early_exit): every glimpse and grid model stops per image, looks again only at the
undecided images, reproduces the fixed-T rollout when the rule never fires, and gives exact answers on a toy."""

import math

import pytest
import torch

from foveal.models import MODELS, create_model
from foveal.models.bagnet import grid_rollout
from foveal.models.early_exit import (ConfidenceExit, EntropyExit, LearnedExit, make_exit_rule, supports_early_exit,
                                      truncate_rollout)
from foveal.policies.basic import ReplayPolicy, greedy_policy
from foveal.retina import LocationGrid

SMALL = {"in_channels": 2, "num_classes": 3, "image_size": (20, 24), "glimpse_size": 6, "hidden_size": 16,
         "glimpse_hidden": 8, "location_hidden": 8, "feature_size": 16}
TINY_GRID = {"in_channels": 2, "num_classes": 3, "image_size": (28, 28), "width": 2, "what_dim": 4}
BUILD = {"ram-grid": {**SMALL, "grid": (3, 4)}, "ram-grid-ws": {**SMALL, "grid": (3, 4)}, "bagnet": TINY_GRID,
         "saccader": TINY_GRID, "saccader-patch": {**TINY_GRID, "patch_widths": (4,), "patch_strides": (2,)}}
ROLLOUT_MODELS = MODELS.names(kind="glimpse") + MODELS.names(kind="grid")


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def build(name):
    torch.manual_seed(0)
    model = create_model(name, **BUILD.get(name, SMALL)).eval()
    images = torch.rand(12, 2, *model.config.image_size)
    return model, images


class CountingPolicy:
    """Greedy, and counts the images it is asked about at each step: the images still being looked at."""

    def __init__(self):
        self.rows = []

    def __call__(self, state, images):
        self.rows.append(images.shape[0])
        return greedy_policy(state, images)


@pytest.mark.parametrize("name", ROLLOUT_MODELS)
def test_a_rule_that_never_fires_reproduces_the_fixed_rollout_exactly(name):
    model, images = build(name)
    assert supports_early_exit(model)
    with torch.no_grad():
        fixed = model.rollout(images, 4, policy=greedy_policy)
        never = model.rollout(images, 4, policy=greedy_policy, exit_rule=ConfidenceExit(1.01))
    assert never.glimpses.tolist() == [4] * 12
    for field in ("locations", "log_prob", "logits", "baseline", "indices", "entropy"):
        a, b = getattr(fixed, field), getattr(never, field)
        assert (a is None and b is None) or torch.equal(a, b), field


@pytest.mark.parametrize("name", ROLLOUT_MODELS)
def test_stopped_images_take_no_more_glimpses_and_match_the_truncated_rollout(name):
    model, images = build(name)
    with torch.no_grad():
        fixed = model.rollout(images, 4, policy=greedy_policy)
        # a threshold between the confidences after the first glimpse: some images stop there, some go on
        first = fixed.logits[:, 0].softmax(-1).amax(-1)
        rule = ConfidenceExit(float(first.median()) + 1e-6)
        counting = CountingPolicy()
        early = model.rollout(images, 4, policy=counting, exit_rule=rule)
    reference = truncate_rollout(fixed, rule)
    taken = early.glimpses
    assert torch.equal(taken, reference.glimpses) and 1 <= taken.min() < taken.max()
    if name != "saccader-patch":  # its frozen Saccader picks every cell; only its patch CNN skips stopped images
        assert counting.rows == [int((taken > t).sum()) for t in range(4) if (taken > t).any()]
    assert torch.equal(early.logits.argmax(-1), reference.logits.argmax(-1))
    torch.testing.assert_close(early.logits, reference.logits, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(early.locations, reference.locations)
    steps = torch.arange(4)
    after = steps[None] >= taken[:, None]  # [B, T] steps not taken: zero log-prob, location and logits repeated
    assert (early.log_prob[after] == 0).all() and (early.entropy[after] == 0).all()
    last = early.locations[torch.arange(12), taken - 1]
    assert torch.equal(early.locations[:, -1], last)


def test_the_recurrent_core_runs_only_for_the_undecided_images():
    model, images = build("ram")
    rows = []
    model.core.register_forward_hook(lambda module, args, out: rows.append(args[0].shape[0]))
    with torch.no_grad():
        first = model.rollout(images, 3, policy=greedy_policy).logits[:, 0].softmax(-1).amax(-1)
        rows.clear()
        ro = model.rollout(images, 3, policy=greedy_policy, exit_rule=ConfidenceExit(float(first.median()) + 1e-6))
    assert rows == [int((ro.glimpses > t).sum()) for t in range(3) if (ro.glimpses > t).any()] and rows[1] < 12


def toy():
    """3 images, 4 cells read in index order, 2 classes; logits chosen so that p(class 0) after each glimpse is known."""
    grid = LocationGrid.from_count((4, 4), 2, 2)  # 2 x 2 cells
    nine = math.log(9)
    cells = torch.tensor([[[nine, 0.0], [0.0, 0.0], [0.0, 0.0], [0.0, 0.0]],   # image 0: p0 = 0.9 after 1
                          [[0.0, 0.0], [2 * nine, 0.0], [0.0, 0.0], [0.0, 0.0]],  # image 1: 0.5, then 0.9 after 2
                          [[0.0, 0.0], [0.0, 0.0], [0.0, 0.0], [0.0, 0.0]]])  # image 2: 0.5 throughout
    logit_map = cells.transpose(1, 2).reshape(3, 2, 2, 2)  # [B, K, h, w], cell g = i * w + j
    order = grid.index_to_location(torch.arange(4)).expand(3, 4, 2)
    return grid, logit_map, ReplayPolicy(order)


@pytest.mark.parametrize("rule, taken", [(ConfidenceExit(0.85), [1, 2, 4]), (ConfidenceExit(0.95), [4, 4, 4]),
                                         (EntropyExit(0.33), [1, 2, 4]), (EntropyExit(0.3), [4, 4, 4])])
def test_exact_stops_on_a_toy(rule, taken):
    grid, logit_map, policy = toy()
    # entropy of (0.9, 0.1) = 0.325 nats: 0.33 stops there, 0.3 does not
    ro = grid_rollout(grid, grid.locations(), logit_map, lambda visited, rows: torch.zeros_like(visited), 4,
                      torch.zeros(3, 1, 4, 4), policy=policy, exit_rule=rule)
    assert ro.glimpses.tolist() == taken
    p0 = ro.logits[:, -1].softmax(-1)[:, 0]
    # stopped: the mean of the logits read so far; never stopped: (ln 9 / 4, 0) -> 3^.5 / (3^.5 + 1), (ln 9 / 2, 0) -> 3/4
    expected = [0.9, 0.9, 0.5] if taken[0] == 1 else [3 ** 0.5 / (3 ** 0.5 + 1), 0.75, 0.5]
    torch.testing.assert_close(p0, torch.tensor(expected), atol=1e-6, rtol=0)
    assert ro.indices[0].tolist() == ([0, 0, 0, 0] if taken[0] == 1 else [0, 1, 2, 3])


def test_rule_names_and_errors():
    assert isinstance(make_exit_rule("entropy", 0.2), EntropyExit)
    with pytest.raises(ValueError, match="exit rule: expected one of"):
        make_exit_rule("patience", 0.5)
    with pytest.raises(ValueError, match="threshold expected a finite number"):
        make_exit_rule("confidence", float("nan"))
    with pytest.raises(ValueError, match="stop head"):
        LearnedExit()(1, torch.zeros(2, 3), None)


@pytest.mark.parametrize("policy", ["random", "sobel-mean", "ordered-logits", "center"])
def test_ranking_policies_keep_their_order_for_the_images_still_looking(policy):
    from foveal.policies import make_policy

    model, images = build("bagnet")
    with torch.no_grad():
        torch.manual_seed(3)
        fixed = model.rollout(images, 4, policy=make_policy(policy, model=model))
        rule = ConfidenceExit(float(fixed.logits[:, 0].softmax(-1).amax(-1).median()) + 1e-6)
        torch.manual_seed(3)
        early = model.rollout(images, 4, policy=make_policy(policy, model=model), exit_rule=rule)
    reference = truncate_rollout(fixed, rule)
    assert torch.equal(early.glimpses, reference.glimpses) and torch.equal(early.indices, reference.indices)
