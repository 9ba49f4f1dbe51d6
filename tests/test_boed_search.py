"""The greedy step's savings (SearchConfig): pruning is exact when every cell is re-scored, skipping seen cells."""

import pytest
import torch

from foveal.boed import NetworkPosterior, expected_posterior_entropy, greedy_sequence
from foveal.boed.epe import SearchConfig, search_step
from foveal.models import create_model
from foveal.retina import LocationGrid

GRID = LocationGrid.from_stride((8, 8), 4, 2)  # 3 x 3 overlapping cells


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def random_posterior(seed=0):
    torch.manual_seed(seed)
    net = create_model("posterior-cnn", in_channels=1, num_classes=3, image_size=(8, 8), widths=(8, 8), strides=(1, 2))
    with torch.no_grad():
        for p in net.parameters():
            p.normal_(0, 0.7)
    return NetworkPosterior(net)


class TableSampler:
    """Fixed completions with fixed unequal weights, whatever is observed (the generator is not used)."""

    def __init__(self, n=6):
        g = torch.Generator().manual_seed(3)
        self.images = torch.rand(n, 1, 8, 8, generator=g)
        w = torch.rand(n, generator=g) + 0.1
        self.weights = w / w.sum()

    def sample(self, image, mask, n, *, generator=None):
        return self.images, self.weights


def observed_cell(cell):
    r, c = GRID.corners()[cell].tolist()
    m = torch.zeros(1, 8, 8)
    m[:, r:r + 4, c:c + 4] = 1
    return m


def test_pruning_with_every_cell_rescored_is_the_plain_search():
    post, sampler = random_posterior(), TableSampler()
    observed = observed_cell(4)
    plain = expected_posterior_entropy(post, sampler.images, sampler.weights, observed, GRID)
    cell, epe = search_step(post, sampler.images, sampler.weights, observed, GRID,
                            SearchConfig(screen_completions=2, screen_top_k=len(GRID)), batch_size=7)
    assert cell == int(plain.argmin()) and torch.allclose(epe, plain, atol=1e-6)
    image = torch.rand(1, 8, 8, generator=torch.Generator().manual_seed(9))
    a = greedy_sequence(image, post, sampler, GRID, 4, n_completions=6, keep_maps=True)
    b = greedy_sequence(image, post, sampler, GRID, 4, n_completions=6, keep_maps=True,
                        search=SearchConfig(screen_completions=3, screen_top_k=len(GRID)))
    assert torch.equal(a.cells, b.cells) and torch.allclose(a.epe_maps, b.epe_maps, atol=1e-6)


def test_pruning_screens_with_the_heaviest_completions_and_rescores_the_top_k():
    post, sampler = random_posterior(1), TableSampler()
    observed = torch.zeros(1, 8, 8)
    heavy = torch.sort(sampler.weights, descending=True, stable=True).indices[:2]
    screen = expected_posterior_entropy(post, sampler.images[heavy], sampler.weights[heavy] / sampler.weights[heavy].sum(),
                                        observed, GRID)
    full = expected_posterior_entropy(post, sampler.images, sampler.weights, observed, GRID)
    k = 3
    top = torch.topk(screen, k, largest=False).indices
    cell, epe = search_step(post, sampler.images, sampler.weights, observed, GRID,
                            SearchConfig(screen_completions=2, screen_top_k=k))
    assert cell == int(top[full[top].argmin()])  # the best full estimate among the screened top k
    rescored = torch.zeros(len(GRID), dtype=torch.bool)
    rescored[top] = True
    assert torch.allclose(epe[rescored], full[rescored], atol=1e-6)
    assert torch.allclose(epe[~rescored], screen[~rescored], atol=1e-6)


def test_skip_seen_leaves_out_cells_without_unseen_pixels():
    post, sampler = random_posterior(2), TableSampler()
    observed = observed_cell(0) + observed_cell(2)  # the top four rows: cell 1 (between them) is seen too
    cell, epe = search_step(post, sampler.images, sampler.weights, observed, GRID, SearchConfig(skip_seen=True))
    unseen = [3, 4, 5, 6, 7, 8]
    assert torch.isinf(epe[[0, 1, 2]]).all() and torch.isfinite(epe[unseen]).all()
    plain = expected_posterior_entropy(post, sampler.images, sampler.weights, observed, GRID)
    assert torch.allclose(epe[unseen], plain[unseen]) and cell == unseen[int(plain[unseen].argmin())]
    # everything seen: every cell is scored (the choice is then arbitrary but defined)
    cell, epe = search_step(post, sampler.images, sampler.weights, torch.ones(1, 8, 8), GRID, SearchConfig(skip_seen=True))
    assert torch.isfinite(epe).all() and cell == int(epe.argmin())


def test_search_config_errors_name_the_field():
    with pytest.raises(ValueError, match=r"SearchConfig.screen_completions: expected None or >= 1, found 0"):
        SearchConfig(screen_completions=0)
    with pytest.raises(ValueError, match=r"SearchConfig.screen_top_k: expected >= 1, found 0"):
        SearchConfig(screen_top_k=0)
    assert SearchConfig().plain and not SearchConfig(skip_seen=True).plain
