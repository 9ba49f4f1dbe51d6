"""The EPE estimator against an exact answer on a problem small enough to enumerate.

Toy world: four binary 4x4 images, each made of four constant 2x2 blocks (the four cells of a
2x2 grid of 2-pixel glimpses), two classes, a known prior. Block values (cells 0, 1, 2, 3 row-major):

    image  blocks     class  prior
    I1     0 0 0 0    0      0.4
    I2     1 0 0 1    0      0.1
    I3     0 1 0 1    1      0.2
    I4     0 0 1 1    1      0.3

The posterior is the exact Bayes posterior over classes given the observed pixels, and the completion
sampler returns every image with weight proportional to prior x consistency: both exact, so Eq. 6 is
exact and the estimator must equal the hand computation.
"""

import math

import pytest
import torch

from foveal.boed import (CompletionSampler, FirstGlimpse, Posterior, cell_masks, expected_posterior_entropy,
                         first_glimpse, greedy_sequence)
from foveal.logits import posterior_entropy, posterior_log_prob
from foveal.retina import LocationGrid

BLOCKS = torch.tensor([[0, 0, 0, 0], [1, 0, 0, 1], [0, 1, 0, 1], [0, 0, 1, 1]], dtype=torch.float32)
CLASSES = torch.tensor([0, 0, 1, 1])
PRIOR = torch.tensor([0.4, 0.1, 0.2, 0.3])
GRID = LocationGrid.from_stride((4, 4), 2, 2)  # cells at (0,0), (0,2), (2,0), (2,2)
IMAGES = BLOCKS.view(4, 1, 2, 1, 2, 1).expand(4, 1, 2, 2, 2, 2).reshape(4, 1, 4, 4)  # each block -> 2x2 pixels


def consistent(images, masks):
    """[B, 1, 4, 4], [B, 1, 4, 4] -> [B, 4] bool: which world image agrees on every observed pixel."""
    diff = (images[:, None] - IMAGES[None]).abs() * masks[:, None]  # [B, 4, 1, 4, 4]
    return diff.flatten(2).sum(-1) == 0


class ExactPosterior:
    multilabel = False

    def __init__(self):
        self.calls = 0

    def logits(self, images, masks):
        self.calls += 1
        joint = consistent(images, masks).float() * PRIOR  # [B, 4]
        per_class = torch.stack([joint[:, CLASSES == k].sum(1) for k in (0, 1)], dim=1)  # [B, 2]
        return torch.log(per_class / per_class.sum(1, keepdim=True))  # -inf for impossible classes


class ExactSampler:
    def sample(self, image, mask, n, *, generator=None):
        w = consistent(image[None], mask[None])[0].float() * PRIOR
        return IMAGES.clone(), w / w.sum()  # the whole support, whatever n


def H(*p):
    return -sum(q * math.log(q) for q in p if q > 0)


def brute_force_epe(true_index, observed_cells):
    """Eq. 5 by enumeration, with Python floats only (no code shared with the estimator)."""
    value = lambda i, cells: tuple(float(BLOCKS[i, c]) for c in cells)
    prior = PRIOR.tolist()
    # completion weights: the prior restricted to the images matching the true one on the observed cells
    w = [prior[j] * (value(j, observed_cells) == value(true_index, observed_cells)) for j in range(4)]
    w = [x / sum(w) for x in w]
    epe = []
    for cell in range(4):
        cells = observed_cells + [cell]
        total = 0.0
        for i in range(4):  # completion i is seen through cells; the exact posterior given those pixels:
            match = [j for j in range(4) if value(j, cells) == value(i, cells)]
            mass = [sum(prior[j] for j in match if CLASSES[j] == k) for k in (0, 1)]
            total += w[i] * H(*(m / sum(mass) for m in mass))
        epe.append(total)
    return epe


def test_protocols_are_satisfied():
    assert isinstance(ExactPosterior(), Posterior) and isinstance(ExactSampler(), CompletionSampler)


def test_epe_with_nothing_observed_equals_hand_computation():
    # Cell l splits the images by their value there; a singleton side has entropy 0.
    # cell 0: {I1,I3,I4} (mass .9, class split .4/.5) vs {I2}      -> .9 H(4/9) = .9 * 0.68696 = 0.61827
    # cell 1: {I1,I2,I4} (mass .8, .5/.3)              vs {I3}      -> .8 H(3/8) = .8 * 0.66156 = 0.52925
    # cell 2: {I1,I2,I3} (mass .7, .5/.2)              vs {I4}      -> .7 H(2/7) = .7 * 0.59827 = 0.41879
    # cell 3: {I1}                                     vs {I2,I3,I4} (mass .6, .1/.5) -> .6 H(1/6) = 0.27034
    hand = [0.9 * H(4 / 9, 5 / 9), 0.8 * H(3 / 8, 5 / 8), 0.7 * H(2 / 7, 5 / 7), 0.6 * H(1 / 6, 5 / 6)]
    assert hand == pytest.approx([0.61827, 0.52925, 0.41879, 0.27034], abs=1e-5)
    empty = torch.zeros(1, 4, 4)
    images, weights = ExactSampler().sample(torch.zeros(1, 4, 4), empty, 4)
    epe = expected_posterior_entropy(ExactPosterior(), images, weights, empty, GRID)
    assert epe.tolist() == pytest.approx(hand, abs=1e-6)


