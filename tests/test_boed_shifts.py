"""BankSampler's marginalisation of small shifts of the bank images (the exact stage)."""

import pytest
import torch

from foveal.boed import cell_masks
from foveal.boed.bank import ImageBank
from foveal.boed.completion import BankSampler, shift_images, shift_offsets
from foveal.retina import LocationGrid

GRID = LocationGrid.from_stride((8, 8), 4, 4)  # 4 disjoint 4x4 cells


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def pinned_bank():
    """The bank of tests/test_boed_bank.py's make_bank (60 images + flips; 1 agrees with 0 on cells 0, 3)."""
    g = torch.Generator().manual_seed(1)
    images = torch.rand(60, 1, 8, 8, generator=g)
    observed = cell_masks(GRID)[[0, 3]].amax(0)
    images[1] = images[0] * observed + images[1] * (1 - observed)
    return ImageBank.from_tensor(images, flips=True), images[0], observed


def test_shifts_zero_reproduces_the_results_from_before_shifts_existed():
    """Numbers printed by the sampler before the ``shifts`` option was added (commit 2739600), bit for bit."""
    bank, truth, observed = pinned_bank()
    for kwargs in ({}, {"shifts": 0}):
        sampler = BankSampler(bank, GRID, pca_components=4, n_proposals=20, target_ess=0.3, **kwargs)
        indices, w = sampler.proposals(truth * observed, observed)
        assert indices.tolist() == [0, 1, 5, 13, 24, 25, 43, 53, 55, 61, 72, 83, 85, 93, 97, 99, 102, 105, 106, 111]
        assert torch.equal(w[:4], torch.tensor([0.2773752510547638, 0.2773752510547638, 0.038758039474487305,
                                                0.00988839752972126]))
        images, weights = sampler.sample(truth * observed, observed, 30, generator=torch.Generator().manual_seed(2))
        assert images.double().sum().item() == 383.19927310943604
        assert torch.equal(weights, torch.tensor([8, 8, 1, 2, 1, 1, 2, 2, 1, 1, 2, 1]) / 30.0)


def test_offsets_and_zero_filled_translation():
    offsets = shift_offsets(1)
    assert offsets.shape == (9, 2) and offsets[0].tolist() == [0, 0] and offsets[1:5].abs().sum(1).tolist() == [1] * 4
    assert {tuple(o) for o in shift_offsets(2).tolist()} == {(a, b) for a in range(-2, 3) for b in range(-2, 3)}
    image = torch.arange(16.0).reshape(1, 1, 4, 4)
    moved = shift_images(image, torch.tensor([[1, -2]]))  # out[r, c] = in[r - 1, c + 2]
    assert moved[0, 0].tolist() == [[0, 0, 0, 0], [2, 3, 0, 0], [6, 7, 0, 0], [10, 11, 0, 0]]


def translated_case():
    """Bank: 0 = the truth moved by (-1, -1) (so the truth is bank 0 moved by (+1, +1)); 1 = the truth plus noise
    (the nearest without shifts); 2..9 random. The observation is the truth on cell 3 (rows, cols 4..7)."""
    g = torch.Generator().manual_seed(0)
    truth = torch.rand(1, 8, 8, generator=g)
    images = torch.rand(10, 1, 8, 8, generator=g)
    images[0] = torch.roll(truth, (-1, -1), (1, 2))
    images[1] = (truth + 0.15 * torch.randn(1, 8, 8, generator=g)).clamp(0, 1)
    observed = cell_masks(GRID)[3]
    return ImageBank.from_tensor(images), truth * observed, observed


def test_a_translated_bank_image_wins_with_shifts_and_its_completion_agrees_with_the_observation():
    bank, x, observed = translated_case()
    kwargs = dict(pca_components=16, n_proposals=10, sigma2_schedule=(0.05,))
    _, w0 = BankSampler(bank, GRID, **kwargs).proposals(x, observed)
    assert w0.argmax() == 1  # without shifts the noisy copy is nearest
    sampler = BankSampler(bank, GRID, shifts=1, **kwargs)
    indices, w1, offsets = sampler.weighted_candidates(x, observed)
    assert indices.tolist() == list(range(10)) and w1.sum().item() == pytest.approx(1.0)
    assert w1.argmax() == 0 and w1[0] > 0.99 and offsets[0].tolist() == [1, 1]
    images, weights = sampler.sample(x, observed, 20, generator=torch.Generator().manual_seed(0))
    assert weights.sum().item() == pytest.approx(1.0)
    best = images[weights.argmax()]
    assert ((best - x).abs() * observed).max() < 1e-3  # float16 bank
    assert torch.equal(best, shift_images(bank.images(torch.tensor([0])), torch.tensor([[1, 1]]))[0])


def test_target_ess_bisects_the_marginalised_weights():
    bank, x, observed = translated_case()
    sampler = BankSampler(bank, GRID, pca_components=16, n_proposals=10, target_ess=0.5, shifts=2)
    distances = sampler.shifted_distances(x, observed, torch.arange(10))
    assert distances.shape == (10, 25)
    images = bank.images(torch.arange(10))
    for j, offset in enumerate(shift_offsets(2)):  # brute force: every translated image, zero filled
        moved = shift_images(images, offset.expand(10, 2))
        assert torch.allclose(distances[:, j], ((moved - x).square() * observed).flatten(1).sum(1), atol=1e-4)
    _, w = sampler.proposals(x, observed)
    assert (1 / w.square().sum()).item() == pytest.approx(5, rel=0.01)


def test_bad_shifts_are_refused():
    bank, _, _ = translated_case()
    with pytest.raises(ValueError, match=r"BankSampler.shifts: expected an integer in \[0, 8\).*found -1"):
        BankSampler(bank, GRID, shifts=-1)
    with pytest.raises(ValueError, match=r"BankSampler.shifts: .*found 8"):
        BankSampler(bank, GRID, shifts=8)


def test_annotate_config_passes_shifts_and_refuses_negative_ones():
    from foveal.boed.annotate import AnnotateConfig

    cfg = AnnotateConfig(dataset="mnist5k", posterior="p", bank="b.npy", shifts=2)
    assert cfg.shifts == 2 and AnnotateConfig.from_dict(cfg.to_dict()).shifts == 2
    assert AnnotateConfig(dataset="mnist5k", posterior="p", bank="b.npy").shifts == 0
    with pytest.raises(ValueError, match=r"AnnotateConfig.shifts: expected an integer >= 0, found -1"):
        AnnotateConfig(dataset="mnist5k", posterior="p", bank="b.npy", shifts=-1)


def test_tied_shifts_resolve_to_no_shift():
    images = torch.zeros(3, 1, 8, 8)
    images[1:] = torch.rand(2, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    observed = cell_masks(GRID)[3]  # a black observation: every shift of the black bank image 0 matches it
    sampler = BankSampler(ImageBank.from_tensor(images), GRID, pca_components=4, n_proposals=3, shifts=2)
    indices, weights, offsets = sampler.weighted_candidates(torch.zeros(1, 8, 8), observed)
    assert weights.argmax() == 0 and offsets[0].tolist() == [0, 0]