def test_epe_after_one_glimpse_equals_hand_computation_and_chunking_does_not_matter():
    # True image I3; cell 3 seen (value 1): completions I2, I3, I4 with weights .1/.6, .2/.6, .3/.6.
    # cell 0: I2 -> {I2}; I3, I4 -> {I3, I4} (both class 1): EPE 0
    # cell 1: I3 -> {I3}; I2, I4 -> {I2, I4} (.1/.3): (.4/.6) H(1/4) = 0.37489
    # cell 2: I4 -> {I4}; I2, I3 -> {I2, I3} (.1/.2): (.3/.6) H(1/3) = 0.31827
    # cell 3: nothing new: H(1/6) = 0.45056
    hand = [0.0, 2 / 3 * H(1 / 4, 3 / 4), 0.5 * H(1 / 3, 2 / 3), H(1 / 6, 5 / 6)]
    observed = cell_masks(GRID)[3]
    images, weights = ExactSampler().sample(IMAGES[2] * observed, observed, 4)
    assert weights.tolist() == pytest.approx([0, 1 / 6, 1 / 3, 1 / 2])
    for batch_size in (1, 3, 16):
        post = ExactPosterior()
        epe = expected_posterior_entropy(post, images, weights, observed, GRID, batch_size=batch_size)
        assert epe.tolist() == pytest.approx(hand, abs=1e-6)
        assert post.calls == math.ceil(16 / batch_size)  # 4 cells x 4 completions, batch_size per call
    allowed = torch.tensor([False, True, True, False])
    epe = expected_posterior_entropy(ExactPosterior(), images, weights, observed, GRID, allowed=allowed)
    assert epe[0] == math.inf and epe[3] == math.inf and epe[1:3].tolist() == pytest.approx(hand[1:3], abs=1e-6)


@pytest.mark.parametrize("true_index", range(4))
def test_greedy_sequence_picks_the_brute_force_best_cell_at_every_step(true_index):
    seq = greedy_sequence(IMAGES[true_index], ExactPosterior(), ExactSampler(), GRID, 3, n_completions=4,
                          keep_maps=True)
    assert seq.cells.dtype == torch.long and seq.cells.shape == (3,) and seq.epe_maps.shape == (3, 4)
    chosen = []
    for t in range(3):
        truth = brute_force_epe(true_index, chosen)
        assert seq.epe_maps[t].tolist() == pytest.approx(truth, abs=1e-6)
        assert truth[int(seq.cells[t])] == pytest.approx(min(truth), abs=1e-9)  # a truly best cell
        chosen.append(int(seq.cells[t]))
    assert chosen[0] == 3  # the hand computation: cell 3 has the least EPE with nothing observed


def test_first_glimpse_is_reused_and_its_map_kept():
    post, sampler = ExactPosterior(), ExactSampler()
    first = first_glimpse(post, sampler, GRID, 1, n_completions=4)
    assert isinstance(first, FirstGlimpse) and first.cell == 3
    full = greedy_sequence(IMAGES[2], post, sampler, GRID, 2, n_completions=4, keep_maps=True)
    reused = greedy_sequence(IMAGES[2], post, sampler, GRID, 2, n_completions=4, first_location=first, keep_maps=True)
    assert torch.equal(full.cells, reused.cells) and torch.allclose(full.epe_maps, reused.epe_maps)
    bare = greedy_sequence(IMAGES[2], post, sampler, GRID, 2, n_completions=4, first_location=3, keep_maps=True)
    assert torch.isnan(bare.epe_maps[0]).all() and torch.equal(bare.cells, full.cells)
    cells, maps = greedy_sequence(IMAGES[2], post, sampler, GRID, 2, n_completions=4)
    assert maps is None and cells.tolist() == [3, 0]  # I3 after cell 3: cell 0 separates I2 from I3, I4
    with pytest.raises(ValueError, match="first_location"):
        greedy_sequence(IMAGES[2], post, sampler, GRID, 2, n_completions=4, first_location=7)


def test_entropy_and_log_prob_helpers():
    logits = torch.tensor([[0.0, 0.0], [0.0, -math.inf]])
    assert posterior_entropy(logits).tolist() == pytest.approx([math.log(2), 0.0])
    attrs = torch.tensor([[0.0, 0.0, 30.0]])  # two fair coins and a sure attribute
    assert posterior_entropy(attrs, multilabel=True).item() == pytest.approx(2 * math.log(2), abs=1e-6)
    assert posterior_log_prob(logits, torch.tensor([1, 0])).tolist() == pytest.approx([-math.log(2), 0.0])
    lp = posterior_log_prob(attrs, torch.tensor([[1, 0, 1]]), multilabel=True)
    assert lp.item() == pytest.approx(2 * -math.log(2), abs=1e-6)


def test_errors_name_the_field_expected_and_found():
    images, weights = IMAGES, torch.full((4,), 0.25)
    empty = torch.zeros(1, 4, 4)
    with pytest.raises(ValueError, match=r"weights: expected to sum to 1, found a sum of 0\.5"):
        expected_posterior_entropy(ExactPosterior(), images, weights / 2, empty, GRID)
    with pytest.raises(ValueError, match=r"weights: expected shape \(4,\)"):
        expected_posterior_entropy(ExactPosterior(), images, weights[:3], empty, GRID)
    with pytest.raises(ValueError, match=r"observed_mask: expected shape \(1, 4, 4\).*found \(4, 4\)"):
        expected_posterior_entropy(ExactPosterior(), images, weights, empty[0], GRID)
    with pytest.raises(ValueError, match=r"completions: expected \[N, C, 4, 4\], found \[4, 1, 4, 5\]"):
        expected_posterior_entropy(ExactPosterior(), torch.zeros(4, 1, 4, 5), weights, empty, GRID)
    with pytest.raises(ValueError, match="image: expected"):
        greedy_sequence(IMAGES, ExactPosterior(), ExactSampler(), GRID, 2, n_completions=4)


def posterior_entropy_on(true_index, cells):
    """Entropy of the exact posterior after seeing the true image through ``cells`` (Python floats)."""
    value = lambda i: tuple(float(BLOCKS[i, c]) for c in cells)
    match = [j for j in range(4) if value(j) == value(true_index)]
    mass = [sum(PRIOR[j].item() for j in match if CLASSES[j] == k) for k in (0, 1)]
    return H(*(m / sum(mass) for m in mass))


@pytest.mark.parametrize("true_index", range(4))
def test_hindsight_picks_the_cell_of_least_entropy_on_the_true_image(true_index):
    from foveal.boed.completion import TrueImage

    # given the first cell (the task's, shared with NOGS), every later step takes a cell after which the
    # posterior is surest on this very image; brute force over the cells with Python floats
    seq = greedy_sequence(IMAGES[true_index], ExactPosterior(), TrueImage(IMAGES[true_index]), GRID, 3,
                          n_completions=4, first_location=3, keep_maps=True)
    chosen = [3]
    for t in (1, 2):
        entropies = [posterior_entropy_on(true_index, chosen + [cell]) for cell in range(4)]
        assert seq.epe_maps[t].tolist() == pytest.approx(entropies, abs=1e-6)
        assert int(seq.cells[t]) == min(range(4), key=lambda c: (round(entropies[c], 9), c))
        chosen.append(int(seq.cells[t]))
    # I1 (blocks 0 0 0 0) seen at cell 3 leaves only I1 possible: every next cell is worth 0 nats; the
    # bank-style search, which averages over completions consistent with cell 3, agrees only where they do
    if true_index == 0:
        assert seq.epe_maps[1].tolist() == pytest.approx([0.0] * 4)


def test_hindsight_differs_from_the_expected_entropy_where_the_completions_disagree():
    from foveal.boed.completion import TrueImage

    # true image I3 with cell 3 seen (value 1: I2, I3 or I4). Expected over those completions (the hand
    # computation above): [0, 0.37489, 0.31827, 0.45056]. On I3 itself: cell 0 (value 0: I3 or I4, both
    # class 1) and cell 1 (value 1: I3 alone) leave no doubt, cell 2 (value 0: I2 or I3, .1 vs .2) the most
    # of all, H(1/3) = 0.63651; cell 3 adds nothing, H(1/6) = 0.45056
    observed = [3]
    on_truth = [posterior_entropy_on(2, observed + [c]) for c in range(4)]
    assert on_truth == pytest.approx([0.0, 0.0, H(1 / 3, 2 / 3), H(1 / 6, 5 / 6)], abs=1e-6)
    expected = brute_force_epe(2, observed)
    seq = greedy_sequence(IMAGES[2], ExactPosterior(), TrueImage(IMAGES[2]), GRID, 2, n_completions=4,
                          first_location=3, keep_maps=True)
    assert seq.epe_maps[1].tolist() == pytest.approx(on_truth, abs=1e-6)
    assert seq.epe_maps[1].tolist() != pytest.approx(expected, abs=1e-3)


def test_true_image_sampler_returns_the_image_alone_and_checks_its_shape():
    from foveal.boed.completion import TrueImage

    sampler = TrueImage(IMAGES[1])
    images, weights = sampler.sample(IMAGES[1] * 0, torch.zeros(1, 4, 4), 200)
    assert torch.equal(images, IMAGES[1][None]) and weights.tolist() == [1.0]
    assert isinstance(sampler, CompletionSampler)
    with pytest.raises(ValueError, match=r"TrueImage.sample: expected an image of shape \(1, 4, 4\), found \(1, 4, 5\)"):
        sampler.sample(torch.zeros(1, 4, 5), torch.zeros(1, 4, 4), 1)
